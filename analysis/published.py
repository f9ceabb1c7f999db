"""Published numbers (FQL and floq papers) in our own tidy schema.

``convert(src, dst)`` turns the hand-collected reference table
(``/work/shared/reference/published_results.csv``: source, table, env, method, metric,
value, plusminus, notes; values in percent) into ``results/published/published.csv``;
``load_published()`` reads it back. Run ``python -m analysis.published SRC [DST]`` to
regenerate the file.

Schema of ``published.csv`` (one row per published number):

===================  =====================================================================
env                  OGBench environment without task suffix (``cube-double-play``), or
                     an aggregate row as the source names it (``ALL_10_ENVS_MEAN``)
task                 ``task1`` .. ``task5``, ``5-task avg``, or ``unstated``
method               as the paper names it (``FQL``, ``FQL(2M)``, ``floq-def``, ...)
metric               ``success`` (or ``wallclock_slowdown_vs_fql``)
setting              ``offline`` | ``o2o_after_offline`` | ``o2o_after_online``
value                success as a fraction in [0, 1] (the paper's percent / 100)
uncertainty          the printed ± as a fraction, empty when none was given
uncertainty_kind     what the ± is (``std over seeds``, ...) or ``none given``
n_seeds              seeds per task the source reports (empty: unknown)
train_steps          gradient steps (offline; o2o: offline + online)
eval_rule            how a run's score was read off its evaluations, as stated
ogbench_version      OGBench version the paper pinned (success read post-step in both)
x_name, x_value      the varied quantity for ablation rows (``critic_flow_steps``, 4)
trust                primary | secondary transcription | quoted by reviewer | uncertain
ref                  short label for tables (``FQL Tab. 2``)
source, table, notes provenance, copied verbatim from the reference file
===================  =====================================================================

Only the FQL paper and the floq paper (including reviewer quotes of its figures) are kept;
third-party tables (PCBF), aggregator pages and quotes of follow-up papers are left out.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["DEFAULT_TASKS", "COLUMNS", "convert", "convert_frame", "load_published",
           "default_path", "main", "scaling_rows", "env_name"]

# Default task per environment (floq's published command lines; paper_settings.md).
DEFAULT_TASKS = {
    "antmaze-large-navigate": "task1", "antmaze-giant-navigate": "task1",
    "humanoidmaze-medium-navigate": "task1", "humanoidmaze-large-navigate": "task1",
    "antsoccer-arena-navigate": "task4", "cube-single-play": "task2",
    "cube-double-play": "task2", "scene-play": "task2", "puzzle-3x3-play": "task4",
    "puzzle-4x4-play": "task4",
}

COLUMNS = ["env", "task", "method", "metric", "setting", "value", "uncertainty",
           "uncertainty_kind", "n_seeds", "train_steps", "eval_rule", "ogbench_version",
           "x_name", "x_value", "trust", "ref", "source", "table", "notes"]

_FQL_EVAL = "mean of the evaluations at 800K/900K/1M steps (50 episodes each)"


def default_path() -> Path:
    """``results/published/published.csv`` of this checkout."""
    return Path(__file__).resolve().parents[1] / "results" / "published" / "published.csv"


def _kept(source: str) -> bool:
    return source.startswith(("FQL paper", "floq paper", "floq OpenReview"))


def _ref(table: str) -> str:
    m = re.match(r"FQL Table (\d)", table)
    if m:
        return f"FQL Tab. {m.group(1)}"
    if table.startswith("floq Table"):
        return "floq main table"
    if "integration-step ablation" in table:
        return "floq K ablation"
    if table.startswith("floq Fig. 4"):
        return "floq Fig. 4 (review quote)"
    if table.startswith("floq Fig. 5"):
        return "floq Fig. 5 (review quote)"
    if table.startswith("floq Appendix"):
        return "floq App. A.8 (review quote)"
    if table.startswith("floq comparison"):
        return "floq default-task comparison"
    return table


def _row(r: pd.Series) -> dict:
    source, table, notes = str(r["source"]), str(r["table"]), str(r["notes"] or "")
    raw_env, metric_raw, method = str(r["env"]), str(r["metric"]), str(r["method"])
    fql_paper = source.startswith("FQL paper")
    out = dict(method=method, source=source, table=table, notes=notes, ref=_ref(table),
               setting="offline", x_name="", x_value=np.nan, metric="success")

    # ---- env / task
    m = re.fullmatch(r"(.+)-singletask-(task\d)-v0", raw_env)
    m0 = re.fullmatch(r"(.+)-singletask-v0", raw_env)
    if m:
        out["env"], out["task"] = m.group(1), m.group(2)
    elif m0:
        out["env"] = m0.group(1)
        out["task"] = DEFAULT_TASKS.get(out["env"], "default")
        out["notes"] = "; ".join(x for x in (notes, f"default task ({out['task']})") if x)
    else:
        out["env"] = raw_env
        out["task"] = "5-task avg" if metric_raw.endswith("5task_avg") else "unstated"

    # ---- metric, setting, ablation axis
    value = float(r["value"])
    scale = 0.01
    if metric_raw == "success_rate_pct_offline_1M":
        out["setting"] = "o2o_after_offline"
    elif metric_raw == "success_rate_pct_after_online_2M":
        out["setting"] = "o2o_after_online"
    elif (k := re.fullmatch(r"success_rate_pct_K=(\d+)", metric_raw)):
        out["x_name"], out["x_value"] = "critic_flow_steps", float(k.group(1))
    elif (k := re.fullmatch(r"success_rate_pct_at_relative_FLOPs=(\d+)", metric_raw)):
        out["x_name"], out["x_value"] = "relative_flops", float(k.group(1))
    elif (k := re.fullmatch(r"wallclock_slowdown_factor_K=(\d+)", metric_raw)):
        out["metric"], scale = "wallclock_slowdown_vs_fql", 1.0
        out["x_name"], out["x_value"] = "critic_flow_steps", float(k.group(1))
    elif metric_raw not in ("success_rate_pct", "success_rate_pct_5task_avg"):
        raise ValueError(f"unknown metric {metric_raw!r} in the reference table")
    out["value"] = round(value * scale, 6)
    pm = r["plusminus"]
    out["uncertainty"] = round(float(pm) * scale, 6) if pd.notna(pm) and str(pm) != "" else np.nan

    # ---- protocol of the source
    if fql_paper:
        out["n_seeds"] = 8
        out["ogbench_version"] = "1.1.0"
        if "IDQL trained 3M" in notes:
            out["train_steps"] = 3_000_000
            out["eval_rule"] = "mean of the evaluations at 2.5M/2.75M/3M steps"
        elif out["setting"] != "offline":
            out["train_steps"] = 1_000_000 if out["setting"] == "o2o_after_offline" else 2_000_000
            out["eval_rule"] = "not stated in the reference"
        else:
            out["train_steps"] = 1_000_000
            out["eval_rule"] = _FQL_EVAL
        if np.isnan(out["uncertainty"]):
            out["uncertainty_kind"] = "none given"
        elif "std over seeds" in notes or table.startswith("FQL Table 2"):
            out["uncertainty_kind"] = "std over seeds"
        else:
            out["uncertainty_kind"] = "± as printed (FQL Tab. 2 states std over seeds)"
        out["trust"] = "primary"
    else:
        out["ogbench_version"] = "1.1.2"
        out["n_seeds"] = 3 if source.startswith("floq paper") else np.nan
        out["train_steps"] = (2_000_000 if "(2M)" in method else
                              1_000_000 if table.startswith("floq Table") else np.nan)
        out["eval_rule"] = "not stated in the transcription"
        out["uncertainty_kind"] = ("none given" if np.isnan(out["uncertainty"])
                                   else "± as printed")
        out["trust"] = ("quoted by reviewer" if "OpenReview" in source
                        else "secondary transcription")
    if "UNCERTAIN" in notes or "unreliable" in notes:
        out["trust"] = "uncertain"
    return out


def convert_frame(ref: pd.DataFrame) -> pd.DataFrame:
    """Reference rows (percent) -> our schema (fractions), FQL/floq papers only."""
    need = {"source", "table", "env", "method", "metric", "value", "plusminus", "notes"}
    missing = need - set(ref.columns)
    if missing:
        raise ValueError(f"reference table lacks column(s) {sorted(missing)}")
    ref = ref[ref["source"].astype(str).map(_kept)]
    ref = ref[~ref["value"].astype(str).str.contains("->")]
    rows = [_row(r) for _, r in ref.fillna({"notes": ""}).iterrows()]
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["n_seeds"] = out["n_seeds"].astype("Int64")
    out["train_steps"] = out["train_steps"].astype("Int64")
    return out


def convert(src: str | os.PathLike, dst: str | os.PathLike | None = None) -> Path:
    """Convert the reference CSV ``src`` into ``dst`` (default: ``default_path()``),
    written atomically. Returns the destination path."""
    ref = pd.read_csv(src, dtype={"plusminus": str, "value": str}, keep_default_na=False,
                      na_values={"plusminus": [""]})
    out = convert_frame(ref)
    dst = Path(dst) if dst is not None else default_path()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".published-", suffix=".csv")
    with os.fdopen(fd, "w", newline="") as f:
        out.to_csv(f, index=False, lineterminator="\n")
    os.replace(tmp, dst)
    return dst


def load_published(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read ``published.csv`` (default: ``default_path()``)."""
    path = Path(path) if path is not None else default_path()
    from analysis.load import AnalysisError

    try:
        df = pd.read_csv(path, keep_default_na=True)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AnalysisError(f"published numbers {str(path)!r} are not a readable CSV ({first[:200]})") from None
    missing = [c for c in ("env", "metric", "setting", "x_name", "notes") if c not in df.columns]
    if missing:
        raise AnalysisError(f"published numbers {str(path)!r} lack the column(s) {', '.join(missing)} "
                            "(see results/published/README.md)")
    df["x_name"] = df["x_name"].fillna("")
    df["notes"] = df["notes"].fillna("")
    return df


def env_name(env: str) -> str:
    """OGBench environment name without version/task suffixes, as ``published.csv`` names
    it: ``antmaze-giant-navigate-v0`` and ``cube-double-play-singletask-task2-v0`` ->
    ``antmaze-giant-navigate``, ``cube-double-play``."""
    env = re.sub(r"-v\d+$", "", str(env))
    return re.sub(r"-singletask(-task\d+)?$", "", env)


def scaling_rows(published: pd.DataFrame | None, x_name: str,
                 envs: Sequence[str]) -> pd.DataFrame:
    """Published ablation points over ``x_name`` (e.g. ``critic_flow_steps``) for the
    environments in ``envs`` (matched by ``env_name``), ready for ``plots.plot_scaling``.

    Returns:
        Columns ``env`` (our name), ``x``, ``point`` (fraction), ``label`` (``published:
        <ref> (<trust>; task <task>)``), ``ref``, ``trust``, ``task``, ``notes``; empty
        when nothing matches.
    """
    cols = ["env", "x", "point", "label", "ref", "trust", "task", "notes"]
    if published is None or not len(published):
        return pd.DataFrame(columns=cols)
    p = published[(published["metric"] == "success") & (published["setting"] == "offline")
                  & (published["x_name"].fillna("") == x_name)]
    ours = {}
    for e in envs:
        ours.setdefault(env_name(e), []).append(e)
    rows = []
    for _, r in p.iterrows():
        for e in ours.get(env_name(r["env"]), []):
            rows.append(dict(env=e, x=float(r["x_value"]), point=float(r["value"]),
                             label=f"published: {r['ref']} ({r['trust']}; task {r['task']})",
                             ref=r["ref"], trust=r["trust"], task=r["task"],
                             notes=r["notes"]))
    return pd.DataFrame(rows, columns=cols)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.published",
                                description="Convert the reference table of published "
                                            "numbers into results/published/published.csv")
    p.add_argument("src", help="reference CSV (published_results.csv)")
    p.add_argument("dst", nargs="?", default=None, help="output CSV")
    a = p.parse_args(argv)
    print(convert(a.src, a.dst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
