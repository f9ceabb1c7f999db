"""Layer 3b: leaderboards in Markdown, LaTeX (booktabs) and CSV.

A leaderboard has one row per method and one column per environment (``by="env"``) or per
task of one environment (``by="task"``), then ``Mean`` (the mean over the columns — each
environment weighs equally — for methods covering every task, with its own bootstrap CI)
and ``Avg. rank`` (mean rank over the columns among our methods covering every column).
Our cells read ``mean ± h (n=s)`` in percent, where h is half the width of the 95%
stratified-bootstrap CI (exact bounds are in the CSV) and s the seeds per task (every seed
that exists is used; ``n=2–3`` when tasks differ). Bold marks the best of our full-coverage
entries in a column and every entry whose CI overlaps the best's CI, only in a column where
at least one entry is separated from the best (``significance_bold``); otherwise nothing is
bold and a note says the data do not separate the methods.
Published numbers sit in extra rows labelled ``(published, <ref>)`` with their own ±
(usually a std over seeds — a different kind of uncertainty, stated in the notes), never
bolded or ranked. LaTeX tables are scaled down to the column width when wider
(``\resizebox``), and use ``table*`` (text width) when they have more than
``WIDE_COLUMNS`` data columns.

Mixed protocols are refused: numbers from runs with different ``train_steps``,
``eval_interval``, ``eval_episodes``, ``success_timing`` or ``ogbench_version`` cannot share
a table, so ``leaderboard`` raises ``ValueError`` naming the differing field and values.
Use ``split_by_protocol`` to make one table per protocol (what ``analysis.report`` does).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.load import PROTOCOL_FIELDS, natural_key
from analysis.stats import (Protocol, bootstrap_estimate, parse_protocol, score_matrix,
                            scored_steps_rule, weighted_mean_estimate)

__all__ = ["DEFAULT_PUBLISHED_METHODS", "PUBLISHED_ALGORITHMS", "published_methods_for",
           "algorithm_critic_table", "Leaderboard", "protocol_of", "split_by_protocol",
           "leaderboard", "natural_key", "significance_bold", "average_ranks",
           "MEAN_COLUMN", "RANK_COLUMN", "WIDE_COLUMNS"]

MEAN_COLUMN = "Mean"
RANK_COLUMN = "Avg. rank"
WIDE_COLUMNS = 6  # more data columns than this: table* across the text width

# Published methods shown beside ours by default (the FQL and floq papers' own methods).
DEFAULT_PUBLISHED_METHODS = ("FQL", "FQL(1M)", "FQL(2M)", "floq-def", "floq-best")
#: Our ``algorithm`` names (lower case) -> the method name the papers' tables use
#: (results/published/published.csv): a leaderboard of runs of these algorithms shows the
#: published rows of the same algorithm (FQL paper Tables 2-4; ReBRAC also the floq paper's).
#: RLPD (``sac`` / ``rlpd``) is published for offline-to-online only.
PUBLISHED_ALGORITHMS = {"fql": "FQL", "iql": "IQL", "rebrac": "ReBRAC", "ifql": "IFQL",
                        "rlpd": "RLPD", "sac": "RLPD"}


def published_methods_for(final: pd.DataFrame,
                          base: Sequence[str] = DEFAULT_PUBLISHED_METHODS) -> tuple[str, ...]:
    """``base`` plus the published method name of every algorithm in ``final`` (matched by
    ``PUBLISHED_ALGORITHMS``, case-insensitively), in that order, without repeats."""
    algos = (sorted({str(a).lower() for a in final["algorithm"].dropna().unique()})
             if "algorithm" in final.columns else [])
    extra = [PUBLISHED_ALGORITHMS[a] for a in algos if a in PUBLISHED_ALGORITHMS]
    return tuple(dict.fromkeys([*base, *extra]))


# --------------------------------------------------------------------------- protocols
def _fmt(v) -> str:
    if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return "unknown"
    if isinstance(v, (int, np.integer, float, np.floating)) and not isinstance(v, bool) \
            and float(v).is_integer():
        return f"{int(v):,}"
    return str(v)


# The budgets of the reference code bases, named beside ours in every leaderboard caption
# (github:CMU-AIRe/floq main.py defaults; github:seohongpark/fql main.py and its paper).
REFERENCE_BUDGETS = ("the released floq code's default budget is 2M gradient steps with evaluation "
                     "every 20k (gin/recipes/released_budget.gin); FQL's protocol is 1M steps, "
                     "evaluation every 100k, score = mean of the last three")


def budget_text(protocol: dict, rule: str) -> str:
    """``'Budget: 1M gradient steps per run, evaluation every 100k steps over 50 episodes;
    score: <rule> (...reference budgets...)'`` from a table's shared protocol."""
    from analysis.stats import format_steps

    ts, ei, ee = (protocol.get(k) for k in ("train_steps", "eval_interval", "eval_episodes"))
    known = lambda v: v is not None and not (isinstance(v, float) and np.isnan(v))  # noqa: E731
    steps = f"{format_steps(ts)} gradient steps per run" if known(ts) else "gradient steps per run not recorded"
    if protocol.get("phase") == "online":
        steps += " (offline, then the online phase)"
    every = f", evaluation every {format_steps(ei)} steps" if known(ei) else ", evaluation interval not recorded"
    over = f" over {int(ee)} episodes" if known(ee) else ""
    return f"Budget: {steps}{every}{over}; score: {rule} ({REFERENCE_BUDGETS})."


def protocol_of(final: pd.DataFrame) -> dict:
    """The protocol shared by all runs: ``{field: value}`` over ``PROTOCOL_FIELDS``
    present in ``final``. Raises ValueError when runs disagree on any field."""
    out = {}
    for f in PROTOCOL_FIELDS:
        if f not in final.columns or final[f].isna().all():
            continue
        vals = final[f].map(_fmt)
        if vals.nunique() > 1:
            per_run = final.assign(_v=vals).groupby("_v")["run_dir"].nunique()
            desc = ", ".join(f"{v} ({n} run dir{'s' if n > 1 else ''})"
                             for v, n in per_run.items())
            raise ValueError(f"runs mix protocols: {f} is {desc}; numbers from different "
                             "protocols cannot share a table — use "
                             "analysis.tables.split_by_protocol and make one table each")
        out[f] = final[f].dropna().iloc[0] if final[f].notna().any() else None
    return out


def split_by_protocol(final: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """Partition runs by protocol: ``[(protocol dict, frame), ...]``, largest first."""
    fields = [f for f in PROTOCOL_FIELDS if f in final.columns and final[f].notna().any()]
    if not fields:
        return [({}, final)]
    key = final[fields].apply(lambda r: tuple(_fmt(v) for v in r), axis=1)
    groups = []
    for _, idx in key.groupby(key, sort=True).groups.items():
        sub = final.loc[idx]
        groups.append((protocol_of(sub), sub))
    groups.sort(key=lambda g: -len(g[1]))
    return groups


# --------------------------------------------------------------------------- the table
@dataclass
class Leaderboard:
    """A rendered-agnostic leaderboard.

    Attributes:
        cells: long frame, one row per filled cell: ``row, column, kind`` (ours |
            published), ``point, lo, hi`` (fractions), ``display`` (the cell text),
            ``bold``, ``n_seeds``, ``n_tasks``, ``uncertainty, uncertainty_kind, ref``.
        rows, columns: display order. ``title``, ``caption``, ``notes``: text.
    """

    cells: pd.DataFrame
    rows: list[str]
    columns: list[str]
    title: str
    caption: str
    notes: list[str] = field(default_factory=list)
    label: str = "tab:leaderboard"
    first_header: str = "Method"

    def _grid(self) -> list[list[tuple[str, bool]]]:
        lookup = {(r.row, r.column): (r.display, bool(r.bold))
                  for r in self.cells.itertuples()}
        return [[lookup.get((row, col), ("—", False)) for col in self.columns]
                for row in self.rows]

    def _n_ours(self) -> int:
        return sum(1 for r in self.rows
                   if (self.cells[self.cells["row"] == r]["kind"] == "ours").any())

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown: title, caption, table, numbered notes."""
        esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        out = [f"**{self.title}.** {self.caption}", ""]
        out.append("| " + " | ".join([self.first_header, *map(esc, self.columns)]) + " |")
        out.append("|" + "---|" + "---:|" * len(self.columns))
        for row, cells in zip(self.rows, self._grid()):
            texts = [f"**{t}**" if b else t for t, b in cells]
            out.append("| " + " | ".join([esc(row), *map(esc, texts)]) + " |")
        if self.notes:
            out.append("")
            out.extend(f"{i}. {n}" for i, n in enumerate(self.notes, 1))
        return "\n".join(out) + "\n"

    def to_latex(self) -> str:
        """A booktabs ``table`` float; published rows below a ``\\midrule``."""
        n_ours = self._n_ours()
        data_cols = [c for c in self.columns if c not in (MEAN_COLUMN, RANK_COLUMN)]
        env = "table*" if len(data_cols) > WIDE_COLUMNS else "table"
        width = r"\textwidth" if env == "table*" else r"\columnwidth"
        lines = ["% needs \\usepackage{booktabs,graphicx}",
                 rf"\begin{{{env}}}[t]", r"\centering", r"\small",
                 rf"\caption{{{_tex(self.title)}. {_tex(self.caption)}}}",
                 rf"\label{{{self.label}}}",
                 # shrink to the column (text) width when wider; never enlarge
                 rf"\resizebox{{\ifdim\width>{width}{width}\else\width\fi}}{{!}}{{%",
                 r"\begin{tabular}{l" + "r" * len(self.columns) + "}", r"\toprule",
                 " & ".join([_tex(self.first_header), *map(_tex, self.columns)]) + r" \\",
                 r"\midrule"]
        for i, (row, cells) in enumerate(zip(self.rows, self._grid())):
            if i == n_ours and 0 < n_ours < len(self.rows):
                lines.append(r"\midrule")
            texts = [rf"\textbf{{{_tex(t)}}}" if b else _tex(t) for t, b in cells]
            lines.append(" & ".join([_tex(row), *texts]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}}"]
        if self.notes:
            lines += [r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize"]
            lines += [rf"({i}) {_tex(n)}\par" for i, n in enumerate(self.notes, 1)]
            lines.append(r"\end{minipage}")
        lines.append(rf"\end{{{env}}}")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """The cells (long form) with exact bounds, as CSV text."""
        buf = io.StringIO()
        self.cells.to_csv(buf, index=False, lineterminator="\n", float_format="%.6g")
        return buf.getvalue()


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}", "±": r"$\pm$", "—": "--", "–": "--", "×": r"$\times$",
        "≥": r"$\geq$", "≤": r"$\leq$", "→": r"$\to$", "τ": r"$\tau$", "‡": r"$\ddagger$",
        "†": r"$\dagger$", "−": r"$-$", "Δ": r"$\Delta$"}


def _tex(s) -> str:
    return "".join(_TEX.get(c, c) for c in str(s))


# --------------------------------------------------------------------------- build
def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}"


def _n_text(counts: np.ndarray) -> str:
    lo, hi = int(np.min(counts)), int(np.max(counts))
    return f"n={lo}" if lo == hi else f"n={lo}–{hi}"


def _ours_cell(scores: np.ndarray, reps, confidence, seed, key, n_total,
               weights: np.ndarray | None = None) -> dict:
    if weights is None:
        point, lo, hi = bootstrap_estimate(scores, "mean", reps, confidence, seed, key)
    else:
        point, lo, hi = weighted_mean_estimate(scores, weights, reps, confidence, seed, key)
    counts = np.sum(~np.isnan(scores), axis=0)
    n_tasks = scores.shape[1]
    if np.isnan(lo):
        text = f"{_pct(point)} (1 seed)" if counts.max() == 1 else \
            f"{_pct(point)} ({_n_text(counts)})"
    else:
        text = f"{_pct(point)} ± {_pct((hi - lo) / 2)} ({_n_text(counts)})"
    if n_tasks < n_total:
        text += f" [{n_tasks}/{n_total} tasks]"
    return dict(kind="ours", point=point, lo=lo, hi=hi, display=text,
                n_seeds=int(counts.min()), n_seeds_max=int(counts.max()),
                n_tasks=n_tasks, uncertainty=np.nan,
                uncertainty_kind=f"{int(confidence * 100)}% stratified bootstrap CI",
                ref="ours")


def significance_bold(cells: pd.DataFrame, eligible: pd.Series | None = None) -> pd.Series:
    """Bold per column: the best entry (highest ``point``) and every entry whose interval
    ``[lo, hi]`` overlaps the best's interval. An entry without an interval (one seed)
    counts as the single point ``[point, point]``. Only ``eligible`` rows compete (default:
    all), and a column bolds nothing unless at least two compete.

    The rule can fail: a column where every competing entry overlaps the best bolds
    nothing, since bolding all of them would say nothing (a typical small-n table). Bold
    therefore always means "these are the entries the data cannot tell from the best, and
    at least one entry is separated from it".

    Args:
        cells: rows with ``column, point, lo, hi``.
    Returns:
        A boolean Series aligned with ``cells``.
    """
    bold = pd.Series(False, index=cells.index)
    ok = pd.Series(True, index=cells.index) if eligible is None else eligible.astype(bool)
    for _, g in cells[ok].groupby("column", sort=False):
        g = g[np.isfinite(g["point"].to_numpy(float))]
        if len(g) < 2:
            continue
        lo = g["lo"].where(np.isfinite(g["lo"].astype(float)), g["point"]).astype(float)
        hi = g["hi"].where(np.isfinite(g["hi"].astype(float)), g["point"]).astype(float)
        best = g["point"].astype(float).idxmax()
        overlap = (hi >= lo[best] - 1e-12) & (lo <= hi[best] + 1e-12)
        if overlap.all():  # nothing is separated from the best: bold would mean nothing
            continue
        bold.loc[g.index[overlap.to_numpy()]] = True
    return bold


def average_ranks(cells: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Mean over ``columns`` of each row's rank by ``point`` (1 = best; ties share the
    average rank) among the rows that have all ``columns``. Returns ``{row: rank}``."""
    wide = cells.pivot(index="row", columns="column", values="point")
    wide = wide.reindex(columns=list(columns)).dropna()
    if wide.empty:
        return pd.Series(dtype=float)
    return wide.rank(axis=0, ascending=False, method="average").mean(axis=1)


def _published_cell(p: pd.Series) -> dict:
    unc = p["uncertainty"]
    text = f"{_pct(p['value'], 0)}" + ("" if pd.isna(unc) else f" ± {_pct(unc, 0)}")
    n = p.get("n_seeds")
    return dict(kind="published", point=float(p["value"]), lo=np.nan, hi=np.nan,
                display=text, n_seeds=n if pd.notna(n) else np.nan,
                n_tasks=5 if p["task"] == "5-task avg" else 1, uncertainty=unc,
                uncertainty_kind=p["uncertainty_kind"], ref=p["ref"])


def _published_note(pub: pd.DataFrame, ref: str, ours: dict, n_seeds_ours: str,
                    protocol: Protocol) -> str:
    sub = pub[pub["ref"] == ref]
    first = sub.iloc[0]
    seeds = sorted({int(s) for s in sub["n_seeds"].dropna()})
    steps = sorted({int(s) for s in sub["train_steps"].dropna()})
    kinds = sorted(set(sub["uncertainty_kind"]))
    rules = sorted(set(sub["eval_rule"]))
    parts = [f"{ref} (published): {first['source']}, {first['table']}; trust: "
             f"{', '.join(sorted(set(sub['trust'])))}",
             f"seeds {'/'.join(map(str, seeds)) or 'not stated'}",
             f"{'/'.join(f'{s:,}' for s in steps) or 'unstated'} gradient steps",
             f"evaluation rule: {'; '.join(rules)}",
             f"OGBench {first['ogbench_version']} (success read post-step)",
             f"± = {'; '.join(kinds)}"]
    diff = []
    if seeds and n_seeds_ours and str(seeds[0]) != n_seeds_ours:
        diff.append(f"seeds {'/'.join(map(str, seeds))} vs our {n_seeds_ours}")
    ts = ours.get("train_steps")
    if steps and ts is not None and not pd.isna(ts) and int(ts) not in steps:
        diff.append(f"steps {'/'.join(f'{s:,}' for s in steps)} vs our {int(ts):,}")
    ov = ours.get("ogbench_version")
    if ov is not None and str(ov) != str(first["ogbench_version"]):
        diff.append(f"OGBench {first['ogbench_version']} vs our {ov}")
    st = ours.get("success_timing")
    if st is not None and str(st) != "post":
        diff.append(f"success timing post vs our {st}")
    if protocol.name != "fql" or "800K" not in rules[0]:
        diff.append(f"evaluation rule differs from ours ({protocol.spec})")
    diff.append("their ± is not a CI" if "none" not in kinds[0] else "no ± to compare")
    return "; ".join(parts) + ". Differences from our protocol: " + "; ".join(diff) + "."


def leaderboard(final: pd.DataFrame, by: str = "env", env: str | None = None,
                published: pd.DataFrame | None = None,
                published_methods: Sequence[str] | None = None,
                protocol: str | Protocol = "fql", reps: int = 2000,
                confidence: float = 0.95, seed: int = 0) -> Leaderboard:
    """Build a leaderboard from per-run final scores.

    Args:
        final: ``stats.final_scores`` output (one row per run dir and seed).
        by: ``"env"`` (columns = environments; a cell averages the method's tasks in that
            environment) or ``"task"`` (columns = the tasks of ``env``).
        env: the environment for ``by="task"``.
        published: ``published.load_published()`` or None. Offline success rows of
            ``published_methods`` for the same environments (5-task averages for
            ``by="env"``, per-task rows for ``by="task"``) become extra rows.
        published_methods: the published methods to show; None: FQL's and floq's
            (``DEFAULT_PUBLISHED_METHODS``) plus those of the algorithms in ``final``
            (``published_methods_for``: runs of ``rebrac`` bring the published ReBRAC rows).
        protocol: the scoring rule ``final`` was computed with (for the caption).
    Raises:
        ValueError: runs mix protocols (see ``protocol_of``), bad ``by``/``env``, or no runs.
    """
    proto = parse_protocol(protocol)
    if final.empty:
        raise ValueError("no runs to tabulate")
    if published_methods is None:
        published_methods = published_methods_for(final)
    if by not in ("env", "task"):
        raise ValueError(f"by must be 'env' or 'task', not {by!r}")
    ours_protocol = protocol_of(final)
    if by == "task":
        if env is None:
            envs = final["env"].unique()
            if len(envs) != 1:
                raise ValueError("by='task' needs env= when the runs span several "
                                 f"environments ({', '.join(sorted(envs))})")
            env = envs[0]
        final = final[final["env"] == env]
        if final.empty:
            raise ValueError(f"no runs on environment {env!r}")
        col_of = final["task"]
    else:
        col_of = final["env"]
    final = final.assign(_col=col_of.astype(str))
    columns = sorted(final["_col"].unique(), key=natural_key)
    methods = sorted(final["method"].unique(), key=natural_key)
    n_total = {c: final[final["_col"] == c]["task_key"].nunique() for c in columns}

    cells = []
    for m in methods:
        for c in columns:
            sub = final[(final["method"] == m) & (final["_col"] == c)]
            if sub.empty:
                continue
            cell = _ours_cell(score_matrix(sub), reps, confidence, seed, f"{m}\x00{c}",
                              n_total[c])
            cells.append(dict(row=m, column=c, **cell))
    df = pd.DataFrame(cells)
    full_col = df["n_tasks"] == df["column"].map(n_total)
    # Mean over the columns (each column weighs equally) for methods covering every task
    all_tasks = set(final["task_key"])
    mean_cells = []
    for m in methods:
        sub = final[final["method"] == m]
        if set(sub["task_key"]) != all_tasks:
            continue
        keys = sorted(sub["task_key"].unique())
        col_of_task = sub.drop_duplicates("task_key").set_index("task_key")["_col"]
        w = np.array([1.0 / (len(columns) * n_total[col_of_task[k]]) for k in keys])
        cell = _ours_cell(score_matrix(sub), reps, confidence, seed,
                          f"{m}\x00{MEAN_COLUMN}", len(keys), weights=w)
        mean_cells.append(dict(row=m, column=MEAN_COLUMN, **cell))
    # bold: best full-coverage entry per column and every entry whose CI overlaps it
    df["bold"] = significance_bold(df, full_col)
    if mean_cells:
        mc = pd.DataFrame(mean_cells)
        mc["bold"] = significance_bold(mc)
        df = pd.concat([df, mc], ignore_index=True)
    ranks = average_ranks(df[df["column"].isin(columns) & full_col.reindex(df.index,
                                                                          fill_value=False)],
                          columns) if len(columns) > 1 else pd.Series(dtype=float)
    if len(ranks) >= 2:
        rank_cells = [dict(row=m, column=RANK_COLUMN, kind="rank", point=float(r), lo=np.nan,
                           hi=np.nan, display=f"{r:.1f}", bold=False, n_seeds=np.nan,
                           n_seeds_max=np.nan, n_tasks=len(all_tasks), uncertainty=np.nan,
                           uncertainty_kind="mean rank over the columns", ref="ours")
                      for m, r in ranks.items()]
        df = pd.concat([df, pd.DataFrame(rank_cells)], ignore_index=True)
    extra_cols = ([MEAN_COLUMN] if mean_cells and len(columns) > 1 else []) + \
        ([RANK_COLUMN] if len(ranks) >= 2 else [])
    if MEAN_COLUMN not in extra_cols:
        df = df[df["column"] != MEAN_COLUMN]

    pub_rows, refs_used = [], []
    if published is not None and len(published):
        p = published[(published["metric"] == "success") & (published["setting"] == "offline")
                      & (published["x_name"].fillna("") == "")
                      & published["method"].isin(list(published_methods))]
        if by == "env":
            p = p[(p["task"] == "5-task avg") & p["env"].isin(columns)]
        else:
            p = p[(p["env"] == env) & p["task"].isin(columns)]
        shown = p
        for (method, ref), g in p.groupby(["method", "ref"], sort=False):
            label = f"{method} (published, {ref})"
            pub_rows.append((list(published_methods).index(method), ref, label))
            refs_used.append(ref)
            for _, r in g.iterrows():
                cells_pub = dict(row=label, column=r["env"] if by == "env" else r["task"],
                                 bold=False, n_seeds_max=np.nan, **_published_cell(r))
                df = pd.concat([df, pd.DataFrame([cells_pub])], ignore_index=True)
        pub_rows.sort()
        refs_used = sorted(set(refs_used))
    rows = methods + [label for _, _, label in pub_rows]
    df = df[["row", "column", "kind", "point", "lo", "hi", "display", "bold", "n_seeds",
             "n_seeds_max", "n_tasks", "uncertainty", "uncertainty_kind", "ref"]]
    columns = columns + extra_cols

    # ---- caption and notes
    seeds = final.groupby(["method", "task_key"])["seed"].nunique()
    rule = scored_steps_rule(final, proto)
    n_seeds = (str(seeds.min()) if seeds.min() == seeds.max()
               else f"{seeds.min()}–{seeds.max()}")
    proto_txt = ", ".join(f"{k} {_fmt(v)}" for k, v in ours_protocol.items()) or \
        "protocol fields not recorded"
    title = ("Success rate (%) per environment" if by == "env"
             else f"Success rate (%) per task of {env}")
    what = ("mean over the environment's tasks of the per-task mean over seeds"
            if by == "env" else "mean over seeds")
    caption = (f"{budget_text(ours_protocol, rule)} "
               f"Ours: {what}, ± half the width of the {int(confidence * 100)}% "
               f"stratified-bootstrap CI (seeds resampled within tasks; {reps} reps, "
               f"seed {seed}); n = seeds per task ({n_seeds}); score per run: "
               f"{proto.description}, here {rule}; {proto_txt}.")
    notes = []
    rule = (f"the best of our entries in the column (point estimate) among those covering "
            f"all its tasks, and every such entry whose {int(confidence * 100)}% CI "
            "overlaps the best one's, only in a column where some entry's CI does not (not "
            "a significance test: overlapping intervals mean the data do not separate "
            "them); published numbers are not ranked because their protocol differs")
    ours_cols = df[(df["kind"] == "ours") & df["column"].isin(columns)]
    if (df["bold"]).any():
        notes.append(f"Bold: {rule}.")
    elif (ours_cols.groupby("column")["row"].nunique() >= 2).any():
        notes.append(f"Nothing is bold: in every column each entry's "
                     f"{int(confidence * 100)}% CI overlaps the best one's, so these data "
                     "do not separate the methods. Bold, where shown, marks the best entry "
                     "and those whose CI overlaps it, only in a column where some entry's "
                     "CI does not.")
    if MEAN_COLUMN in extra_cols:
        notes.append(f"{MEAN_COLUMN}: " + ("mean over environments of the per-environment "
                     "means (each environment weighs equally)" if by == "env" else
                     "mean over the tasks") + ", only for methods that cover every task; "
                     "CI from the same stratified bootstrap.")
    if RANK_COLUMN in extra_cols:
        notes.append(f"{RANK_COLUMN}: mean over the columns of the method's rank among our "
                     "entries that cover every column (1 = best; ties share the average "
                     "rank); methods missing a column or task are not ranked.")
    if df["display"].str.contains("tasks]", regex=False).any():
        notes.append("[k/n tasks]: this entry averages only k of the n tasks that other "
                     "entries in the column cover; it is not directly comparable.")
    if seeds.min() < 5:
        notes.append("With fewer than 5 seeds per task, percentile-bootstrap intervals "
                     "are rough and tend to be too narrow.")
    if proto.optimistic:
        notes.append("Scores use each run's best evaluation (max rule): optimistic, "
                     "biased upward.")
    if by == "env" and refs_used:
        notes.append("Published numbers average all 5 tasks of an environment.")
    for ref in refs_used:
        notes.append(_published_note(shown[shown["ref"] == ref], ref,
                                     ours_protocol, n_seeds, proto))
    label = "tab:leaderboard-" + ("env" if by == "env" else re.sub(r"[^a-z0-9]+", "-",
                                                                     env.lower()))
    return Leaderboard(cells=df.reset_index(drop=True), rows=rows, columns=columns,
                       title=title, caption=caption, notes=notes, label=label)


# --------------------------------------------------------------------------- algorithm x critic
def algorithm_critic_table(final: pd.DataFrame, protocol: str | Protocol = "fql",
                           reps: int = 2000, confidence: float = 0.95,
                           seed: int = 0, deltas: pd.DataFrame | None = None,
                           baseline_critic: str | None = None) -> Leaderboard | None:
    """Rows algorithms, columns critics; a cell is the pair's final success over all its
    tasks (mean over tasks of the per-task mean over seeds, ± half the width of the
    stratified-bootstrap CI), as ``leaderboard``'s cells. None unless both the algorithm
    and the critic vary. A pair whose runs hold several configurations (e.g. a K sweep)
    has no single number: its cell says so and the leaderboard has its rows, unless
    ``deltas`` pairs exactly one of them (that configuration is shown, marked ``†``).

    Bold is within a row (the question is which critic inside each algorithm): the best
    critic of the algorithm and every critic whose CI overlaps it, only in a row where some
    critic's CI does not (``significance_bold`` by row).

    ``deltas`` (``paired.estimates`` rows of a ``critic=<baseline_critic>`` pairing:
    ``algorithm, critic, method, baseline, point, lo, hi``) adds one column per other
    critic, ``Δ <critic> − <baseline_critic>``: the paired difference in points with its CI.
    Raises ValueError for mixed protocols (as ``leaderboard``)."""
    if final.empty or final["algorithm"].nunique() < 2 or final["critic"].nunique() < 2:
        return None
    proto = parse_protocol(protocol)
    ours_protocol = protocol_of(final)
    algos = sorted(final["algorithm"].astype(str).unique(), key=natural_key)
    critics = sorted(final["critic"].astype(str).unique(), key=natural_key)
    n_total = final["task_key"].nunique()
    paired_methods: dict = {}
    if deltas is not None and len(deltas):
        for r in deltas.itertuples():
            paired_methods.setdefault((str(r.algorithm), str(r.critic)), set()).add(r.method)
            paired_methods.setdefault((str(r.algorithm), str(baseline_critic)), set()).add(
                r.baseline)
    cells, chosen = [], []
    for a in algos:
        for c in critics:
            sub = final[(final["algorithm"].astype(str) == a) & (final["critic"].astype(str) == c)]
            if sub.empty:
                continue
            methods = sorted(sub["method"].unique(), key=natural_key)
            mark = ""
            if len(methods) > 1 and len(paired_methods.get((a, c), ())) == 1:
                only = next(iter(paired_methods[(a, c)]))
                sub, mark = sub[sub["method"] == only], "†"
                chosen.append(only)
            elif len(methods) > 1:
                cells.append(dict(row=a, column=c, kind="ours", point=np.nan, lo=np.nan,
                                  hi=np.nan, display=f"{len(methods)} configurations",
                                  n_seeds=np.nan, n_seeds_max=np.nan,
                                  n_tasks=sub["task_key"].nunique(), uncertainty=np.nan,
                                  uncertainty_kind="", ref="ours"))
                continue
            cell = _ours_cell(score_matrix(sub), reps, confidence, seed, f"{a}\x00{c}", n_total)
            cell["display"] += mark
            cells.append(dict(row=a, column=c, **cell))
    df = pd.DataFrame(cells)
    full = (df["n_tasks"] == n_total) & df["point"].notna()
    by_row = df.rename(columns={"column": "critic", "row": "column"})
    df["bold"] = significance_bold(by_row, full)
    delta_cols = []
    if deltas is not None and len(deltas) and baseline_critic is not None:
        for c in [c for c in critics if c != baseline_critic]:
            d = deltas[deltas["critic"].astype(str) == c]
            if d.empty:
                continue
            name = f"Δ {c} − {baseline_critic}"
            delta_cols.append(name)
            for r in d.itertuples():
                if str(r.algorithm) not in algos or ((deltas["algorithm"] == r.algorithm)
                                                     & (deltas["critic"] == c)).sum() > 1:
                    continue  # several configurations of c: the answer lines give each
                text = (f"{100 * r.point:+.1f}" + ("" if pd.isna(r.lo) else
                                                   f" [{100 * r.lo:+.1f}, {100 * r.hi:+.1f}]"))
                if getattr(r, "all_zero", False):
                    text = "0 (both 0%: nothing learned)"
                cells_d = dict(row=str(r.algorithm), column=name, kind="delta",
                               point=float(r.point), lo=float(r.lo), hi=float(r.hi),
                               display=text.replace("-", "−"), bold=False, n_seeds=np.nan,
                               n_seeds_max=np.nan, n_tasks=int(r.n_tasks), uncertainty=np.nan,
                               uncertainty_kind=f"{int(confidence * 100)}% CI of the paired "
                               "difference (independent stratified bootstraps)", ref="ours")
                df = pd.concat([df, pd.DataFrame([cells_d])], ignore_index=True)
    df = df[["row", "column", "kind", "point", "lo", "hi", "display", "bold", "n_seeds",
             "n_seeds_max", "n_tasks", "uncertainty", "uncertainty_kind", "ref"]]
    rule = scored_steps_rule(final, proto)
    caption = (f"{budget_text(ours_protocol, rule)} Rows: algorithms; columns: critics. A "
               f"cell: mean over the pair's {n_total} task(s) of the per-task mean over "
               f"seeds, ± half the width of the {int(confidence * 100)}% stratified-bootstrap "
               f"CI ({reps} reps, seed {seed}); score per run: {proto.description}, here "
               f"{rule}.")
    notes = []
    ours = df[df["kind"] == "ours"]
    if df["bold"].any():
        notes.append("Bold, within each row: the algorithm's best critic (point estimate) "
                     "among those covering every task, and every critic whose 95% CI "
                     "overlaps it, only in a row where some critic's CI does not (not a "
                     "significance test).")
    elif (ours[ours["point"].notna()].groupby("row")["column"].nunique() >= 2).any():
        notes.append("Nothing is bold: in every row each critic's 95% CI overlaps the best "
                     "one's, so these data do not separate the critics inside any algorithm "
                     "(bold, where shown, marks per row the best critic and those whose CI "
                     "overlaps it, only in a row where some critic's CI does not).")
    if delta_cols:
        notes.append(f"Δ: the critic minus the {baseline_critic} critic of the same algorithm "
                     "(paired: same tasks, budget, protocol and other settings), in points, "
                     f"[{int(confidence * 100)}% CI] from independent stratified bootstraps of "
                     "the two; an interval that includes 0 does not separate them.")
    if chosen:
        notes.append("†: the configuration paired with the other critic ("
                     + "; ".join(chosen) + "); the leaderboard has the others.")
    if df["display"].str.contains("configurations", regex=False).any():
        notes.append("k configurations: the pair's runs differ in more than the seed (e.g. "
                     "a flow-step sweep); see the leaderboard for one row per configuration.")
    if df["display"].str.contains("tasks]", regex=False).any():
        notes.append("[k/n tasks]: the pair covers only k of the n tasks; not directly "
                     "comparable.")
    return Leaderboard(cells=df.reset_index(drop=True), rows=algos, columns=critics + delta_cols,
                       title="Final success rate (%) by algorithm and critic",
                       caption=caption, notes=notes, label="tab:algorithm-critic",
                       first_header="Algorithm")
