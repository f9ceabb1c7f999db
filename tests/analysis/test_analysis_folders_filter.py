"""`floq analyze` over several result folders as one study, and `--filter` (issue 24)."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import load, report
from analysis_fixtures import make_run, ramp


def _two_studies(tmp_path):
    a, b = tmp_path / "study_a", tmp_path / "nested" / "study_b"
    make_run(a, "mono", env="e", task="task1", critic="monolithic", success=ramp(0.3))
    make_run(b, "floq", env="e", task="task1", critic="floq", success=ramp(0.5),
             tags={"critic_flow_steps": 4})
    return a, b


def test_several_folders_load_as_one_study_with_paths_from_their_common_folder(tmp_path):
    a, b = _two_studies(tmp_path)
    df = load.load_results([a, b])
    assert set(df["run_dir"]) == {"study_a/exp/mono", "nested/study_b/exp/floq"}
    assert {"monolithic", "floq"} <= set(df["critic"])
    base = load.results_base([a, b])
    assert all((base / d / "eval.csv").exists() for d in df["run_dir"].unique())
    # a folder given twice, or inside another, counts once
    assert len(load.load_results([a, b, a, tmp_path])) == len(df)


def test_filter_keeps_matching_rows_as_text_or_number(tmp_path):
    a, b = _two_studies(tmp_path)
    df = load.load_results([a, b], filters=load.parse_filters(["critic_flow_steps=4"]))
    assert set(df["critic"]) == {"floq"}
    df = load.load_results([a, b], filters=[("critic", "monolithic"), ("env", "e")])
    assert set(df["run_dir"]) == {"study_a/exp/mono"}
    assert load.load_results([a, b], filters=[("critic", "iqn")]).empty


@pytest.mark.parametrize("item, match", [("critic", "KEY=VALUE"), ("=4", "KEY=VALUE"),
                                         ("nosuch=1", "no run has a column 'nosuch'")])
def test_bad_filters_are_one_line(tmp_path, item, match, capsys):
    a, b = _two_studies(tmp_path)
    rc = report.main([str(a), str(b), "--out", str(tmp_path / "rep"), "--filter", item, "--reps", "10"])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_over_two_folders_with_a_filter(tmp_path, capsys):
    a, b = _two_studies(tmp_path)
    out = tmp_path / "rep"
    rc = report.main([str(a), str(b), "--out", str(out), "--reps", "20", "--formats", "png",
                      "--published", "none", "--baseline", "none"])
    assert rc == 0
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["critic"]) == {"monolithic", "floq"}
    rc = report.main([str(a), str(b), "--out", str(tmp_path / "rep2"), "--reps", "20", "--formats", "png",
                      "--published", "none", "--baseline", "none", "--filter", "critic=floq"])
    assert rc == 0
    assert set(pd.read_csv(tmp_path / "rep2" / "runs.csv")["critic"]) == {"floq"}
    rc = report.main([str(a), "--out", str(tmp_path / "rep3"), "--filter", "critic=floq"])
    assert rc == 2 and "match critic=floq" in capsys.readouterr().err
