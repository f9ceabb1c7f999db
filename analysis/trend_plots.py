"""Figures of the fitted trends (analysis.trends): the compute-optimal frontier and the expected
best score over N tuned configurations. Drawn with analysis.plots' helpers (colours, markers,
panels, bands), in a module of their own so that plots.py stays readable."""

from __future__ import annotations

import math
import os
from typing import Mapping

import numpy as np
import pandas as pd

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from analysis.load import natural_key
from analysis.plots import (_BAND_ALPHA, _band, _colors_for, _grid, _legend, _markers_for, _new_figure,
                            _panel_layout, _steps_formatter, save_figure, style, thin_xticks)


def plot_frontier(configs: pd.DataFrame, frontier: pd.DataFrame,
                  out: str | os.PathLike | None = None,
                  colors: Mapping[str, tuple] | None = None,
                  markers: Mapping[str, str] | None = None,
                  titles: Mapping[str, str] | None = None) -> Figure:
    """Compute-optimal frontier (``trends.compute_frontier``): every configuration's final
    success vs total compute with its CI, and a step line through the best configuration
    within each budget. One panel per environment."""
    envs = sorted(configs["env"].unique(), key=natural_key)
    methods = sorted(configs["method"].unique(), key=natural_key)
    colors = _colors_for(colors, methods)
    markers = _markers_for(markers, methods)
    width, ncols, ph = _panel_layout(len(envs))
    with style():
        fig = _new_figure(width, ph * math.ceil(len(envs) / ncols) + 0.35)
        axes = _grid(fig, len(envs), ncols)
        for ax, env in zip(axes, envs):
            sub = configs[configs["env"] == env]
            for m in methods:
                g = sub[sub["method"] == m]
                if g.empty:
                    continue
                ax.errorbar(g["compute"], 100 * g["point"],
                            yerr=[100 * (g["point"] - g["lo"]).fillna(0),
                                  100 * (g["hi"] - g["point"]).fillna(0)],
                            fmt=markers.get(m, "o"), color=colors[m], label=m, capsize=2,
                            markersize=4, linewidth=0.9, zorder=3)
            f = frontier[frontier["env"] == env].sort_values("budget")
            if len(f):
                ax.step(f["budget"], 100 * f["point"], where="post", color="0.2",
                        linewidth=1.0, label="frontier (best within budget)", zorder=2)
            ax.set_xscale("log")
            ticks = np.unique(sub["compute"].to_numpy(float))
            if 0 < len(ticks) <= 8:
                ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(_steps_formatter))
            ax.set_title((titles or {}).get(env, env))
            ax.set_xlabel("Training compute (FLOPs)")
            ax.set_ylim(-2, 102)
        for i, ax in enumerate(axes):
            if i % ncols == 0:
                ax.set_ylabel("Final success (%)")
        _legend(fig, axes, len(methods) + 1)
        thin_xticks(fig, axes)
    if out is not None:
        save_figure(fig, out)
    return fig


def plot_expected_max(curves: pd.DataFrame, out: str | os.PathLike | None = None,
                      colors: Mapping[str, tuple] | None = None,
                      titles: Mapping[str, str] | None = None) -> Figure:
    """Expected best final success over N sampled configurations
    (``trends.tuning_budget``), one line per tuned method with its CI band."""
    envs = sorted(curves["env"].unique(), key=natural_key)
    groups = sorted(curves["group"].unique(), key=natural_key)
    colors = _colors_for(colors, groups)
    width, ncols, ph = _panel_layout(len(envs))
    with style():
        fig = _new_figure(width, ph * math.ceil(len(envs) / ncols) + 0.35)
        axes = _grid(fig, len(envs), ncols)
        for ax, env in zip(axes, envs):
            for gname in groups:
                g = curves[(curves["env"] == env) & (curves["group"] == gname)].sort_values("N")
                if g.empty:
                    continue
                n = int(g["n_configs"].iloc[0])
                ax.plot(g["N"], 100 * g["point"], color=colors[gname], marker="o",
                        markersize=3, label=f"{gname} ({n} config{'s' if n > 1 else ''})")
                _band(ax, g["N"], 100 * g["lo"], 100 * g["hi"], colors[gname])
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
            ax.set_title((titles or {}).get(env, env))
            ax.set_xlabel("Configurations sampled N")
            ax.set_ylim(-2, 102)
        for i, ax in enumerate(axes):
            if i % ncols == 0:
                ax.set_ylabel("Expected best success (%)")
        _legend(fig, axes, len(groups))
    if out is not None:
        save_figure(fig, out)
    return fig


def draw_fits(ax, fits: pd.DataFrame, colors: Mapping[str, tuple]) -> None:
    """Fitted trend lines (dashed) and their confidence bands (``trends.Trends.bands``)."""
    for hue, g in fits.groupby("hue", sort=True):
        g = g.sort_values("x")
        color = colors.get(hue, "0.3")
        ax.plot(g["x"], 100 * g["fit"], color=color, linestyle=(0, (4, 2)), linewidth=0.9,
                label="_fit", zorder=2.2)
        ok = np.isfinite(g["lo"].to_numpy(float))
        if ok.any():
            ax.fill_between(g["x"][ok], 100 * g["lo"][ok], 100 * g["hi"][ok], color=color,
                            alpha=_BAND_ALPHA / 2, linewidth=0, zorder=1.5)
