"""Critic diagnostics from train.csv: Q scale, critic loss and gradient norm over training.

A critic that scales with K should not do so by blowing up its Q values or its loss; these
curves let a reader check that next to the success curves. ``train_metrics`` reads the
``train.csv`` of every scored run seed (the same runs the report scores, nothing else) and
``diagnostic_curves`` averages them per (environment, method, metric, step): the mean over
the method's run seeds x tasks, with the range (min, max) over them as the band — a plain
description of the spread, not a confidence interval.

Like the rest of ``analysis/`` it reads files only (never floq's objects).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["DIAGNOSTICS", "DIAGNOSTIC_LABELS", "LOSS_KINDS", "train_metrics",
           "diagnostic_curves", "panel_order", "panel_label"]

#: train.csv columns drawn, in panel order
DIAGNOSTICS = ("critic/q_mean", "critic/loss", "grad/norm")
DIAGNOSTIC_LABELS = {"critic/q_mean": "Q mean (critic/q_mean)",
                     "critic/loss": "Critic loss (critic/loss)",
                     "grad/norm": "Gradient norm (grad/norm)"}
#: What ``critic/loss`` measures per critic. The critics minimise different objectives (a TD
#: regression, floq's flow-matching loss plus its distillation, IQN's quantile loss), so
#: their losses are never drawn on one axis: ``train_metrics`` names the metric
#: ``critic/loss (<critic>)`` and each critic gets its own panel.
LOSS_KINDS = {"monolithic": "TD loss, monolithic critic",
              "floq": "flow-matching + distillation loss, floq critic",
              "iqn": "quantile TD loss, IQN critic"}


def train_metrics(results_dir: str | os.PathLike, final: pd.DataFrame,
                  metrics: Sequence[str] = DIAGNOSTICS) -> pd.DataFrame:
    """Long frame ``env, method, task_key, seed, step, metric, value`` of the scored run seeds.

    ``final`` is ``stats.final_scores`` output restricted to the scored runs (columns
    ``run_dir`` relative to ``results_dir``, ``env, method, task, task_key, seed``). A
    train.csv with a ``task`` column (a multi-task program) is matched on the task too. A
    missing or unreadable train.csv is skipped with a warning naming it.
    """
    frames = []
    root = Path(results_dir)
    cols = ["run_dir", "env", "method", "task", "task_key", "seed"]
    keys = final[cols + (["critic"] if "critic" in final.columns else [])].drop_duplicates()
    for run_dir, g in keys.groupby("run_dir", sort=True):
        path = Path(run_dir) if Path(run_dir).is_absolute() else root / run_dir
        path = path / "train.csv"
        if not path.exists():
            continue
        try:
            tr = pd.read_csv(path)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            warnings.warn(f"{path}: cannot read critic diagnostics ({type(e).__name__}: {e})",
                          UserWarning, stacklevel=2)
            continue
        cols = [m for m in metrics if m in tr.columns]
        if not cols or "step" not in tr or "seed" not in tr:
            continue
        for r in g.itertuples(index=False):
            sub = tr[pd.to_numeric(tr["seed"], errors="coerce") == float(r.seed)]
            if "task" in tr.columns:
                sub = sub[sub["task"].astype(str) == str(r.task)]
            if sub.empty:
                continue
            long = sub.melt(id_vars=["step"], value_vars=cols, var_name="metric",
                            value_name="value")
            long = long.assign(env=r.env, method=r.method, task_key=r.task_key, seed=r.seed)
            critic = getattr(r, "critic", None)
            if critic is not None:  # one loss panel per critic: their objectives differ
                long.loc[long["metric"] == "critic/loss", "metric"] = f"critic/loss ({critic})"
            frames.append(long)
    if not frames:
        return pd.DataFrame(columns=["env", "method", "task_key", "seed", "step", "metric",
                                     "value"])
    out = pd.concat(frames, ignore_index=True)
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    out = out[np.isfinite(out["value"].to_numpy(float))]
    return out[["env", "method", "task_key", "seed", "step", "metric", "value"]]


def panel_order(curves: pd.DataFrame) -> list[str]:
    """The metrics of ``curves`` in panel order: ``DIAGNOSTICS`` order, each critic's loss
    (``critic/loss (<critic>)``) where ``critic/loss`` stands."""
    present = list(dict.fromkeys(curves["metric"]))
    out = []
    for m in DIAGNOSTICS:
        out += [p for p in sorted(present) if p == m or p.startswith(m + " (")]
    return out + [p for p in present if p not in out]


def panel_label(metric: str) -> str:
    """A panel's title: ``Q mean (critic/q_mean)``, ``TD loss, monolithic critic``."""
    if metric.startswith("critic/loss (") and metric.endswith(")"):
        critic = metric[len("critic/loss ("):-1]
        return f"{LOSS_KINDS.get(critic, f'loss, {critic} critic')} (critic/loss)"
    return DIAGNOSTIC_LABELS.get(metric, metric)


def diagnostic_curves(long: pd.DataFrame) -> pd.DataFrame:
    """Per (env, method, metric, step): ``point`` (mean over run seeds x tasks), ``lo``,
    ``hi`` (their min and max) and ``n`` (how many run seeds x tasks)."""
    if long.empty:
        return pd.DataFrame(columns=["env", "method", "metric", "step", "point", "lo", "hi",
                                     "n"])
    g = long.groupby(["env", "method", "metric", "step"], sort=True)["value"]
    out = g.agg(point="mean", lo="min", hi="max", n="count").reset_index()
    out["step"] = out["step"].astype(int)
    out["n"] = out["n"].astype(int)
    return out
