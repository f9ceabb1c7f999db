"""``floq analyze``: a results directory -> figures, tables and an index page.

``build_report(results_dir, out_dir)`` loads every run under ``results_dir``, scores each
run seed by the chosen protocol, and writes into ``out_dir``:

- ``index.md`` — what was found, how it was scored, every table inline, links to all files
- ``leaderboard_env.{md,tex,csv}`` — success per environment (with published numbers)
- ``leaderboard_tasks_<env>.{md,tex,csv}`` — success per task, one set per environment
- ``aggregates.{csv,png,pdf}`` — median / IQM / mean / optimality gap with 95% CIs
- ``probability_of_improvement.csv`` — P(X > Y) for every pair of methods (>= 2 methods)
- ``performance_profile.{csv,png,pdf}`` — score distributions with CI bands
- ``learning_curves.{csv,png,pdf}`` — success vs step per environment
- ``scaling_<axis>.{csv,png,pdf}`` — final success vs each numeric axis that varies
- ``runs.csv`` — the final score of every run seed with its manifest fields

When runs follow different protocols (train_steps, evaluation schedule, success timing,
OGBench version) every file above except ``runs.csv`` is written once per protocol group,
prefixed ``p1_``, ``p2_``, ... and described in the index.

Nothing is half-written: everything is produced in a staging folder next to ``out_dir``
and moved in file by file (``os.replace``), the index last; files that an earlier report
wrote and this one does not are removed. Bad input raises ``AnalysisError`` before
``out_dir`` is touched; ``main`` turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis import plots, stats, tables
from analysis.load import (TAG_ABBREVIATIONS, AnalysisError, find_run_dirs, load_results,
                           to_score_dict)

__all__ = ["build_report", "main", "AXIS_LABELS"]

AXIS_LABELS = {
    "critic_flow_steps": "Critic flow steps K",
    "critic_width": "Critic width (units)",
    "critic_depth": "Critic depth (layers)",
    "params_critic": "Critic parameters",
    "params_total": "Parameters (actor + critic)",
    "flops_per_update": "FLOPs per update",
}
_MANIFEST = ".floq_report_files"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(s)).strip("-") or "x"


class _Writer:
    """Collects files in a staging dir; ``commit`` moves them into the output dir."""

    def __init__(self, stage: Path, formats: Sequence[str] = ("png", "pdf")):
        self.stage = stage
        self.formats = tuple(formats)
        self.files: list[str] = []

    def text(self, name: str, content: str) -> str:
        with open(self.stage / name, "w", newline="\n") as f:
            f.write(content)
        self.files.append(name)
        return name

    def frame(self, name: str, df: pd.DataFrame) -> str:
        df.to_csv(self.stage / name, index=False, lineterminator="\n", float_format="%.6g")
        self.files.append(name)
        return name

    def figure(self, stem: str, fig) -> list[str]:
        plots.save_figure(fig, self.stage / stem, formats=self.formats)
        names = [f"{stem}.{fmt}" for fmt in self.formats]
        self.files += names
        return names


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


def _aggregate_section(w: _Writer, scores: dict, tasks: list[str], dropped: list[str],
                       prefix: str, colors: dict, seed: int, reps: int) -> list[str]:
    """Aggregates, probability of improvement and performance profile; index lines."""
    md: list[str] = []
    scope = (f"{len(tasks)} task(s): {', '.join(tasks)}"
             + (f"; left out because they miss some of these tasks: {', '.join(dropped)}"
                if dropped else ""))
    agg = stats.aggregate_estimates(scores, reps=reps, seed=seed)
    stem = f"{prefix}aggregates"
    w.frame(f"{stem}.csv", agg)
    figs = w.figure(stem, plots.plot_aggregates(agg, colors=colors))
    md += [f"Over {scope}. Point estimates with {int(100 * 0.95)}% stratified-bootstrap "
           f"CIs (runs = seeds, tasks = tasks; {reps} reps, seed {seed}).", "",
           _fig_block(figs, f"{stem}.csv", "Aggregate metrics (success %)")]
    wide = agg.pivot(index="method", columns="metric", values="point").reset_index()
    md += [_md_frame(wide, ["method", *[m for m in stats.AGGREGATES if m in wide]],
                     pct=list(stats.AGGREGATES)), ""]

    if len(scores) >= 2:
        poi = stats.poi_estimates(scores, reps=reps, seed=seed)
        name = w.frame(f"{prefix}probability_of_improvement.csv", poi)
        md += ["## Probability of improvement", "",
               f"P(X > Y) over the same tasks; CI from independent stratified bootstraps "
               f"of X and Y. [CSV]({name})", "",
               _md_frame(poi, ["x", "y", "point", "lo", "hi"]), ""]

    prof = stats.performance_profile(scores, reps=reps, seed=seed)
    stem = f"{prefix}performance_profile"
    w.frame(f"{stem}.csv", prof)
    figs = w.figure(stem, plots.plot_performance_profile(prof, colors=colors))
    md += ["## Performance profile", "",
           _fig_block(figs, f"{stem}.csv",
                      "Score distribution: fraction of run seeds x tasks with final "
                      "success above the threshold, 95% CI bands"), ""]
    return md


def _section(w: _Writer, final: pd.DataFrame, evals: pd.DataFrame, prefix: str,
             proto: stats.Protocol, seed: int, reps: int, published) -> list[str]:
    """Tables and figures for runs under one protocol; returns index lines."""
    md: list[str] = []
    colors = plots.method_colors(sorted(final["method"].unique(), key=tables.natural_key))
    envs = sorted(final["env"].unique(), key=tables.natural_key)

    # ---- leaderboards
    lb = tables.leaderboard(final, by="env", published=published, protocol=proto,
                            reps=reps, seed=seed)
    stem = f"{prefix}leaderboard_env"
    w.text(f"{stem}.md", lb.to_markdown())
    w.text(f"{stem}.tex", lb.to_latex())
    w.text(f"{stem}.csv", lb.to_csv())
    md += ["## Leaderboard per environment", "", lb.to_markdown(),
           f"Files: [Markdown]({stem}.md) · [LaTeX]({stem}.tex) · [CSV]({stem}.csv)", ""]
    md += ["### Per task", ""]
    for env in envs:
        lt = tables.leaderboard(final, by="task", env=env, published=published,
                                protocol=proto, reps=reps, seed=seed)
        stem = f"{prefix}leaderboard_tasks_{_slug(env)}"
        w.text(f"{stem}.md", lt.to_markdown())
        w.text(f"{stem}.tex", lt.to_latex())
        w.text(f"{stem}.csv", lt.to_csv())
        md.append(f"- {env}: [Markdown]({stem}.md) · [LaTeX]({stem}.tex) · [CSV]({stem}.csv)")
    md.append("")

    # ---- aggregates over a shared task axis
    tasks, kept, dropped = _common_tasks(final)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores, tasks = to_score_dict(final, tasks=tasks, methods=kept)
    md += ["## Aggregate metrics", ""]
    if scores:
        md += _aggregate_section(w, scores, tasks, dropped, prefix, colors, seed, reps)
    else:
        md += ["No task is shared by the methods, so no aggregate was computed.", ""]

    # ---- learning curves
    curves = stats.curve_estimates(evals, reps=max(200, reps // 2), seed=seed)
    stem = f"{prefix}learning_curves"
    w.frame(f"{stem}.csv", curves)
    figs = w.figure(stem, plots.plot_learning_curves(curves, colors=colors))
    md += ["## Learning curves", "",
           _fig_block(figs, f"{stem}.csv",
                      "Success vs gradient steps: mean over the environment's seeds x "
                      "tasks, 95% stratified-bootstrap CI bands"), ""]

    # ---- scaling
    md += ["## Scaling", ""]
    axes = stats.scaling_axes(final)
    if not axes:
        md += ["No numeric axis (critic_flow_steps, critic_width, critic_depth, parameters, "
               "FLOPs per update) varies within a critic family in these runs, so no scaling "
               "plot was made.", ""]
    for axis in axes:
        est = stats.scaling_estimates(final, axis, reps=reps, seed=seed)
        stem = f"{prefix}scaling_{_slug(axis)}"
        w.frame(f"{stem}.csv", est)
        label = AXIS_LABELS.get(axis, axis)
        figs = w.figure(stem, plots.plot_scaling(est, label))
        md += [_fig_block(figs, f"{stem}.csv",
                          f"Final success vs {label}: mean over seeds x tasks per point, "
                          "95% CI bands; dashed: runs without this axis"), ""]
    return md


def build_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 protocol: str = "fql", seed: int = 0, *, reps: int = 2000,
                 include_partial: bool = False, method_by: Sequence[str] | None = None,
                 published: str | os.PathLike | pd.DataFrame | None = "default",
                 formats: Sequence[str] = ("png", "pdf")) -> str:
    """Write every figure and table the data supports, plus ``index.md``; return its path.

    Args:
        results_dir: searched recursively for run directories.
        out_dir: created if needed; files of an earlier report there are replaced.
        protocol: ``fql`` | ``last`` | ``max`` | ``last_k:N`` (see ``stats.parse_protocol``).
        seed: seed of every bootstrap.
        reps: bootstrap replications (learning curves use half, at least 200).
        include_partial: also score runs that stopped before ``train_steps``.
        method_by: columns that name a method (default: critic + varying tags).
        published: ``"default"`` (results/published/published.csv if present), a path, a
            frame, or None for no published numbers.
        formats: figure formats (PNG is what the index shows).
    Raises:
        AnalysisError: nothing usable (missing/empty dir, no evaluations, bad values).
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    proto = stats.parse_protocol(protocol)
    if reps < 1:
        raise AnalysisError("reps must be >= 1")
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad or not formats:
        raise AnalysisError(f"figure formats must be among png, pdf, svg (got {list(formats)})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load_results(results_dir, method_by=method_by)
        n_dirs = len(find_run_dirs(results_dir))
        if n_dirs == 0:
            raise AnalysisError(f"no run directories (eval.csv or run.json) under "
                                f"{str(results_dir)!r}")
        if df.empty:
            first = f"; first problem: {caught[0].message}" if caught else ""
            raise AnalysisError(f"no usable evaluations in the {n_dirs} run "
                                f"director{'y' if n_dirs == 1 else 'ies'} under "
                                f"{str(results_dir)!r}{first}")
        df = stats.dedupe_runs(df)
        final_all = stats.final_scores(df, proto)
        final = final_all if include_partial else final_all[final_all["complete"]]
        if final.empty:
            raise AnalysisError(f"none of the {len(final_all)} run seeds under "
                                f"{str(results_dir)!r} reached train_steps; pass "
                                "--include-partial to score them anyway")
        if not include_partial and len(final) < len(final_all):
            warnings.warn(f"left out {len(final_all) - len(final)} incomplete run seed(s) "
                          "(see runs.csv, column complete); --include-partial scores them",
                          UserWarning, stacklevel=2)
        pub = _published(published)

    notes = list(dict.fromkeys(str(c.message) for c in caught))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    extra: list[str] = []
    stage = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.staging-"))
    try:
        w = _Writer(stage, formats)
        with warnings.catch_warnings(record=True) as caught2:
            warnings.simplefilter("always")
            index = _index(w, results_dir, df, final_all, final, proto, seed, reps, pub,
                           notes, n_dirs, include_partial)
        extra = [m for m in dict.fromkeys(str(c.message) for c in caught2)
                 if m not in notes]
        if extra:
            fill = "\n".join(f"- {m}" for m in extra)
        elif not notes:
            fill = "All run directories were read without problems."
        else:
            fill = ""
        index = index.replace("<!--notes-->\n", fill + "\n" if fill else "", 1)
        w.text("index.md", re.sub(r"\n{3,}", "\n\n", index))
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


def _index(w, results_dir, df, final_all, final, proto, seed, reps, pub, notes, n_dirs,
           include_partial) -> str:
    runs = final_all.copy()
    w.frame("runs.csv", runs.drop(columns=[c for c in ("has_manifest",) if c in runs]))
    n_methods = final["method"].nunique()
    md = ["# floq analysis report", "",
          f"- Results: `{results_dir}` — {n_dirs} run director{'y' if n_dirs == 1 else 'ies'}, "
          f"{len(final_all)} run seeds with evaluations, {len(final)} scored"
          + ("" if include_partial else " (complete runs only)") + ".",
          f"- Methods ({n_methods}): {', '.join(_sorted(final['method']))}.",
          f"- Environments: {', '.join(_sorted(final['env']))}; "
          f"tasks: {final['task_key'].nunique()}.",
          *(["- Method labels abbreviate tags: "
             + ", ".join(f"{v} = {k}" for k, v in TAG_ABBREVIATIONS.items()) + "."]
            if final["method"].str.contains("(", regex=False).any() else []),
          f"- Final score per run seed: {proto.description}.",
          f"- Uncertainty: 95% percentile intervals from a stratified bootstrap (seeds "
          f"resampled within each task; rliable's method), {reps} reps, seed {seed}.",
          "- Published numbers: " + ("results/published/published.csv (FQL and floq papers)"
                                     if pub is not None else "none") + ".",
          "- Per-run scores: [runs.csv](runs.csv).", ""]
    if proto.optimistic:
        md += ["> **Optimistic protocol.** `max` scores each run by its best evaluation; the "
               "numbers are biased upward and not comparable to published results.", ""]
    md += ["## Input notes", ""]
    md += [f"- {m}" for m in notes] + ["<!--notes-->", ""]

    groups = tables.split_by_protocol(final)
    if len(groups) == 1:
        md += _section(w, final, df[df["run_dir"].isin(final["run_dir"])], "", proto, seed,
                       reps, pub)
    else:
        md += [f"The runs follow {len(groups)} different protocols; each gets its own "
               "tables and figures (numbers from different protocols are never mixed).", ""]
        for i, (p, sub) in enumerate(groups, 1):
            desc = ", ".join(f"{k} {tables._fmt(v)}" for k, v in p.items())
            md += [f"## Protocol group {i}: {desc}", ""]
            sect = _section(w, sub, df[df["run_dir"].isin(sub["run_dir"])], f"p{i}_", proto,
                            seed, reps, pub)
            md += [("#" + line) if line.startswith("#") else line for line in sect]
    return "\n".join(md).rstrip("\n") + "\n"


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


def main(argv: Sequence[str] | None = None) -> int:
    """``floq analyze RESULTS_DIR --out REPORT_DIR [--protocol P] [--seed N] ...``

    ``argv`` excludes the ``analyze`` word. Returns the exit code: 0, or 2 on bad input
    (one line on stderr, nothing written).
    """
    p = _Parser(prog="floq analyze",
                description="Turn run directories into figures, tables and an index page.")
    p.add_argument("results_dir", help="directory searched recursively for run dirs")
    p.add_argument("--out", required=True, help="report directory (created)")
    p.add_argument("--protocol", default="fql",
                   help="final score per run: fql (mean of last 3 evaluations; default), "
                        "last, max (optimistic), last_k:N")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap reps (default 2000)")
    p.add_argument("--include-partial", action="store_true",
                   help="also score runs that stopped before train_steps")
    p.add_argument("--method-by", default=None,
                   help="comma-separated columns naming a method (default: critic + tags)")
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
            path = build_report(a.results_dir, a.out, protocol=a.protocol, seed=a.seed,
                                reps=a.reps, include_partial=a.include_partial,
                                method_by=a.method_by.split(",") if a.method_by else None,
                                published=published, formats=a.formats.split(","))
        except (AnalysisError, OSError) as e:
            print(f"floq analyze: error: {e}", file=sys.stderr)
            return 2
    for m in dict.fromkeys(str(c.message) for c in caught):
        print(f"floq analyze: warning: {m}", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
