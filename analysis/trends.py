"""Layer 2b: scaling trends with uncertainty, the compute-optimal frontier and tuning budgets.

Pure numpy/pandas (no jax), built on the suite's stratified bootstrap
(``stats.bootstrap_resamples``: seeds resampled with replacement within each task).

**Trend fits.** On every scaling axis the report draws (K, width, depth, parameters, FLOPs
per update, total compute, ...), each line of the figure (``stats.line_families``) gets an
ordinary least-squares fit

    score(x) = a + b * log2(x)

where ``score`` is the line's point at ``x`` as the figure draws it: final success in
percentage points, the mean over the line's tasks of the per-task mean over seeds (tasks
that every ``x`` of the line covers). ``b`` is the change in points per doubling of ``x``;
every ``x`` weighs the same. Why success in points and not a transformed score: the
leaderboards and aggregates report it, so a slope reads directly against them, and at the
scale of the committed studies the scores sit far from 0 and 100 %, where a linear trend in
points and one in logits agree up to a constant factor. A logit transform
(``log(p / (1 - p))``) is the better choice when a line's scores approach 0 or 100 %: there a
straight line in points bends against the bounds (and can predict below 0 or above 100),
while the logit keeps predictions inside them; it needs a clip at 0/100 % (one success in
the evaluation episodes) and its slopes are not in points.

Uncertainty: ``reps`` resamples; in each, every ``(x, task)`` cell redraws its seeds with
replacement (independently; ``stats.bootstrap_resamples`` on the cell's
``(seeds, tasks)`` matrix), the line's points are recomputed and the line refitted. The
slope's interval, the confidence band drawn on the figure (the fitted value at each ``x``)
and the difference of two lines' slopes (independent resamples of each line) are
percentile intervals of these refits. Held-out check: the fit on every ``x`` but the
largest predicts the largest; the error is observed minus predicted, with its interval
from the same resamples (both the fit and the observed point vary).

A line is not fitted — one line says why — when nothing on it learned (every score 0),
when it has fewer than ``MIN_DISTINCT_X`` distinct ``x``, when some ``x`` is not positive
(no logarithm), or when no task is covered at every ``x``. The held-out check needs one
more ``x`` than a fit.

**Compute-optimal frontier** (``compute_frontier``): for each total-compute budget (train
steps x FLOPs per update, ``compute_total``) the configuration with the highest mean final
success among those that cost at most that budget, with that configuration's 95%
stratified-bootstrap CI (the same numbers as its leaderboard cell). The choice is by point
estimate: the interval is the chosen configuration's, not an interval on the choice.

**Tuning budget** (``tuning_budget``, ``expected_max``): with some fields marked as tuned
(``floq analyze --tuned FIELD``), a method is its label without those fields and its
configurations are the distinct values of them it ran. Per method and environment, the
expected maximum over ``N`` configurations drawn uniformly with replacement of a
configuration's mean final success (Dodge et al. 2019, "Show Your Work", eq. 1):

    E[max of N] = sum_i v_(i) * ((i / n)^N - ((i - 1) / n)^N)

over the ``n`` configuration scores sorted ascending, with a bootstrap CI (seeds resampled
within each configuration and task). The configuration scores are final scores, not
validation scores: the curve states how much of a method's best number is owed to trying
several configurations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.load import (AnalysisError, TAG_ABBREVIATIONS, TASK_TAGS, method_labels,
                           natural_key, one_to_one, tag_columns)
from analysis.stats import (_percentile_interval, _rng, aggregate_mean, bootstrap_estimate,
                            bootstrap_resamples, line_families, score_matrix)

__all__ = ["MIN_DISTINCT_X", "AXIS_SHORT", "LineFit", "Trends", "ols_fit",
           "fit_matrices", "fit_lines", "slope_differences", "verdict_lines",
           "slopes_table", "compute_frontier", "frontier_lines", "expected_max",
           "expected_max_curve", "tuning_budget", "budget_counts", "with_budget",
           "study_trends", "METRIC_TEXT", "refusal_line"]

MIN_DISTINCT_X = 3
CONFIDENCE = 0.95
BAND_POINTS = 60
AXIS_SHORT = {"critic_flow_steps": "K", "critic_width": "width", "critic_depth": "depth",
              "params_critic": "critic parameters", "params_total": "parameters",
              "flops_per_update": "FLOPs per update", "compute_total": "total compute"}
METRIC_TEXT = ("least squares of final success, in percentage points as in the leaderboards, "
               "on log2(x), every x weighing the same; slope = points per doubling of x")


def _axis_short(axis: str) -> str:
    return AXIS_SHORT.get(axis, TAG_ABBREVIATIONS.get(axis, axis))


def _num(v: float) -> str:
    """An axis value in words: 8 -> '8', 2.52e13 -> '2.52e13'."""
    v = float(v)
    if v.is_integer() and abs(v) < 1e6:
        return f"{int(v)}"
    if abs(v) >= 1e6:
        mant, exp = f"{v:.3g}".split("e") if "e" in f"{v:.3g}" else (f"{v:.3g}", "0")
        return f"{mant}e{int(exp)}"
    return f"{v:.3g}"


def _pts(v: float, sign: bool = True) -> str:
    return "—" if not np.isfinite(v) else (f"{v:+.1f}" if sign else f"{v:.1f}")


def _ci(point: float, lo: float, hi: float, sign: bool = True) -> str:
    if not np.isfinite(point):
        return "—"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{_pts(point, sign)} (no CI: one seed)"
    return f"{_pts(point, sign)} [{_pts(lo, sign)}, {_pts(hi, sign)}]"


# =========================================================================== the fit
def ols_fit(logx: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``y = a + b logx``, vectorised over leading axes of ``y``:
    ``(n,), (..., n) -> (a (...), b (...))``."""
    logx = np.asarray(logx, float)
    y = np.asarray(y, float)
    xc = logx - logx.mean()
    b = np.sum(xc * (y - y.mean(axis=-1, keepdims=True)), axis=-1) / np.sum(xc * xc)
    a = y.mean(axis=-1) - b * logx.mean()
    return a, b


def _boot_points(mats: Sequence[np.ndarray], reps: int, rng: np.random.Generator) -> np.ndarray:
    """``(reps, n_x)``: each x's aggregate mean (points) over stratified resamples of its
    ``(seeds, tasks)`` matrix, the x's drawn one after the other from one stream."""
    cols = []
    for m in mats:
        cols.append(np.concatenate([aggregate_mean(r) for r in
                                    bootstrap_resamples(m, reps, rng)]))
    return 100.0 * np.stack(cols, axis=-1)


@dataclass
class FitResult:
    """One fitted line (numbers in points; ``x`` in the axis' units)."""

    xs: np.ndarray
    y: np.ndarray
    intercept: float
    slope: float
    slope_lo: float
    slope_hi: float
    boot_slopes: np.ndarray
    band: pd.DataFrame
    heldout: dict | None
    has_ci: bool


def fit_matrices(mats: Sequence[np.ndarray], xs: Sequence[float], reps: int = 2000,
                 seed: int = 0, key: str = "", confidence: float = CONFIDENCE,
                 band_points: int = BAND_POINTS) -> FitResult:
    """Fit ``score = a + b log2 x`` to per-x score matrices ``(seeds, tasks)`` (fractions
    in [0, 1]; every matrix has the same tasks, in the same order) with the stratified
    bootstrap over seeds within each (x, task). The stream is ``(seed, crc32(key))``.

    Returns a ``FitResult``: slope in points per doubling with its percentile interval,
    the bootstrap slopes, the band (``x, fit, lo, hi`` on a log-spaced grid over the
    x's) and the held-out check (``x, observed, predicted, error, lo, hi``; None with
    fewer than ``MIN_DISTINCT_X + 1`` x's). Intervals are NaN when some x has one seed.
    """
    order = np.argsort(np.asarray(xs, float))
    xs = np.asarray(xs, float)[order]
    mats = [np.asarray(mats[i], float) for i in order]
    lx = np.log2(xs)
    y = np.array([100.0 * float(aggregate_mean(m)) for m in mats])
    a, b = ols_fit(lx, y)
    has_ci = min(int(np.min(np.sum(~np.isnan(m), axis=0))) for m in mats) >= 2
    grid = np.linspace(lx[0], lx[-1], band_points)
    fit_line = a + b * grid
    heldout = None
    if len(xs) >= MIN_DISTINCT_X + 1:
        ha, hb = ols_fit(lx[:-1], y[:-1])
        pred = float(ha + hb * lx[-1])
        heldout = dict(x=float(xs[-1]), x_train_max=float(xs[-2]), observed=float(y[-1]),
                       predicted=pred, error=float(y[-1] - pred), lo=np.nan, hi=np.nan)
    if has_ci:
        boot = _boot_points(mats, reps, _rng(seed, f"trend\x00{key}"))
        ba, bb = ols_fit(lx, boot)
        lo, hi = _percentile_interval(bb, confidence)
        band_lo, band_hi = _percentile_interval(ba[:, None] + bb[:, None] * grid[None, :],
                                                confidence)
        if heldout is not None:
            ha_b, hb_b = ols_fit(lx[:-1], boot[:, :-1])
            err = boot[:, -1] - (ha_b + hb_b * lx[-1])
            heldout["lo"], heldout["hi"] = map(float, _percentile_interval(err, confidence))
    else:
        bb = np.full(0, np.nan)
        lo = hi = np.nan
        band_lo = band_hi = np.full_like(grid, np.nan)
    band = pd.DataFrame(dict(x=2.0 ** grid, fit=fit_line, lo=band_lo, hi=band_hi))
    return FitResult(xs=xs, y=y, intercept=float(a), slope=float(b), slope_lo=float(lo),
                     slope_hi=float(hi), boot_slopes=bb, band=band, heldout=heldout,
                     has_ci=has_ci)


@dataclass
class LineFit:
    """A line of one scaling figure and its fit (``fit`` None with ``reason`` when refused)."""

    env: str
    axis: str
    hue: str
    fit: FitResult | None
    reason: str = ""
    n_tasks: int = 0
    n_seeds: str = ""


def refusal_line(reason: str) -> str:
    return f"No trend fitted: {reason}."


def fit_lines(final: pd.DataFrame, axis: str, reps: int = 2000, seed: int = 0,
              confidence: float = CONFIDENCE) -> list[LineFit]:
    """Every line of the scaling figure over ``axis`` (``stats.scaling_estimates``' hues;
    runs without the axis — reference lines — are not fitted), fitted or refused."""
    if axis not in final.columns:
        raise AnalysisError(f"no column {axis!r} to fit over")
    data = final.assign(hue=line_families(final, axis),
                        x=pd.to_numeric(final[axis], errors="coerce"))
    data = data[data["x"].notna()]
    short = _axis_short(axis)
    out = []
    for (env, hue), g in data.groupby(["env", "hue"], sort=True):
        xs = sorted(g["x"].unique())
        per_x = {x: set(g.loc[g["x"] == x, "task_key"]) for x in xs}
        common = sorted(set.intersection(*per_x.values()), key=natural_key)
        seeds = g.groupby(["x", "task_key"])["seed"].nunique()
        n_seeds = (f"{seeds.min()}" if seeds.min() == seeds.max()
                   else f"{seeds.min()}–{seeds.max()}")
        base = dict(env=env, axis=axis, hue=str(hue), n_tasks=len(common), n_seeds=n_seeds)
        scores = pd.to_numeric(g["score"], errors="coerce")
        if not (scores > 0).any():
            out.append(LineFit(fit=None, reason=f"every score of {hue} is 0 (nothing "
                               "learned)", **base))
            continue
        if len(xs) < MIN_DISTINCT_X:
            out.append(LineFit(fit=None, reason=(
                f"{hue} has {len(xs)} distinct value{'s' if len(xs) != 1 else ''} of {short} "
                f"({', '.join(_num(x) for x in xs)}); a fit needs {MIN_DISTINCT_X}"), **base))
            continue
        if xs[0] <= 0:
            out.append(LineFit(fit=None, reason=f"{hue} has {short} <= 0 (no logarithm)",
                               **base))
            continue
        if not common:
            out.append(LineFit(fit=None, reason=f"no task of {hue} is run at every {short}",
                               **base))
            continue
        sub = g[g["task_key"].isin(common)]
        mats = [score_matrix(sub[sub["x"] == x]) for x in xs]
        fit = fit_matrices(mats, xs, reps=reps, seed=seed, key=f"{env}\x00{hue}",
                           confidence=confidence)
        out.append(LineFit(fit=fit, **base))
    return out


def slope_differences(lines: Sequence[LineFit],
                      confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Every pair of fitted lines in one environment: ``env, axis, a, b, point, lo, hi``
    (slope of a minus slope of b, points per doubling; independent resamples)."""
    rows = []
    fitted = [ln for ln in lines if ln.fit is not None]
    for i, p in enumerate(fitted):
        for q in fitted[i + 1:]:
            if p.env != q.env:
                continue
            d = p.fit.slope - q.fit.slope
            lo = hi = np.nan
            if p.fit.has_ci and q.fit.has_ci:
                lo, hi = _percentile_interval(p.fit.boot_slopes - q.fit.boot_slopes,
                                              confidence)
            rows.append(dict(env=p.env, axis=p.axis, a=p.hue, b=q.hue, point=d,
                             lo=float(lo), hi=float(hi)))
    return pd.DataFrame(rows, columns=["env", "axis", "a", "b", "point", "lo", "hi"])


def _reading(lo: float, hi: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval"
    if lo > 0:
        return "rising: the interval lies above 0"
    if hi < 0:
        return "falling: the interval lies below 0"
    return "the interval includes 0: no trend shown"


def verdict_lines(lines: Sequence[LineFit], diffs: pd.DataFrame | None = None,
                  multi_env: bool = False) -> list[str]:
    """One Markdown bullet per line of one axis: the slope per doubling with its CI (or
    why it was not fitted), the held-out error; then the differences of slopes."""
    out = []
    for ln in lines:
        where = f" on {ln.env}" if multi_env else ""
        short = _axis_short(ln.axis)
        if ln.fit is None:
            out.append(f"- {refusal_line(ln.reason + where)}")
            continue
        f = ln.fit
        text = (f"- The slope of {ln.hue} in {short}{where} is {_ci(f.slope, f.slope_lo, f.slope_hi)} "
                f"points per doubling ({short} {_num(f.xs[0])}–{_num(f.xs[-1])}, {len(f.xs)} "
                f"values, {ln.n_tasks} task(s) × {ln.n_seeds} seeds; {_reading(f.slope_lo, f.slope_hi)}).")
        h = f.heldout
        if h is not None:
            text += (f" Held out: the fit on {short} ≤ {_num(h['x_train_max'])} predicts "
                     f"{h['predicted']:.1f}% at {short} = {_num(h['x'])}, observed "
                     f"{h['observed']:.1f}%: error (observed − predicted) "
                     f"{_ci(h['error'], h['lo'], h['hi'])} points.")
        else:
            text += (f" No held-out check: it needs {MIN_DISTINCT_X + 1} values of {short} "
                     f"(a fit on all but the largest).")
        out.append(text)
    if diffs is not None:
        for r in diffs.itertuples():
            where = f" on {r.env}" if multi_env else ""
            out.append(f"- The difference of slopes in {_axis_short(r.axis)}{where}, "
                       f"{r.a} − {r.b}, is {_ci(r.point, r.lo, r.hi)} points per doubling "
                       f"({_reading(r.lo, r.hi)}).")
    return out


def slopes_table(all_lines: Mapping[str, Sequence[LineFit]], reps: int, seed: int,
                 confidence: float = CONFIDENCE, axis_labels: Mapping[str, str] | None = None):
    """The slopes as a ``tables.Leaderboard`` (Markdown/LaTeX/CSV by the leaderboards'
    writers): one row per (line, axis), columns slope per doubling, held-out error and
    the x values; the CSV keeps exact bounds (``point, lo, hi`` in points)."""
    from analysis.tables import Leaderboard
    multi_env = len({ln.env for lines in all_lines.values() for ln in lines}) > 1
    cols = ["Slope (points / doubling)", "Held-out error (points)", "x values"]
    cells, rows = [], []
    for axis, lines in all_lines.items():
        for ln in lines:
            row = f"{ln.hue} — {_axis_short(axis)}" + (f" — {ln.env}" if multi_env else "")
            rows.append(row)
            base = dict(row=row, kind="ours", bold=False, n_seeds=np.nan, n_seeds_max=np.nan,
                        n_tasks=ln.n_tasks, uncertainty=np.nan,
                        uncertainty_kind=f"{int(confidence * 100)}% stratified bootstrap CI",
                        ref="ours", env=ln.env, axis=axis, line=ln.hue)
            if ln.fit is None:
                cells.append(dict(base, column=cols[0], point=np.nan, lo=np.nan, hi=np.nan,
                                  display="no fit: " + ln.reason))
                continue
            f = ln.fit
            cells.append(dict(base, column=cols[0], point=f.slope, lo=f.slope_lo,
                              hi=f.slope_hi, display=_ci(f.slope, f.slope_lo, f.slope_hi)))
            h = f.heldout
            if h is not None:
                cells.append(dict(base, column=cols[1], point=h["error"], lo=h["lo"],
                                  hi=h["hi"], display=f"{_ci(h['error'], h['lo'], h['hi'])} "
                                                      f"at {_num(h['x'])}"))
            cells.append(dict(base, column=cols[2], point=np.nan, lo=np.nan, hi=np.nan,
                              display=", ".join(_num(x) for x in f.xs)))
    df = pd.DataFrame(cells)
    caption = (f"Fitted trends: {METRIC_TEXT}. Per line of each scaling figure; "
               f"{int(confidence * 100)}% stratified-bootstrap CIs (seeds resampled within "
               f"each x and task; {reps} reps, seed {seed}). Held-out error: observed minus "
               "predicted at the largest x by the fit on the others.")
    notes = ["A slope whose interval includes 0 does not show a trend in these runs.",
             "Success in points, not a logit: scores here are far from 0 and 100%; a logit "
             "fit is preferable when they approach the bounds."]
    return Leaderboard(cells=df, rows=rows, columns=cols, title="Scaling slopes",
                       caption=caption, notes=notes, label="tab:slopes",
                       first_header="Line — axis")


# =========================================================================== frontier
def _flops(v: float) -> str:
    for div, unit in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP")):
        if v >= div:
            return f"{v / div:.4g} {unit}"
    return f"{v:.4g} FLOP"


def compute_frontier(final: pd.DataFrame, reps: int = 2000, seed: int = 0,
                     confidence: float = CONFIDENCE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(configs, frontier)`` per environment.

    ``configs``: one row per (env, configuration = method label, total compute) covering
    every task of the environment: ``env, method, compute, point, lo, hi`` (fractions;
    the interval is the leaderboard cell's: same matrix, same stream). ``frontier``: for
    each distinct budget, the configuration with the highest point estimate among those
    with ``compute <= budget`` (ties: the cheaper, then by name): ``env, budget, method,
    compute, point, lo, hi, n_within``.
    """
    cols_c = ["env", "method", "compute", "point", "lo", "hi", "n_runs"]
    cols_f = ["env", "budget", "method", "compute", "point", "lo", "hi", "n_within"]
    if "compute_total" not in final.columns:
        return pd.DataFrame(columns=cols_c), pd.DataFrame(columns=cols_f)
    data = final.assign(_c=pd.to_numeric(final["compute_total"], errors="coerce"))
    data = data[data["_c"].notna() & (data["_c"] > 0)]
    rows = []
    for env, ge in data.groupby("env", sort=True):
        tasks = set(final.loc[final["env"] == env, "task_key"])
        for (method, c), g in ge.groupby(["method", "_c"], sort=True):
            if set(g["task_key"]) != tasks:
                continue
            point, lo, hi = bootstrap_estimate(score_matrix(g), "mean", reps, confidence,
                                               seed, f"{method}\x00{env}")
            rows.append(dict(env=env, method=str(method), compute=float(c), point=point,
                             lo=lo, hi=hi, n_runs=len(g)))
    configs = pd.DataFrame(rows, columns=cols_c)
    front = []
    for env, g in configs.groupby("env", sort=True):
        for budget in sorted(g["compute"].unique()):
            within = g[g["compute"] <= budget]
            best = sorted(within.itertuples(),
                          key=lambda r: (-r.point, r.compute, natural_key(r.method)))[0]
            front.append(dict(env=env, budget=float(budget), method=best.method,
                              compute=best.compute, point=best.point, lo=best.lo,
                              hi=best.hi, n_within=len(within)))
    return configs, pd.DataFrame(front, columns=cols_f)


def frontier_lines(frontier: pd.DataFrame, multi_env: bool = False) -> list[str]:
    """The headline's sentence: where along the budgets the best configuration changes."""
    out = []
    for env, g in frontier.groupby("env", sort=True):
        g = g.sort_values("budget")
        steps = []
        prev = None
        for r in g.itertuples():
            if r.method != prev:
                steps.append(r)
                prev = r.method
        parts = []
        for i, r in enumerate(steps):
            until = (f"{_flops(r.budget)} or more" if i == len(steps) - 1 else
                     f"{_flops(r.budget)} up to (not incl.) {_flops(steps[i + 1].budget)}")
            pct = (f"{100 * r.point:.1f}%" + ("" if not np.isfinite(r.lo) else
                                              f" [{100 * r.lo:.1f}, {100 * r.hi:.1f}]"))
            parts.append(f"{until}: {r.method}, {pct}")
        where = f" on {env}" if multi_env else ""
        out.append(f"**Compute-optimal{where}.** Best configuration within each total-compute "
                   f"budget (train steps × FLOPs per update; {g['budget'].nunique()} budgets): "
                   + "; ".join(parts) + ". Chosen by point estimate; the interval is the "
                   "chosen configuration's 95% stratified-bootstrap CI, not an interval on "
                   "the choice.")
        out.append("")
    return out


# =========================================================================== tuning budget
def expected_max(values: np.ndarray, n_draws: int | Sequence[int]) -> np.ndarray:
    """Dodge et al. (2019): expected maximum of ``N`` draws with replacement from the
    ``n`` values along the last axis, ``sum_i v_(i) ((i/n)^N - ((i-1)/n)^N)``.
    ``(..., n), N or (k,) -> (...) or (..., k)``."""
    v = np.sort(np.asarray(values, float), axis=-1)
    n = v.shape[-1]
    ns = np.atleast_1d(np.asarray(n_draws, float))
    if n < 1 or (ns < 1).any():
        raise AnalysisError("expected_max needs at least one value and N >= 1")
    i = np.arange(1, n + 1, dtype=float)
    w = (i[None, :] / n) ** ns[:, None] - ((i[None, :] - 1) / n) ** ns[:, None]  # (k, n)
    out = v @ w.T
    return out[..., 0] if np.ndim(n_draws) == 0 else out


def _n_grid(n: int) -> list[int]:
    """1, 2, 4, ... up to the first power of 2 at or above ``n`` (at least 1, 2)."""
    top = max(2, 2 ** math.ceil(math.log2(max(n, 1))))
    return [2 ** k for k in range(int(math.log2(top)) + 1)]


def expected_max_curve(mats: Sequence[np.ndarray], reps: int = 2000, seed: int = 0,
                       key: str = "", ns: Sequence[int] | None = None,
                       confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per ``N``: expected max (fractions) over configurations whose ``(seeds, tasks)``
    matrices are ``mats`` (one per configuration, same tasks), with a percentile interval
    from stratified resamples of every configuration (independent). Columns ``N, point,
    lo, hi``; NaN intervals when some configuration has a single seed."""
    ns = list(ns or _n_grid(len(mats)))
    v = np.array([float(aggregate_mean(m)) for m in mats])
    point = expected_max(v, ns)
    has_ci = min(int(np.min(np.sum(~np.isnan(m), axis=0))) for m in mats) >= 2
    lo = hi = np.full(len(ns), np.nan)
    if has_ci:
        rng = _rng(seed, f"expected_max\x00{key}")
        boot = np.stack([np.concatenate([aggregate_mean(r) for r in
                                         bootstrap_resamples(m, reps, rng)]) for m in mats],
                        axis=-1)
        lo, hi = _percentile_interval(expected_max(boot, ns), confidence)
    return pd.DataFrame(dict(N=ns, point=point, lo=lo, hi=hi))


def tuning_groups(final: pd.DataFrame, tuned: Sequence[str]) -> pd.Series:
    """The method each run belongs to when ``tuned`` fields are tuning choices: its label
    without them, and without the tags that, within its (algorithm, critic), only restate
    them (one grid per value: ``grid=rebrac-alpha-0.1`` beside ``alpha=0.1``)."""
    tuned = [t for t in tuned if t in final.columns]
    out = pd.Series("", index=final.index, dtype=object)
    tags = [c for c in tag_columns(final) if c not in TASK_TAGS and c not in tuned]
    for _, g in final.groupby(["algorithm", "critic"], sort=False):
        key = (g[tuned].astype(object).where(g[tuned].notna(), "").map(str)
               .agg("\x00".join, axis=1)) if tuned else None
        aliases = []
        if key is not None and key.nunique() > 1:
            probe = g.assign(_tuned=key)
            aliases = [t for t in tags if g[t].notna().all() and g[t].astype(str).nunique() > 1
                       and one_to_one(probe, "_tuned", t)]
        out.loc[g.index] = method_labels(final, exclude=[*tuned, *aliases]).loc[g.index]
    return out


def budget_counts(final: pd.DataFrame, tuned: Sequence[str]) -> pd.DataFrame:
    """Per tuned method: ``group, n_configs, per_task`` (min–max configurations per task),
    ``values`` (the tuned fields' values tried, as text)."""
    data = final.assign(_g=tuning_groups(final, tuned))
    rows = []
    for g, sub in data.groupby("_g", sort=False):
        per_task = sub.groupby("task_key")["method"].nunique()
        vals = []
        for t in tuned:
            if t in sub and sub[t].notna().any():
                got = sorted({str(v) for v in sub[t].dropna()}, key=natural_key)
                vals.append(f"{TAG_ABBREVIATIONS.get(t, t)} ∈ {{{', '.join(got)}}}")
        rows.append(dict(group=str(g), n_configs=int(sub["method"].nunique()),
                         per_task=(f"{per_task.min()}" if per_task.min() == per_task.max()
                                   else f"{per_task.min()}–{per_task.max()}"),
                         values="; ".join(vals)))
    out = pd.DataFrame(rows, columns=["group", "n_configs", "per_task", "values"])
    return out.iloc[sorted(range(len(out)), key=lambda i: natural_key(out["group"].iloc[i]))]


def tuning_budget(final: pd.DataFrame, tuned: Sequence[str], reps: int = 2000,
                  seed: int = 0, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Expected max curves per (env, tuned method): ``env, group, n_configs, N, point, lo,
    hi`` (fractions). Configurations that miss some of the environment's tasks are left
    out of that environment's curve."""
    data = final.assign(_g=tuning_groups(final, tuned))
    frames = []
    for (env, g), sub in data.groupby(["env", "_g"], sort=True):
        tasks = set(final.loc[final["env"] == env, "task_key"])
        mats, names = [], []
        for method, gm in sub.groupby("method", sort=True):
            if set(gm["task_key"]) == tasks:
                mats.append(score_matrix(gm))
                names.append(method)
        if not mats:
            continue
        curve = expected_max_curve(mats, reps=reps, seed=seed, key=f"{env}\x00{g}",
                                   confidence=confidence)
        frames.append(curve.assign(env=env, group=str(g), n_configs=len(mats)))
    cols = ["env", "group", "n_configs", "N", "point", "lo", "hi"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def with_budget(lb, final: pd.DataFrame, tuned: Sequence[str]):
    """The leaderboard ``lb`` with a ``Configs tried`` column (per row: how many
    configurations its tuned method ran) and a footnote when methods were tuned on
    different numbers of configurations. ``lb`` unchanged when nothing is tuned."""
    if not tuned:
        return lb
    from dataclasses import replace
    counts = budget_counts(final, tuned)
    group_of = dict(zip(final["method"].astype(str), tuning_groups(final, tuned).astype(str)))
    n_of = dict(zip(counts["group"], counts["n_configs"]))
    col = "Configs tried"
    cells = [dict(row=r, column=col, kind="budget", point=float(n_of[group_of[r]]),
                  lo=np.nan, hi=np.nan, display=str(n_of[group_of[r]]), bold=False,
                  n_seeds=np.nan, n_seeds_max=np.nan, n_tasks=np.nan, uncertainty=np.nan,
                  uncertainty_kind="configurations tried (tuning budget)", ref="ours")
             for r in lb.rows if r in group_of]
    notes = list(lb.notes)
    fields = ", ".join(tuned)
    desc = "; ".join(f"{r.group}: {r.n_configs}" + (f" ({r.values})" if r.values else "")
                     + ("" if r.per_task == str(r.n_configs) else f", {r.per_task} per task")
                     for r in counts.itertuples())
    notes.append(f"{col}: configurations each method ran over the tuned field(s) {fields} "
                 f"(--tuned): {desc}.")
    if counts["n_configs"].nunique() > 1:
        most = counts[counts["n_configs"] == counts["n_configs"].max()]
        least = counts[counts["n_configs"] == counts["n_configs"].min()]
        notes.append(f"Unequal tuning budgets: {', '.join(most['group'])} tried "
                     f"{int(most['n_configs'].iloc[0])} configurations, "
                     f"{', '.join(least['group'])} {int(least['n_configs'].iloc[0])}; the best "
                     "of more tries is favoured by the number of tries alone (Dodge et al. "
                     "2019) — compare the expected maximum at equal N (Tuning budget).")
    return replace(lb, cells=pd.concat([lb.cells, pd.DataFrame(cells)], ignore_index=True),
                   columns=[*lb.columns, col], notes=notes)


# =========================================================================== the study
@dataclass
class Trends:
    """Everything ``study_trends`` computed for one protocol group."""

    lines: dict = field(default_factory=dict)        # axis -> [LineFit]
    diffs: dict = field(default_factory=dict)        # axis -> DataFrame
    configs: pd.DataFrame | None = None
    frontier: pd.DataFrame | None = None
    budget: pd.DataFrame | None = None
    tuned: tuple = ()
    multi_env: bool = False
    reps: int = 2000
    seed: int = 0

    def bands(self, axis: str) -> pd.DataFrame:
        """``env, hue, x, fit, lo, hi`` (fractions, as the scaling figure's y) of the
        fitted lines on ``axis``, for ``plots.plot_scaling(fits=...)``."""
        frames = [ln.fit.band.assign(env=ln.env, hue=ln.hue)
                  for ln in self.lines.get(axis, []) if ln.fit is not None]
        if not frames:
            return pd.DataFrame(columns=["env", "hue", "x", "fit", "lo", "hi"])
        out = pd.concat(frames, ignore_index=True)
        out[["fit", "lo", "hi"]] = out[["fit", "lo", "hi"]] / 100.0
        return out

    def verdict(self, axis: str) -> list[str]:
        if axis not in self.lines:
            return []
        lines = verdict_lines(self.lines[axis], self.diffs.get(axis), self.multi_env)
        if not lines:
            return []
        return [f"Fitted trend ({METRIC_TEXT}; 95% stratified-bootstrap CIs, seeds "
                f"resampled within each x and task, {self.reps} reps, seed {self.seed}; "
                "dashed on the figure with its band):", "", *lines, ""]

    @property
    def has_frontier(self) -> bool:
        return self.frontier is not None and self.frontier["budget"].nunique() >= 2


def study_trends(final: pd.DataFrame, axes: Sequence[str], reps: int = 2000, seed: int = 0,
                 tuned: Sequence[str] = ()) -> Trends:
    """Fits on every axis, the compute-optimal frontier (when ``compute_total`` is one of
    ``axes``) and the tuning budget (when fields are ``tuned``)."""
    tr = Trends(tuned=tuple(tuned), multi_env=final["env"].nunique() > 1, reps=reps,
                seed=seed)
    for axis in axes:
        tr.lines[axis] = fit_lines(final, axis, reps=reps, seed=seed)
        tr.diffs[axis] = slope_differences(tr.lines[axis])
    if "compute_total" in axes:
        tr.configs, tr.frontier = compute_frontier(final, reps=reps, seed=seed)
    if tuned:
        tr.budget = tuning_budget(final, tuned, reps=reps, seed=seed)
    return tr


def section_lines(w, tr: Trends, final: pd.DataFrame, prefix: str, colors: dict,
                  markers: dict, titles: dict, h: str) -> tuple[list[str], list[str]]:
    """Write the slopes table, the frontier and the expected-max figure through the
    report's writer ``w``; return their index lines (headings at ``h``): ``(slopes table,
    frontier and tuning budget)``."""
    from analysis import plots, trend_plots
    from analysis.report import _fig_block, _md_frame
    slopes: list[str] = []
    md: list[str] = []
    if any(ln.fit is not None for lines in tr.lines.values() for ln in lines):
        table = slopes_table(tr.lines, tr.reps, tr.seed)
        stem = f"{prefix}slopes"
        w.text(f"{stem}.md", table.to_markdown())
        w.text(f"{stem}.tex", table.to_latex())
        w.text(f"{stem}.csv", table.to_csv())
        slopes += [f"{h} Scaling slopes", "", table.to_markdown(),
               f"Files: [Markdown]({stem}.md) · [LaTeX]({stem}.tex) · [CSV]({stem}.csv)", ""]
    if tr.has_frontier:
        stem = f"{prefix}compute_frontier"
        w.frame(f"{stem}.csv", tr.frontier)
        figs = w.figure(stem, trend_plots.plot_frontier, tr.configs, tr.frontier, colors=colors,
                        markers=markers, titles=titles)
        shown = tr.frontier.assign(
            budget=[_flops(v) for v in tr.frontier["budget"]],
            score=[f"{100 * p:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if np.isfinite(lo)
                   else f"{100 * p:.1f}" for p, lo, hi in
                   zip(tr.frontier["point"], tr.frontier["lo"], tr.frontier["hi"])],
            compute=[_flops(v) for v in tr.frontier["compute"]])
        cols = (["env"] if tr.multi_env else []) + ["budget", "method", "compute", "score",
                                                     "n_within"]
        md += [f"{h} Compute-optimal frontier", "",
               _fig_block(figs, f"{stem}.csv",
                          "Final success vs total training compute (train steps × FLOPs per "
                          "update): every configuration with its 95% CI; step line: the best "
                          "configuration (point estimate) within each budget"), "",
               "Per budget: the best configuration costing at most that much (score: "
               "success %, 95% CI; n_within: configurations within the budget).", "",
               _md_frame(shown, cols), ""]
    if tr.tuned:
        counts = budget_counts(final, tr.tuned)
        md += [f"{h} Tuning budget", "",
               f"Tuned field(s) (--tuned): {', '.join(tr.tuned)}. A method is its label "
               "without them; its configurations are the values it ran. Expected maximum "
               "over N configurations drawn with replacement (Dodge et al. 2019, 'Show Your "
               "Work'), of each configuration's mean final success, with 95% CIs (seeds "
               f"resampled within each configuration and task; {tr.reps} reps, seed "
               f"{tr.seed}).", "",
               _md_frame(counts.rename(columns={"group": "method", "n_configs":
                                                "configurations", "per_task": "per task",
                                                "values": "values tried"}),
                         ["method", "configurations", "per task", "values tried"]), ""]
        several = tr.budget is not None and bool((tr.budget["n_configs"] > 1).any())
        budget = tr.budget if several else pd.DataFrame()  # all methods: compare at equal N
        if not len(budget):
            md += ["No expected-maximum curve: no method ran more than one configuration "
                   "of the tuned field(s) on all of an environment's tasks.", ""]
        else:
            stem = f"{prefix}expected_max"
            w.frame(f"{stem}.csv", budget)
            figs = w.figure(stem, trend_plots.plot_expected_max, budget, colors=colors,
                            titles=titles)
            wide = budget.assign(score=[
                f"{100 * p:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if np.isfinite(lo)
                else f"{100 * p:.1f}" for p, lo, hi in
                zip(budget["point"], budget["lo"], budget["hi"])])
            wide = wide.pivot_table(index=["env", "group", "n_configs"], columns="N",
                                    values="score", aggfunc="first").reset_index()
            wide.columns = [c if isinstance(c, str) else f"N={c}" for c in wide.columns]
            wide = wide.rename(columns={"group": "method", "n_configs": "configs"})
            cols = (["env"] if tr.multi_env else []) + [c for c in wide.columns if c != "env"]
            md += [_fig_block(figs, f"{stem}.csv",
                              "Expected best final success over N sampled configurations "
                              "(Dodge et al. 2019), 95% CI bands; beyond N = the number of "
                              "configurations a method ran, the curve approaches its best "
                              "configuration's score"), "",
                   _md_frame(wide, cols), ""]
    return slopes, md
