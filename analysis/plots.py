"""Layer 3a: figures from already-computed estimates (never from raw runs).

Every function takes a tidy estimate frame from ``analysis.stats`` (columns ``point, lo,
hi`` as fractions), returns the ``matplotlib.figure.Figure`` and, given ``out``, writes
``out.png`` and ``out.pdf`` atomically. Figures are built on ``Figure`` objects with the Agg
canvas (no pyplot, no global backend switch) inside a local rc context sized for a paper
column (3.3 in; 6.9 in for multi-panel figures), colour-blind-safe palette
(``analysis.colors``: every colour at least 3:1 against the white page).

Colours: ``config_colors`` maps every configuration label of a report to one colour, once,
and every figure takes that mapping (``colors=``), so a method has the same colour in the
learning curves, aggregates, profiles, probability of improvement and scaling figures.
Each critic family (``algorithm:critic``) gets a qualitative base colour; the
configurations of one family that differ along an ordered axis (K, width, depth) get a
sequential light-to-dark ramp of that base colour's hue, in natural order (K=1 lightest),
evenly spaced in perceived lightness from the lightest shade visible on white, and each
configuration of a family its own marker (``config_markers``), so K values remain
distinguishable in grey scale too. Markers sit at the measured points (evaluation steps,
scaling points). Legends sit outside the axes (below); x tick labels that would overlap are
thinned, and a thinned tick is removed with its label (no unlabeled tick); point labels stay
inside their axes (``keep_labels_inside``), never over a tick label. Files are
written with mode 0644.
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from analysis.colors import MARKERS, config_colors, config_markers, method_colors  # noqa: F401
from analysis.load import natural_key
from analysis.stats import METRIC_LABELS

__all__ = ["COLUMN_WIDTH", "PAGE_WIDTH", "style", "method_colors", "config_colors",
           "config_markers", "FILE_MODE", "distinct_metrics", "point_label", "plot_diagnostics",
           "keep_labels_inside",
           "save_figure", "plot_learning_curves", "plot_scaling", "plot_performance_profile",
           "plot_aggregates", "plot_probability_of_improvement", "thin_xticks",
           "PUBLISHED_STYLE"]

COLUMN_WIDTH = 3.3   # inches: one column of a two-column paper
PAGE_WIDTH = 6.9     # inches: full text width

_RC = {
    "font.size": 7, "axes.titlesize": 7.5, "axes.labelsize": 7, "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5, "legend.fontsize": 6.5, "legend.title_fontsize": 6.5,
    "lines.linewidth": 1.3, "lines.markersize": 3.5, "axes.linewidth": 0.6,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.linewidth": 0.4, "grid.alpha": 0.35, "xtick.major.width": 0.6,
    "ytick.major.width": 0.6, "xtick.major.size": 2.5, "ytick.major.size": 2.5,
    "savefig.dpi": 300, "figure.dpi": 150, "pdf.fonttype": 42, "ps.fonttype": 42,
    "legend.frameon": False, "axes.titlepad": 3.0, "font.family": "DejaVu Sans",
}
_BAND_ALPHA = 0.2
FILE_MODE = 0o644  # figures are shared files: readable by everyone, like the tables


@contextmanager
def style():
    """The rc settings of every figure here (local; global rcParams are untouched)."""
    with matplotlib.rc_context(_RC):
        yield


def _markers_for(markers, labels) -> dict[str, str]:
    out = dict(markers or {})
    missing = [lab for lab in labels if lab not in out]
    if missing:
        out.update({k: v for k, v in config_markers(list(out) + missing).items()
                    if k not in out})
    return out


def _colors_for(colors, labels) -> dict[str, tuple]:
    out = dict(colors or {})
    missing = [lab for lab in labels if lab not in out]
    if missing:
        extra = method_colors(missing)
        out.update({k: v for k, v in extra.items() if k not in out})
    return out


def thin_xticks(fig: Figure, axes) -> None:
    """Drop x ticks whose label would overlap their left neighbour's, tick and label
    together (a tick without a label would leave the reader guessing its value)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        lo, hi = sorted(ax.get_xlim())
        pairs = [(t, lab) for t, lab in zip(ax.get_xticks(), ax.get_xticklabels())
                 if lo <= t <= hi and lab.get_text()]
        pairs.sort(key=lambda p: p[0])
        kept, dropped, last = [], [], None
        pad = 0.35 * _RC["xtick.labelsize"] * fig.dpi / 72
        for t, lab in pairs:
            bb = lab.get_window_extent(renderer)
            if last is not None and bb.x0 < last.x1 + pad:
                dropped.append(t)
                continue
            kept.append(t)
            last = bb
        if dropped:
            fmt = ax.xaxis.get_major_formatter()
            ax.xaxis.set_major_locator(FixedLocator(kept))
            ax.xaxis.set_major_formatter(fmt)
            ax.xaxis.set_minor_locator(NullLocator())


def keep_labels_inside(fig: Figure, axes) -> None:
    """Keep every point label (an annotation offset from its point) inside its axes, where
    it covers no tick label and leaves no panel: one that would stick out is moved to the
    other side of its point (below a point at 100% becomes above it; a label centred on the
    first or last x starts or ends at its point), then any still outside is shifted in."""
    from matplotlib.text import Annotation
    flip_va = {"top": "bottom", "bottom": "top", "baseline": "top"}
    for second in (False, True):
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        for ax in axes:
            box = ax.get_window_extent(r)
            for ann in [t for t in ax.texts if isinstance(t, Annotation)]:
                bb = ann.get_window_extent(r)
                dx, dy = ann.xyann
                if not second:
                    if bb.y0 < box.y0 or bb.y1 > box.y1:
                        dy = -dy
                        ann.set_va(flip_va.get(ann.get_va(), ann.get_va()))
                    if bb.x0 < box.x0 or bb.x1 > box.x1:
                        ann.set_ha("left" if bb.x0 < box.x0 else "right")
                        dx = 1.5 if bb.x0 < box.x0 else -1.5
                else:  # what the flip could not fix (a label wider than half the panel)
                    to_pt = 72.0 / fig.dpi
                    dx += (max(0.0, box.x0 - bb.x0) - max(0.0, bb.x1 - box.x1)) * to_pt
                    dy += (max(0.0, box.y0 - bb.y0) - max(0.0, bb.y1 - box.y1)) * to_pt
                ann.xyann = (dx, dy)


def save_figure(fig: Figure, out: str | os.PathLike,
                formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``out.<fmt>`` for each format, each via a temp file + ``os.replace``, with
    mode ``FILE_MODE`` (0644; a temp file is created 0600)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with style():
        for fmt in formats:
            dst = out.with_name(f"{out.name}.{fmt}")
            fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}-", suffix=f".{fmt}")
            os.close(fd)
            try:
                # no creation date in PDFs: the same figure gives the same bytes
                meta = {"CreationDate": None} if fmt == "pdf" else None
                fig.savefig(tmp, format=fmt, bbox_inches="tight", pad_inches=0.02,
                            metadata=meta)
                os.chmod(tmp, FILE_MODE)
                os.replace(tmp, dst)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
            paths.append(dst)
    return paths


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.04, hspace=0.06)
    return fig


def _grid(fig: Figure, n: int, ncols: int, sharey: bool = True, sharex: bool = False):
    nrows = math.ceil(n / ncols)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=sharey, sharex=sharex,
                                      squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.remove()
    return list(axes[:n])


def _steps_formatter(x, _pos=None) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1e18:
        mant, exp = f"{x:.1e}".split("e")
        mant = mant.rstrip("0").rstrip(".")
        return f"{mant}e{int(exp)}"
    for div, suf in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            v = x / div
            return f"{v:.{0 if float(v).is_integer() else 1}f}{suf}"
    return f"{x:g}"


def _legend(fig: Figure, axes, n_items: int, title: str | None = None, extra=()):
    """One legend for the figure, outside the axes (below them)."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels and not label.startswith("_"):
                handles.append(handle)
                labels.append(label)
    for handle in extra:
        handles.append(handle)
        labels.append(handle.get_label())
    if not handles:
        return
    width = fig.get_figwidth()
    longest = max(len(label) for label in labels)
    ncol = max(1, min(len(labels), int(width / (0.3 + 0.055 * longest))))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, title=title,
               handlelength=1.6, columnspacing=1.0, handletextpad=0.4)


def _band(ax, x, lo, hi, color):
    """The CI as a shaded band; a line with one point (a band of zero width) gets a vertical
    interval bar instead, so its uncertainty is never silently dropped from the figure."""
    ok = np.asarray(np.isfinite(lo) & np.isfinite(hi))
    if ok.sum() == 1:
        ax.vlines(np.asarray(x)[ok], np.asarray(lo)[ok], np.asarray(hi)[ok], colors=[color],
                  alpha=0.6, linewidth=2.0)
    elif ok.any():
        ax.fill_between(np.asarray(x)[ok], np.asarray(lo)[ok], np.asarray(hi)[ok],
                        color=color, alpha=_BAND_ALPHA, linewidth=0)


def _panel_layout(n: int) -> tuple[float, int, float]:
    """(width, ncols, panel height) for n panels."""
    if n == 1:
        return COLUMN_WIDTH, 1, 2.0
    if n == 2:
        return COLUMN_WIDTH, 2, 1.7
    return PAGE_WIDTH, min(4, n), 1.6


def _success_axis(ax) -> None:
    """A success axis spans exactly [0, 100] %; lines, markers and bands are not clipped
    at its edges, so a curve at 0% or 100% stays visible on the spine."""
    ax.set_ylim(0, 100)
    for artist in [*ax.lines, *ax.collections]:
        artist.set_clip_on(False)


# --------------------------------------------------------------------------- curves
PHASE_LINE = dict(color="0.35", linestyle=":", linewidth=0.9)


def plot_learning_curves(curves: pd.DataFrame, out: str | os.PathLike | None = None,
                         colors: Mapping[str, tuple] | None = None,
                         ylabel: str = "Success (%)",
                         boundaries: pd.DataFrame | None = None,
                         markers: Mapping[str, str] | None = None,
                         titles: Mapping[str, str] | None = None,
                         x: str = "step", note: str | None = None) -> Figure:
    """Success vs gradient step, one panel per environment, one line (+CI band) per method,
    with a marker (``markers``, default ``config_markers``) at every evaluation step.
    ``x="wall_time"`` draws the same points against ``curves["wall_time"]`` (seconds since
    the run started), in minutes or hours.

    Args:
        curves: ``stats.curve_estimates`` output: ``env, method, step, point, lo, hi``.
        boundaries: ``stats.phase_boundaries`` output (``env, step``): a dotted vertical
            line marks the end of the offline phase in that environment's panel.
        titles: ``{env: panel title}`` (default: the environment's name).
        note: a subtitle over the panels (the report's machine-load caveat).
    """
    envs = sorted(curves["env"].unique(), key=natural_key)
    methods = sorted(curves["method"].unique(), key=natural_key)
    colors = _colors_for(colors, methods)
    markers = _markers_for(markers, methods)
    msize = 2.6 if curves["step"].nunique() <= 25 else 0
    wall = x == "wall_time"
    scale, unit = ((3600.0, "h") if wall and curves[x].max() > 3 * 3600 else (60.0, "min"))
    xs_of = (lambda g: g[x].to_numpy(float) / scale) if wall else (lambda g: g["step"])
    width, ncols, ph = _panel_layout(len(envs))
    with style():
        fig = _new_figure(width, ph * math.ceil(len(envs) / ncols) + 0.35)
        axes = _grid(fig, len(envs), ncols)
        any_partial = False
        for ax, env in zip(axes, envs):
            sub = curves[curves["env"] == env]
            for m in methods:
                g = sub[sub["method"] == m].sort_values("step")
                if g.empty:
                    continue
                gx = xs_of(g)
                part = (g["partial_tasks"].astype(bool).to_numpy() if "partial_tasks" in g
                        else np.zeros(len(g), bool))
                y = 100 * g["point"].to_numpy(float)
                full_y = np.where(part, np.nan, y)
                ax.plot(gx, full_y, color=colors[m], label=m, marker=markers[m],
                        markersize=msize, markeredgewidth=0)
                if part.any():  # steps some of the method's tasks lack: dotted
                    any_partial = True
                    near = part | np.convolve(part, [1, 1, 1], "same").astype(bool)
                    ax.plot(gx, np.where(near, y, np.nan), color=colors[m],
                            linestyle=":", label="_partial")
                _band(ax, gx, 100 * g["lo"], 100 * g["hi"], colors[m])
            if boundaries is not None and len(boundaries) and not wall:
                for step in sorted(boundaries.loc[boundaries["env"] == env, "step"]):
                    ax.axvline(step, label="offline → online", **PHASE_LINE)
            ax.set_title((titles or {}).get(env, env))
            if wall:
                ax.set_xlabel(f"Wall-clock since the run started ({unit})")
            else:
                ax.set_xlabel("Gradient steps")
                ax.xaxis.set_major_formatter(FuncFormatter(_steps_formatter))
            _success_axis(ax)
            ax.margins(x=0.02)
        for i, ax in enumerate(axes):
            if i % ncols == 0:
                ax.set_ylabel(ylabel)
        extra = []
        if any_partial:
            from matplotlib.lines import Line2D
            extra.append(Line2D([], [], color="0.3", linestyle=":",
                                label="dotted: fewer of the method's tasks at that step"))
        _legend(fig, axes, len(methods), extra=extra)
        if note:
            import textwrap
            fig.suptitle(textwrap.fill(note, int(18 * width), break_on_hyphens=False),
                         fontsize=_RC["legend.fontsize"], color="0.2")
        thin_xticks(fig, axes)
    if out is not None:
        save_figure(fig, out)
    return fig


def plot_diagnostics(curves: pd.DataFrame, out: str | os.PathLike | None = None,
                     colors: Mapping[str, tuple] | None = None,
                     markers: Mapping[str, str] | None = None,
                     titles: Mapping[str, str] | None = None,
                     labels: Mapping[str, str] | None = None,
                     metrics: Sequence[str] | None = None) -> Figure:
    """Critic diagnostics vs gradient step: one row per environment, one panel per metric
    (``diagnostics.panel_order``: each critic's loss in its own panel, since a TD loss and
    floq's flow-matching loss measure different things), one line per method (mean over run
    seeds x tasks) with the min-max range over them as a band. A metric whose values are all
    positive and span more than 20x gets a log y axis. The metric names the panel (its title,
    wrapped), not a rotated y label, so no label runs into a neighbour; only methods with
    finite values in a panel are drawn there, and the legend lists only methods drawn.

    Args:
        curves: ``diagnostics.diagnostic_curves`` output: ``env, method, metric, step,
            point, lo, hi``.
        labels: ``{metric: panel title}``.
        metrics: panel order (default: as they come in ``curves``); absent ones are skipped.
    """
    import textwrap
    curves = curves[np.isfinite(curves["point"].to_numpy(float))]
    envs = sorted(curves["env"].unique(), key=natural_key)
    present = list(dict.fromkeys(curves["metric"]))
    metrics = [m for m in (metrics or present) if m in present]
    methods = sorted(curves["method"].unique(), key=natural_key)
    colors = _colors_for(colors, methods)
    markers = _markers_for(markers, methods)
    ncols = max(1, len(metrics))
    with style():
        fig = _new_figure(PAGE_WIDTH if ncols > 1 else COLUMN_WIDTH,
                          1.95 * len(envs) + 0.45)
        grid = np.atleast_2d(fig.subplots(len(envs), ncols, squeeze=False))
        for row, env in zip(grid, envs):
            for ax, metric in zip(row, metrics):
                sub = curves[(curves["env"] == env) & (curves["metric"] == metric)]
                for m in methods:
                    g = sub[sub["method"] == m].sort_values("step")
                    if g.empty:
                        continue
                    ax.plot(g["step"], g["point"], color=colors[m], label=m,
                            marker=markers[m], markersize=2.0 if len(g) <= 40 else 0,
                            markeredgewidth=0)
                    _band(ax, g["step"], g["lo"], g["hi"], colors[m])
                vals = sub[["point", "lo", "hi"]].to_numpy(float)
                vals = vals[np.isfinite(vals)]
                if len(vals) and vals.min() > 0 and vals.max() / vals.min() > 20:
                    ax.set_yscale("log")
                title = textwrap.fill((labels or {}).get(metric, metric),
                                      width=max(18, int(62 / ncols) + 10))
                if len(envs) > 1 and metric == metrics[0]:
                    title = f"{(titles or {}).get(env, env)}\n{title}"
                ax.set_title(title, loc="left", fontsize=_RC["axes.labelsize"])
                ax.set_xlabel("Gradient steps")
                ax.xaxis.set_major_formatter(FuncFormatter(_steps_formatter))
                ax.margins(x=0.02)
        if len(envs) == 1:
            fig.suptitle((titles or {}).get(envs[0], envs[0]), fontsize=_RC["axes.titlesize"])
        _legend(fig, list(grid.ravel()), len(methods))
        thin_xticks(fig, list(grid.ravel()))
    if out is not None:
        save_figure(fig, out)
    return fig


def _log_base(x: np.ndarray) -> int | None:
    x = x[np.isfinite(x)]
    if len(x) < 2 or (x <= 0).any() or x.max() / x.min() < 4:
        return None
    if all(float(v).is_integer() and int(v) & (int(v) - 1) == 0 for v in x):
        return 2
    return 10


PUBLISHED_STYLE = dict(color="0.15", linestyle=":", linewidth=1.0, markersize=4.0,
                       markerfacecolor="none")
_PUBLISHED_MARKERS = ("X", "D", "^", "s", "v")


def _parts(label: str) -> list[str]:
    inner = label.split("(", 1)[1].rsplit(")", 1)[0] if "(" in label else ""
    return [p.strip() for p in inner.split(",") if p.strip()]


def point_label(label: str, hue: str) -> str:
    """What tells a point apart on its line: the parts of its configuration ``label``
    that the line's ``hue`` lacks (``"floq (K=4)"`` on line ``"floq"`` -> ``"K=4"``);
    "" when the point is the whole line's configuration."""
    if not isinstance(label, str) or not label or " / " in label or label == hue:
        return ""
    hue_parts = set(_parts(hue))
    return ", ".join(p for p in _parts(label) if p not in hue_parts)


def plot_scaling(est: pd.DataFrame, axis_label: str, out: str | os.PathLike | None = None,
                 colors: Mapping[str, tuple] | None = None, logx: bool | str = "auto",
                 ylabel: str = "Final success (%)",
                 published: pd.DataFrame | None = None,
                 markers: Mapping[str, str] | None = None,
                 points: pd.DataFrame | None = None,
                 titles: Mapping[str, str] | None = None,
                 label_points: bool = True,
                 fits: pd.DataFrame | None = None) -> Figure:
    """Final success vs a numeric axis, one panel per environment, one line per hue.

    Args:
        est: ``stats.scaling_estimates`` output: ``env, hue, x, point, lo, hi, reference``
            (+ ``partial_tasks, tasks``). Reference rows (``x`` NaN: runs without the axis,
            e.g. a monolithic critic on a flow-steps axis) are drawn as dashed horizontal
            lines with their CI band. Points with ``partial_tasks`` (fewer of the panel's
            tasks than other points) are hollow and annotated ``k/n``.
        axis_label: x-axis label (units included).
        logx: ``"auto"`` (log2 for powers of two spanning >= 4x, log10 otherwise when
            spanning >= 4x), True or False.
        published: rows ``env, x, point, label`` (``published.scaling_rows``) drawn in
            black, dotted, with hollow markers and their label (which says 'published')
            in the panels of matching environments.
        markers: ``{configuration label: marker}`` (default ``config_markers``).
        points: per-seed scores ``env, hue, x, score`` (``stats.scaling_points``), drawn
            as small dots of the line's colour behind the means (n = 3 deserves to be seen).
        titles: ``{env: panel title}`` (default: the environment's name).
        label_points: write beside each such point what sets it apart (``K=4``); the
            report turns it off on a K/width/depth axis, whose ticks already say it.
        fits: fitted trends ``env, hue, x, fit, lo, hi`` (``trends.Trends.bands``),
            drawn dashed in the line's colour with a light band.

    When ``est`` has a ``label`` column (the configuration of each point), a point whose
    configuration differs from its line's (floq's K on a FLOPs or compute axis) is drawn in
    that configuration's colour and marker.
    """
    envs = sorted(est["env"].unique(), key=natural_key)
    hues = sorted(est["hue"].unique(), key=natural_key)
    if "label" not in est:
        est = est.assign(label=est["hue"])
    configs = sorted({str(v) for v in est["label"].dropna()} | set(hues), key=natural_key)
    colors = _colors_for(colors, configs)
    markers = _markers_for(markers, configs)
    if "partial_tasks" not in est:
        est = est.assign(partial_tasks=False, tasks="")
    xs = est.loc[~est["reference"].astype(bool), "x"].to_numpy(float)
    pub = published if published is not None and len(published) else None
    pub = pub[pub["env"].isin(envs)] if pub is not None else None
    all_x = np.concatenate([xs, pub["x"].to_numpy(float) if pub is not None else []])
    base = _log_base(all_x) if logx == "auto" else (10 if logx else None)
    width, ncols, ph = _panel_layout(len(envs))
    with style():
        fig = _new_figure(width, ph * math.ceil(len(envs) / ncols) + 0.35)
        axes = _grid(fig, len(envs), ncols, sharex=True)
        ticks = np.unique(all_x[np.isfinite(all_x)])
        any_partial = False
        for ax, env in zip(axes, envs):
            sub = est[est["env"] == env]
            for h in hues:
                g = sub[sub["hue"] == h].sort_values("x")
                if g.empty:
                    continue
                ref = g["reference"].astype(bool)
                line = g[~ref]
                if len(line):
                    labels = [point_label(lab, h) for lab in line["label"]]
                    ax.plot(line["x"], 100 * line["point"], color=colors[h], label=h,
                            marker=markers[h] if not any(labels) else None)
                    _band(ax, line["x"], 100 * line["lo"], 100 * line["hi"], colors[h])
                    if points is not None and len(points):
                        dots = points[(points["env"] == env) & (points["hue"] == h)
                                      & points["x"].notna()]
                        ax.scatter(dots["x"], 100 * dots["score"], s=5, color=[colors[h]],
                                   alpha=0.55, linewidths=0, zorder=2.5,
                                   label="_seeds")
                    for (_, r), short in zip(line.iterrows(), labels):
                        if not short:
                            continue
                        lab = str(r["label"])
                        ax.scatter([r["x"]], [100 * r["point"]], s=16,
                                   marker=markers.get(lab, "o"),
                                   color=[colors.get(lab, colors[h])], edgecolors="white",
                                   linewidths=0.4, zorder=3, label="_point")
                        if label_points:
                            ax.annotate(short, (r["x"], 100 * r["point"]),
                                        textcoords="offset points", xytext=(0, -9),
                                        ha="center", va="top", fontsize=5.5, color="0.2",
                                        annotation_clip=False,
                                        bbox=dict(boxstyle="round,pad=0.12", fc="white",
                                                  ec="none", alpha=0.75))
                    part = line[line["partial_tasks"].astype(bool)]
                    if len(part):
                        any_partial = True
                        ax.scatter(part["x"], 100 * part["point"], marker="o", s=14,
                                   facecolors="white", edgecolors=[colors[h]], zorder=3,
                                   linewidths=1.0)
                        for _, r in part.iterrows():
                            ax.annotate(str(r["tasks"]), (r["x"], 100 * r["point"]),
                                        textcoords="offset points", xytext=(0, 4),
                                        ha="center", va="bottom", fontsize=5.5,
                                        color=colors[h], annotation_clip=False)
                for _, r in g[ref].iterrows():
                    lab = f"{h} (reference)" + (f" [{r['tasks']} tasks]"
                                                if bool(r["partial_tasks"]) else "")
                    ax.axhline(100 * r["point"], color=colors[h], linestyle="--",
                               linewidth=1.0, label=lab)
                    if np.isfinite(r["lo"]):
                        ax.axhspan(100 * r["lo"], 100 * r["hi"], color=colors[h],
                                   alpha=_BAND_ALPHA / 2, linewidth=0)
            if fits is not None and len(fits):
                from analysis.trend_plots import draw_fits

                draw_fits(ax, fits[fits["env"] == env], colors)
            if pub is not None:
                for j, (lab, g) in enumerate(pub[pub["env"] == env].groupby("label",
                                                                             sort=True)):
                    g = g.sort_values("x")
                    ax.plot(g["x"], 100 * g["point"], label=lab,
                            marker=_PUBLISHED_MARKERS[j % len(_PUBLISHED_MARKERS)],
                            **PUBLISHED_STYLE)
            if base is not None:
                ax.set_xscale("log", base=base)
            fmt = ((lambda v, _p: f"{v:g}") if base == 2 or ticks.max(initial=0) < 1000
                   else _steps_formatter)
            if 0 < len(ticks) <= 8:
                ax.xaxis.set_major_locator(FixedLocator(ticks))
                ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(fmt))
            if len(ticks) == 1:
                ax.set_xlim(ticks[0] * 0.5, ticks[0] * 1.5)
            ax.set_title((titles or {}).get(env, env))
            ax.set_xlabel(axis_label)
            _success_axis(ax)
        for i, ax in enumerate(axes):
            if i % ncols == 0:
                ax.set_ylabel(ylabel)
        extra = []
        from matplotlib.lines import Line2D
        if points is not None and len(points) and points["x"].notna().any():
            extra.append(Line2D([], [], marker="o", linestyle="none", color="0.45",
                                markersize=2.2, alpha=0.7, label="small dots: single seeds"))
        if fits is not None and len(fits):
            extra.append(Line2D([], [], color="0.3", linestyle=(0, (4, 2)), linewidth=0.9,
                                label="dashed: fit on log2 x, 95% band"))
        if any_partial:
            extra.append(Line2D([], [], marker="o", linestyle="none", color="0.3",
                                markerfacecolor="white",
                                label="hollow: fewer of the panel's tasks (k/n)"))
        _legend(fig, axes, len(hues), extra=extra)
        thin_xticks(fig, axes)
        keep_labels_inside(fig, axes)
    if out is not None:
        save_figure(fig, out)
    return fig


def plot_performance_profile(profile: pd.DataFrame, out: str | os.PathLike | None = None,
                             colors: Mapping[str, tuple] | None = None) -> Figure:
    """Score-distribution performance profile: fraction of runs with success > tau.

    Args:
        profile: ``stats.performance_profile`` output: ``method, tau, point, lo, hi``.
    """
    methods = sorted(profile["method"].unique(), key=natural_key)
    colors = _colors_for(colors, methods)
    with style():
        fig = _new_figure(COLUMN_WIDTH, 2.3)
        ax = fig.subplots()
        for m in methods:
            g = profile[profile["method"] == m].sort_values("tau")
            ax.plot(100 * g["tau"], g["point"], color=colors[m], label=m)
            _band(ax, 100 * g["tau"], g["lo"], g["hi"], colors[m])
        ax.set_xlabel(r"Success threshold $\tau$ (%)")
        ax.set_ylabel(r"Fraction of runs $> \tau$")
        ax.set_xlim(0, 100)
        ax.set_ylim(-0.02, 1.02)
        _legend(fig, [ax], len(methods))
    if out is not None:
        save_figure(fig, out)
    return fig


def _interval_xlim(ax, values: np.ndarray, floor: float | None = None,
                   ceil: float | None = None) -> None:
    """Set x limits that contain every finite value (CI bounds and points) with a margin."""
    v = values[np.isfinite(values)]
    if not len(v):
        return
    lo, hi = float(v.min()), float(v.max())
    pad = 0.08 * (hi - lo) if hi > lo else max(1.0, 0.1 * abs(hi))
    lo, hi = lo - pad, hi + pad
    if floor is not None:
        lo = max(lo, floor)
    if ceil is not None:
        hi = min(hi, ceil)
    ax.set_xlim(lo, hi)


def distinct_metrics(agg: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """The aggregate metrics worth a panel: a metric whose points and CI bounds equal an
    earlier metric's for every method (median = IQM = mean on one task with 3 seeds), or
    mirror the mean's (optimality gap = 1 - mean when no score exceeds 1), would repeat
    that panel. Returns ``(kept, {dropped: the kept metric it repeats})``."""
    metrics = list(dict.fromkeys(agg["metric"]))
    table = {m: agg[agg["metric"] == m].set_index("method")[["point", "lo", "hi"]]
             .astype(float).sort_index() for m in metrics}
    kept, dropped = [], {}

    def same(a, b):
        return (a.index.equals(b.index)
                and np.allclose(a.to_numpy(), b.to_numpy(), atol=1e-9, equal_nan=True))

    for m in metrics:
        t = table[m]
        if m == "optimality_gap" and "mean" in table:
            mirror = pd.DataFrame({"point": 1 - t["point"], "lo": 1 - t["hi"],
                                   "hi": 1 - t["lo"]})
            if same(mirror, table["mean"]):
                dropped[m] = "mean"
                continue
        twin = next((k for k in kept if same(t, table[k])), None)
        if twin is not None:
            dropped[m] = twin
            continue
        kept.append(m)
    # the mean is the headline statistic: keep it rather than an identical earlier twin
    if "mean" in dropped:
        twin = dropped.pop("mean")
        kept[kept.index(twin)] = "mean"
        dropped = {m: ("mean" if t == twin else t) for m, t in dropped.items()}
        dropped[twin] = "mean"
    return kept, dropped


def plot_aggregates(agg: pd.DataFrame, out: str | os.PathLike | None = None,
                    colors: Mapping[str, tuple] | None = None,
                    metrics: Sequence[str] | None = None) -> Figure:
    """Interval estimates of aggregate metrics (rliable's plot): one panel per metric,
    one horizontal bar (the CI) with a tick (the point estimate) per method. Each panel's
    x range contains every interval, lower bounds included.

    Args:
        agg: ``stats.aggregate_estimates`` output: ``method, metric, point, lo, hi``.
    """
    metrics = list(metrics or dict.fromkeys(agg["metric"]))
    methods = sorted(agg["method"].unique(), key=natural_key, reverse=True)
    colors = _colors_for(colors, methods[::-1])
    ncols = 2 if len(metrics) > 1 else 1
    nrows = math.ceil(len(metrics) / ncols)
    height = nrows * (0.45 + 0.17 * len(methods)) + 0.25
    with style():
        fig = _new_figure(COLUMN_WIDTH if max(map(len, methods)) < 28 else PAGE_WIDTH, height)
        axes = _grid(fig, len(metrics), ncols, sharey=True)
        for ax, metric in zip(axes, metrics):
            sub = agg[agg["metric"] == metric].set_index("method")
            for i, m in enumerate(methods):
                if m not in sub.index:
                    continue
                r = sub.loc[m]
                if np.isfinite(r["lo"]):
                    ax.barh(i, 100 * (r["hi"] - r["lo"]), left=100 * r["lo"], height=0.6,
                            color=colors[m], alpha=0.75, linewidth=0)
                ax.vlines(100 * r["point"], i - 0.34, i + 0.34, color="black", linewidth=1.0)
            ax.set_yticks(range(len(methods)), methods)
            ax.set_ylim(-0.6, len(methods) - 0.4)
            ax.set_title(METRIC_LABELS.get(metric, metric))
            ax.grid(axis="y", visible=False)
            # success and the optimality gap are percentages: the axis stays within
            # [-1, 101] (one point of margin, so a bar at 0 or 100 is not cut)
            _interval_xlim(ax, 100 * sub[["lo", "hi", "point"]].to_numpy(float).ravel(),
                           floor=-1.0, ceil=101.0)
        for i, ax in enumerate(axes):
            if i % ncols:
                ax.tick_params(axis="y", left=False)
        fig.supxlabel("Success (%)" if "optimality_gap" not in metrics else
                      "Success (%); optimality gap in points (lower is better)",
                      fontsize=_RC["axes.labelsize"])
        thin_xticks(fig, axes)
    if out is not None:
        save_figure(fig, out)
    return fig


def plot_probability_of_improvement(poi: pd.DataFrame, out: str | os.PathLike | None = None,
                                    colors: Mapping[str, tuple] | None = None) -> Figure:
    """Probability of improvement (rliable's plot): one row per pair, the CI of
    P(X > Y) as a bar in X's colour and the point estimate as a tick; 0.5 (no difference)
    dashed. Rows read ``X > Y`` top to bottom in the order of ``poi``.

    Args:
        poi: ``stats.poi_estimates`` output: ``x, y, point, lo, hi``.
    """
    poi = poi.reset_index(drop=True)
    colors = _colors_for(colors, list(dict.fromkeys(poi["x"])) + list(poi["y"]))
    labels = [f"{x}  >  {y}" for x, y in zip(poi["x"], poi["y"])]
    n = len(poi)
    width = COLUMN_WIDTH if max(map(len, labels), default=0) < 36 else PAGE_WIDTH
    with style():
        fig = _new_figure(width, 0.55 + 0.2 * n)
        ax = fig.subplots()
        for i, r in poi.iterrows():
            y = n - 1 - i
            if np.isfinite(r["lo"]):
                ax.barh(y, r["hi"] - r["lo"], left=r["lo"], height=0.6, color=colors[r["x"]],
                        alpha=0.75, linewidth=0)
            ax.vlines(r["point"], y - 0.34, y + 0.34, color="black", linewidth=1.0)
        ax.axvline(0.5, color="0.4", linestyle="--", linewidth=0.8)
        ax.set_yticks(range(n), labels[::-1])
        ax.set_ylim(-0.6, n - 0.4)
        ax.set_xlim(0, 1)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("Probability of improvement P(X > Y)")
    if out is not None:
        save_figure(fig, out)
    return fig
