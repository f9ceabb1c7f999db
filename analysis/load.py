"""Layer 1: run directories -> one tidy frame -> rliable's score dict.

Reads only files (``eval.csv`` and ``run.json``, see docs/CONTRACTS.md); never imports
``floq``. Files that cannot be used (unparseable CSV, missing required columns, bad JSON,
non-numeric or out-of-range ``success``) are skipped with a ``warnings.warn`` that names
the file, so one broken run never hides the others.

Typical use::

    df = load_results("results/")                 # one row per (run dir, seed, evaluation)
    final = stats.final_scores(df, protocol="fql")  # one row per (run dir, seed)
    scores, tasks = to_score_dict(final)         # {method: (num_seeds, num_tasks)}
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "AnalysisError",
    "EVAL_COLUMNS",
    "REQUIRED_EVAL_COLUMNS",
    "MANIFEST_COLUMNS",
    "PROTOCOL_FIELDS",
    "TASK_TAGS",
    "find_run_dirs",
    "load_manifest",
    "load_eval",
    "load_results",
    "tag_columns",
    "method_labels",
    "add_method_column",
    "to_score_dict",
    "TAG_ABBREVIATIONS",
    "natural_key",
]


class AnalysisError(ValueError):
    """Bad analysis input; the message is one line meant for the user."""


# eval.csv columns that are always present (CONTRACTS.md); every other column is a tag.
EVAL_COLUMNS = (
    "experiment", "run", "env", "task", "dataset", "algorithm", "critic", "seed", "step",
    "success", "return", "episode_length", "wall_time", "eval_episodes", "train_steps",
    "ogbench_version", "success_timing",
)
# Without these a row cannot be placed in a score matrix.
REQUIRED_EVAL_COLUMNS = ("env", "task", "algorithm", "critic", "seed", "step", "success")
_NUMERIC_EVAL_COLUMNS = ("seed", "step", "success", "return", "episode_length", "wall_time",
                         "eval_episodes", "train_steps")

# Columns taken from run.json (flattened). Protocol fields keep their own names.
MANIFEST_COLUMNS = (
    "status", "git_commit", "device", "params_total", "params_critic", "flops_per_update",
    "wall_time_s", "updates_per_s", "manifest_step", "eval_interval", "r_min", "r_max",
    "time_embedding", "discount", "budget_note",
)
# Fields that must agree for numbers to be comparable in one table (see tables.py).
PROTOCOL_FIELDS = ("train_steps", "eval_interval", "eval_episodes", "success_timing",
                   "ogbench_version")
# Tags that identify the task, not the method; never part of a method label.
TASK_TAGS = ("task_id", "task", "env", "dataset", "seed")
# Short names used in method labels (the CSV columns keep their full names).
TAG_ABBREVIATIONS = {"critic_flow_steps": "K", "critic_width": "width",
                     "critic_depth": "depth"}
# Columns added by this module.
INTERNAL_COLUMNS = ("run_dir", "task_key", "method", "has_manifest")

_KNOWN = set(EVAL_COLUMNS) | set(MANIFEST_COLUMNS) | set(INTERNAL_COLUMNS)


def _warn(msg: str) -> None:
    warnings.warn(msg, UserWarning, stacklevel=3)


# --------------------------------------------------------------------------- discovery
def find_run_dirs(results_dir: str | os.PathLike) -> list[Path]:
    """Every directory under ``results_dir`` (itself included) holding eval.csv or run.json.

    ``checkpoints/`` folders and hidden folders are not descended into. Sorted by path.
    """
    root = Path(results_dir)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d != "checkpoints" and not d.startswith("."))
        if "eval.csv" in filenames or "run.json" in filenames:
            found.append(Path(dirpath))
    return sorted(found)


# --------------------------------------------------------------------------- manifest
def load_manifest(run_dir: str | os.PathLike) -> dict | None:
    """run.json flattened to the scalar columns the analysis uses; None if absent/corrupt.

    Returns keys: the ``MANIFEST_COLUMNS`` present, the identity fields (experiment, run,
    env, task, dataset, algorithm, critic), protocol fields (train_steps, eval_interval,
    eval_episodes, success_timing, ogbench_version, ...) and ``tags`` (a dict).
    """
    path = Path(run_dir) / "run.json"
    if not path.exists():
        return None
    try:
        with open(path) as f:
            raw = json.load(f)
        if not isinstance(raw, dict):
            raise ValueError("top level is not an object")
    except (OSError, ValueError) as e:
        _warn(f"skipping manifest {path}: unreadable JSON ({e})")
        return None
    out: dict = {}
    for key in ("experiment", "run", "env", "task", "dataset", "algorithm", "critic",
                "status", "git_commit", "device", "flops_per_update", "wall_time_s",
                "updates_per_s"):
        if key in raw and not isinstance(raw[key], (dict, list)):
            out[key] = raw[key]
    if "step" in raw:
        out["manifest_step"] = raw["step"]
    params = raw.get("params")
    if isinstance(params, Mapping):
        out["params_total"] = params.get("total")
        out["params_critic"] = params.get("critic_total")
    protocol = raw.get("protocol")
    if isinstance(protocol, Mapping):
        for key, value in protocol.items():
            if not isinstance(value, (dict, list)):
                out[key] = value
    tags = raw.get("tags")
    out["tags"] = dict(tags) if isinstance(tags, Mapping) else {}
    seeds = raw.get("seeds")
    if isinstance(seeds, list):
        out["seeds"] = seeds
    return out


# --------------------------------------------------------------------------- eval.csv
def load_eval(run_dir: str | os.PathLike) -> pd.DataFrame | None:
    """eval.csv of one run as a frame with numeric columns coerced; None if unusable.

    A last line without its newline (a writer caught mid-row) is dropped with a warning;
    any other defect skips the whole file with a warning naming it.
    """
    path = Path(run_dir) / "eval.csv"
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        _warn(f"skipping {path}: cannot read ({e})")
        return None
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n")
        _warn(f"{path}: dropping an incomplete last line")
        data = data[:cut + 1] if cut >= 0 else b""
    if not data.strip():
        _warn(f"skipping {path}: empty file")
        return None
    try:
        text = data.decode("utf-8")
        rows = list(csv.reader(io.StringIO(text)))
        width = len(rows[0])
        for i, row in enumerate(rows[1:], start=1):
            if row and len(row) != width:
                raise ValueError(f"data row {i} has {len(row)} fields, the header {width}")
        df = pd.read_csv(io.StringIO(text), index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            csv.Error, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _warn(f"skipping {path}: unparseable CSV ({first})")
        return None
    missing = [c for c in REQUIRED_EVAL_COLUMNS if c not in df.columns]
    if missing:
        _warn(f"skipping {path}: missing required column(s) {', '.join(missing)}")
        return None
    if df.empty:
        _warn(f"skipping {path}: no evaluations yet (header only)")
        return None
    for col in _NUMERIC_EVAL_COLUMNS:
        if col not in df.columns:
            continue
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna() & raw.notna()
        if col in ("success", "step", "seed"):
            bad = bad | num.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            _warn(f"skipping {path}: non-numeric {col!r} value {raw.iloc[row]!r} "
                  f"(data row {row + 1})")
            return None
        df[col] = num
    if ((df["success"] < 0) | (df["success"] > 1)).any():
        _warn(f"skipping {path}: 'success' outside [0, 1] (it must be a fraction)")
        return None
    for col in ("env", "task", "algorithm", "critic"):
        df[col] = df[col].astype(str)
    df["seed"] = df["seed"].astype(np.int64)
    df["step"] = df["step"].astype(np.int64)
    return df


# --------------------------------------------------------------------------- all runs
def load_results(results_dir: str | os.PathLike, *, add_method: bool = True,
                 method_by: Sequence[str] | None = None) -> pd.DataFrame:
    """Load every run under ``results_dir`` into one tidy frame.

    One row per (run dir, seed, evaluation): the eval.csv columns, one column per tag
    (CSV tag columns, plus run.json ``tags`` the CSV lacks), the manifest columns
    (``params_total``, ``params_critic``, ``flops_per_update``, ``device``,
    ``wall_time_s``, ``status``, ``git_commit``, protocol fields such as
    ``eval_interval``), ``run_dir`` (path relative to ``results_dir``), ``task_key``
    (``env/task``) and, unless ``add_method=False``, ``method`` (see ``method_labels``).

    Raises:
        AnalysisError: ``results_dir`` does not exist or is not a directory.
    Returns an empty frame (with the required columns) when nothing usable was found.
    """
    root = Path(results_dir)
    if not root.exists():
        raise AnalysisError(f"results directory {str(root)!r} does not exist")
    if not root.is_dir():
        raise AnalysisError(f"{str(root)!r} is not a directory")
    frames = []
    for run_dir in find_run_dirs(root):
        manifest = load_manifest(run_dir)
        ev = load_eval(run_dir)
        if ev is None:
            if not (run_dir / "eval.csv").exists() and manifest is not None:
                _warn(f"skipping {run_dir}: run.json but no eval.csv (no evaluations yet)")
            continue
        rel = os.path.relpath(run_dir, root)
        ev.insert(0, "run_dir", "." if rel == "." else Path(rel).as_posix())
        ev["has_manifest"] = manifest is not None
        if manifest is not None:
            tags = manifest.pop("tags", {})
            manifest.pop("seeds", None)
            for key, value in {**manifest, **tags}.items():
                if key not in ev.columns:
                    ev[key] = value
                elif ev[key].isna().all() and value is not None:
                    ev[key] = value
        frames.append(ev)
    if not frames:
        return pd.DataFrame(columns=["run_dir", *REQUIRED_EVAL_COLUMNS, "task_key"])
    df = pd.concat(frames, ignore_index=True, sort=False)
    for col in ("params_total", "params_critic", "flops_per_update", "wall_time_s",
                "train_steps", "eval_interval", "eval_episodes"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    df["task_key"] = df["env"].astype(str) + "/" + df["task"].astype(str)
    if add_method:
        df = add_method_column(df, by=method_by)
    return df


def tag_columns(df: pd.DataFrame) -> list[str]:
    """Columns of a loaded frame that are tags (swept values), in frame order."""
    return [c for c in df.columns
            if c not in _KNOWN and c not in ("score", "n_evals", "last_step", "complete",
                                              "scored_steps")]


def natural_key(s) -> list:
    """Sort key that orders ``task2`` before ``task10`` and ``K=4`` before ``K=16``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s))]


def _fmt_value(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def method_labels(df: pd.DataFrame, exclude: Iterable[str] = (),
                  by: Sequence[str] | None = None) -> pd.Series:
    """A human-readable method label per row.

    Default (``by=None``): ``critic`` (``algorithm:critic`` when several algorithms are
    present) followed by ``(tag=value, ...)`` (tag names shortened by
    ``TAG_ABBREVIATIONS``: ``K`` = critic_flow_steps) for every tag that varies among the
    runs of that algorithm and critic, except task-identifying tags (``TASK_TAGS``) and those
    in ``exclude`` (e.g. the x axis of a scaling plot). With ``by``: the values of those
    columns joined by ``/``.
    """
    if df.empty:
        return pd.Series([], dtype=object, index=df.index)
    if by:
        missing = [c for c in by if c not in df.columns]
        if missing:
            raise AnalysisError(f"cannot label methods by missing column(s) {missing}")
        return df[list(by)].astype(str).agg("/".join, axis=1)
    exclude = set(exclude) | set(TASK_TAGS)
    multi_algo = df["algorithm"].nunique() > 1
    tags = [c for c in tag_columns(df) if c not in exclude]
    labels = pd.Series("", index=df.index, dtype=object)
    for (algo, critic), group in df.groupby(["algorithm", "critic"], sort=False):
        base = f"{algo}:{critic}" if multi_algo else str(critic)
        varying = [c for c in tags if group[c].astype(str).nunique(dropna=False) > 1]
        if not varying:
            labels.loc[group.index] = base
            continue

        def label(row, base=base) -> str:
            items = [f"{TAG_ABBREVIATIONS.get(k, k)}={_fmt_value(v)}" for k, v in row.items()
                     if not (v is None or (isinstance(v, float) and math.isnan(v)))]
            return f"{base} ({', '.join(items)})" if items else base

        labels.loc[group.index] = group[varying].apply(label, axis=1)
    return labels


def add_method_column(df: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Return a copy of ``df`` with a ``method`` column (see ``method_labels``)."""
    out = df.copy()
    out["method"] = method_labels(out, by=by)
    return out


# --------------------------------------------------------------------------- score dict
def to_score_dict(final: pd.DataFrame, *, method_col: str = "method",
                  task_col: str = "task_key", score_col: str = "score",
                  tasks: Sequence[str] | None = None,
                  methods: Sequence[str] | None = None,
                  missing: str = "drop") -> tuple[dict[str, np.ndarray], list[str]]:
    """rliable's data contract from per-run final scores.

    Args:
        final: one row per (method, task, seed) with a score (``stats.final_scores``).
        tasks: the task axis, in order; default: every task in ``final``, sorted.
        methods: methods to include, in order; default: all, sorted.
        missing: a method lacking some task is dropped with a warning (``"drop"``) or is
            an error (``"raise"``).
    Returns:
        ``({method: scores (num_runs, num_tasks)}, tasks)``. Runs are seeds, sorted by
        seed within each task. When a method has different seed counts on different
        tasks, every task is truncated to the smallest count (with a warning), since the
        matrix must be rectangular.
    """
    if final.empty:
        return {}, []
    tasks = list(tasks) if tasks is not None else sorted(final[task_col].unique())
    methods = list(methods) if methods is not None else sorted(final[method_col].unique())
    out: dict[str, np.ndarray] = {}
    for m in methods:
        sub = final[final[method_col] == m]
        have = set(sub[task_col])
        lacking = [t for t in tasks if t not in have]
        if lacking:
            msg = (f"method {m!r} has no runs on task(s) {', '.join(lacking)}; "
                   "it is left out of the score matrix")
            if missing == "raise":
                raise AnalysisError(msg)
            _warn(msg)
            continue
        cols = []
        for t in tasks:
            cols.append(sub[sub[task_col] == t].sort_values("seed")[score_col].to_numpy(float))
        n = min(len(c) for c in cols)
        if any(len(c) != n for c in cols):
            _warn(f"method {m!r} has unequal seed counts across tasks "
                  f"({', '.join(f'{t}: {len(c)}' for t, c in zip(tasks, cols))}); "
                  f"using the first {n} seeds of each task")
        out[m] = np.stack([c[:n] for c in cols], axis=1)
    return out, tasks
