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
import hashlib
import io
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from floq import columns as _columns  # the shared column names (standard library only, no jax)

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
    "load_train_health",
    "OPTIONAL_EVAL_COLUMNS",
    "PHASES",
    "padded_matrix",
    "warn_missing_seeds",
]


class AnalysisError(ValueError):
    """Bad analysis input; the message is one line meant for the user."""


# eval.csv columns that are always present (CONTRACTS.md); every other column is a tag.
EVAL_COLUMNS = tuple(c for c in _columns.EVAL_COLUMNS if c not in _columns.OPTIONAL_EVAL_COLUMNS)
# Optional eval.csv columns (the trainer adds them; older CSVs lack them): the phase of the
# evaluation and the environment steps taken online. Absent: every row is offline, 0 steps.
OPTIONAL_EVAL_COLUMNS = _columns.OPTIONAL_EVAL_COLUMNS
PHASES = ("offline", "online")
# Without these a row cannot be placed in a score matrix.
REQUIRED_EVAL_COLUMNS = ("env", "task", "algorithm", "critic", "seed", "step", "success")
_NUMERIC_EVAL_COLUMNS = ("seed", "step", "success", "return", "episode_length", "wall_time",
                         "eval_episodes", "train_steps")

# Columns taken from run.json (flattened). Protocol fields keep their own names.
MANIFEST_COLUMNS = (
    "status", "git_commit", "device", "params_total", "params_critic", "flops_per_update",
    "wall_time_s", "updates_per_s", "manifest_step", "eval_interval", "r_min", "r_max",
    "time_embedding", "discount", "budget_note", "status_reason", "status_step", "eval_starts",
    "load_cpus", "loadavg_mean", "loadavg_max",
)
# run.json protocol fields that the analysis does not know keep a ``protocol_`` prefix, so
# they are never mistaken for swept values (tags).
MANIFEST_PREFIX = "protocol_"
# Fields that must agree for numbers to be comparable in one table (see tables.py).
PROTOCOL_FIELDS = ("train_steps", "eval_interval", "eval_episodes", "success_timing",
                   "ogbench_version", "phase", "eval_starts")
# run.json ``eval_starts`` (floq.evaluate.reset_seed): runs without it reset episode e of
# seed s from the same state at every evaluation (``s * 100003 + e``); a table never mixes
# the two rules (``protocol_of`` refuses, ``split_by_protocol`` separates them).
# Tags that identify the task, not the method; never part of a method label.
TASK_TAGS = ("task_id", "task", "env", "dataset", "seed")
# Short names used in method labels (the CSV columns keep their full names).
TAG_ABBREVIATIONS = {"critic_flow_steps": "K", "critic_width": "width",
                     "critic_depth": "depth"}
# Columns added by this module.
INTERNAL_COLUMNS = ("run_dir", "run_id", "task_key", "method", "has_manifest", "file_row",
                    "nonfinite_loss", "member_diverged", "config_id", "config_fields", "config_derived",
                    "tag_names")
# A run's configuration apart from its seeds and task (see ``configurations``) is run.json's
# ``seedless_config_hash`` and ``config_fields`` where recorded, else the settings every
# run.json states (``_derived_config``: protocol, describe, tags), less these texts.
_NOT_DERIVED = {"success_rule", "budget_note"}
# Columns added by stats.final_scores (never tags).
FINAL_COLUMNS = ("score", "n_evals", "last_step", "complete", "scored_steps", "compute_total",
                 "exclude_kind", "exclude_reason", "spacing_ok", "scored_env_steps")

_KNOWN = (set(EVAL_COLUMNS) | set(OPTIONAL_EVAL_COLUMNS) | set(MANIFEST_COLUMNS)
          | set(INTERNAL_COLUMNS) | set(FINAL_COLUMNS))


def _warn(msg: str) -> None:
    warnings.warn(msg, UserWarning, stacklevel=3)


# --------------------------------------------------------------------------- discovery
# `floq run --force` moves the run it replaces to RUN.replaced-<time>: kept, never analysed.
REPLACED = ".replaced-"


def replaced_run_dirs(results_dir: str | os.PathLike) -> list[Path]:
    """Run directories under ``results_dir`` that ``floq run --force`` moved aside."""
    out = []
    for dirpath, dirnames, _ in os.walk(Path(results_dir)):
        out += [Path(dirpath) / d for d in dirnames if REPLACED in d]
        dirnames[:] = [d for d in dirnames if d != "checkpoints" and not d.startswith(".")
                       and REPLACED not in d]
    return sorted(out)


def find_run_dirs(results_dir: str | os.PathLike) -> list[Path]:
    """Every directory under ``results_dir`` (itself included) holding eval.csv or run.json.

    ``checkpoints/`` folders, hidden folders and runs that ``floq run --force`` moved aside
    (``RUN.replaced-<time>``, see ``replaced_run_dirs``) are not descended into. Sorted by path.
    """
    root = Path(results_dir)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d != "checkpoints" and not d.startswith(".")
                             and REPLACED not in d)
        if "eval.csv" in filenames or "run.json" in filenames:
            found.append(Path(dirpath))
    return sorted(found)


# --------------------------------------------------------------------------- manifest
_STATUS_KEYS = ("state", "status", "value")


def load_manifest(run_dir: str | os.PathLike) -> dict | None:
    """run.json flattened to the scalar columns the analysis uses; None if absent/corrupt.

    Returns keys: the ``MANIFEST_COLUMNS`` present, the identity fields (experiment, run,
    env, task, dataset, algorithm, critic), protocol fields (train_steps, eval_interval,
    eval_episodes, success_timing, ogbench_version, ...; unknown ones prefixed
    ``protocol_``), ``tags`` (a dict) and ``seeds`` (a list, when recorded). ``status`` is
    ``running | done | diverged | preempted | failed``; a status object
    (``{"state": ..., "step": ..., "reason": ...}``) or top-level ``reason``/``status_reason``
    fill ``status_step``/``status_reason``.
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
    status = raw.get("status")
    if isinstance(status, Mapping):
        state = next((status[k] for k in _STATUS_KEYS if k in status), None)
        if state is not None:
            out["status"] = str(state)
        if status.get("reason") is not None:
            out["status_reason"] = str(status["reason"])
        if status.get("step") is not None:
            out["status_step"] = status["step"]
    for key in ("status_reason", "reason", "failure", "error"):
        if "status_reason" not in out and isinstance(raw.get(key), (str, int, float)):
            out["status_reason"] = str(raw[key])
    if "status_step" not in out and isinstance(raw.get("status_step"), (int, float)):
        out["status_step"] = raw["status_step"]
    if isinstance(out.get("status"), str):
        out["status"] = out["status"].strip().lower()
    if "step" in raw:
        out["manifest_step"] = raw["step"]
    load = raw.get("load")  # the machine's load while it trained (older runs lack it)
    if isinstance(load, Mapping):
        out.update({"load_cpus": load.get("cpus"), "loadavg_mean": load.get("loadavg_mean"),
                    "loadavg_max": load.get("loadavg_max")})
    params = raw.get("params")
    if isinstance(params, Mapping):
        out["params_total"] = params.get("total")
        out["params_critic"] = params.get("critic_total")
    protocol = raw.get("protocol")
    known = set(EVAL_COLUMNS) | set(MANIFEST_COLUMNS)
    if isinstance(protocol, Mapping):
        for key, value in protocol.items():
            if not isinstance(value, (dict, list)):
                out[key if key in known else f"{MANIFEST_PREFIX}{key}"] = value
    tags = raw.get("tags")
    out["tags"] = dict(tags) if isinstance(tags, Mapping) else {}
    # the sweep's own axes for this run (eval.csv also records settings that were not swept)
    out["tag_names"] = json.dumps(sorted(str(k) for k in out["tags"]))
    data = data_digest(raw)
    if isinstance(raw.get("seedless_config_hash"), str):
        out["config_id"] = raw["seedless_config_hash"] + (f"/{data}" if data else "")
    if isinstance(raw.get("config_fields"), Mapping):
        out["config_fields"] = json.dumps(raw["config_fields"], sort_keys=True, default=str)
    derived = _derived_config(raw)
    if data:
        derived["data_sha256"] = data
    out["config_derived"] = json.dumps(derived, sort_keys=True, default=str)
    seeds = raw.get("seeds")
    if isinstance(seeds, list):
        out["seeds"] = seeds
    if _is_rlpd(raw):
        out["_rlpd"] = True
    return out


def data_digest(raw: Mapping) -> str | None:
    """The first 12 hex digits of the sha256 of the dataset files' sha256s (run.json
    ``data_files``), or None when any file is unhashed (OGBench downloads, shard folders). One
    configuration's runs on one task trained on different bytes (a dataset generated again on
    another machine need not be bitwise the same: results/cpu_algorithms' and
    results/cpu_critics' cube-single datasets, same code and packages, differ) are two
    methods, never seeds of one."""
    files = raw.get("data_files")
    if not isinstance(files, list) or not files:
        return None
    shas = [f.get("sha256") if isinstance(f, Mapping) else None for f in files]
    if not all(isinstance(x, str) and x for x in shas):
        return None
    return hashlib.sha256("".join(sorted(shas)).encode()).hexdigest()[:12]


def _is_rlpd(raw: Mapping) -> bool:
    """Whether a run is RLPD: SAC trained online from its first steps with balanced
    sampling (gin/algorithms/rlpd.gin, which run.json's ``gin_files`` names; or, without it,
    SAC with an online phase and balanced sampling). Such runs are labelled ``rlpd``."""
    if str(raw.get("algorithm", "")).lower() != "sac":
        return False
    files = raw.get("gin_files")
    if isinstance(files, list) and any(Path(str(f)).name == "rlpd.gin" for f in files):
        return True
    proto = raw.get("protocol") if isinstance(raw.get("protocol"), Mapping) else {}
    try:
        online = float(proto.get("online_steps") or 0) > 0
    except (TypeError, ValueError):
        online = False
    return online and proto.get("balanced_sampling") is True


def _derived_config(raw: Mapping) -> dict:
    """The settings any run.json states, by the names the tags use: protocol fields
    (batch_size, discount, train_steps, ...), ``describe`` (actor_width, alpha,
    critic_flow_steps, ...) and the tags that do not identify the task."""
    out: dict = {}
    for section in ("protocol", "describe", "tags"):
        part = raw.get(section)
        if not isinstance(part, Mapping):
            continue
        for k, v in part.items():
            if k in _NOT_DERIVED or (section == "tags" and k in TASK_TAGS):
                continue
            if isinstance(v, (str, int, float, bool)) or v is None:
                out[str(k)] = v
    for k in ("algorithm", "critic"):
        if isinstance(raw.get(k), str):
            out[k] = raw[k]
    return out


# --------------------------------------------------------------------------- eval.csv
def _rows_text(rows: Sequence[int], limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" (+{len(rows) - limit} more)" if len(rows) > limit else "")


def load_eval(run_dir: str | os.PathLike) -> pd.DataFrame | None:
    """eval.csv of one run as a frame with numeric columns coerced; None if unusable.

    A last line without its newline (a writer caught mid-row) is dropped with a warning; a
    row whose ``success``, ``step`` or ``seed`` cell is empty or NaN is dropped (that row
    only) with a warning naming it; any other defect (unparseable CSV, text where a number
    belongs, success outside [0, 1]) skips the whole file with a warning naming it.
    Adds ``file_row`` (the row's position in the file) and, for CSVs written before they
    existed, ``phase='offline'`` and ``env_steps=0``.
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
    df.insert(0, "file_row", np.arange(len(df), dtype=np.int64))
    drop = np.zeros(len(df), bool)
    for col in _NUMERIC_EVAL_COLUMNS + ("env_steps",):
        if col not in df.columns:
            continue
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna() & raw.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            _warn(f"skipping {path}: non-numeric {col!r} value {raw.iloc[row]!r} "
                  f"(data row {row + 1})")
            return None
        if col in ("success", "step", "seed"):
            empty = num.isna().to_numpy()
            if empty.any():
                _warn(f"{path}: dropping {int(empty.sum())} row(s) with an empty or NaN "
                      f"{col!r} (data row(s) {_rows_text(list(np.flatnonzero(empty) + 1))})")
                drop |= empty
        df[col] = num
    if drop.any():
        df = df[~drop].reset_index(drop=True)
        if df.empty:
            _warn(f"skipping {path}: no row with a usable success, step and seed")
            return None
    if ((df["success"] < 0) | (df["success"] > 1)).any():
        _warn(f"skipping {path}: 'success' outside [0, 1] (it must be a fraction)")
        return None
    for col in ("env", "task", "algorithm", "critic"):
        df[col] = df[col].astype(str)
    df["seed"] = df["seed"].astype(np.int64)
    df["step"] = df["step"].astype(np.int64)
    if "phase" in df.columns:
        phase = df["phase"].fillna("offline").astype(str).str.strip().str.lower()
        phase = phase.replace("", "offline")
        unknown = sorted(set(phase) - set(PHASES))
        if unknown:
            _warn(f"{path}: dropping rows of unknown phase(s) {', '.join(map(repr, unknown))} "
                  f"(known: {', '.join(PHASES)})")
            keep = phase.isin(PHASES).to_numpy()
            df, phase = df[keep].reset_index(drop=True), phase[keep].reset_index(drop=True)
            if df.empty:
                return None
        df["phase"] = phase.to_numpy()
    else:
        df["phase"] = "offline"
    if "env_steps" in df.columns:
        df["env_steps"] = df["env_steps"].fillna(0)
    else:
        df["env_steps"] = 0
    return df


# --------------------------------------------------------------------------- train.csv
def load_train_health(run_dir: str | os.PathLike) -> dict:
    """Non-finite losses in ``train.csv``: ``{(task or None, seed or None): reason}``.

    A loss column is one whose name contains ``loss`` (``critic/loss``,
    ``actor/bc_flow_loss``, ...). Empty cells (a metric not logged yet) are not failures;
    ``nan``/``inf`` are. The key's task is None when train.csv has no ``task`` column, its
    seed None when it has no ``seed`` column (the reason then applies to every seed).
    Returns ``{}`` when the file is absent or unreadable.
    """
    path = Path(run_dir) / "train.csv"
    if not path.exists():
        return {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                return {}
            losses = [i for i, c in enumerate(header) if "loss" in c.lower()]
            i_seed = header.index("seed") if "seed" in header else None
            i_task = header.index("task") if "task" in header else None
            i_step = header.index("step") if "step" in header else None
            out: dict = {}
            for row in reader:
                for i in losses:
                    if i >= len(row):
                        continue
                    cell = row[i].strip()
                    if not cell:
                        continue
                    try:
                        value = float(cell)
                    except ValueError:
                        continue
                    if math.isfinite(value):
                        continue
                    task = row[i_task] if i_task is not None and i_task < len(row) else None
                    seed = None
                    if i_seed is not None and i_seed < len(row):
                        try:
                            seed = int(float(row[i_seed]))
                        except ValueError:
                            seed = None
                    step = row[i_step] if i_step is not None and i_step < len(row) else "?"
                    out.setdefault((task, seed),
                                   f"non-finite {header[i]} ({cell}) at step {step} in train.csv")
            return out
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        _warn(f"{path}: cannot check losses for divergence ({e})")
        return {}


def _resolve_duplicates(ev: pd.DataFrame, run_dir: Path) -> pd.DataFrame:
    """One row per (task, seed, phase, step): the last written (stable by file order)."""
    key = ["task", "seed", "phase", "step"]
    ev = ev.sort_values("file_row", kind="stable")
    dup = ev.duplicated(key, keep=False)
    if not dup.any():
        return ev
    values = [c for c in ("success", "return", "episode_length") if c in ev.columns]
    disagree = []
    for k, g in ev[dup].groupby(key, sort=True):
        vals = g[values].to_numpy(float)
        if not np.all(np.isclose(vals, vals[-1], rtol=0, atol=1e-12, equal_nan=True)):
            disagree.append((k, g["success"].tolist()))
    n = int(ev[dup].groupby(key).ngroups)
    if disagree:
        (task, seed, phase, step), succ = disagree[0]
        _warn(f"{run_dir / 'eval.csv'}: {n} (task, seed, step) evaluation(s) appear more than "
              f"once (a resumed run?) and {len(disagree)} disagree, e.g. {task} seed {seed} "
              f"step {step}: success {' then '.join(f'{v:g}' for v in succ)}; keeping the "
              "last-written row of each")
    return ev.drop_duplicates(key, keep="last")


def load_diverged_members(run_dir: str | os.PathLike) -> dict:
    """run.json ``diverged_members`` (members of a vmapped program that diverged and were
    frozen while the others trained on) as ``{(task, seed): reason}``; empty when none or
    unreadable (an unreadable run.json is reported by ``load_manifest``)."""
    path = Path(run_dir) / "run.json"
    try:
        with open(path) as f:
            raw = json.load(f)
        listed = raw.get("diverged_members") or [] if isinstance(raw, dict) else []
    except (OSError, ValueError):
        return {}
    out = {}
    for d in listed if isinstance(listed, list) else []:
        if not isinstance(d, Mapping) or "seed" not in d:
            continue
        try:
            seed = int(d["seed"])
        except (TypeError, ValueError):
            continue
        at = f" at step {d['step']}" if d.get("step") is not None else ""
        what = f": {d['quantity']} non-finite" if d.get("quantity") else ""
        out[(d.get("task"), seed)] = (f"member diverged{at}{what} (run.json diverged_members; the "
                                      "program's other members are scored)")
    return out


# --------------------------------------------------------------------------- all runs
def results_base(results_dirs) -> Path:
    """The folder run dirs are named relative to: the one results folder, or the deepest folder
    holding all of several (so that ``base / run_dir`` is always the run's path)."""
    roots = [Path(results_dirs)] if isinstance(results_dirs, (str, os.PathLike)) else [Path(r) for r in results_dirs]
    if len(roots) == 1:
        return roots[0]
    return Path(os.path.commonpath([os.path.abspath(r) for r in roots]))


FILTER_SYNTAX = ("KEY=VALUE, KEY=V1,V2 (any of the values) or KEY!=V1,V2 (none of them), "
                 "e.g. critic=floq, algorithm=fql,rebrac, critic!=iqn")


def parse_filters(items: Sequence[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """``--filter`` items -> ``[(key, op, values)]`` with ``op`` ``"="`` (keep rows whose
    ``key`` is any of ``values``) or ``"!="`` (keep rows whose ``key`` is none of them).

    ``KEY=VALUE``, ``KEY=V1,V2`` (a set) and ``KEY!=V1,V2`` (an exclusion); values are
    separated by commas and compared as text or as numbers (``apply_filters``). A malformed
    item (no ``=``, an empty key or value, a second ``=``) is one clear AnalysisError."""
    out = []
    for item in items:
        text = str(item)
        key, sep, value = text.partition("=")
        op = "="
        if key.endswith("!"):
            key, op = key[:-1], "!="
        key = key.strip()
        values = tuple(v.strip() for v in value.split(","))
        if (not sep or not key or "=" in value or "!" in key or any(not v for v in values)
                or any(c.isspace() for c in key)):
            raise AnalysisError(f"--filter takes {FILTER_SYNTAX}; got {text!r}")
        out.append((key, op, values))
    return out


def _filter_parts(item) -> tuple[str, str, tuple[str, ...]]:
    """A filter as ``(key, op, values)``; a plain ``(key, value)`` pair means ``key=value``."""
    if len(item) == 2:
        return str(item[0]), "=", (str(item[1]),)
    key, op, values = item
    return str(key), op, tuple(str(v) for v in ((values,) if isinstance(values, str) else values))


def filter_text(item) -> str:
    """A filter as the user would write it: ``algorithm=fql,rebrac``, ``critic!=iqn``."""
    key, op, values = _filter_parts(item)
    return f"{key}{op}{','.join(values)}"


def _same_value(column: pd.Series, value: str) -> pd.Series:
    """Rows whose value equals ``value`` as text, or as a number when both are numbers
    (``4`` matches 4 and 4.0)."""
    text = column.astype(str)
    hit = text == value
    try:
        number = float(value)
    except ValueError:
        return hit
    return hit | (pd.to_numeric(column, errors="coerce") == number)


def apply_filters(df: pd.DataFrame, filters: Sequence) -> pd.DataFrame:
    """Keep the rows that pass every filter (``parse_filters``' ``(key, op, values)``, or a
    plain ``(key, value)`` pair); a column no run has is an error that names the columns
    there are."""
    for item in filters:
        key, op, values = _filter_parts(item)
        if key not in df.columns:
            known = ", ".join(sorted(c for c in tag_columns(df)) + ["algorithm", "critic", "env",
                                                                    "task", "seed", "status"])
            raise AnalysisError(f"--filter {filter_text(item)}: no run has a column {key!r} "
                                f"(some there are: {known})")
        hit = pd.Series(False, index=df.index)
        for v in values:
            hit |= _same_value(df[key], v)
        df = df[~hit if op == "!=" else hit]
    return df.reset_index(drop=True)


def load_results(results_dir, *, add_method: bool = True,
                 method_by: Sequence[str] | None = None,
                 filters: Sequence = ()) -> pd.DataFrame:
    """Load every run under ``results_dir`` into one tidy frame.

    One row per (run dir, task, seed, phase, evaluation): the eval.csv columns, one column
    per tag (CSV tag columns, plus run.json ``tags`` the CSV lacks), the manifest columns
    (``params_total``, ``params_critic``, ``flops_per_update``, ``device``,
    ``wall_time_s``, ``status``, ``git_commit``, protocol fields such as
    ``eval_interval``), ``run_dir`` (path relative to ``results_dir``), ``run_id`` (the
    run dir, plus ``#<task>`` when one directory holds several tasks: every (run dir, task)
    is a run of its own), ``task_key`` (``env/task``), ``nonfinite_loss`` (why train.csv
    says the seed diverged, else empty), ``member_diverged`` (why run.json's
    ``diverged_members`` lists this (task, seed), else empty: only that member of a
    program is excluded) and, unless ``add_method=False``, ``method`` (see
    ``method_labels``).

    Warnings name: run dirs without run.json, seeds run.json lists that eval.csv lacks, and
    duplicate (task, seed, step) rows that disagree (the last-written row is kept).

    ``results_dir`` may be a list of folders: their runs load as one study, each ``run_dir``
    relative to the deepest folder holding them all (``results_base``). ``filters`` keeps the
    rows that pass them (``apply_filters``: a column equal to one of a set of values, or to
    none of them), before method labels are made.

    Raises:
        AnalysisError: ``results_dir`` does not exist or is not a directory.
    Returns an empty frame (with the required columns) when nothing usable was found.
    """
    roots = [Path(results_dir)] if isinstance(results_dir, (str, os.PathLike)) else [Path(r) for r in results_dir]
    if not roots:
        raise AnalysisError("no results directory given")
    for root in roots:
        if not root.exists():
            raise AnalysisError(f"results directory {str(root)!r} does not exist")
        if not root.is_dir():
            raise AnalysisError(f"{str(root)!r} is not a directory")
    base = results_base(roots)
    run_dirs, seen = [], set()
    for root in roots:
        replaced = replaced_run_dirs(root)
        if replaced:
            _warn(f"not analysing {len(replaced)} run dir(s) that floq run --force moved aside, e.g. "
                  f"{replaced[0]} (rename one to analyse it)")
        for run_dir in find_run_dirs(root):  # a folder given twice (or inside another) counts once
            if os.path.realpath(run_dir) not in seen:
                seen.add(os.path.realpath(run_dir))
                run_dirs.append(run_dir)
    root = base
    frames = []
    for run_dir in run_dirs:
        manifest = load_manifest(run_dir)
        ev = load_eval(run_dir)
        if ev is None:
            if not (run_dir / "eval.csv").exists() and manifest is not None:
                _warn(f"skipping {run_dir}: run.json but no eval.csv (no evaluations yet)")
            continue
        rel = os.path.relpath(os.path.abspath(run_dir), os.path.abspath(root)) if len(roots) > 1 \
            else os.path.relpath(run_dir, root)
        rel = "." if rel == "." else Path(rel).as_posix()
        ev.insert(0, "run_dir", rel)
        ev = _resolve_duplicates(ev, run_dir)
        multi = ev["task"].nunique() > 1
        ev.insert(1, "run_id", (rel + "#" + ev["task"]) if multi else rel)
        ev["has_manifest"] = manifest is not None
        if manifest is None:
            if not (run_dir / "run.json").exists():
                _warn(f"{run_dir}: no run.json; its status, parameter counts, FLOPs and "
                      "eval_interval are unknown, and completeness is judged from "
                      "eval.csv's last step vs train_steps")
        else:
            tags = manifest.pop("tags", {})
            seeds = manifest.pop("seeds", None)
            if manifest.pop("_rlpd", False):  # SAC online from the start: RLPD (rlpd.gin)
                ev["algorithm"] = "rlpd"
                manifest["algorithm"] = "rlpd"
            if seeds:
                for task, g in ev.groupby("task", sort=True):
                    lacking = sorted(set(int(s) for s in seeds if isinstance(s, (int, float)))
                                     - set(g["seed"]))
                    if lacking:
                        where = f" ({task})" if multi else ""
                        _warn(f"{run_dir}: run.json lists seed(s) "
                              f"{', '.join(map(str, sorted(seeds)))} but eval.csv{where} has "
                              f"no rows for seed(s) {', '.join(map(str, lacking))}")
            for key, value in {**manifest, **tags}.items():
                if key in ("task", "env") and multi:
                    continue
                if key not in ev.columns:
                    ev[key] = value
                elif ev[key].isna().all() and value is not None:
                    ev[key] = value
        health = load_train_health(run_dir)
        reasons = []
        for task, seed in zip(ev["task"], ev["seed"]):
            r = (health.get((task, seed)) or health.get((None, seed))
                 or health.get((task, None)) or health.get((None, None)) or "")
            reasons.append(r)
        ev["nonfinite_loss"] = reasons
        members = load_diverged_members(run_dir)
        ev["member_diverged"] = [members.get((task, seed)) or members.get((None, seed)) or ""
                                 for task, seed in zip(ev["task"], ev["seed"])]
        frames.append(ev)
    if not frames:
        return pd.DataFrame(columns=["run_dir", "run_id", *REQUIRED_EVAL_COLUMNS, "task_key"])
    df = pd.concat(frames, ignore_index=True, sort=False)
    for col in ("params_total", "params_critic", "flops_per_update", "wall_time_s",
                "train_steps", "eval_interval", "eval_episodes", "env_steps", "load_cpus",
                "loadavg_mean", "loadavg_max"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    df["task_key"] = df["env"].astype(str) + "/" + df["task"].astype(str)
    df = fill_tags_from_config(df)
    if filters:
        df = apply_filters(df, filters)
        if df.empty:
            return pd.DataFrame(columns=["run_dir", "run_id", *REQUIRED_EVAL_COLUMNS, "task_key"])
    if add_method:
        df = add_method_column(df, by=method_by)
    return df


def tag_columns(df: pd.DataFrame) -> list[str]:
    """Columns of a loaded frame that are tags (swept values), in frame order."""
    return [c for c in df.columns
            if c not in _KNOWN and not str(c).startswith(MANIFEST_PREFIX)
            and not str(c).startswith("_")]


def natural_key(s) -> list:
    """Sort key that orders ``task2`` before ``task10`` and ``K=4`` before ``K=16``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s))]


def _missing(v) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)) or v is pd.NA


def _fmt_value(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def one_to_one(frame: pd.DataFrame, a: str, b: str) -> bool:
    """True when columns ``a`` and ``b`` are recorded on every row of ``frame`` and each value
    of one goes with exactly one value of the other (they partition the rows the same way)."""
    pair = frame[[a, b]]
    if pair.isna().any().any():
        return False
    pair = pair.astype(str)
    return bool((pair.groupby(a)[b].nunique() == 1).all()
                and (pair.groupby(b)[a].nunique() == 1).all())


def _restates(group: pd.DataFrame, tag: str, varying: Sequence[str]) -> bool:
    """True when ``tag`` (not itself an abbreviated tag) is ``one_to_one`` on ``group`` with a
    varying abbreviated tag: a sweep over ``experiment.critic = [@floq_k4/FloqCritic(), ...]``
    records ``experiment_critic=floq_k4_FloqCritic`` beside ``critic_flow_steps=4``, and the
    label need only say ``K=4``. Dropping such a tag keeps labels distinct."""
    return tag not in TAG_ABBREVIATIONS and any(
        other != tag and other in TAG_ABBREVIATIONS and one_to_one(group, tag, other)
        for other in varying)


def method_labels(df: pd.DataFrame, exclude: Iterable[str] = (),
                  by: Sequence[str] | None = None) -> pd.Series:
    """A human-readable method label per row.

    Default (``by=None``): ``critic`` (``algorithm + critic``, e.g. ``rebrac + floq``, when
    several algorithms are present: the algorithm is then a method dimension) followed by ``(tag=value, ...)`` (tag names shortened by
    ``TAG_ABBREVIATIONS``: ``K`` = critic_flow_steps) for every tag that varies among the
    runs of that algorithm and critic (two or more distinct recorded values; a run that
    lacks the tag, e.g. one whose run.json is unreadable, does not make it vary), except
    task-identifying tags (``TASK_TAGS``), those in ``exclude`` (e.g. the x axis of a
    scaling plot) and a tag that only restates an abbreviated one (``_restates``:
    ``experiment_critic=floq_k4_FloqCritic`` beside ``K=4``; decided before ``exclude``, so
    excluding K also drops the tag that restates it). With ``by``: the values of those
    columns joined by ``/``.
    """
    if df.empty:
        return pd.Series([], dtype=object, index=df.index)
    if by:
        missing = [c for c in by if c not in df.columns]
        if missing:
            raise AnalysisError(f"cannot label methods by missing column(s) {missing}")

        def joined(row) -> str:  # a run without the column (a baseline without K) leaves it out
            parts = [_fmt_value(v) for v in row if not _missing(v)]
            return "/".join(parts) if parts else "-"

        return df[list(by)].apply(joined, axis=1).astype(object)
    exclude = set(exclude)
    multi_algo = df["algorithm"].nunique() > 1
    tags = [c for c in tag_columns(df) if c not in TASK_TAGS]
    labels = pd.Series("", index=df.index, dtype=object)
    for (algo, critic), group in df.groupby(["algorithm", "critic"], sort=False):
        base = f"{algo} + {critic}" if multi_algo else str(critic)
        varying = [c for c in tags if group[c].dropna().astype(str).nunique() > 1]
        varying = [c for c in varying
                   if c not in exclude and not _restates(group, c, varying)]
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
    """Return a copy of ``df`` with a ``method`` column (see ``method_labels``) that never
    pools runs of different configurations as seeds of one method.

    Runs of one label and task must share their configuration apart from seeds
    (``configurations``). With the default labels, where they do not, the settings in which
    they differ become columns of their own (for the rows concerned) and so part of the
    labels: ``monolithic (batch_size=32)`` and ``monolithic (batch_size=64)``. With ``by``
    the labels are the user's: pooling is refused. Raises AnalysisError (one line) when
    configurations would still be pooled."""
    out = df.copy()
    labels = method_labels(out, by=by)
    pooled = configurations(out, labels)
    for _ in range(3 if not by else 0):  # a setting made a column can reveal no new group, but
        if not pooled:                   # labels are recomputed, so check again
            break
        out = _separate(out, pooled)
        labels = method_labels(out)
        pooled = configurations(out, labels)
    if pooled:
        raise AnalysisError(_pooled_message(pooled[0], by, set(out.columns)))
    out["method"] = labels
    return out


# --------------------------------------------------------------------------- configurations
def _loads(text) -> dict:
    if not isinstance(text, str) or not text:
        return {}
    try:
        d = json.loads(text)
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def fill_tags_from_config(df: pd.DataFrame) -> pd.DataFrame:
    """A run that lacks a tag ran with the default value. Where its run.json states that
    setting under the tag's name (``describe``, ``protocol``), the tag takes that value: a run
    bound to ``BATCH_SIZE=64`` beside a default run then differs from it by batch_size 64 vs
    32, instead of 64 vs nothing (which no label would show)."""
    if "config_derived" not in df.columns:
        return df
    tags = [c for c in tag_columns(df) if c not in TASK_TAGS]
    derived = df["config_derived"].map(_loads)
    for t in tags:
        miss = df[t].isna()
        if not miss.any():
            continue
        vals = derived[miss].map(lambda d, t=t: d.get(t))
        vals = vals[vals.notna()]
        if len(vals):
            if df[t].dtype != object and not all(isinstance(v, (int, float)) for v in vals):
                df[t] = df[t].astype(object)
            df.loc[vals.index, t] = vals.to_numpy()
    return df


def configurations(df: pd.DataFrame, labels: pd.Series) -> list[dict]:
    """The (label, task) groups whose runs differ in configuration, not only in seed.

    A run's configuration is run.json's ``seedless_config_hash`` with ``config_fields``
    (every setting but seeds, task and plumbing) when every run of the group records them;
    otherwise the settings all of its runs' run.json files state (protocol, describe, tags;
    older runs). Run dirs without run.json state nothing and never differ. Returns, per
    group: ``label``, ``task``, ``runs`` (run ids), ``fields`` (the differing settings:
    ``(name, source, key)`` with ``source`` 'derived' or 'recorded') and ``values``
    (per run, ``{key: value}``)."""
    if df.empty or "config_derived" not in df.columns:
        return []
    runs = df.assign(_label=labels.to_numpy()).drop_duplicates("run_id")
    out = []
    for (label, task), g in runs.groupby(["_label", "task_key"], sort=True):
        if len(g) < 2:
            continue
        derived = [_loads(x) for x in g["config_derived"]]
        common = set.intersection(*(set(d) for d in derived))
        derived = [{k: d[k] for k in common} for d in derived]
        rec = g["config_fields"] if "config_fields" in g.columns else None
        recorded = ([_loads(x) for x in rec] if rec is not None and rec.notna().all()
                    and "config_id" in g.columns and g["config_id"].notna().all() else None)
        ids = (list(g["config_id"]) if recorded is not None
               else [json.dumps(d, sort_keys=True, default=str) for d in derived])
        if len(set(ids)) < 2:
            continue

        def differing(dicts):
            keys = sorted(set().union(*dicts))
            return [k for k in keys
                    if len({json.dumps(d.get(k, "\x00absent"), default=str) for d in dicts}) > 1]

        fields = [(k, "derived", k) for k in differing(derived)]
        if recorded is not None and not _separates([[d.get(k) for k in common] for d in derived], ids):
            keys = differing(recorded)
            every = sorted(set().union(*recorded))
            fields += [(_short_name(k, every), "recorded", k) for k in keys]
        values = [{**{("derived", k): v for k, v in d.items()},
                   **{("recorded", k): v for k, v in r.items()}}
                  for d, r in zip(derived, recorded or [{}] * len(derived))]
        out.append(dict(label=label, task=task, runs=list(g["run_id"]), fields=fields,
                        values=values))
    return out


def _separates(keys: list, ids: list) -> bool:
    """True when equal key values always go with equal ids."""
    seen: dict = {}
    for k, i in zip(keys, ids):
        k = json.dumps(k, default=str)
        if seen.setdefault(k, i) != i:
            return False
    return True


def _short_name(key: str, every: Sequence[str]) -> str:
    """The shortest dotted suffix of ``key`` that no other key ends with:
    ``algorithm.lr`` -> ``lr``, ``algorithm.actor_net.width`` -> ``actor_net.width``."""
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
        suffix = ".".join(parts[-n:])
        if not any(o != key and (o == suffix or o.endswith("." + suffix)) for o in every):
            return suffix
    return key


def _separate(df: pd.DataFrame, pooled: list[dict]) -> pd.DataFrame:
    """Make each differing setting of a pooled group a column (a tag), filled from every
    run.json of that algorithm and critic on that task, so that all its labels there name
    the same settings."""
    df = df.copy()
    reserved = set(_KNOWN) | set(TASK_TAGS) | {c for c in df.columns if c not in tag_columns(df)}
    runs = df.drop_duplicates("run_id").set_index("run_id")
    for grp in pooled:
        first = runs.loc[grp["runs"][0]]
        family = ((df["algorithm"] == first["algorithm"]) & (df["critic"] == first["critic"])
                  & (df["task_key"] == grp["task"]))
        for name, source, key in grp["fields"]:
            col = name if name not in reserved else f"config.{name}"
            if col not in df.columns:
                df[col] = pd.Series(np.nan, index=df.index, dtype=object)
            elif df[col].dtype != object:
                df[col] = df[col].astype(object)
            for run in df.loc[family, "run_id"].unique():
                text = runs.loc[run].get("config_derived" if source == "derived" else "config_fields")
                v = _loads(text).get(key)
                sel = family & (df["run_id"] == run)
                if v is not None and df.loc[sel, col].isna().all():
                    df.loc[sel, col] = [v] * int(sel.sum())
    return df


def _pooled_message(grp: dict, by: Sequence[str] | None, columns=()) -> str:
    names = [n for n, _, _ in grp["fields"]]
    shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    first = grp["fields"][0] if grp["fields"] else None
    examples = []
    if first is not None:
        for run, vals in zip(grp["runs"], grp["values"]):
            examples.append(f"{_fmt_value(vals.get((first[1], first[2])))}: {run}")
    detail = f" that differ in {shown} ({'; '.join(examples[:3])})" if names else \
        f" ({', '.join(grp['runs'][:3])}) whose run.json files name no setting that differs"
    what = (f"--method-by {','.join(by)} would pool" if by else "the method labels would pool")
    if by:
        hint = (f"; add {first[0]} to --method-by, or leave --method-by out (the default labels "
                "name the differing settings)" if first is not None and first[0] in columns
                else "; leave --method-by out (the default labels name the differing settings)")
    else:
        hint = "; analyze them separately"
    return (f"{what} runs of different configurations as seeds of one method: "
            f"{grp['label']!r} on {grp['task']} holds runs{detail}{hint}")


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
        seed within each task. Every seed is used: when a method has different seed counts
        on different tasks, the shorter task columns are padded with NaN (the statistics
        in ``analysis.stats`` skip NaN, so each per-task mean is over the seeds that exist)
        and a warning names the missing seeds.
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
        subs = [sub[sub[task_col] == t].sort_values("seed", kind="stable") for t in tasks]
        warn_missing_seeds(m, dict(zip(tasks, subs)))
        out[m] = padded_matrix([g[score_col].to_numpy(float) for g in subs])
    return out, tasks


def padded_matrix(cols: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-task score vectors into ``(max runs, tasks)``, padding with NaN."""
    n = max(len(c) for c in cols)
    mat = np.full((n, len(cols)), np.nan)
    for j, c in enumerate(cols):
        mat[:len(c), j] = c
    return mat


def warn_missing_seeds(method: str, per_task: Mapping[str, pd.DataFrame]) -> list[str]:
    """Warn, per task, about seeds that the method's other tasks have and this one lacks.

    Returns the warning texts (one per task with missing seeds)."""
    seeds = {t: set(int(s) for s in g["seed"]) for t, g in per_task.items()}
    union = set().union(*seeds.values()) if seeds else set()
    msgs = []
    for t, have in seeds.items():
        lacking = sorted(union - have)
        if lacking:
            msg = (f"method {method!r} on {t} lacks seed(s) {', '.join(map(str, lacking))} "
                   f"that its other tasks have; its per-task mean uses the {len(have)} "
                   f"seed(s) present ({', '.join(map(str, sorted(have)))})")
            _warn(msg)
            msgs.append(msg)
    return msgs
