"""Layer 2: final scores, aggregates and stratified-bootstrap interval estimates.

The numerical core is pure numpy and follows rliable (Agarwal et al., 2021) exactly:
aggregates take a score matrix ``(num_runs, num_tasks)`` — runs are seeds, tasks are tasks
(rliable issue #20) — and return the same numbers as ``rliable.metrics`` (tested). Every
aggregate is vectorised over leading axes, so a stack of bootstrap resamples
``(reps, num_runs, num_tasks)`` is reduced in one call.

Bootstrap: stratified over tasks (each task's seeds are resampled with replacement,
independently per task), percentile intervals — rliable's ``StratifiedBootstrap`` with
``method='percentile'``. Every function that draws takes an explicit ``seed``; each method
gets its own stream derived from ``(seed, crc32(method name))``, so a method's interval does
not change when other methods are added to the comparison.

The frame-level helpers (``final_scores``, ``aggregate_estimates``, ``curve_estimates``,
``scaling_estimates``, ...) turn loaded run frames (``analysis.load``) into tidy estimate
frames with columns ``point, lo, hi`` that the plots and tables consume.
"""

from __future__ import annotations

import re
import warnings
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.load import (AnalysisError, PHASES, TASK_TAGS, method_labels, natural_key,
                           one_to_one, padded_matrix, tag_columns)

__all__ = [
    "Protocol", "parse_protocol", "PROTOCOLS",
    "dedupe_runs", "final_scores", "task_means", "env_means",
    "aggregate_mean", "aggregate_median", "aggregate_iqm", "aggregate_optimality_gap",
    "AGGREGATES", "METRIC_LABELS", "probability_of_improvement",
    "bootstrap_resamples", "interval_estimates", "aggregate_estimates", "poi_estimates",
    "difference_estimate", "scaling_points",
    "performance_profile", "curve_estimates", "scaling_axes", "scaling_estimates",
    "score_matrix", "bootstrap_estimate", "scored_steps_rule", "phase_boundaries",
    "weighted_mean_estimate", "format_steps", "EXCLUDE_KINDS", "line_families",
]


# =========================================================================== protocols
@dataclass(frozen=True)
class Protocol:
    """How one run's evaluations become its final score.

    Attributes:
        name: ``fql`` | ``last`` | ``max`` | ``last_k``.
        k: number of last evaluation points averaged (0 for ``max``).
        optimistic: True when the rule picks the best point (biased upward).
    """

    name: str
    k: int
    optimistic: bool = False

    @property
    def spec(self) -> str:
        return f"last_k:{self.k}" if self.name == "last_k" else self.name

    @property
    def description(self) -> str:
        if self.name == "fql":
            return ("fql: mean of the evaluations at the last 3 evaluation points "
                    "(FQL's rule; e.g. 800K/900K/1M)")
        if self.name == "last":
            return "last: the last evaluation"
        if self.name == "max":
            return ("max: the best evaluation of each run — OPTIMISTIC, biased upward; "
                    "not comparable to published numbers")
        return f"last_k:{self.k}: mean of the evaluations at the last {self.k} points"


PROTOCOLS = ("fql", "last", "max", "last_k:N")


def parse_protocol(spec: str | Protocol) -> Protocol:
    """``"fql"`` (default rule), ``"last"``, ``"max"`` or ``"last_k:N"`` -> Protocol."""
    if isinstance(spec, Protocol):
        return spec
    s = str(spec).strip().lower()
    if s == "fql":
        return Protocol("fql", 3)
    if s == "last":
        return Protocol("last", 1)
    if s == "max":
        return Protocol("max", 0, optimistic=True)
    m = re.fullmatch(r"last_k[:=](\d+)", s)
    if m and int(m.group(1)) >= 1:
        return Protocol("last_k", int(m.group(1)))
    raise AnalysisError(f"unknown protocol {spec!r}; use fql, last, max or last_k:N (N >= 1)")


# =========================================================================== final scores
def dedupe_runs(df: pd.DataFrame, warn: bool = True) -> pd.DataFrame:
    """Keep one run (``run_id``, else run dir) per (method, task, seed) among those that may
    be scored.

    The same (method, task, seed) found in several runs (a re-run, a copy) would count one
    seed twice. A finished result (run.json status ``done`` or unknown, no non-finite loss)
    wins over an unfinished copy; among equals the run that got furthest (largest last
    step; ties: the last path in sort order) is kept, with a warning. A diverged copy is
    never dropped: it is never scored, and it is listed as diverged.
    """
    if df.empty:
        return df
    rid = "run_id" if "run_id" in df.columns else "run_dir"
    d = df.assign(_ok=_is_result_row(df), _div=_is_diverged_row(df))
    diverged = set(map(tuple, d.loc[d["_div"], ["method", "task_key", "seed", rid]].to_numpy()))
    d = d[[k not in diverged for k in map(tuple, d[["method", "task_key", "seed", rid]].to_numpy())]]
    if d.empty:
        return df
    last = (d.groupby(["method", "task_key", "seed", rid], sort=True)
            .agg(step=("step", "max"), _ok=("_ok", "all")).reset_index())
    last = last.sort_values(["method", "task_key", "seed", "_ok", "step", rid], kind="stable")
    keep = last.groupby(["method", "task_key", "seed"]).tail(1)
    if len(keep) == len(last):
        return df
    if warn:
        dup = last.groupby(["method", "task_key", "seed"])[rid].apply(list)
        dup = dup[dup.map(len) > 1]
        (method, task, seed), dirs = next(iter(dup.items()))
        warnings.warn(
            f"{len(dup)} (method, task, seed) combination(s) appear in several run dirs, "
            f"e.g. {method!r} {task} seed {seed} in {', '.join(dirs)}; keeping the finished "
            "run that got furthest", UserWarning, stacklevel=2)
    keys = set(map(tuple, keep[["method", "task_key", "seed", rid]].to_numpy())) | diverged
    mask = [k in keys for k in
            map(tuple, df[["method", "task_key", "seed", rid]].to_numpy())]
    return df[np.asarray(mask, bool)]


EXCLUDE_KINDS = ("diverged", "partial", "no_phase")


def _is_result_row(df: pd.DataFrame) -> pd.Series:
    """Per eval row: the run's status is done (or unknown) and train.csv shows no
    non-finite loss for the seed."""
    ok = pd.Series(True, index=df.index)
    if "status" in df.columns:
        st = df["status"]
        ok &= st.isna() | (st.astype(str) == "done")
    for col in ("nonfinite_loss", "member_diverged"):
        if col in df.columns:
            ok &= df[col].fillna("").astype(str) == ""
    return ok


def _is_diverged_row(df: pd.DataFrame) -> pd.Series:
    """Per eval row: run.json says diverged, or train.csv shows a non-finite loss for the seed
    (what ``_status_of`` calls diverged)."""
    div = pd.Series(False, index=df.index)
    if "status" in df.columns:
        div |= df["status"].astype(str) == "diverged"
    if "nonfinite_loss" in df.columns:
        div |= df["nonfinite_loss"].fillna("").astype(str) != ""
    return div


def format_steps(x) -> str:
    """``800000 -> '800k'``, ``1000000 -> '1M'``, ``250 -> '250'``."""
    x = float(x)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            v = x / div
            txt = f"{v:.0f}" if v.is_integer() else f"{v:.2f}".rstrip("0").rstrip(".")
            return txt + suf
    return f"{x:g}"


def _status_of(row: Mapping) -> tuple[str, str]:
    """``(exclude_kind, reason)`` of one run seed ('' when it is a result)."""
    nonfinite = row.get("nonfinite_loss")
    status = row.get("status")
    status = status if isinstance(status, str) and status else None
    has_manifest = row.get("has_manifest")
    has_manifest = bool(has_manifest) if has_manifest is not None and not (
        isinstance(has_manifest, float) and np.isnan(has_manifest)) else status is not None
    reason = row.get("status_reason")
    reason = f": {reason}" if isinstance(reason, str) and reason else ""
    sstep = row.get("status_step")
    at = (f" at step {int(sstep)}" if sstep is not None and not pd.isna(sstep) else "")
    if status == "diverged":
        return "diverged", f"diverged{at} (run.json status{reason})"
    member = row.get("member_diverged")
    if isinstance(member, str) and member:
        return "diverged", member
    if isinstance(nonfinite, str) and nonfinite:
        return "diverged", f"diverged: {nonfinite}"
    last, ts = row["last_step"], row.get("train_steps")
    ts = None if ts is None or pd.isna(ts) else int(ts)
    if has_manifest and status is not None:
        if status == "done":
            if ts is not None and last < ts:
                return "partial", (f"status done but the last evaluation is at step {last} "
                                   f"of {ts} train_steps")
            return "", ""
        if status == "running":
            return "partial", f"still running (last evaluation at step {last})"
        if status == "preempted":
            return "partial", f"preempted{at}{reason} (last evaluation at step {last}; " \
                              "re-run to resume)"
        if status == "failed":
            return "partial", f"failed{at}{reason} (last evaluation at step {last})"
        return "partial", f"unknown status {status!r} (last evaluation at step {last})"
    if ts is not None and last < ts:
        return "partial", f"last evaluation at step {last} of {ts} train_steps"
    return "", ""


def _spacing(steps: np.ndarray, interval, train_steps) -> tuple[bool, str]:
    """Whether evaluation steps follow ``eval_interval``; a text of the observed spacing."""
    if interval is None or pd.isna(interval) or len(steps) < 2 or float(interval) <= 0:
        return True, ""
    diffs = np.diff(steps)
    ok = diffs == interval
    if not ok[-1] and train_steps is not None and not pd.isna(train_steps) \
            and steps[-1] == train_steps and 0 < diffs[-1] < interval:
        ok[-1] = True  # a final evaluation at train_steps off the grid
    if ok.all():
        return True, ""
    vals = sorted(set(int(d) for d in diffs))
    return False, ", ".join(format_steps(v) for v in vals[:4]) + ("..." if len(vals) > 4 else "")


def _phase_order(p) -> int:
    return PHASES.index(p) if p in PHASES else len(PHASES)


def final_scores(df: pd.DataFrame, protocol: str | Protocol = "fql", *,
                 phase: str | None = None, require_complete: bool = False) -> pd.DataFrame:
    """One final score per run seed (``run_id``, seed) under a named protocol.

    Args:
        df: loaded evaluation rows (``analysis.load.load_results``).
        protocol: ``fql`` (mean of the last 3 evaluation points; default), ``last``,
            ``max`` (optimistic) or ``last_k:N``. A run with fewer evaluation points than
            the rule asks for is scored on the points it has (one warning for all).
        phase: score the evaluations of this phase (``offline`` | ``online``); default:
            each run's last phase present. A run without that phase is excluded
            (``exclude_kind='no_phase'``).
        require_complete: keep only run seeds that are results (``exclude_kind == ''``),
            with a warning.
    Returns:
        One row per run seed: identity columns, tags and manifest columns (first row's
        values), ``score`` in [0, 1] (NaN when excluded for lack of the phase), ``phase``
        (the phase scored), ``n_evals``, ``scored_steps`` (the steps used, as text),
        ``last_step`` (over all phases), ``complete``, ``exclude_kind`` ('' for a result,
        ``diverged`` — run.json status or non-finite losses in train.csv; never scored —,
        ``partial`` — status running/preempted/failed, or stopped before train_steps;
        scored only when explicitly included —, ``no_phase``), ``exclude_reason``,
        ``spacing_ok`` (evaluations every ``eval_interval`` steps as run.json states) and
        ``compute_total`` (train_steps x flops_per_update, when both are known).
    """
    proto = parse_protocol(protocol)
    if phase is not None and phase not in PHASES:
        raise AnalysisError(f"unknown phase {phase!r}; use {' or '.join(PHASES)}")
    if df.empty:
        raise AnalysisError("no evaluations to score")
    df = df.copy()
    if "run_id" not in df.columns:
        df["run_id"] = df["run_dir"]
    if "phase" not in df.columns:
        df["phase"] = "offline"
    if "file_row" not in df.columns:
        df["file_row"] = np.arange(len(df))
    df = dedupe_runs(df)
    rows = []
    short = 0
    bad_spacing: dict[str, str] = {}
    for (run_id, seed), g in df.groupby(["run_id", "seed"], sort=True):
        g = g.sort_values("file_row", kind="stable")
        phases = sorted(set(g["phase"]), key=_phase_order)
        target = phase or phases[-1]
        last_step = int(g["step"].max())
        gp = g[g["phase"] == target]
        base = g.iloc[-1].to_dict()
        for col in ("success", "step", "return", "episode_length", "wall_time", "file_row",
                    "env_steps"):
            base.pop(col, None)
        base.update(phase=target, last_step=last_step)
        if gp.empty:
            base.update(score=np.nan, n_evals=0, scored_steps="", scored_env_steps="",
                        exclude_kind="no_phase",
                        exclude_reason=f"no {target} evaluations (phases present: "
                                       f"{', '.join(phases)})", spacing_ok=True)
            rows.append(base)
            continue
        gp = gp.sort_values("step", kind="stable").drop_duplicates("step", keep="last")
        succ = gp["success"].to_numpy(float)
        steps = gp["step"].to_numpy()
        if proto.name == "max":
            i = int(np.argmax(succ))
            score, sel = float(succ[i]), slice(i, i + 1)
        else:
            if len(succ) < proto.k:
                short += 1
            score, sel = float(np.mean(succ[-proto.k:])), slice(-proto.k, None)
        env_steps = (gp["env_steps"].to_numpy()[sel] if "env_steps" in gp else [])
        ok, seen = _spacing(steps, base.get("eval_interval"), base.get("train_steps"))
        if not ok:
            bad_spacing.setdefault(run_id, f"{seen} (run.json eval_interval "
                                           f"{format_steps(base['eval_interval'])})")
        base.update(score=score, n_evals=len(succ),
                    scored_steps=",".join(str(int(s)) for s in steps[sel]),
                    scored_env_steps=",".join(str(int(s)) for s in env_steps)
                    if target == "online" else "", spacing_ok=ok)
        kind, reason = _status_of(base)
        base.update(exclude_kind=kind, exclude_reason=reason)
        rows.append(base)
    out = pd.DataFrame(rows)
    out["complete"] = out["exclude_kind"] == ""
    ts = pd.to_numeric(out.get("train_steps"), errors="coerce") if "train_steps" in out \
        else None
    fl = pd.to_numeric(out.get("flops_per_update"), errors="coerce") \
        if "flops_per_update" in out else None
    if ts is not None and fl is not None and (ts * fl).notna().any():
        out["compute_total"] = ts * fl
    if short:
        warnings.warn(f"{short} run seed(s) have fewer than {proto.k} evaluations; their "
                      f"{proto.name} score averages the evaluations they have",
                      UserWarning, stacklevel=2)
    for run_id, text in bad_spacing.items():
        warnings.warn(f"{run_id}: evaluations are {text} apart, not every eval_interval "
                      "steps as run.json states; its scored steps may not be the ones the "
                      "protocol means", UserWarning, stacklevel=2)
    if require_complete:
        partial = out[~out["complete"]]
        if len(partial):
            ex = partial.iloc[0]
            warnings.warn(f"leaving out {len(partial)} incomplete run seed(s) (last "
                          f"evaluation before train_steps, or not done), e.g. "
                          f"{ex['run_id']} seed {ex['seed']}: {ex['exclude_reason']}",
                          UserWarning, stacklevel=2)
        out = out[out["complete"]].reset_index(drop=True)
    return out


def scored_steps_rule(final: pd.DataFrame, protocol: str | Protocol = "fql") -> str:
    """The final-score rule in steps, e.g. ``'mean of the evaluations at 800k, 900k, 1M
    (all 24 run seeds)'``; several schedules are listed with their counts."""
    proto = parse_protocol(protocol)
    if final.empty or "scored_steps" not in final:
        return "no run seeds scored"
    if proto.name == "max":
        return "the best evaluation of each run seed (the step varies; optimistic)"
    sets = final["scored_steps"].astype(str).value_counts()
    n = len(final)
    what = "the evaluation" if proto.k == 1 else "mean of the evaluations"

    def steps(txt):
        vals = [v for v in txt.split(",") if v]
        short = [format_steps(v) for v in vals]
        if len(set(short)) < len(set(vals)):  # 20000 and 20001 would both read '20k'
            return ", ".join(f"{int(float(v)):,}" for v in vals)
        return ", ".join(short)

    phase = ""
    if "phase" in final and final["phase"].nunique() == 1:
        phase = f" of the {final['phase'].iloc[0]} phase"
    zero = sum(int(v) for k, v in sets.items() if "0" in str(k).split(","))
    note = ("" if not zero else
            f"; includes the evaluation at step 0, before any training "
            f"({'all' if zero == n else zero} run seed{'s' if zero > 1 else ''})")
    if len(sets) == 1:
        return f"{what} at steps {steps(sets.index[0])}{phase} (all {n} run seeds){note}"
    parts = [f"at {steps(k)} ({v} run seed{'s' if v > 1 else ''})" for k, v in sets.items()]
    return f"{what}{phase} " + "; ".join(parts) + f" (the run seeds differ in schedule){note}"


def task_means(final: pd.DataFrame) -> pd.DataFrame:
    """Mean final score over seeds per (method, env, task): ``score, std, n_seeds``."""
    g = final.groupby(["method", "env", "task", "task_key"], sort=True)["score"]
    return g.agg(score="mean", std="std", n_seeds="count").reset_index()


def env_means(final: pd.DataFrame) -> pd.DataFrame:
    """Mean over an environment's tasks of the per-task means: ``score, n_tasks, n_seeds``
    (``n_seeds`` = the smallest seed count over the tasks)."""
    tm = task_means(final)
    g = tm.groupby(["method", "env"], sort=True)
    return g.agg(score=("score", "mean"), n_tasks=("task", "count"),
                 n_seeds=("n_seeds", "min")).reset_index()


# =========================================================================== aggregates
# Every aggregate accepts NaN-padded matrices (a task with fewer seeds than another has NaN
# in its missing rows, see ``analysis.load.padded_matrix``): per-task means are over the
# seeds that exist and pooled statistics (IQM, optimality gap, profiles) use the existing
# scores only. On a full matrix they are exactly rliable's.
def _flat(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    return scores.reshape(*scores.shape[:-2], -1)


def _task_means(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, float)
    if np.isnan(s).any():
        return np.nanmean(s, axis=-2)
    return np.mean(s, axis=-2)


def aggregate_mean(scores: np.ndarray) -> np.ndarray:
    """Mean over tasks of the per-task mean over runs. ``(..., runs, tasks) -> (...)``."""
    return np.mean(_task_means(scores), axis=-1)


def aggregate_median(scores: np.ndarray) -> np.ndarray:
    """Median over tasks of the per-task mean over runs. ``(..., runs, tasks) -> (...)``."""
    return np.median(_task_means(scores), axis=-1)


def _iqm_flat(flat: np.ndarray) -> np.ndarray:
    n = flat.shape[-1]
    lo = int(0.25 * n)
    hi = n - lo
    part = np.partition(flat, (lo, hi - 1), axis=-1)
    return np.mean(part[..., lo:hi], axis=-1)


def aggregate_iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean: 25%-trimmed mean of all runs x tasks scores (scipy's
    ``trim_mean`` cut: ``int(0.25 n)`` from each end). ``(..., runs, tasks) -> (...)``."""
    flat = _flat(scores)
    nan = np.isnan(flat)
    if not nan.any():
        return _iqm_flat(flat)
    counts = np.sum(~nan, axis=-1)
    srt = np.sort(flat, axis=-1)  # NaN last
    if np.all(counts == counts.flat[0]):
        return _iqm_flat(srt[..., :int(counts.flat[0])])
    lead = srt.reshape(-1, srt.shape[-1])
    out = np.array([_iqm_flat(r[:c]) for r, c in zip(lead, counts.ravel())])
    return out.reshape(counts.shape)


def aggregate_optimality_gap(scores: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """``threshold`` minus the mean of scores clipped at ``threshold`` (1.0: success in
    [0, 1]; lower is better). ``(..., runs, tasks) -> (...)``."""
    clipped = np.minimum(_flat(scores), threshold)
    if np.isnan(clipped).any():
        return threshold - np.nanmean(clipped, axis=-1)
    return threshold - np.mean(clipped, axis=-1)


AGGREGATES: dict[str, Callable[..., np.ndarray]] = {
    "median": aggregate_median,
    "iqm": aggregate_iqm,
    "mean": aggregate_mean,
    "optimality_gap": aggregate_optimality_gap,
}
METRIC_LABELS = {"median": "Median", "iqm": "IQM", "mean": "Mean",
                 "optimality_gap": "Optimality gap"}


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> np.ndarray:
    """P(X > Y): per task the Mann-Whitney U of X's runs against Y's runs over
    ``n_x n_y`` (ties count 1/2; NaN padding is skipped), averaged over tasks.
    ``(..., runs_x, tasks), (..., runs_y, tasks) -> (...)``."""
    xs = np.asarray(scores_x, float)
    ys = np.asarray(scores_y, float)
    x = xs[..., :, None, :]
    y = ys[..., None, :, :]
    u = np.sum(x > y, axis=(-3, -2)) + 0.5 * np.sum(x == y, axis=(-3, -2))
    nx = np.sum(~np.isnan(xs), axis=-2)
    ny = np.sum(~np.isnan(ys), axis=-2)
    return np.mean(u / (nx * ny), axis=-1)


# =========================================================================== bootstrap
def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(str(key).encode())])


def bootstrap_resamples(scores: np.ndarray, reps: int, rng: np.random.Generator,
                        chunk: int = 1000, task_bootstrap: bool = False):
    """Yield stratified bootstrap resamples of ``scores`` in chunks.

    Each resample redraws, independently for every task, that task's runs with
    replacement (``task_bootstrap`` also redraws the tasks). A NaN-padded task (fewer
    seeds) redraws only its existing runs and keeps its padding. Yields arrays
    ``(chunk, runs, tasks)`` totalling ``reps``.
    """
    scores = np.asarray(scores, float)
    n, m = scores.shape[:2]
    cols = np.arange(m)
    nan = np.isnan(scores)
    ragged = nan.any()
    if ragged:  # existing runs first in every column
        order = np.argsort(nan, axis=0, kind="stable")
        scores = np.take_along_axis(scores, order, axis=0)
        counts = np.sum(~nan, axis=0)
        rows = np.arange(n)[None, :, None]
    done = 0
    while done < reps:
        b = min(chunk, reps - done)
        if not ragged:
            idx = rng.integers(0, n, size=(b, n, m))
            tcols = rng.integers(0, m, size=(b, 1, m)) if task_bootstrap else cols
        else:
            tcols = rng.integers(0, m, size=(b, 1, m)) if task_bootstrap else cols[None, None]
            high = np.broadcast_to(counts[tcols], (b, n, m))
            idx = np.floor(rng.random((b, n, m)) * high).astype(np.int64)
            idx = np.where(rows < high, idx, rows)
        yield scores[idx, tcols]
        done += b


def _percentile_interval(boot: np.ndarray, confidence: float) -> np.ndarray:
    alpha = (1.0 - confidence) / 2
    return np.percentile(boot, [100 * alpha, 100 * (1 - alpha)], axis=0)


def interval_estimates(score_dict: Mapping[str, np.ndarray], func: Callable,
                       reps: int = 2000, confidence: float = 0.95, seed: int = 0,
                       task_bootstrap: bool = False):
    """rliable's ``get_interval_estimates`` (percentile method), seeded.

    Args:
        score_dict: ``{method: (runs, tasks)}``.
        func: vectorised statistic ``(..., runs, tasks) -> (...)`` or ``(..., k)``.
    Returns:
        ``(points, intervals)``: ``points[m]`` is ``func(scores)``; ``intervals[m]`` has
        shape ``(2, ...)`` — lower and upper bounds.
    """
    points, intervals = {}, {}
    for key, scores in score_dict.items():
        scores = np.asarray(scores, float)
        points[key] = np.asarray(func(scores))
        boot = np.concatenate([np.asarray(func(r)).reshape(len(r), *points[key].shape)
                               for r in bootstrap_resamples(scores, reps, _rng(seed, key),
                                                            task_bootstrap=task_bootstrap)])
        intervals[key] = _percentile_interval(boot, confidence)
    return points, intervals


def aggregate_estimates(score_dict: Mapping[str, np.ndarray],
                        metrics: Sequence[str] = ("median", "iqm", "mean", "optimality_gap"),
                        reps: int = 2000, confidence: float = 0.95, seed: int = 0,
                        threshold: float = 1.0) -> pd.DataFrame:
    """Point estimates and stratified-bootstrap CIs of several aggregates at once.

    All metrics of one method share the same resamples. Intervals are NaN when a method
    has a single run (a bootstrap over one seed says nothing).

    Returns:
        Columns ``method, metric, point, lo, hi, n_runs, n_tasks, reps, confidence, seed``.
    """
    unknown = [m for m in metrics if m not in AGGREGATES]
    if unknown:
        raise AnalysisError(f"unknown metric(s) {unknown}; choose from {list(AGGREGATES)}")

    def func(s):
        return np.stack([AGGREGATES[m](s, threshold) if m == "optimality_gap"
                         else AGGREGATES[m](s) for m in metrics], axis=-1)

    points, intervals = interval_estimates(score_dict, func, reps, confidence, seed)
    rows = []
    for method, scores in score_dict.items():
        n, t = np.shape(scores)
        for i, metric in enumerate(metrics):
            lo, hi = intervals[method][:, i]
            if n < 2:
                lo = hi = np.nan
            rows.append(dict(method=method, metric=metric, point=float(points[method][i]),
                             lo=float(lo), hi=float(hi), n_runs=n, n_tasks=t, reps=reps,
                             confidence=confidence, seed=seed))
    return pd.DataFrame(rows)


def poi_estimates(score_dict: Mapping[str, np.ndarray],
                  pairs: Sequence[tuple[str, str]] | None = None, reps: int = 2000,
                  confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Probability of improvement P(X > Y) with CIs for method pairs.

    X's and Y's runs are resampled independently, stratified by task (rliable's
    ``StratifiedIndependentBootstrap``). Default pairs: every ordered pair (X, Y) with X
    before Y in ``score_dict``'s order.

    Returns:
        Columns ``x, y, point, lo, hi, n_runs_x, n_runs_y, n_tasks``.
    """
    names = list(score_dict)
    if pairs is None:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    rows = []
    for a, b in pairs:
        x, y = np.asarray(score_dict[a], float), np.asarray(score_dict[b], float)
        if x.shape[1] != y.shape[1]:
            raise AnalysisError(f"{a!r} and {b!r} have different numbers of tasks")
        point = float(probability_of_improvement(x, y))
        rng = _rng(seed, f"{a}\x00{b}")
        boots = []
        for rx, ry in zip(bootstrap_resamples(x, reps, rng), bootstrap_resamples(y, reps, rng)):
            boots.append(probability_of_improvement(rx, ry))
        lo, hi = _percentile_interval(np.concatenate(boots), confidence)
        if min(len(x), len(y)) < 2:
            lo = hi = np.nan
        rows.append(dict(x=a, y=b, point=point, lo=float(lo), hi=float(hi),
                         n_runs_x=len(x), n_runs_y=len(y), n_tasks=x.shape[1]))
    return pd.DataFrame(rows)


def difference_estimate(scores_x: np.ndarray, scores_y: np.ndarray, reps: int = 2000,
                        confidence: float = 0.95, seed: int = 0,
                        key: str = "") -> tuple[float, float, float]:
    """Mean of X minus mean of Y (``aggregate_mean``: mean over tasks of the per-task mean
    over seeds) with a percentile CI from independent stratified bootstraps of X and Y
    (as ``poi_estimates``). ``(runs_x, tasks), (runs_y, tasks) -> (point, lo, hi)``; the
    interval is NaN when either side has a single run.
    """
    x, y = np.asarray(scores_x, float), np.asarray(scores_y, float)
    if x.shape[1] != y.shape[1]:
        raise AnalysisError("the two score matrices have different numbers of tasks")
    point = float(aggregate_mean(x) - aggregate_mean(y))
    if min(len(x), len(y)) < 2:
        return point, float("nan"), float("nan")
    rng = _rng(seed, f"diff\x00{key}")
    boots = [aggregate_mean(rx) - aggregate_mean(ry)
             for rx, ry in zip(bootstrap_resamples(x, reps, rng),
                               bootstrap_resamples(y, reps, rng))]
    lo, hi = _percentile_interval(np.concatenate(boots), confidence)
    return point, float(lo), float(hi)


def performance_profile(score_dict: Mapping[str, np.ndarray], taus: Sequence[float] | None = None,
                        reps: int = 2000, confidence: float = 0.95, seed: int = 0,
                        use_score_distribution: bool = True) -> pd.DataFrame:
    """Performance profiles with CIs (rliable's ``create_performance_profile``).

    Score distribution (default): fraction of all runs x tasks scores strictly above tau.
    Average score distribution: fraction of tasks whose mean over runs is above tau.
    Default taus: 101 points on [0, 1].

    Returns:
        Columns ``method, tau, point, lo, hi``.
    """
    taus = np.linspace(0.0, 1.0, 101) if taus is None else np.asarray(taus, float)

    def func(s):
        s = np.asarray(s, float)
        if not use_score_distribution:
            s = np.nanmean(s, axis=-2, keepdims=True) if np.isnan(s).any() \
                else np.mean(s, axis=-2, keepdims=True)
        flat = _flat(s)
        valid = np.sum(~np.isnan(flat), axis=-1)[..., None]
        return np.sum(flat[..., None, :] > taus[:, None], axis=-1) / valid

    points, intervals = interval_estimates(score_dict, func, reps, confidence, seed)
    frames = []
    for method in score_dict:
        frames.append(pd.DataFrame(dict(method=method, tau=taus, point=points[method],
                                        lo=intervals[method][0], hi=intervals[method][1])))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["method", "tau", "point", "lo", "hi"])


# =========================================================================== grouped estimates
def score_matrix(sub: pd.DataFrame, value: str = "score") -> np.ndarray:
    """``(seeds, tasks)`` from the rows of one method (columns: tasks sorted by key, rows:
    seeds sorted). Every seed is kept: a task with fewer seeds is padded with NaN, which
    the aggregates skip (``analysis.load.warn_missing_seeds`` names the gaps)."""
    cols = [g.sort_values("seed", kind="stable")[value].to_numpy(float)
            for _, g in sub.groupby("task_key", sort=True)]
    return padded_matrix(cols)


def weighted_mean_estimate(scores: np.ndarray, weights: np.ndarray, reps: int,
                           confidence: float, seed: int, key: str) -> tuple[float, float, float]:
    """``(point, lo, hi)`` of ``sum_t w_t * mean over runs of task t`` (e.g. the mean over
    environments of per-environment means: ``w_t = 1 / (n_envs * tasks in t's env)``),
    with the stratified bootstrap of ``bootstrap_estimate``."""
    w = np.asarray(weights, float)
    w = w / w.sum()

    def func(x):
        return np.sum(_task_means(x) * w, axis=-1)

    point = float(func(scores))
    if scores.shape[0] < 2:
        return point, np.nan, np.nan
    boot = np.concatenate([func(r) for r in bootstrap_resamples(scores, reps, _rng(seed, key))])
    lo, hi = _percentile_interval(boot, confidence)
    return point, float(lo), float(hi)


def phase_boundaries(df: pd.DataFrame) -> pd.DataFrame:
    """Where the offline phase ends, per environment, for runs that have both phases:
    ``env, step`` (the last offline evaluation step; one row per distinct step)."""
    if "phase" not in df.columns or not (df["phase"] == "online").any():
        return pd.DataFrame(columns=["env", "step"])
    rid = "run_id" if "run_id" in df.columns else "run_dir"
    rows = []
    for (env, _), g in df.groupby(["env", rid], sort=True):
        if set(g["phase"]) >= {"offline", "online"}:
            rows.append(dict(env=env, step=int(g.loc[g["phase"] == "offline", "step"].max())))
    return pd.DataFrame(rows, columns=["env", "step"]).drop_duplicates().reset_index(drop=True)


def bootstrap_estimate(scores: np.ndarray, metric: str, reps: int, confidence: float,
                       seed: int, key: str) -> tuple[float, float, float]:
    """``(point, lo, hi)`` of one aggregate on one ``(runs, tasks)`` matrix; the stream is
    ``(seed, crc32(key))``. NaN bounds when there is a single run."""
    func = AGGREGATES[metric]
    point = float(func(scores))
    if scores.shape[0] < 2:
        return point, np.nan, np.nan
    boot = np.concatenate([func(r) for r in bootstrap_resamples(scores, reps, _rng(seed, key))])
    lo, hi = _percentile_interval(boot, confidence)
    return point, float(lo), float(hi)


def curve_estimates(df: pd.DataFrame, metric: str = "mean", reps: int = 1000,
                    confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Learning curves: per (env, method, step), the aggregate of success over that
    environment's seeds x tasks with a stratified-bootstrap CI.

    Args:
        df: loaded evaluation rows (one per run dir, seed, step); pass it through
            ``dedupe_runs`` first if run dirs may repeat a (method, task, seed). At a step
            that some tasks lack (runs evaluated on different schedules) the estimate uses
            the tasks present and is marked ``partial_tasks`` (plots draw it dotted).
    Returns:
        Columns ``env, method, step, point, lo, hi, n_runs, n_tasks, n_tasks_method,
        partial_tasks``.
    """
    rows = []
    for (env, method, step), g in df.groupby(["env", "method", "step"], sort=True):
        g = g.drop_duplicates(["task_key", "seed"], keep="last")
        mat = score_matrix(g, "success")
        point, lo, hi = bootstrap_estimate(mat, metric, reps, confidence, seed,
                                           f"{env}\x00{method}\x00{step}")
        rows.append(dict(env=env, method=method, step=int(step), point=point, lo=lo, hi=hi,
                         n_runs=int(np.sum(~np.isnan(mat))), n_tasks=mat.shape[1]))
    out = pd.DataFrame(rows, columns=["env", "method", "step", "point", "lo", "hi",
                                      "n_runs", "n_tasks"])
    total = df.groupby(["env", "method"])["task_key"].nunique()
    out["n_tasks_method"] = [int(total[(e, m)]) for e, m in zip(out["env"], out["method"])]
    out["partial_tasks"] = out["n_tasks"] < out["n_tasks_method"]
    return out


SCALING_MANIFEST_AXES = ("params_critic", "params_total", "flops_per_update",
                         "compute_total")
# Tags along which a line runs on a parameter/FLOPs axis, in order of preference.
LINE_TAGS = ("critic_flow_steps", "critic_width", "critic_depth")


def _numeric_tags(final: pd.DataFrame) -> list[str]:
    out = []
    for c in tag_columns(final):
        if c in TASK_TAGS:
            continue
        vals = pd.to_numeric(final[c], errors="coerce")
        if vals.notna().any() and vals[final[c].notna()].notna().all():
            out.append(c)
    return out


def scaling_axes(final: pd.DataFrame) -> list[str]:
    """Numeric axes that vary within some (algorithm, critic) group: numeric tags (e.g.
    ``critic_flow_steps``, ``critic_width``, ``critic_depth``) then ``params_critic``,
    ``params_total``, ``flops_per_update`` and ``compute_total`` (train steps x FLOPs per
    update; made whenever ``flops_per_update`` is)."""
    axes, partitions = [], []
    for c in _numeric_tags(final) + [a for a in SCALING_MANIFEST_AXES if a in final.columns]:
        vals = pd.to_numeric(final[c], errors="coerce")
        groups = final.assign(_x=vals).groupby(["algorithm", "critic"])["_x"]
        if not (groups.nunique(dropna=True) > 1).any():
            continue
        if c in SCALING_MANIFEST_AXES and c != "compute_total":
            # params_total that moves in lockstep with params_critic adds no plot
            part = tuple(pd.factorize(final["algorithm"].astype(str) + "\x00"
                                      + final["critic"].astype(str) + "\x00"
                                      + vals.astype(str))[0])
            if part in partitions:
                continue
            partitions.append(part)
        if c == "compute_total" and "flops_per_update" not in axes:
            continue
        axes.append(c)
    return axes


def axis_aliases(final: pd.DataFrame, axis: str) -> list[str]:
    """Tags that only restate ``axis``: among the runs that have the axis, they vary and are
    one-to-one with it (a sweep over ``experiment.critic = [@k4/FloqCritic(), ...]`` records
    ``experiment_critic=floq_k4_FloqCritic`` beside ``critic_flow_steps=4``). A scaling line
    runs along the axis, so such tags must not split it into one line per point."""
    if axis not in final.columns:
        return []
    has = final[final[axis].notna()]
    out = []
    for t in tag_columns(final):
        if t == axis or t in TASK_TAGS or t not in has.columns:
            continue
        if has[t].astype(str).nunique() >= 2 and one_to_one(has, axis, t):
            out.append(t)
    return out


def line_families(final: pd.DataFrame, axis: str) -> pd.Series:
    """The line (hue) each run belongs to on a scaling plot over ``axis``.

    On a tag axis (``critic_flow_steps``): the method label without that tag. On a
    parameter/FLOPs/compute axis: per (algorithm, critic), the method label without the
    one tag the line runs along (``critic_flow_steps`` when it varies there, else the first
    varying of width, depth, other numeric tags), so floq at width 256 over K is one line,
    floq at width 512 another, and a monolithic critic over width its own line."""
    if axis not in SCALING_MANIFEST_AXES:
        return method_labels(final, exclude=[axis, *axis_aliases(final, axis)])
    numeric = _numeric_tags(final)
    ordered = [t for t in LINE_TAGS if t in numeric] + [t for t in numeric
                                                       if t not in LINE_TAGS]
    hue = pd.Series("", index=final.index, dtype=object)
    cache: dict = {}
    for _, g in final.groupby(["algorithm", "critic"], sort=False):
        varying = [t for t in ordered if g[t].dropna().astype(str).nunique() > 1]
        primary = varying[0] if varying else None
        if primary not in cache:
            cache[primary] = method_labels(final, exclude=[primary] if primary else [])
        hue.loc[g.index] = cache[primary].loc[g.index]
    return hue


def scaling_estimates(final: pd.DataFrame, axis: str, metric: str = "mean",
                      reps: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> pd.DataFrame:
    """Final success vs a numeric axis, per environment.

    The hue (one line each) is ``line_families``. Each point aggregates the seeds x tasks
    of that (env, hue, x). Runs lacking the axis (e.g. a monolithic critic on a
    ``critic_flow_steps`` axis) come back as reference rows with ``x`` NaN, drawn as
    horizontal lines. A point whose runs cover fewer of the environment's tasks than the
    panel holds has ``partial_tasks`` True and ``tasks`` = ``"k/n"`` (plots mark it).

    Returns:
        Columns ``env, hue, family, x, point, lo, hi, n_runs, n_tasks, n_tasks_env, tasks,
        partial_tasks, reference, label`` (``label``: the method label(s) of the point's
        runs, e.g. ``floq (K=4)`` on a FLOPs axis).
    """
    if axis not in final.columns:
        raise AnalysisError(f"no column {axis!r} to scale over")
    data = final.assign(hue=line_families(final, axis),
                        family=final["algorithm"].astype(str) + ":" + final["critic"].astype(str),
                        x=pd.to_numeric(final[axis], errors="coerce"))
    n_env = data.groupby("env")["task_key"].nunique()
    rows = []
    for (env, hue), g in data.groupby(["env", "hue"], sort=True):
        with_x = g[g["x"].notna()]
        parts = ([(x, gx, False) for x, gx in with_x.groupby("x", sort=True)]
                 if len(with_x) else [(np.nan, g, True)])
        for x, gx, ref in parts:
            mat = score_matrix(gx)
            point, lo, hi = bootstrap_estimate(mat, metric, reps, confidence, seed,
                                               f"{env}\x00{hue}\x00{x}")
            nt = int(n_env[env])
            label = " / ".join(sorted(gx["method"].astype(str).unique(), key=natural_key))
            rows.append(dict(env=env, hue=hue, family=gx["family"].iloc[0], x=float(x),
                             point=point, lo=lo, hi=hi, n_runs=int(np.sum(~np.isnan(mat))),
                             n_tasks=mat.shape[1], n_tasks_env=nt,
                             tasks=f"{mat.shape[1]}/{nt}", partial_tasks=mat.shape[1] < nt,
                             reference=ref, label=label))
    return pd.DataFrame(rows, columns=["env", "hue", "family", "x", "point", "lo", "hi",
                                       "n_runs", "n_tasks", "n_tasks_env", "tasks",
                                       "partial_tasks", "reference", "label"])


def scaling_points(final: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The single run seeds behind ``scaling_estimates``' points: ``env, hue, x, method,
    task_key, seed, score`` (``x`` NaN for runs without the axis)."""
    if axis not in final.columns:
        raise AnalysisError(f"no column {axis!r} to scale over")
    out = final.assign(hue=line_families(final, axis),
                       x=pd.to_numeric(final[axis], errors="coerce"))
    return out[["env", "hue", "x", "method", "task_key", "seed", "score"]].reset_index(
        drop=True)
