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

from analysis.load import (AnalysisError, TASK_TAGS, method_labels, tag_columns)

__all__ = [
    "Protocol", "parse_protocol", "PROTOCOLS",
    "dedupe_runs", "final_scores", "task_means", "env_means",
    "aggregate_mean", "aggregate_median", "aggregate_iqm", "aggregate_optimality_gap",
    "AGGREGATES", "METRIC_LABELS", "probability_of_improvement",
    "bootstrap_resamples", "interval_estimates", "aggregate_estimates", "poi_estimates",
    "performance_profile", "curve_estimates", "scaling_axes", "scaling_estimates",
    "score_matrix", "bootstrap_estimate",
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
    """Keep one run dir per (method, task, seed).

    The same (method, task, seed) found in several run dirs (a re-run, a copy) would count
    one seed twice. The run dir that got furthest (largest last step; ties: the last path
    in sort order) is kept, with a warning.
    """
    if df.empty:
        return df
    last = (df.groupby(["method", "task_key", "seed", "run_dir"], sort=True)["step"].max()
            .reset_index())
    last = last.sort_values(["method", "task_key", "seed", "step", "run_dir"])
    keep = last.groupby(["method", "task_key", "seed"]).tail(1)
    if len(keep) == len(last):
        return df
    if warn:
        dup = last.groupby(["method", "task_key", "seed"])["run_dir"].apply(list)
        dup = dup[dup.map(len) > 1]
        (method, task, seed), dirs = next(iter(dup.items()))
        warnings.warn(
            f"{len(dup)} (method, task, seed) combination(s) appear in several run dirs, "
            f"e.g. {method!r} {task} seed {seed} in {', '.join(dirs)}; keeping the run dir "
            "that got furthest", UserWarning, stacklevel=2)
    keys = set(map(tuple, keep[["method", "task_key", "seed", "run_dir"]].to_numpy()))
    mask = [k in keys for k in
            map(tuple, df[["method", "task_key", "seed", "run_dir"]].to_numpy())]
    return df[np.asarray(mask, bool)]


def _is_complete(last_step, train_steps, status) -> bool:
    if train_steps is not None and not pd.isna(train_steps):
        return bool(last_step >= train_steps)
    if isinstance(status, str) and status:
        return status == "done"
    return True


def final_scores(df: pd.DataFrame, protocol: str | Protocol = "fql", *,
                 require_complete: bool = False) -> pd.DataFrame:
    """One final score per (run dir, seed) under a named protocol.

    Args:
        df: loaded evaluation rows (``analysis.load.load_results``).
        protocol: ``fql`` (mean of the last 3 evaluation points; default), ``last``,
            ``max`` (optimistic) or ``last_k:N``. A run with fewer evaluation points than
            the rule asks for is scored on the points it has (one warning for all).
        require_complete: drop seeds whose last evaluation is before ``train_steps``
            (status ``done`` decides when train_steps is unknown), with a warning.
    Returns:
        One row per (run dir, seed): identity columns, tags and manifest columns (first
        row's values), ``score`` in [0, 1], ``n_evals``, ``scored_steps`` (the steps used,
        as text), ``last_step``, ``complete``.
    """
    proto = parse_protocol(protocol)
    if df.empty:
        raise AnalysisError("no evaluations to score")
    df = dedupe_runs(df)
    rows = []
    short = 0
    for _, g in df.groupby(["run_dir", "seed"], sort=True):
        g = g.sort_values("step").drop_duplicates("step", keep="last")
        succ = g["success"].to_numpy(float)
        steps = g["step"].to_numpy()
        if proto.name == "max":
            i = int(np.argmax(succ))
            score, used = float(succ[i]), steps[i:i + 1]
        else:
            if len(succ) < proto.k:
                short += 1
            score, used = float(np.mean(succ[-proto.k:])), steps[-proto.k:]
        row = g.iloc[-1].to_dict()
        for col in ("success", "step", "return", "episode_length", "wall_time"):
            row.pop(col, None)
        row.update(score=score, n_evals=len(succ), last_step=int(steps[-1]),
                   scored_steps=",".join(str(int(s)) for s in used))
        row["complete"] = _is_complete(row["last_step"], row.get("train_steps"),
                                       row.get("status"))
        rows.append(row)
    out = pd.DataFrame(rows)
    if short:
        warnings.warn(f"{short} run seed(s) have fewer than {proto.k} evaluations; their "
                      f"{proto.name} score averages the evaluations they have",
                      UserWarning, stacklevel=2)
    if require_complete:
        partial = out[~out["complete"]]
        if len(partial):
            ex = partial.iloc[0]
            warnings.warn(f"leaving out {len(partial)} incomplete run seed(s) (last "
                          f"evaluation before train_steps), e.g. {ex['run_dir']} seed "
                          f"{ex['seed']} at step {ex['last_step']}", UserWarning, stacklevel=2)
        out = out[out["complete"]].reset_index(drop=True)
    return out


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
def _flat(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    return scores.reshape(*scores.shape[:-2], -1)


def aggregate_mean(scores: np.ndarray) -> np.ndarray:
    """Mean over tasks of the per-task mean over runs. ``(..., runs, tasks) -> (...)``."""
    return np.mean(np.mean(np.asarray(scores, float), axis=-2), axis=-1)


def aggregate_median(scores: np.ndarray) -> np.ndarray:
    """Median over tasks of the per-task mean over runs. ``(..., runs, tasks) -> (...)``."""
    return np.median(np.mean(np.asarray(scores, float), axis=-2), axis=-1)


def aggregate_iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean: 25%-trimmed mean of all runs x tasks scores (scipy's
    ``trim_mean`` cut: ``int(0.25 n)`` from each end). ``(..., runs, tasks) -> (...)``."""
    flat = _flat(scores)
    n = flat.shape[-1]
    lo = int(0.25 * n)
    hi = n - lo
    part = np.partition(flat, (lo, hi - 1), axis=-1)
    return np.mean(part[..., lo:hi], axis=-1)


def aggregate_optimality_gap(scores: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """``threshold`` minus the mean of scores clipped at ``threshold`` (1.0: success in
    [0, 1]; lower is better). ``(..., runs, tasks) -> (...)``."""
    return threshold - np.mean(np.minimum(_flat(scores), threshold), axis=-1)


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
    ``n_x n_y`` (ties count 1/2), averaged over tasks.
    ``(..., runs_x, tasks), (..., runs_y, tasks) -> (...)``."""
    x = np.asarray(scores_x, float)[..., :, None, :]
    y = np.asarray(scores_y, float)[..., None, :, :]
    nx, ny = x.shape[-3], y.shape[-2]
    u = np.sum(x > y, axis=(-3, -2)) + 0.5 * np.sum(x == y, axis=(-3, -2))
    return np.mean(u / (nx * ny), axis=-1)


# =========================================================================== bootstrap
def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(str(key).encode())])


def bootstrap_resamples(scores: np.ndarray, reps: int, rng: np.random.Generator,
                        chunk: int = 1000, task_bootstrap: bool = False):
    """Yield stratified bootstrap resamples of ``scores`` in chunks.

    Each resample redraws, independently for every task, that task's runs with
    replacement (``task_bootstrap`` also redraws the tasks). Yields arrays
    ``(chunk, runs, tasks)`` totalling ``reps``.
    """
    scores = np.asarray(scores, float)
    n, m = scores.shape[:2]
    cols = np.arange(m)
    done = 0
    while done < reps:
        b = min(chunk, reps - done)
        idx = rng.integers(0, n, size=(b, n, m))
        tcols = rng.integers(0, m, size=(b, 1, m)) if task_bootstrap else cols
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
            s = np.mean(s, axis=-2, keepdims=True)
        flat = _flat(s)
        return np.mean(flat[..., None, :] > taus[:, None], axis=-1)

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
    seeds sorted); tasks with more seeds than others are truncated to the smallest count."""
    cols = [g.sort_values("seed")[value].to_numpy(float)
            for _, g in sub.groupby("task_key", sort=True)]
    n = min(len(c) for c in cols)
    return np.stack([c[:n] for c in cols], axis=1)


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
            the tasks present, so curves are smoothest when schedules agree.
    Returns:
        Columns ``env, method, step, point, lo, hi, n_runs, n_tasks``.
    """
    rows = []
    for (env, method, step), g in df.groupby(["env", "method", "step"], sort=True):
        g = g.drop_duplicates(["task_key", "seed"], keep="last")
        mat = score_matrix(g, "success")
        point, lo, hi = bootstrap_estimate(mat, metric, reps, confidence, seed,
                                           f"{env}\x00{method}\x00{step}")
        rows.append(dict(env=env, method=method, step=int(step), point=point, lo=lo, hi=hi,
                         n_runs=mat.shape[0], n_tasks=mat.shape[1]))
    return pd.DataFrame(rows, columns=["env", "method", "step", "point", "lo", "hi",
                                       "n_runs", "n_tasks"])


SCALING_MANIFEST_AXES = ("params_critic", "params_total", "flops_per_update")


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
    ``params_total``, ``flops_per_update``."""
    axes, partitions = [], []
    for c in _numeric_tags(final) + [a for a in SCALING_MANIFEST_AXES if a in final.columns]:
        vals = pd.to_numeric(final[c], errors="coerce")
        groups = final.assign(_x=vals).groupby(["algorithm", "critic"])["_x"]
        if not (groups.nunique(dropna=True) > 1).any():
            continue
        if c in SCALING_MANIFEST_AXES:
            # params_total that moves in lockstep with params_critic adds no plot
            part = tuple(pd.factorize(final["algorithm"].astype(str) + "\x00"
                                      + final["critic"].astype(str) + "\x00"
                                      + vals.astype(str))[0])
            if part in partitions:
                continue
            partitions.append(part)
        axes.append(c)
    return axes


def scaling_estimates(final: pd.DataFrame, axis: str, metric: str = "mean",
                      reps: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> pd.DataFrame:
    """Final success vs a numeric axis, per environment.

    The hue is the method label without the axis (for ``params_*``/``flops_per_update``:
    without any numeric tag, i.e. the critic family). Each point aggregates the seeds x
    tasks of that (env, hue, x). Runs lacking the axis (e.g. a monolithic critic on a
    ``critic_flow_steps`` axis) come back as reference rows with ``x`` NaN, drawn as
    horizontal lines.

    Returns:
        Columns ``env, hue, x, point, lo, hi, n_runs, n_tasks, reference``.
    """
    if axis not in final.columns:
        raise AnalysisError(f"no column {axis!r} to scale over")
    exclude = [axis] if axis not in SCALING_MANIFEST_AXES else _numeric_tags(final)
    data = final.assign(hue=method_labels(final, exclude=exclude),
                        x=pd.to_numeric(final[axis], errors="coerce"))
    rows = []
    for (env, hue), g in data.groupby(["env", "hue"], sort=True):
        with_x = g[g["x"].notna()]
        parts = ([(x, gx, False) for x, gx in with_x.groupby("x", sort=True)]
                 if len(with_x) else [(np.nan, g, True)])
        for x, gx, ref in parts:
            mat = score_matrix(gx)
            point, lo, hi = bootstrap_estimate(mat, metric, reps, confidence, seed,
                                               f"{env}\x00{hue}\x00{x}")
            rows.append(dict(env=env, hue=hue, x=float(x), point=point, lo=lo, hi=hi,
                             n_runs=mat.shape[0], n_tasks=mat.shape[1], reference=ref))
    return pd.DataFrame(rows, columns=["env", "hue", "x", "point", "lo", "hi", "n_runs",
                                       "n_tasks", "reference"])

