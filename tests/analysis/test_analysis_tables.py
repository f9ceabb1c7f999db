"""analysis.tables and analysis.published: golden leaderboards, protocol checks, conversion.

Regenerate the golden files after an intended change with
``FLOQ_UPDATE_GOLDEN=1 python -m pytest tests/analysis/test_analysis_tables.py``.
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import load, published, stats, tables
from analysis_fixtures import build_fixture, make_run, ramp

GOLDEN = Path(__file__).parent / "golden"
REFERENCE_ROWS = pd.DataFrame([
    dict(source="FQL paper (arXiv 2502.02538)",
         table="FQL Table 2 (offline, 5-task avg, 8 seeds, 1M steps, avg of evals at "
               "800K/900K/1M)",
         env="cube-double-play", method="FQL", metric="success_rate_pct_5task_avg",
         value="29", plusminus="6.0", notes="std over seeds"),
    dict(source="FQL paper (arXiv 2502.02538)", table="FQL Table 3 (offline, per task, 8 seeds)",
         env="cube-double-play-singletask-task2-v0", method="FQL", metric="success_rate_pct",
         value="40", plusminus="5.0", notes=""),
    dict(source="floq paper (arXiv 2509.06863) main table, secondary transcription",
         table="floq Table (offline RL, OGBench, 5-task avg)", env="cube-double-play",
         method="floq-def", metric="success_rate_pct_5task_avg", value="47", plusminus=None,
         notes="secondary transcription"),
    dict(source="aggregator page (low trust)", table="x", env="cube-double-play",
         method="floq", metric="success_rate_pct", value="58", plusminus=None, notes=""),
])


def _check_golden(name: str, text: str):
    path = GOLDEN / name
    if os.environ.get("FLOQ_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; see {path}"


@pytest.fixture
def final(tmp_path):
    return stats.final_scores(load.load_results(build_fixture(tmp_path)))


@pytest.fixture
def pub():
    return published.convert_frame(REFERENCE_ROWS)


def test_golden_env_leaderboard(final, pub):
    lb = tables.leaderboard(final, published=pub, reps=200, seed=0)
    _check_golden("leaderboard_env.md", lb.to_markdown())
    _check_golden("leaderboard_env.tex", lb.to_latex())


def test_golden_task_leaderboard(final, pub):
    lb = tables.leaderboard(final, by="task", env="cube-double-play", published=pub,
                            reps=200, seed=0)
    _check_golden("leaderboard_tasks_cube-double-play.md", lb.to_markdown())
    _check_golden("leaderboard_tasks_cube-double-play.tex", lb.to_latex())


def test_leaderboard_cells(final, pub):
    lb = tables.leaderboard(final, published=pub, reps=200, seed=0)
    cells = lb.cells.set_index(["row", "column"])
    # monolithic, cube-double-play: fql scores 0.225+0.02s and 0.15+0.02s -> mean 0.2075
    mono = cells.loc[("monolithic", "cube-double-play")]
    assert mono["point"] == pytest.approx((0.225 + 0.15) / 2 + 0.02)
    assert mono["lo"] < mono["point"] < mono["hi"]
    assert mono["display"].startswith("20.8 ± ")
    # K=8 ran one of the two tasks: flagged and never bold
    k8 = cells.loc[("floq (K=8)", "cube-double-play")]
    assert "[1/2 tasks]" in k8["display"] and not k8["bold"]
    assert cells.loc[("floq (K=4)", "cube-double-play")]["bold"]
    assert cells.loc[("FQL (published, FQL Tab. 2)", "cube-double-play")]["display"] == "29 ± 6"
    assert lb.rows[-2:] == ["FQL (published, FQL Tab. 2)",
                            "floq-def (published, floq main table)"]
    csv_text = lb.to_csv()
    assert csv_text.splitlines()[0].startswith("row,column,kind,point,lo,hi,display,bold")
    assert "(published" in lb.to_markdown() and "their ± is not a CI" in lb.to_markdown()
    assert r"\toprule" in lb.to_latex() and r"\textbf{" in lb.to_latex()


def test_mixed_protocols_are_refused(tmp_path):
    make_run(tmp_path, "a", env="e", task="task1", critic="c", success=ramp(0.5))
    make_run(tmp_path, "b", env="e", task="task2", critic="c", success=ramp(0.5),
             train_steps=800, steps=(0, 200, 400, 600, 800))
    final = stats.final_scores(load.load_results(tmp_path))
    with pytest.raises(ValueError, match="mix protocols: train_steps is 400 .*800"):
        tables.leaderboard(final)
    groups = tables.split_by_protocol(final)
    assert [g[0]["train_steps"] for g in groups] == [400, 800]
    tables.leaderboard(groups[0][1], reps=20)  # each group alone is fine


@pytest.mark.parametrize("field,value", [("success_timing", "pre"),
                                         ("ogbench_version", "1.1.0")])
def test_other_protocol_fields_are_checked(tmp_path, field, value):
    make_run(tmp_path, "a", env="e", task="task1", critic="c", success=ramp(0.5))
    make_run(tmp_path, "b", env="e", task="task2", critic="c", success=ramp(0.5),
             **{field: value})
    final = stats.final_scores(load.load_results(tmp_path))
    with pytest.raises(ValueError, match=f"mix protocols: {field}"):
        tables.leaderboard(final)


def test_bad_arguments(final):
    with pytest.raises(ValueError, match="needs env="):
        tables.leaderboard(final, by="task")
    with pytest.raises(ValueError, match="by must be"):
        tables.leaderboard(final, by="seed")
    with pytest.raises(ValueError, match="no runs"):
        tables.leaderboard(final.iloc[:0])


def test_single_seed_cells_say_so(tmp_path):
    make_run(tmp_path, "a", env="e", task="task1", critic="c", success=ramp(0.5), seeds=(0,))
    final = stats.final_scores(load.load_results(tmp_path))
    lb = tables.leaderboard(final, reps=20)
    assert lb.cells["display"].tolist() == ["37.5 (1 seed)"]


# ------------------------------------------------------------------ published numbers
def test_convert_reference_rows(pub):
    assert len(pub) == 3  # the aggregator row is left out
    assert list(pub.columns) == published.COLUMNS
    t2 = pub.iloc[0]
    assert (t2["env"], t2["task"], t2["value"], t2["uncertainty"]) == \
        ("cube-double-play", "5-task avg", 0.29, 0.06)
    assert (t2["uncertainty_kind"], t2["n_seeds"], t2["train_steps"]) == \
        ("std over seeds", 8, 1_000_000)
    assert "800K/900K/1M" in t2["eval_rule"] and t2["ogbench_version"] == "1.1.0"
    t3 = pub.iloc[1]
    assert (t3["env"], t3["task"], t3["ref"]) == ("cube-double-play", "task2", "FQL Tab. 3")
    floq = pub.iloc[2]
    assert np.isnan(floq["uncertainty"]) and floq["uncertainty_kind"] == "none given"
    assert floq["trust"] == "secondary transcription" and floq["n_seeds"] == 3


def test_shipped_published_file_matches_the_converter():
    path = published.default_path()
    shipped = published.load_published(path)
    assert len(shipped) > 700
    assert set(shipped["ref"]) >= {"FQL Tab. 2", "FQL Tab. 3", "FQL Tab. 4", "floq main table"}
    assert shipped["value"][shipped["metric"] == "success"].between(0, 1).all()
    ref = Path("/work/shared/reference/published_results.csv")
    if ref.exists():  # the converter reproduces the shipped file byte for byte
        out = published.convert(ref, Path(os.environ.get("TMPDIR", "/tmp")) / "pub_check.csv")
        assert out.read_text() == path.read_text()
    t2 = shipped[(shipped["ref"] == "FQL Tab. 2") & (shipped["method"] == "FQL")
                 & (shipped["env"] == "antmaze-large-navigate")].iloc[0]
    assert t2["value"] == pytest.approx(0.79) and t2["uncertainty"] == pytest.approx(0.03)
