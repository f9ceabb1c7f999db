"""``floq analyze``: a results directory -> figures, tables and an index page.

``build_report(results_dir, out_dir)`` loads every run under ``results_dir``, scores each
run seed by the chosen protocol, and writes into ``out_dir``:

- ``index.md`` — the answer first: one generated sentence (the best configuration vs the
  baseline: difference in points with its CI and P(best > baseline)), the main scaling
  figure (success vs K when K varies) and a cost table (critic parameters, GFLOP/update,
  updates/s, wall time, GPU-hours where a GPU ran); then the leaderboards, aggregates,
  probability of improvement, profiles, learning curves and the other scaling figures;
  then how the numbers were made (method, input notes, excluded run seeds). An all-zero
  study gets a 'Nothing learned' notice and its tables, and no figure.
- ``index.html`` — the same page, self-contained: every figure embedded as a base64 data
  URI, no external references, so it opens offline and can be mailed as one file
- ``leaderboard_env.{md,tex,csv}`` — success per environment (with published numbers),
  a ``Mean`` column (environments weigh equally) and an ``Avg. rank`` column
- ``leaderboard_tasks_<env>.{md,tex,csv}`` — success per task, one set per environment
- ``aggregates.{csv,png,pdf}`` — median / IQM / mean / optimality gap with 95% CIs (the
  figure leaves out a metric that repeats another for every method, e.g. on one task, and
  its caption says so)
- ``probability_of_improvement.{csv,png,pdf}`` — P(X > baseline) for every other method
  (``baseline``: ``--baseline METHOD``, default the monolithic critic when present; every
  pair when there is none); with ``--baseline FIELD=VALUE`` (by default ``critic=monolithic``
  for a layout of several algorithms x critics) one row per pair of ``analysis.paired``:
  each method against the baseline that shares its algorithm, tasks, budget and settings,
  and the answer is one line per pair (``paired.answer_lines``)
- ``performance_profile.{csv,png,pdf}`` — score distributions with CI bands
- ``learning_curves.{csv,png,pdf}`` — success vs step per environment
- ``learning_curves_wallclock.{csv,png,pdf}`` — the same points vs wall-clock time
- ``critic_diagnostics.{csv,png,pdf}`` — Q mean, critic loss (one panel per critic: a TD
  loss and floq's flow-matching loss are different objectives) and gradient norm from the
  scored runs' train.csv (``analysis.diagnostics``)
- ``scaling_<axis>.{csv,png,pdf}`` — final success vs each numeric axis that varies
  (K, width, depth, parameters, FLOPs per update, ``compute_total`` = train steps x FLOPs
  per update)
- ``slopes.{md,tex,csv}``, ``compute_frontier.{csv,png,pdf}``, ``expected_max.{csv,png,pdf}``
  — fitted scaling trends (drawn dashed on the scaling figures, a verdict under each),
  the compute-optimal frontier (in the answer when compute varies) and, with ``--tuned
  FIELD``, the tuning budget (``analysis.trends``)
- ``runs.csv`` — every run seed with its score, manifest fields and why it was excluded
- ``excluded_runs.csv`` — the run seeds left out, with the reason (when there are any)

When runs follow different protocols (train_steps, evaluation schedule, success timing,
OGBench version, scored phase) every file above except ``runs.csv`` is written once per
protocol group, prefixed ``p1_``, ``p2_``, ... and described in the index.

What counts, and what is said (never a silent wrong number):

- A run is a (run directory, task): a directory whose eval.csv holds several tasks (one
  program training several tasks) gives one run per task, exactly as if each task had its
  own directory.
- Only run seeds whose run.json ``status`` is ``done`` are results. ``diverged`` runs —
  and run seeds whose train.csv has a non-finite loss, and members of a program that
  run.json ``diverged_members`` lists (the program's other members are scored) — are never
  scored (not even as 0%);
  ``running``, ``preempted`` and ``failed`` runs, and runs without run.json whose last
  evaluation is before ``train_steps``, are partial and scored only with
  ``include_partial`` (``--include-partial``). The index lists every excluded run seed
  with its reason.
- Every seed is used: per-task means are over the seeds that exist, each table cell states
  ``n`` (seeds per task), and a warning names seeds that a task lacks.
- Duplicate (task, seed, step) rows (a resumed run) resolve to the last-written row, with a
  warning when they disagree; a row with an empty/NaN success is dropped (that row only)
  with a warning; a missing run.json is a named warning; an unreadable run.json never
  turns manifest-only fields into swept values.
- The final-score rule is stated in steps (e.g. 'mean of the evaluations at steps 800k,
  900k, 1M'); a run whose evaluation spacing differs from run.json's ``eval_interval`` is
  flagged.
- Bold in a leaderboard marks the best entry and those whose CI overlaps it, only in a
  column where some entry is separated from the best (``tables.significance_bold``); a
  table where nothing separates says so instead of bolding everything.
- Leaderboard cells and scaling points that cover fewer tasks than others are marked
  (``[k/n tasks]``; hollow points annotated ``k/n``); aggregates use one shared task set and
  name the methods left out.
- Phases: eval.csv rows carry ``phase`` (``offline`` | ``online``; CSVs without the column
  are offline) and ``env_steps``. ``phase=None`` (default) scores each run at the end of its
  last phase (runs scored on different phases land in different protocol groups);
  ``--phase offline|online`` scores that phase for every run. Learning curves mark the
  offline/online boundary with a dotted vertical line.

Figures share one colour and one marker per configuration (``plots.config_colors``,
``plots.config_markers``, computed once per report; K or width within a critic family on a
well-separated sequential ramp); panel titles name the environment, its tasks, the training
budget and the seeds; scaling figures show every run seed as a dot and, on FLOPs/compute/
parameter axes, label each point with its configuration (``K=4``); the flow-steps scaling
figure overlays the published K ablations of matching environments (labelled
'published'); lines on parameter/FLOPs/compute axes join only one family (floq at one
width over K; the monolithic critic over width).

Nothing is half-written: everything is produced in a staging folder next to ``out_dir``
and moved in file by file (``os.replace``), the index last; files that an earlier report
wrote and this one does not are removed. Bad input raises ``AnalysisError`` before
``out_dir`` is touched; ``main`` turns it into one line on stderr and exit code 2.

No silent phase: ``floq analyze`` says on stderr when the estimates start and, since the
figures are drawn last, when it is at which of them ('analysing 6 methods: figure 3/12
(learning curves)'); stdout keeps the index's path first, then the headline and the
leaderboard (``floq.cli.report_summary``).
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis import paired, plots, stats, tables, trends
from analysis.load import (PHASES, TAG_ABBREVIATIONS, AnalysisError, find_run_dirs, parse_filters, results_base,
                           filter_text,
                           load_results, to_score_dict, warn_missing_seeds)

__all__ = ["build_report", "main", "AXIS_LABELS", "markdown_to_html"]

AXIS_LABELS = {
    "critic_flow_steps": "Critic flow steps K",
    "critic_width": "Critic width (units)",
    "critic_depth": "Critic depth (layers)",
    "params_critic": "Critic parameters",
    "params_total": "Parameters (actor + critic)",
    "flops_per_update": "FLOPs per update",
    "compute_total": "Training compute (train steps × FLOPs per update)",
}
_MANIFEST = ".floq_report_files"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(s)).strip("-") or "x"


class _Writer:
    """Collects files in a staging dir; ``commit`` moves them into the output dir. Figures
    are drawn after the page is written (``draw_figures``), when their number is known, so
    that drawing them, the slow part, says how far it is."""

    def __init__(self, stage: Path, formats: Sequence[str] = ("png", "pdf")):
        self.stage = stage
        self.formats = tuple(formats)
        self.files: list[str] = []
        self.pending: list[tuple] = []

    def text(self, name: str, content: str) -> str:
        with open(self.stage / name, "w", newline="\n") as f:
            f.write(content)
        self.files.append(name)
        return name

    def frame(self, name: str, df: pd.DataFrame) -> str:
        df.to_csv(self.stage / name, index=False, lineterminator="\n", float_format="%.6g")
        self.files.append(name)
        return name

    def figure(self, stem: str, draw, *args, **kwargs) -> list[str]:
        """``stem.<format>`` of the figure ``draw(*args, **kwargs)`` (a plots function)
        returns, drawn by ``draw_figures``; returns the file names."""
        self.pending.append((stem, draw, args, kwargs))
        names = [f"{stem}.{fmt}" for fmt in self.formats]
        self.files += names
        return names

    def draw_figures(self, progress=None, what: str = "analysing") -> None:
        """Draw and save the pending figures, one ``progress`` line before each:
        '<what>: figure 3/12 (learning curves)'."""
        pending, self.pending = self.pending, []
        for i, (stem, draw, args, kwargs) in enumerate(pending, 1):
            if progress is not None:
                progress(f"{what}: figure {i}/{len(pending)} ({_figure_phase(stem)})")
            plots.save_figure(draw(*args, **kwargs), self.stage / stem, formats=self.formats)


def _figure_phase(stem: str) -> str:
    """What a figure file shows, for a progress line: 'p2_scaling_critic_width' ->
    'scaling vs critic width (units), protocol group 2'."""
    group = re.fullmatch(r"p(\d+)_(.+)", stem)
    name = group.group(2) if group else stem
    if name.startswith("scaling_"):
        name = "scaling vs " + AXIS_LABELS.get(name[len("scaling_"):], name[len("scaling_"):]).lower()
    else:
        name = {"learning_curves_wallclock": "learning curves vs wall-clock"}.get(
            name, name.replace("_", " "))
    return f"{name}, protocol group {group.group(1)}" if group else name


def _md_frame(df: pd.DataFrame, cols: Sequence[str], pct: Sequence[str] = ()) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        vals = []
        for c in cols:
            v = r[c]
            if c in pct:
                vals.append("—" if pd.isna(v) else f"{100 * v:.1f}")
            elif isinstance(v, float):
                vals.append("—" if pd.isna(v) else f"{v:.3g}")
            else:
                vals.append(str(v).replace("|", "\\|"))
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def _fig_block(names: Sequence[str], csv: str, caption: str) -> str:
    shown = [n for n in names if n.endswith((".png", ".svg"))]
    links = " · ".join([f"[{n.rsplit('.', 1)[1].upper()}]({n})" for n in names
                        if n not in shown[:1]] + [f"[CSV]({csv})"])
    image = f"![{caption}]({shown[0]})\n\n" if shown else ""
    return f"{image}{caption} — {links}\n"


def _common_tasks(final: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """(tasks, methods kept, methods dropped) for aggregates over one shared task axis.

    Every method's task set (and the union) is a candidate; a candidate keeps the methods
    that ran all its tasks. The candidate with the most (methods x tasks) cells wins (ties:
    more tasks), so one method run on a single task does not shrink everyone's comparison
    to that task — it is left out instead (and named in the index)."""
    per = final.groupby("method")["task_key"].apply(frozenset)
    candidates = set(per) | {frozenset().union(*per)}
    best = max(candidates, key=lambda t: (len(t) * sum(t <= s for s in per), len(t),
                                          sorted(t)))
    kept = [m for m, s in per.items() if best <= s]
    dropped = [m for m in per.index if m not in kept]
    return sorted(best, key=tables.natural_key), kept, dropped


def _ci_text(point, lo, hi) -> str:
    if pd.isna(point):
        return "—"
    if pd.isna(lo):
        return f"{100 * point:.1f} (no CI: 1 seed)"
    return f"{100 * point:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _aggregate_section(w: _Writer, scores: dict, agg: pd.DataFrame, tasks: list[str],
                       dropped: list[str], prefix: str, colors: dict, markers: dict,
                       seed: int, reps: int, baseline: str | None, h: str = "##",
                       pairing: "paired.Pairing | None" = None) -> list[str]:
    """Aggregates, probability of improvement and performance profile; index lines (their
    headings one level below `h`, the section's)."""
    md: list[str] = []
    scope = (f"{len(tasks)} task(s): {', '.join(tasks)}"
             + (f"; left out because they miss some of these tasks: {', '.join(dropped)}"
                if dropped else ""))
    stem = f"{prefix}aggregates"
    w.frame(f"{stem}.csv", agg)
    shown, repeats = plots.distinct_metrics(agg)
    figs = w.figure(stem, plots.plot_aggregates, agg, colors=colors, metrics=shown)
    caption = "Aggregate metrics (success %)"
    if repeats:
        same = "; ".join(
            f"{stats.METRIC_LABELS[m]} {'= 100 − ' if m == 'optimality_gap' else '= '}"
            f"{stats.METRIC_LABELS[repeats[m]].lower()}"
            for m in stats.AGGREGATES if m in repeats)
        caption += (f"; only {', '.join(stats.METRIC_LABELS[m] for m in shown)} drawn: "
                    f"with these runs {same} for every method (see the table)")
    md += [f"Over {scope}. Point estimates with {int(100 * 0.95)}% stratified-bootstrap "
           f"CIs (runs = seeds, tasks = tasks; {reps} reps, seed {seed}).", "",
           _fig_block(figs, f"{stem}.csv", caption)]
    metrics = [m for m in stats.AGGREGATES if m in set(agg["metric"])]
    rows = []
    for method, g in agg.groupby("method", sort=False):
        g = g.set_index("metric")
        row = {"method": method,
               "n (seeds per task)": tables._fmt(g["n_runs"].iloc[0])}
        for m in metrics:
            row[stats.METRIC_LABELS[m] + (" ↓" if m == "optimality_gap" else "")] = \
                _ci_text(g.loc[m, "point"], g.loc[m, "lo"], g.loc[m, "hi"])
        rows.append(row)
    wide = pd.DataFrame(rows)
    md += ["Point estimate [95% CI], success in %; ↓: lower is better.", "",
           _md_frame(wide, list(wide.columns)), ""]

    pairs = (_poi_pairs(scores, baseline) if pairing is None else
             [(m, b) for m, b in pairing.pairs.items() if m in scores and b in scores])
    if len(scores) >= 2 and pairs:
        poi = stats.poi_estimates(scores, pairs=pairs, reps=reps, seed=seed)
        stem = f"{prefix}probability_of_improvement"
        w.frame(f"{stem}.csv", poi)
        figs = w.figure(stem, plots.plot_probability_of_improvement, poi, colors=colors)
        against = (f"every method against the baseline {baseline} (--baseline)"
                   if baseline in scores else "every pair of methods (no baseline)")
        if pairing is not None:
            against = (f"each method against its paired {pairing.spec} baseline (same "
                       "algorithm, tasks, budget and other settings; one row per pair)")
        md += [f"{h}# Probability of improvement", "",
               _fig_block(figs, f"{stem}.csv",
                          f"P(X > Y) over the same tasks, {against} (0.5: no difference); "
                          "CI from independent stratified bootstraps of X and Y"), "",
               _md_frame(poi, ["x", "y", "point", "lo", "hi"]), ""]

    prof = stats.performance_profile(scores, reps=reps, seed=seed)
    stem = f"{prefix}performance_profile"
    w.frame(f"{stem}.csv", prof)
    figs = w.figure(stem, plots.plot_performance_profile, prof, colors=colors)
    md += [f"{h}# Performance profile", "",
           _fig_block(figs, f"{stem}.csv",
                      "Score distribution: fraction of run seeds x tasks with final "
                      "success above the threshold, 95% CI bands"), ""]
    return md


def _poi_pairs(scores: dict, baseline: str | None) -> list[tuple[str, str]]:
    """(X, baseline) for every other method; every pair when there is no baseline."""
    names = list(scores)
    if baseline in scores:
        return [(m, baseline) for m in names if m != baseline]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def default_baseline(final: pd.DataFrame) -> str | None:
    """The monolithic critic's method label when present (the first by name when several
    monolithic configurations ran); None otherwise."""
    mono = final.loc[final["critic"].astype(str) == "monolithic", "method"]
    names = sorted(mono.astype(str).unique(), key=tables.natural_key)
    return names[0] if names else None


def _pct_ci(point, lo, hi) -> str:
    if pd.isna(lo):
        return f"{100 * point:.1f}%"
    return f"{100 * point:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _headline_sentence(scores: dict, agg: pd.DataFrame, tasks: list[str],
                       baseline: str | None, seed: int, reps: int) -> list[str]:
    """One generated sentence: the best configuration vs the baseline (difference with its
    CI and P(best > baseline)), or the best alone when there is no baseline."""
    mean = agg[agg["metric"] == "mean"].set_index("method")
    n_seeds = sorted({int(v) for v in mean["n_runs"]})
    seeds_txt = (f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}–{n_seeds[-1]}")
    scope = f"over {len(tasks)} task(s) × {seeds_txt} seeds"
    ranked = sorted(mean.index, key=lambda m: (-mean.loc[m, "point"],
                                               tables.natural_key(m)))
    if len(ranked) == 1:
        m = ranked[0]
        return [f"**Answer.** One configuration, {m}: mean final success "
                f"{_pct_ci(*mean.loc[m, ['point', 'lo', 'hi']])} ({scope}; 95% "
                "stratified-bootstrap CI).", ""]
    if baseline not in scores:
        best = ranked[0]
        why = (f"the baseline {baseline} does not cover these tasks"
               if baseline else "no monolithic critic ran; pass --baseline METHOD")
        return [f"**Answer.** {best} has the highest mean final success, "
                f"{_pct_ci(*mean.loc[best, ['point', 'lo', 'hi']])} ({scope}; 95% "
                f"stratified-bootstrap CI). No baseline comparison: {why}.", ""]
    best = next(m for m in ranked if m != baseline)
    d, dlo, dhi = stats.difference_estimate(scores[best], scores[baseline], reps=reps,
                                            seed=seed, key=f"{best}\x00{baseline}")
    poi = stats.poi_estimates(scores, pairs=[(best, baseline)], reps=reps,
                              seed=seed).iloc[0]
    diff = f"{100 * d:+.1f} points" + ("" if pd.isna(dlo) else
                                       f" [{100 * dlo:+.1f}, {100 * dhi:+.1f}]")
    p_txt = f"{poi['point']:.2f}" + ("" if pd.isna(poi["lo"]) else
                                    f" [{poi['lo']:.2f}, {poi['hi']:.2f}]")
    if pd.isna(dlo):
        verdict = "With one seed there is no interval: this is not evidence either way."
    elif dlo > 0:
        verdict = (f"The difference's 95% interval lies above 0: in these runs {best} "
                   f"beats {baseline}.")
    elif ranked[0] == baseline:
        verdict = (f"The baseline has the highest mean; the difference's 95% interval "
                   f"{'lies below' if dhi < 0 else 'includes'} 0.")
    else:
        verdict = (f"The difference's 95% interval includes 0: these runs do not separate "
                   f"{best} from {baseline}.")
    if n_seeds[0] < 5:
        verdict += " With fewer than 5 seeds per task the intervals are rough."
    return [f"**Answer.** Best configuration: **{best}**, mean final success "
            f"{_pct_ci(*mean.loc[best, ['point', 'lo', 'hi']])} vs "
            f"{_pct_ci(*mean.loc[baseline, ['point', 'lo', 'hi']])} for the baseline "
            f"**{baseline}** ({scope}): a difference of {diff}, "
            f"P({best} > {baseline}) = {p_txt} (95% stratified-bootstrap CIs). {verdict}",
            ""]


def _fmt_duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _accelerators(device) -> int:
    """How many accelerators a run.json ``device`` names (``gpu: H200 x2`` -> 2); 0 for
    a CPU or an unknown device."""
    text = str(device or "")
    if not text or text == "nan" or text.startswith("cpu"):
        return 0
    m = re.search(r"x(\d+)\s*$", text)
    return int(m.group(1)) if m else 1


def machine_load_note(final: pd.DataFrame) -> str | None:
    """What a wall-clock number must say about the machine it came from (run.json ``load``).

    Rule: a run shared a loaded machine when its mean 1-minute load average over its log
    points exceeded the machine's CPU count (more runnable processes than CPUs: every
    process, the run's own included, waited for a CPU), so wall times and updates/s measure
    the crowd as much as the method. The worst such run is named; without a load record
    (runs older than the record) the note says so. None when every run was recorded and none
    was loaded."""
    runs = final.drop_duplicates("run_dir") if "run_dir" in final else final
    num = lambda c: (pd.to_numeric(runs[c], errors="coerce") if c in runs  # noqa: E731
                     else pd.Series(np.nan, index=runs.index))
    load, cpus = num("loadavg_mean"), num("load_cpus")
    loaded = load > cpus
    if loaded.any():
        worst = (load / cpus)[loaded].idxmax()
        return (f"runs shared a loaded machine (load {load[worst]:.1f} on {int(cpus[worst])} "
                "CPUs): wall-clock times are not comparable")
    missing = int((load.isna() | cpus.isna()).sum())
    if missing:
        return "machine load not recorded" + (f" for {missing} of {len(runs)} runs"
                                              if missing < len(runs) else "")
    return None


def _cost_table(final: pd.DataFrame) -> list[str]:
    """Per method: critic parameters, GFLOP per update, updates/s, wall time per run
    directory and GPU-hours (where a GPU ran), from the run manifests."""
    have = [c for c in ("params_critic", "flops_per_update", "updates_per_s", "wall_time_s",
                        "device") if c in final.columns]
    if not have:
        return []
    rows = []
    for method, g in final.groupby("method", sort=False):
        runs = g.drop_duplicates("run_dir")
        num = lambda c: pd.to_numeric(runs[c], errors="coerce") if c in runs else \
            pd.Series(dtype=float)  # noqa: E731
        params = sorted({int(v) for v in num("params_critic").dropna()})
        flops = num("flops_per_update").dropna()
        ups = num("updates_per_s").dropna()
        wall = num("wall_time_s")
        acc = runs["device"].map(_accelerators) if "device" in runs else \
            pd.Series(0, index=runs.index)
        gpu_s = float((wall.fillna(0) * acc).sum())
        devices = sorted({str(d) for d in runs.get("device", pd.Series(dtype=str)).dropna()})
        rows.append({
            "method": method,
            "critic params": ", ".join(f"{v:,}" for v in params) or "—",
            "GFLOP / update": (", ".join(f"{v / 1e9:.3g}" for v in sorted(set(flops)))
                               or "—"),
            "updates / s": f"{ups.mean():.3g}" if len(ups) else "—",
            "wall time / run": _fmt_duration(float(wall.mean())) if wall.notna().any()
            else "—",
            "runs × seeds": f"{len(runs)} × {g['seed'].nunique()}",
            "GPU-hours": f"{gpu_s / 3600:.2f}" if (acc > 0).any() else "— (no GPU)",
            "device": "; ".join(devices) or "—",
        })
    table = pd.DataFrame(rows)
    table = table.iloc[sorted(range(len(table)),
                              key=lambda i: tables.natural_key(table["method"].iloc[i]))]
    note = machine_load_note(final)
    return ["### Cost", "",
            "From each run's run.json; a run directory trains all its seeds in one program, "
            "so wall time and updates/s are per run directory (mean over them; wall time "
            "includes start-up, compilation and evaluation), GPU-hours summed.", "",
            _md_frame(table, list(table.columns)),
            *([f"> **Wall-clock caveat:** {note}.", ""] if note else [""])]


def _env_titles(final: pd.DataFrame) -> dict[str, str]:
    """``{env: 'env — k task(s), N steps, n seeds'}`` for figure panel titles."""
    out = {}
    for env, g in final.groupby("env"):
        seeds = g.groupby("task_key")["seed"].nunique()
        n = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
        steps = pd.to_numeric(g.get("train_steps"), errors="coerce").dropna() \
            if "train_steps" in g else pd.Series(dtype=float)
        budget = ("/".join(stats.format_steps(v) for v in sorted(set(steps))) + " steps, "
                  if len(steps) else "")
        k = g["task_key"].nunique()
        out[env] = f"{env} — {k} task{'s' if k > 1 else ''}, {budget}{n} seeds"
    return out


def _wallclock_block(w: _Writer, curves: pd.DataFrame, evals: pd.DataFrame, prefix: str,
                     colors: dict, markers: dict, titles: dict,
                     final: pd.DataFrame | None = None) -> list[str]:
    """Success vs wall-clock: the learning curves' points at the mean wall time (eval.csv
    ``wall_time``, seconds since each run started) at which the runs reached each step; the
    figure's subtitle and caption carry ``machine_load_note`` of the runs drawn."""
    if "wall_time" not in evals or curves.empty:
        return []
    wall = (evals.assign(wall_time=pd.to_numeric(evals["wall_time"], errors="coerce"))
            .groupby(["env", "method", "step"])["wall_time"].mean().rename("wall_time")
            .reset_index())
    data = curves.merge(wall, on=["env", "method", "step"], how="left")
    if not np.isfinite(data["wall_time"].to_numpy(float)).all():
        return []
    stem = f"{prefix}learning_curves_wallclock"
    w.frame(f"{stem}.csv", data)
    note = machine_load_note(final) if final is not None else None
    figs = w.figure(stem, plots.plot_learning_curves, data, colors=colors, markers=markers,
                    titles=titles, x="wall_time", note=note)
    return [_fig_block(figs, f"{stem}.csv",
                       "The same success curves against wall-clock time: each point at the "
                       "mean time (since its run started, eval.csv wall_time) at which the "
                       "runs reached that evaluation step; includes compilation and "
                       "evaluation, and depends on the machine and on how many runs shared "
                       "it" + (f"; {note}" if note else "")), ""]


def _diagnostics_block(w: _Writer, results_dir: Path, final: pd.DataFrame, prefix: str,
                       colors: dict, markers: dict, titles: dict, h: str) -> list[str]:
    """Critic diagnostics (Q scale, critic loss, gradient norm) from the scored runs'
    train.csv files."""
    from analysis import diagnostics
    long = diagnostics.train_metrics(results_dir, final)
    curves = diagnostics.diagnostic_curves(long)
    if curves.empty:
        return []
    stem = f"{prefix}critic_diagnostics"
    w.frame(f"{stem}.csv", curves)
    figs = w.figure(stem, plots.plot_diagnostics, curves, colors=colors, markers=markers,
                    titles=titles,
                    labels={m: diagnostics.panel_label(m) for m in diagnostics.panel_order(curves)},
                    metrics=diagnostics.panel_order(curves))
    same = _coinciding(curves)
    shown = ", ".join(f"`{m}`" for m in diagnostics.DIAGNOSTICS
                      if any(str(p).split(" (")[0] == m for p in set(curves["metric"])))
    return [f"{h} Critic diagnostics", "",
            _fig_block(figs, f"{stem}.csv",
                       f"From each scored run seed's train.csv ({shown}): mean over run "
                       "seeds x tasks per logging point, band: min to max over them (a "
                       "description of the spread, not a CI); a log y axis where a metric "
                       "spans more than 20x; each critic's loss in its own panel (a TD loss "
                       "and floq's flow-matching loss measure different things)"
                       + ("; " + "; ".join(f"{a}'s curves coincide with {b}'s (drawn over "
                                           "them)" for a, b in same) if same else "")), ""]


def _coinciding(curves: pd.DataFrame) -> list[tuple[str, str]]:
    """(hidden, drawn over it): methods whose diagnostic curves equal a later method's at
    every point (e.g. two algorithms that train the same critic), so a reader knows why a
    legend entry has no visible line."""
    out = []
    methods = sorted(curves["method"].unique(), key=tables.natural_key)
    table = {m: g.sort_values(["env", "metric", "step"])[["env", "metric", "step", "point"]]
             .reset_index(drop=True) for m, g in curves.groupby("method")}
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            x, y = table[a], table[b]
            if (len(x) == len(y) and x[["env", "metric", "step"]].equals(y[["env", "metric", "step"]])
                    and np.allclose(x["point"], y["point"], rtol=1e-4, atol=1e-8)):
                out.append((a, b))
                break
    return out


def _learned(final: pd.DataFrame, evals: pd.DataFrame) -> bool:
    """Whether anything learned: some final score or some evaluation above 0."""
    score = pd.to_numeric(final["score"], errors="coerce")
    success = pd.to_numeric(evals["success"], errors="coerce") if len(evals) else score
    return bool((score > 0).any() or (success > 0).any())


def _run_keys(frame: pd.DataFrame) -> set:
    return set(map(tuple, frame[["run_id", "seed"]].to_numpy()))


def _rows_of(evals: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    keys = _run_keys(final)
    mask = [k in keys for k in map(tuple, evals[["run_id", "seed"]].to_numpy())]
    return evals[pd.Series(mask, index=evals.index, dtype=bool)]


def _section(w: _Writer, final: pd.DataFrame, evals: pd.DataFrame, prefix: str,
             proto: stats.Protocol, seed: int, reps: int, published, colors: dict,
             markers: dict, baseline: str | None,
             level: int = 2, results_dir: Path | None = None,
             tuned: Sequence[str] = (),
             pairing: "paired.Pairing | None" = None) -> tuple[list[str], list[str]]:
    """Tables and figures for runs under one protocol.

    Returns ``(headline, rest)`` index lines: the headline (answer sentence, main scaling
    figure, cost table — or the 'nothing learned' notice) opens the page; the rest
    (leaderboards, aggregates, probability of improvement, profiles, learning curves,
    other scaling figures) follows it."""
    h = "#" * level
    head: list[str] = []
    md: list[str] = []
    envs = sorted(final["env"].unique(), key=tables.natural_key)
    titles = _env_titles(final)
    learned = _learned(final, evals)

    # ---- leaderboards
    lb = tables.leaderboard(final, by="env", published=published, protocol=proto,
                            reps=reps, seed=seed)
    lb = trends.with_budget(lb, final, tuned)  # 'Configs tried' column when --tuned
    stem = f"{prefix}leaderboard_env"
    w.text(f"{stem}.md", lb.to_markdown())
    w.text(f"{stem}.tex", lb.to_latex())
    w.text(f"{stem}.csv", lb.to_csv())
    md += [f"{h} Leaderboard per environment", "", lb.to_markdown(),
           f"Files: [Markdown]({stem}.md) · [LaTeX]({stem}.tex) · [CSV]({stem}.csv)", ""]
    md += [f"{h}# Per task", ""]
    for env in envs:
        lt = tables.leaderboard(final, by="task", env=env, published=published,
                                protocol=proto, reps=reps, seed=seed)
        stem = f"{prefix}leaderboard_tasks_{_slug(env)}"
        w.text(f"{stem}.md", lt.to_markdown())
        w.text(f"{stem}.tex", lt.to_latex())
        w.text(f"{stem}.csv", lt.to_csv())
        md.append(f"- {env}: [Markdown]({stem}.md) · [LaTeX]({stem}.tex) · [CSV]({stem}.csv)")
    md.append("")
    after_leaderboards = len(md)
    # ---- paired comparisons (--baseline FIELD=VALUE; by default critic=monolithic for an
    # algorithm x critic layout): one answer line per pair, the table's Δ column, PoI rows
    est = (paired.estimates(final, pairing, reps=reps, seed=seed) if pairing is not None
           else None)
    # ---- algorithm x critic (when both vary)
    act = tables.algorithm_critic_table(
        final, protocol=proto, reps=reps, seed=seed,
        deltas=est if pairing is not None and pairing.field == "critic" else None,
        baseline_critic=pairing.value if pairing is not None else None)
    if act is not None:
        stem = f"{prefix}algorithm_critic"
        w.text(f"{stem}.md", act.to_markdown())
        w.text(f"{stem}.tex", act.to_latex())
        w.text(f"{stem}.csv", act.to_csv())
        act_block = [f"{h} Algorithm × critic", "", act.to_markdown(),
                     f"Files: [Markdown]({stem}.md) · [LaTeX]({stem}.tex) · [CSV]({stem}.csv)",
                     ""]
    else:
        act_block = []

    if not learned:
        steps = sorted(pd.to_numeric(evals["step"], errors="coerce").dropna().unique())
        span = (f" (evaluations at steps {stats.format_steps(steps[0])}–"
                f"{stats.format_steps(steps[-1])})" if steps else "")
        head += [f"> **Nothing learned.** Every one of the {len(final)} scored run seeds "
                 f"({final['method'].nunique()} method(s)) has 0% success at every "
                 f"evaluation{span}, so no figure is drawn and no method is compared: a "
                 "scaling curve or an aggregate of zeros would show only axes. Check the "
                 "training budget (train_steps), the task and the critic diagnostics in "
                 "each run's train.csv (critic/loss, critic/q_mean) before reading anything "
                 "into these runs.", "",
                 trends.refusal_line("every score is 0 (nothing learned)"), ""]
        head += _cost_table(final)
        return head, md + act_block

    # ---- aggregates over a shared task axis
    tasks, kept, dropped = _common_tasks(final)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing seeds are reported once, by build_report
        scores, tasks = to_score_dict(final, tasks=tasks, methods=kept)
    md += [f"{h} Aggregate metrics", ""]
    if scores:
        agg = stats.aggregate_estimates(scores, reps=reps, seed=seed)
        if pairing is not None and (len(est) or set(pairing.unpaired) & set(scores)):
            head += paired.answer_lines(est, pairing, methods=final["method"].astype(str))
        elif pairing is not None and len(scores) > 1:
            head += [f"**Answer.** No {pairing.spec} pair under this protocol: every method "
                     f"here is a {pairing.spec} run ({', '.join(_sorted(final['method']))}); "
                     "the leaderboard below compares them.", ""]
        elif pairing is not None:
            head += _headline_sentence(scores, agg, tasks, None, seed, reps)
        else:
            head += _headline_sentence(scores, agg, tasks, baseline, seed, reps)
        md += _aggregate_section(w, scores, agg, tasks, dropped, prefix, colors, markers,
                                 seed, reps, baseline, h, pairing=pairing)
    else:
        md += ["No task is shared by the methods, so no aggregate was computed.", ""]

    # ---- learning curves
    curves = stats.curve_estimates(evals, reps=max(200, reps // 2), seed=seed)
    bounds = stats.phase_boundaries(evals)
    stem = f"{prefix}learning_curves"
    w.frame(f"{stem}.csv", curves)
    figs = w.figure(stem, plots.plot_learning_curves, curves, colors=colors,
                    boundaries=bounds, markers=markers, titles=titles)
    md += [f"{h} Learning curves", "",
           _fig_block(figs, f"{stem}.csv",
                      "Success vs gradient steps: mean over the environment's seeds x "
                      "tasks, 95% stratified-bootstrap CI bands, markers at the "
                      "evaluation steps"
                      + ("; dotted vertical line: end of the offline phase"
                         if len(bounds) else "")
                      + ("; dotted curve: steps that only some of the method's tasks "
                         "reached (fewer tasks averaged)" if curves["partial_tasks"].any()
                         else "")), ""]
    md += _wallclock_block(w, curves, evals, prefix, colors, markers, titles, final)
    if results_dir is not None:
        md += _diagnostics_block(w, results_dir, final, prefix, colors, markers, titles, h)

    # ---- scaling
    axes = stats.scaling_axes(final)
    main = ("critic_flow_steps" if "critic_flow_steps" in axes else
            axes[0] if axes else None)
    # A study of algorithms x critics asks which pairing wins: its table opens the page, after
    # the answer; only floq's flow-step axis keeps its figure there too (another varying axis,
    # e.g. one algorithm's sensitivity check, goes with the other scaling figures).
    head += act_block
    if act_block and main != "critic_flow_steps":
        main = None
    rest_scaling: list[str] = []
    tr = trends.study_trends(final, axes, reps=reps, seed=seed, tuned=tuned)
    from analysis.published import scaling_rows
    for axis in axes:
        est = stats.scaling_estimates(final, axis, reps=reps, seed=seed)
        stem = f"{prefix}scaling_{_slug(axis)}"
        w.frame(f"{stem}.csv", est)
        label = AXIS_LABELS.get(axis, axis)
        pub = scaling_rows(published, axis, envs) if axis == "critic_flow_steps" else None
        manifest_axis = axis in stats.SCALING_MANIFEST_AXES
        figs = w.figure(stem, plots.plot_scaling,
                        est, label, colors=colors, published=pub, markers=markers,
                        points=stats.scaling_points(final, axis), titles=titles,
                        label_points=manifest_axis, fits=tr.bands(axis))
        caption = (f"Final success vs {label}: mean over seeds x tasks per point, 95% CI "
                   "bands, small dots: single run seeds")
        if est["reference"].astype(bool).any():
            refs = ", ".join(sorted(set(est.loc[est["reference"].astype(bool), "hue"]),
                                    key=tables.natural_key))
            caption += f"; dashed: runs without this axis ({refs})"
        if manifest_axis and any(plots.point_label(lab, hue) for lab, hue in
                                 zip(est["label"], est["hue"])):
            caption += "; each point is labelled with its configuration (e.g. K)"
        if est["partial_tasks"].any():
            caption += "; hollow points (k/n) average only k of the panel's n tasks"
        if pub is not None and len(pub):
            refs = "; ".join(sorted(set(pub["label"])))
            caption += (f"; black dotted: published numbers ({refs}) — a different protocol "
                        "and task subset, shown for orientation only")
        if axis == "compute_total":
            caption += "; compute = train_steps x flops_per_update of each run"
        block = [_fig_block(figs, f"{stem}.csv", caption), "", *tr.verdict(axis)]
        if axis == main:
            head += block
        else:
            rest_scaling += block
    if main is None and not axes:
        head += ["No scaling figure: no numeric axis (critic_flow_steps, critic_width, "
                 "critic_depth, parameters, FLOPs per update) varies within a critic family "
                 "in these runs, so no scaling plot was made.", ""]
    if tr.has_frontier:
        head += trends.frontier_lines(tr.frontier, tr.multi_env)
    head += _cost_table(final)
    note = _no_params_axis_note(final, axes)
    if rest_scaling or note:
        md += [f"{h} Scaling: other axes", ""] + rest_scaling + note
    slopes, more = trends.section_lines(w, tr, final, prefix, colors, markers, titles, h)
    md[after_leaderboards:after_leaderboards] = slopes
    return head, md + more


def _no_params_axis_note(final: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    """Say why there is no success-vs-parameters figure when the runs have parameter counts
    but none varies within a critic family (a sweep over floq's K: K changes compute, not
    parameters), so a missing figure is never mistaken for an omission."""
    if "params_critic" not in final.columns or {"params_critic", "params_total"} & set(axes):
        return []
    counts = pd.to_numeric(final["params_critic"], errors="coerce")
    if counts.isna().all():
        return []
    parts = []
    for method, g in final.assign(_p=counts).groupby("method", sort=False):
        vals = sorted({int(v) for v in g["_p"].dropna()})
        if vals:
            parts.append(f"{method}: {', '.join(f'{v:,}' for v in vals)}")
    return ["No success-vs-parameters figure: the critic's parameter count does not vary "
            "within any critic family in these runs (floq's K changes compute per update, "
            "not parameters). Critic parameters: "
            + "; ".join(sorted(parts, key=tables.natural_key)) + ".", ""]


def _rerun_commands(results_dir: Path, final: pd.DataFrame) -> dict:
    """``{method: the command that re-runs its runs}``: ``floq sweep FILE`` when a sweep.json
    above the run names its sweep file, else ``floq run GIN... --bind ...`` from run.json."""
    import json
    out = {}
    for method, g in final.groupby("method", sort=False):
        run = Path(results_dir) / str(g["run_dir"].iloc[0])
        cmd = None
        for folder in [run, *run.parents][:4]:
            sw = folder / "sweep.json"
            if sw.is_file():
                try:
                    f = json.loads(sw.read_text()).get("file")
                except (OSError, ValueError, AttributeError):
                    f = None
                if isinstance(f, str) and f:
                    cmd = f"floq sweep {_repo_relative(f)}"
                break
        if cmd is None:
            try:
                raw = json.loads((run / "run.json").read_text())
            except (OSError, ValueError):
                raw = {}
            files = [str(x) for x in raw.get("gin_files", []) if isinstance(x, str)]
            binds = [str(x) for x in raw.get("bindings", []) if isinstance(x, str)]
            if files:
                cmd = "floq run " + " ".join(files) + "".join(
                    f" --bind '{b.replace(' ', '')}'" for b in binds[:4])
        if cmd:
            out[str(method)] = cmd
    return out


def _repo_relative(path: str) -> str:
    """``/somewhere/repo/gin/x.gin`` -> ``gin/x.gin`` (the command runs in a checkout)."""
    parts = Path(path).parts
    return str(Path(*parts[parts.index("gin"):])) if "gin" in parts else path


def _selection_split_lines(groups: list, pairing, selected: bool,
                           commands: dict | None = None) -> list[str]:
    """When the runs the user selected (--filter, --baseline) land in several protocol
    groups and no pair says so already: one line naming, for each two groups, the protocol
    fields that differ, where each method is, and what to do (re-run the side whose protocol
    lacks a field the other records — older runs — else the smaller one; its command)."""
    if not selected or len(groups) < 2 or (pairing is not None and pairing.elsewhere):
        return []
    protos = [p for p, _ in groups]
    parts, todo = [], []
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            a, b = protos[i], protos[j]
            fields = [f for f in dict.fromkeys([*a, *b])
                      if tables._fmt(a.get(f)) != tables._fmt(b.get(f))]
            parts.append(f"groups {i + 1} and {j + 1} differ in " + ", ".join(
                f"{f} ({tables._fmt(a.get(f))} vs {tables._fmt(b.get(f))})" for f in fields))
            older = [k for k, p, q in ((i, a, b), (j, b, a))
                     if any(tables._fmt(p.get(f)) == "unknown" != tables._fmt(q.get(f))
                            for f in fields)]
            side = older[0] if older else (i if len(groups[i][1]) < len(groups[j][1]) else j)
            cmds = sorted({(commands or {}).get(m) for m in groups[side][1]["method"].astype(str)}
                          - {None})
            todo.append(f"group {side + 1}" + (f" (`{cmds[0]}`)" if len(cmds) == 1 else ""))
    where = "; ".join(f"group {i}: {', '.join(_sorted(sub['method']))}"
                      for i, (_, sub) in enumerate(groups, 1))
    return [f"> **The selected runs fall into {len(groups)} protocol groups, never compared "
            f"with each other:** {'; '.join(parts)}. To compare them, re-run "
            f"{' or '.join(dict.fromkeys(todo))} under the other's protocol, with this version "
            f"of floq. ({where}.)", ""]


def _report_configs(final: pd.DataFrame) -> list[tuple[str, str]]:
    fam = final["algorithm"].astype(str) + ":" + final["critic"].astype(str)
    configs = list(zip(final["method"], fam))
    for axis in stats.scaling_axes(final):
        configs += list(zip(stats.line_families(final, axis), fam))
    return configs


def _report_colors(final: pd.DataFrame) -> dict:
    """One colour per configuration for the whole report (every figure shares it)."""
    return plots.config_colors(_report_configs(final))


def _report_markers(final: pd.DataFrame) -> dict:
    """One marker per configuration for the whole report (every figure shares it)."""
    return plots.config_markers([str(label) for label, _ in _report_configs(final)])

def build_report(results_dir, out_dir: str | os.PathLike,
                 protocol: str = "fql", seed: int = 0, *, reps: int = 2000,
                 include_partial: bool = False, method_by: Sequence[str] | None = None,
                 published: str | os.PathLike | pd.DataFrame | None = "default",
                 formats: Sequence[str] = ("png", "pdf"), phase: str | None = None,
                 baseline: str | None = None, filters: Sequence[str] = (),
                 tuned: Sequence[str] = (), progress=None) -> str:
    """Write every figure and table the data supports, plus ``index.md`` and
    ``index.html``; return the path of ``index.md``.

    Args:
        results_dir: searched recursively for run directories; a list of folders is one study
            (run dirs named relative to the deepest folder holding them all).
        out_dir: created if needed; files of an earlier report there are replaced.
        protocol: ``fql`` | ``last`` | ``max`` | ``last_k:N`` (see ``stats.parse_protocol``).
        seed: seed of every bootstrap.
        reps: bootstrap replications (learning curves use half, at least 200).
        include_partial: also score partial runs (status running/preempted/failed, or
            stopped before ``train_steps``); diverged runs are never scored.
        method_by: columns that name a method (default: critic + varying tags).
        published: ``"default"`` (results/published/published.csv if present), a path, a
            frame, or None for no published numbers.
        formats: figure formats (PNG is what the index shows and index.html embeds).
        phase: ``offline`` | ``online`` scores that phase of every run; None: each run's
            last phase.
        baseline: the method the answer and the probability of improvement compare
            against (default: the monolithic critic when present, see
            ``default_baseline``; ``"none"``: no baseline, every pair is compared).
        filters: ``--filter`` items (``KEY=VALUE``, ``KEY=V1,V2``, ``KEY!=V1,V2``; see
            ``load.parse_filters``); only rows that pass every one are analysed.
        tuned: fields (tags) that were tuning choices (``--tuned FIELD``): the leaderboard
            states each method's number of configurations and the report draws the
            expected best score over N configurations (``analysis.trends``).
        progress: called with one line when the estimates start and one before each figure
            ('analysing 6 methods: figure 3/12 (learning curves)'); ``floq analyze`` prints
            them on stderr.
    Raises:
        AnalysisError: nothing usable (missing/empty dir, no evaluations, bad values).
    """
    roots = [Path(results_dir)] if isinstance(results_dir, (str, os.PathLike)) else [Path(r) for r in results_dir]
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise AnalysisError(f"--out {out_dir} is a file, not a folder: give a folder for the report")
    filter_items = parse_filters(filters)
    proto = stats.parse_protocol(protocol)
    if reps < 1:
        raise AnalysisError("reps must be >= 1")
    if phase is not None and phase not in PHASES:
        raise AnalysisError(f"unknown phase {phase!r}; use {' or '.join(PHASES)}")
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad or not formats:
        raise AnalysisError(f"figure formats must be among png, pdf, svg (got {list(formats)})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load_results(roots, method_by=method_by, filters=filter_items)
        results_dir = results_base(roots)  # run_dir is relative to it
        n_dirs = len({os.path.realpath(d) for r in roots for d in find_run_dirs(r)})
        if n_dirs == 0:
            raise AnalysisError(f"no run directories (eval.csv or run.json) under "
                                f"{str(results_dir)!r}")
        if df.empty and filter_items:
            raise AnalysisError(f"no evaluations under {', '.join(map(str, roots))} match "
                                + " and ".join(filter_text(f) for f in filter_items))
        if df.empty:
            first = f"; first problem: {caught[0].message}" if caught else ""
            raise AnalysisError(f"no usable evaluations in the {n_dirs} run "
                                f"director{'y' if n_dirs == 1 else 'ies'} under "
                                f"{str(results_dir)!r}{first}")
        df = stats.dedupe_runs(df)
        final_all = stats.final_scores(df, proto, phase=phase)
        kind = final_all["exclude_kind"]
        scored = (kind == "") | ((kind == "partial") & include_partial)
        final = final_all[scored].reset_index(drop=True)
        if final.empty:
            n_part = int((kind == "partial").sum())
            hint = ("; pass --include-partial to score them anyway" if n_part else "")
            counts = ", ".join(f"{v} {k}" for k, v in kind[kind != ""].value_counts().items())
            raise AnalysisError(f"none of the {len(final_all)} run seeds under "
                                f"{str(results_dir)!r} is a finished result (status done, "
                                f"reached train_steps): {counts}{hint}")
        if not include_partial and (kind == "partial").any():
            warnings.warn(f"left out {int((kind == 'partial').sum())} incomplete run seed(s) "
                          "(see 'Excluded run seeds' and runs.csv); --include-partial scores "
                          "them", UserWarning, stacklevel=2)
        for k in ("diverged", "no_phase"):
            if (kind == k).any():
                ex = final_all[kind == k].iloc[0]
                warnings.warn(f"left out {int((kind == k).sum())} {k.replace('_', ' ')} "
                              f"run seed(s), never scored, e.g. {ex['run_id']} seed "
                              f"{ex['seed']}: {ex['exclude_reason']}", UserWarning,
                              stacklevel=2)
        for m, g in final.groupby("method", sort=True):
            warn_missing_seeds(m, {t: gt for t, gt in g.groupby("task_key", sort=True)})
        pub = _published(published)
        methods = _sorted(final["method"])
        pairing = None
        selected = bool(filter_items) or baseline is not None
        if baseline is None:
            spec = paired.default_spec(final)
            if spec is not None:  # an algorithm x critic layout: critic=monolithic, paired
                pairing = paired.pair_methods(final, *spec, default=True)
            else:
                baseline = default_baseline(final)
        elif str(baseline).lower() == "none":
            baseline = None
        elif baseline in methods:
            pass
        elif "=" in str(baseline):
            pairing = paired.pair_methods(final, *paired.parse_spec(baseline, final))
            baseline = None
        else:
            raise AnalysisError(f"--baseline {baseline!r} is not one of the scored methods ("
                                + ", ".join(methods) + ") nor FIELD=VALUE (e.g. "
                                "critic=monolithic)")
        tuned = tuple(dict.fromkeys(tuned))
        unknown = [t for t in tuned if t not in final.columns or final[t].isna().all()]
        if unknown:
            raise AnalysisError(f"--tuned {', '.join(unknown)}: no such field in the scored "
                                "runs (a tag or run.json field)")

    notes = list(dict.fromkeys(str(c.message) for c in caught))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    extra: list[str] = []
    stage = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.staging-"))
    try:
        w = _Writer(stage, formats)
        n = final["method"].nunique()
        what = f"analysing {n} method{'s' if n != 1 else ''}"
        if progress is not None:
            progress(f"{what}: estimates and tables")
        with warnings.catch_warnings(record=True) as caught2:
            warnings.simplefilter("always")
            index = _index(w, results_dir, df, final_all, final, proto, seed, reps, pub,
                           notes, n_dirs, include_partial, phase, baseline, tuned=tuned,
                           pairing=pairing, selected=selected)
            w.draw_figures(progress, what)
        extra = [m for m in dict.fromkeys(str(c.message) for c in caught2)
                 if m not in notes]
        if extra:
            fill = "\n".join(f"- {m}" for m in extra)
        elif not notes:
            fill = "All run directories were read without problems."
        else:
            fill = ""
        index = index.replace("<!--notes-->\n", fill + "\n" if fill else "", 1)
        index = re.sub(r"\n{3,}", "\n\n", index)
        w.text("index.html", markdown_to_html(index, stage, title="floq analysis report"))
        w.text("index.md", index)
        _commit(w, out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for m in notes + extra:
        warnings.warn(m, UserWarning, stacklevel=2)
    return str(out_dir / "index.md")


def _published(published):
    from analysis.published import default_path, load_published
    if published is None:
        return None
    if isinstance(published, pd.DataFrame):
        return published
    if isinstance(published, str) and published == "default":
        path = default_path()
        return load_published(path) if path.exists() else None
    return load_published(published)


def _sorted(col: pd.Series) -> list[str]:
    return sorted(col.astype(str).unique(), key=tables.natural_key)


def _excluded_section(w: _Writer, final_all: pd.DataFrame, final: pd.DataFrame) -> list[str]:
    keys = _run_keys(final)
    ex = final_all[[k not in keys for k in map(tuple, final_all[["run_id", "seed"]].to_numpy())]]
    partial_in = final[final["exclude_kind"] == "partial"]
    md = ["## Excluded run seeds", ""]
    if ex.empty and partial_in.empty:
        return md + ["None: every run seed with evaluations is a finished result "
                     "(status done, evaluated up to train_steps).", ""]
    if len(ex):
        table = (ex.assign(seeds=ex["seed"].astype(str))
                 .groupby(["run_id", "exclude_kind", "exclude_reason"], sort=True)["seeds"]
                 .agg(", ".join).reset_index()
                 .rename(columns={"run_id": "run", "exclude_kind": "kind",
                                  "exclude_reason": "reason"}))
        w.frame("excluded_runs.csv", table)
        md += [f"{len(ex)} run seed(s) are not scored (diverged runs are never scored as 0%; "
               "partial ones only with --include-partial). [CSV](excluded_runs.csv)", "",
               _md_frame(table, ["run", "seeds", "kind", "reason"]), ""]
    if len(partial_in):
        md += [f"Scored although partial (--include-partial): {len(partial_in)} run seed(s), "
               "e.g. " + "; ".join(f"{r.run_id} seed {r.seed}: {r.exclude_reason}"
                                   for r in partial_in.head(3).itertuples()) + ".", ""]
    return md


def _index(w, results_dir, df, final_all, final, proto, seed, reps, pub, notes, n_dirs,
           include_partial, phase=None, baseline: str | None = None,
           tuned: Sequence[str] = (),
           pairing: "paired.Pairing | None" = None, selected: bool = False) -> str:
    """The index page: the answer first (headline sentence, main scaling figure, cost
    table, or the 'nothing learned' notice), then tables and the other figures, then how
    the numbers were made (methodology, input notes, excluded run seeds)."""
    runs = final_all.copy()
    w.frame("runs.csv", runs.drop(columns=[c for c in ("has_manifest", "config_fields", "config_derived",
                                                                   "tag_names")
                                           if c in runs]))
    n_methods = final["method"].nunique()
    rule = stats.scored_steps_rule(final, proto)
    colors, markers = _report_colors(final), _report_markers(final)
    md = ["# floq analysis report", ""]
    lead = (f"{n_methods} method(s) on {', '.join(_sorted(final['env']))} "
            f"({final['task_key'].nunique()} task(s)), {len(final)} scored run seeds from "
            f"`{results_dir}`; final score: {rule}"
            + (f"; baseline: {baseline}" if baseline else "")
            + (f"; baseline: {pairing.spec}, paired within each "
               f"{'critic' if pairing.field == 'algorithm' else 'algorithm'}"
               if pairing is not None else "") + ". How the numbers were "
            "made is at the end ([Method and inputs](#method-and-inputs)).")
    md += [lead, ""]
    if proto.optimistic:
        md += ["> **Optimistic protocol.** `max` scores each run by its best evaluation; the "
               "numbers are biased upward and not comparable to published results.", ""]
    groups = tables.split_by_protocol(final)
    if len(groups) == 1:
        head, rest = _section(w, final, _rows_of(df, final), "", proto, seed, reps, pub,
                              colors, markers, baseline, results_dir=results_dir,
                              tuned=tuned, pairing=pairing)
        md += head + rest
    else:
        md += [f"The runs follow {len(groups)} different protocols; each gets its own "
               "answer, tables and figures (numbers from different protocols are never "
               "mixed).", ""]
        commands = _rerun_commands(results_dir, final)
        md += paired.split_lines(pairing, groups, commands)
        md += _selection_split_lines(groups, pairing, selected, commands)
        for i, (p, sub) in enumerate(groups, 1):
            desc = ", ".join(f"{k} {tables._fmt(v)}" for k, v in p.items())
            md += [f"## Protocol group {i}: {desc}", ""]
            head, rest = _section(w, sub, _rows_of(df, sub), f"p{i}_", proto, seed, reps,
                                  pub, colors, markers, baseline, level=3,
                                  results_dir=results_dir, tuned=tuned, pairing=pairing)
            md += head + rest

    md += ["## Method and inputs", "",
           f"- Results: `{results_dir}` — {n_dirs} run director{'y' if n_dirs == 1 else 'ies'}, "
           f"{len(final_all)} run seeds with evaluations, {len(final)} scored"
           + ("" if include_partial else " (complete runs only)") + ".",
           f"- Methods ({n_methods}): {', '.join(_sorted(final['method']))}.",
           f"- Environments: {', '.join(_sorted(final['env']))}; "
           f"tasks: {final['task_key'].nunique()}.",
           *(["- Method labels abbreviate tags: "
              + ", ".join(f"{v} = {k}" for k, v in TAG_ABBREVIATIONS.items())
              + "; a tag one-to-one with one of these (e.g. a swept critic's name beside K) "
              "is left out."]
             if final["method"].str.contains("(", regex=False).any() else []),
           "- Baseline: " + (f"{baseline} (probability of improvement and the answer "
                             "compare against it; --baseline METHOD picks another)"
                             if baseline else
                             f"{pairing.spec}, paired: each method is compared with the "
                             f"{pairing.spec} run that shares its algorithm, tasks, budget, "
                             "protocol and other recorded settings (the grid's name aside)"
                             + (" — the default for an algorithm × critic layout" if
                                pairing.default else "")
                             if pairing is not None else "none (no monolithic critic ran; "
                             "--baseline METHOD or FIELD=VALUE picks one)") + ".",
           f"- Final score per run seed: {proto.description}; here: {rule}.",
           f"- Phase scored: {', '.join(_sorted(final['phase']))}"
           + (" (each run's last phase; --phase offline|online picks one)" if phase is None
              else f" (--phase {phase})") + ".",
           f"- Uncertainty: 95% percentile intervals from a stratified bootstrap (seeds "
           f"resampled within each task; rliable's method), {reps} reps, seed {seed}; "
           "n in a cell = seeds per task.",
           "- Published numbers: " + ("results/published/published.csv (FQL and floq papers)"
                                      if pub is not None else "none") + ".",
           "- Per-run scores: [runs.csv](runs.csv).", ""]
    md += ["### Input notes", ""]
    md += [f"- {m}" for m in notes] + ["<!--notes-->", ""]
    md += ["#" + line if line.startswith("## ") else line
           for line in _excluded_section(w, final_all, final)]
    return "\n".join(md).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- HTML
_HTML_STYLE = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;line-height:1.45;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em}th{background:#f3f3f3}
td.r{text-align:right}img{max-width:100%;height:auto;display:block;margin:.5em 0}
code{background:#f3f3f3;padding:0 .2em}blockquote{border-left:4px solid #c60;margin:0;
padding:.2em 1em;background:#fff6ee}h1,h2,h3,h4{margin-top:1.4em}
"""
_MIME = {".png": "image/png", ".svg": "image/svg+xml"}


def _inline(text: str, stage: Path) -> str:
    """Inline Markdown of the index (images, links, bold, code) -> HTML."""
    out, pos = [], 0
    pattern = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)|\[([^\]]+)\]\(([^)]+)\)|\*\*(.+?)\*\*"
                         r"|`([^`]+)`")
    for m in pattern.finditer(text):
        out.append(html.escape(text[pos:m.start()].replace("\\|", "|")))
        if m.group(2) is not None:
            src = m.group(2)
            path = stage / src
            mime = _MIME.get(Path(src).suffix.lower())
            if mime and path.is_file() and "/" not in src:
                raw = path.read_bytes()
                data = base64.b64encode(raw).decode("ascii")
                size = ""
                if raw[:8] == b"\x89PNG\r\n\x1a\n":  # 300 dpi figures shown at ~165 dpi
                    size = f' width="{int(int.from_bytes(raw[16:20], "big") * 0.55)}"'
                out.append(f'<img alt="{html.escape(m.group(1))}" data-file="'
                           f'{html.escape(src)}"{size} src="data:{mime};base64,{data}">')
            else:
                out.append(html.escape(m.group(1)))
        elif m.group(4) is not None:
            out.append(f'<a href="{html.escape(m.group(4))}">{_inline(m.group(3), stage)}</a>')
        elif m.group(5) is not None:
            out.append(f"<strong>{_inline(m.group(5), stage)}</strong>")
        else:
            out.append(f"<code>{html.escape(m.group(6))}</code>")
        pos = m.end()
    out.append(html.escape(text[pos:].replace("\\|", "|")))
    return "".join(out)


def _cells(line: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", line.strip())
    return [p.strip() for p in parts[1:-1]]


def markdown_to_html(md: str, stage: str | os.PathLike, title: str = "report") -> str:
    """The index's Markdown (headings, lists, tables, quotes, images, links) as one
    self-contained HTML page: images under ``stage`` are embedded as base64 data URIs."""
    stage = Path(stage)
    lines = md.splitlines()
    body: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.strip().startswith("<!--"):
            i += 1
            continue
        h = re.match(r"(#{1,6})\s+(.*)", line)
        if h:
            n = len(h.group(1))
            anchor = re.sub(r"[^a-z0-9 -]", "", h.group(2).lower()).strip().replace(" ", "-")
            body.append(f'<h{n} id="{anchor}">{_inline(h.group(2), stage)}</h{n}>')
            i += 1
            continue
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            header = _cells(block[0])
            aligns = _cells(block[1]) if len(block) > 1 else []
            right = [a.endswith(":") for a in aligns]
            rows = block[2:] if len(block) > 1 and set(block[1]) <= set("|-: ") else block[1:]
            body.append("<table><thead><tr>" + "".join(
                f"<th>{_inline(c, stage)}</th>" for c in header) + "</tr></thead><tbody>")
            for r in rows:
                body.append("<tr>" + "".join(
                    f'<td{" class=r" if j < len(right) and right[j] else ""}>'
                    f"{_inline(c, stage)}</td>" for j, c in enumerate(_cells(r))) + "</tr>")
            body.append("</tbody></table>")
            continue
        lm = re.match(r"(\s*)(-|\d+\.)\s+(.*)", line)
        if lm:
            tag = "ol" if lm.group(2)[0].isdigit() else "ul"
            body.append(f"<{tag}>")
            while i < len(lines):
                lm = re.match(r"(\s*)(-|\d+\.)\s+(.*)", lines[i])
                if not lm or (lm.group(2)[0].isdigit()) != (tag == "ol"):
                    break
                body.append(f"<li>{_inline(lm.group(3), stage)}</li>")
                i += 1
            body.append(f"</{tag}>")
            continue
        if line.startswith(">"):
            quote = []
            while i < len(lines) and lines[i].startswith(">"):
                quote.append(lines[i].lstrip("> "))
                i += 1
            body.append(f"<blockquote><p>{_inline(' '.join(quote), stage)}</p></blockquote>")
            continue
        para = []
        while i < len(lines) and lines[i].strip() and not re.match(
                r"(#{1,6}\s|\||>|\s*(-|\d+\.)\s)", lines[i]):
            para.append(lines[i])
            i += 1
        body.append(f"<p>{_inline(' '.join(para), stage)}</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_HTML_STYLE}</style></head>"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")


def _commit(w: _Writer, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    old = set()
    manifest = out_dir / _MANIFEST
    if manifest.exists():
        old = set(manifest.read_text().split())
    names = [f for f in w.files if f != "index.md"] + ["index.md"]
    for name in names:
        os.replace(w.stage / name, out_dir / name)
    for stale in old - set(names):
        p = out_dir / stale
        if p.is_file() and "/" not in stale:
            p.unlink()
    tmp = w.stage / _MANIFEST
    tmp.write_text("\n".join(sorted(names)) + "\n")
    os.replace(tmp, manifest)


# --------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"floq analyze: error: {message}\n")


def _path_arg(text: str) -> str:
    if not str(text).strip():
        raise argparse.ArgumentTypeError("is empty (an unset shell variable?); give a directory")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """``floq analyze RESULTS_DIR --out REPORT_DIR [--protocol P] [--phase P] ...``

    ``argv`` excludes the ``analyze`` word. Returns the exit code: 0, or 2 on bad input
    (one line on stderr, nothing written).
    """
    p = _Parser(prog="floq analyze",
                description="Turn run directories into figures, tables and an index page.")
    p.add_argument("results_dir", nargs="+",
                   help="directories searched recursively for run dirs (several: one study)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="analyse only runs whose column KEY (algorithm, critic, env, task, a tag "
                        "such as critic_flow_steps, ...) passes: KEY=VALUE, KEY=V1,V2 (any of "
                        "them) or KEY!=V1,V2 (none of them); repeatable, all must hold; e.g. "
                        "--filter algorithm=fql,rebrac --filter critic!=iqn")
    p.add_argument("--out", required=True, type=_path_arg, help="report directory (created)")
    p.add_argument("--protocol", default="fql",
                   help="final score per run: fql (mean of last 3 evaluations; default), "
                        "last, max (optimistic), last_k:N")
    p.add_argument("--phase", default=None, choices=list(PHASES),
                   help="score the end of this phase (default: each run's last phase)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap reps (default 2000)")
    p.add_argument("--include-partial", action="store_true",
                   help="also score partial runs (running, preempted, failed, or stopped "
                        "before train_steps); diverged runs are never scored")
    p.add_argument("--method-by", default=None,
                   help="comma-separated columns naming a method (default: critic + tags)")
    p.add_argument("--baseline", default=None, metavar="METHOD|FIELD=VALUE",
                   help="what the answer and the probability of improvement compare against: "
                        "a method label, or FIELD=VALUE (e.g. critic=monolithic): each method "
                        "against the run with that value that shares every other field (same "
                        "algorithm, tasks, budget, protocol); default: critic=monolithic when "
                        "several algorithms and critics ran, else the monolithic critic when "
                        "present; 'none': compare every pair")
    p.add_argument("--tuned", action="append", default=[], metavar="FIELD",
                   help="a field that was tuned (repeatable, e.g. --tuned alpha): the "
                        "leaderboard states each method's configurations tried and the report "
                        "draws the expected best score over N configurations")
    p.add_argument("--formats", default="png,pdf",
                   help="figure formats, comma-separated (default png,pdf)")
    p.add_argument("--published", default="default",
                   help="published numbers CSV, or 'none' (default: results/published)")
    try:
        a = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    published = None if a.published.lower() == "none" else a.published
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            path = build_report(a.results_dir if len(a.results_dir) > 1 else a.results_dir[0], a.out, protocol=a.protocol, seed=a.seed,
                                reps=a.reps, include_partial=a.include_partial,
                                method_by=a.method_by.split(",") if a.method_by else None,
                                published=published, formats=a.formats.split(","),
                                phase=a.phase, baseline=a.baseline, filters=a.filter,
                                tuned=a.tuned,
                                progress=lambda line: print(line, file=sys.stderr, flush=True))
        except (AnalysisError, OSError) as e:
            print(f"floq analyze: error: {e}", file=sys.stderr)
            return 2
    for m in dict.fromkeys(str(c.message) for c in caught):
        print(f"floq analyze: warning: {m}", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
