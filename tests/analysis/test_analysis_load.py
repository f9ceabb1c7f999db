"""analysis.load: run discovery, manifest join, corrupt files, rliable's score dict."""

import json
import warnings

import numpy as np
import pytest

from analysis import load, stats
from analysis_fixtures import make_run, ramp


def test_load_fixture_joins_manifest_and_tags(fixture_results):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = load.load_results(fixture_results)
    assert len(load.find_run_dirs(fixture_results)) == 9
    assert len(df) == 9 * 3 * 5  # run dirs x seeds x evaluations
    for col in ("params_total", "params_critic", "flops_per_update", "device", "wall_time_s",
                "eval_interval", "train_steps", "ogbench_version", "success_timing",
                "critic_flow_steps", "status", "git_commit", "run_dir", "task_key"):
        assert col in df.columns, col
    assert load.tag_columns(df) == ["critic_flow_steps"]
    assert sorted(df["method"].unique()) == ["floq (K=4)", "floq (K=8)", "monolithic"]
    row = df[df["critic"] == "floq"].iloc[0]
    assert row["params_critic"] in (3200, 6400)
    assert row["params_total"] == row["params_critic"] + 500
    assert df["run_dir"].str.startswith("exp/").all()
    assert df["success"].between(0, 1).all()


def test_tags_from_manifest_when_csv_lacks_them(tmp_path):
    run = make_run(tmp_path, "r", env="e", task="task1", critic="floq",
                   success=ramp(0.5), tags={"critic_width": 256})
    # rewrite eval.csv without the tag column; the manifest still has it
    lines = (run / "eval.csv").read_text().splitlines()
    (run / "eval.csv").write_text("\n".join(ln.rsplit(",", 1)[0] for ln in lines) + "\n")
    df = load.load_results(tmp_path)
    assert (df["critic_width"] == 256).all()


def test_method_label_only_names_varying_tags(tmp_path):
    for k in (4, 16):
        make_run(tmp_path, f"f{k}", env="e", task="task1", critic="floq", success=ramp(0.5),
                 tags={"critic_flow_steps": k, "critic_width": 512})
    make_run(tmp_path, "m", env="e", task="task1", critic="monolithic", success=ramp(0.5),
             tags={"critic_width": 512})
    df = load.load_results(tmp_path)
    assert sorted(df["method"].unique(), key=load.natural_key) == [
        "floq (K=4)", "floq (K=16)", "monolithic"]
    by_run = load.load_results(tmp_path, method_by=["run"])
    assert sorted(by_run["method"].unique()) == ["f16", "f4", "m"]


def test_method_label_drops_a_tag_that_only_restates_k(tmp_path):
    """cpu_scale.gin sweeps experiment.critic over scoped FloqCritics: experiment_critic is
    one-to-one with K and the label says K only; a tag that is not one-to-one with K (two
    names for K=8) still names its runs, so no two runs share a label."""
    for name, k in (("floq_k4_FloqCritic", 4), ("floq_k8_FloqCritic", 8)):
        make_run(tmp_path, name, env="e", task="task1", critic="floq", success=ramp(0.5),
                 tags={"critic_flow_steps": k, "experiment_critic": name})
    df = load.load_results(tmp_path)
    assert sorted(df["method"].unique()) == ["floq (K=4)", "floq (K=8)"]
    make_run(tmp_path, "other_k8", env="e", task="task1", critic="floq", success=ramp(0.5),
             tags={"critic_flow_steps": 8, "experiment_critic": "other_k8"})
    df = load.load_results(tmp_path)
    assert df.groupby("run_dir")["method"].first().nunique() == 3
    assert "floq (K=8, experiment_critic=other_k8)" in set(df["method"])


def _bad(tmp_path, name, text=None, manifest_text=None):
    run = make_run(tmp_path, name, env="e", task="task1", critic="c", success=ramp(0.5))
    if text is not None:
        (run / "eval.csv").write_text(text)
    if manifest_text is not None:
        (run / "run.json").write_text(manifest_text)
    return run


@pytest.mark.parametrize("kind,match", [
    ("unparseable", "unparseable CSV"),
    ("missing", "missing required column"),
    ("nonnumeric", "non-numeric 'success'"),
    ("range", "outside \\[0, 1\\]"),
    ("empty", "empty file"),
    ("header_only", "no evaluations yet"),
])
def test_corrupt_eval_files_are_skipped_with_a_named_warning(tmp_path, kind, match):
    make_run(tmp_path, "good", env="e", task="task1", critic="c", success=ramp(0.5))
    good_text = (tmp_path / "exp" / "good" / "eval.csv").read_text()
    header, *rows = good_text.splitlines()
    texts = {
        "unparseable": header + "\n" + rows[0] + ",1,2,3,4\n" + rows[1] + "\n",
        "missing": header.replace("success", "succes") + "\n" + "\n".join(rows) + "\n",
        "nonnumeric": header + "\n" + rows[0].replace(",0.0,", ",abc,", 1) + "\n",
        "range": header + "\n" + rows[0].replace(",0.0,", ",55,", 1) + "\n",
        "empty": "",
        "header_only": header + "\n",
    }
    bad = _bad(tmp_path, "bad", texts[kind])
    with pytest.warns(UserWarning, match=match) as rec:
        df = load.load_results(tmp_path)
    assert any(str(bad / "eval.csv") in str(w.message) or str(bad) in str(w.message)
               for w in rec)
    assert set(df["run_dir"]) == {"exp/good"}


def test_incomplete_last_line_is_dropped(tmp_path):
    run = make_run(tmp_path, "r", env="e", task="task1", critic="c", success=ramp(0.5))
    text = (run / "eval.csv").read_text()
    (run / "eval.csv").write_text(text + text.splitlines()[1][:25])  # no newline at the end
    with pytest.warns(UserWarning, match="incomplete last line"):
        df = load.load_results(tmp_path)
    assert len(df) == 15


def test_bad_manifest_is_skipped_but_evaluations_kept(tmp_path):
    run = _bad(tmp_path, "r", manifest_text="{not json")
    with pytest.warns(UserWarning, match="run.json.*unreadable JSON"):
        df = load.load_results(tmp_path)
    assert len(df) == 15 and not df["has_manifest"].any()
    assert "params_critic" not in df.columns
    assert str(run / "run.json") in str(load.find_run_dirs(tmp_path)[0] / "run.json")


def test_manifest_without_evaluations_warns(tmp_path):
    run = make_run(tmp_path, "r", env="e", task="task1", critic="c", success=ramp(0.5))
    (run / "eval.csv").unlink()
    with pytest.warns(UserWarning, match="no eval.csv"):
        assert load.load_results(tmp_path).empty


def test_missing_dir_is_an_error(tmp_path):
    with pytest.raises(load.AnalysisError, match="does not exist"):
        load.load_results(tmp_path / "nope")


def test_checkpoints_are_not_searched(tmp_path):
    run = make_run(tmp_path, "r", env="e", task="task1", critic="c", success=ramp(0.5))
    (run / "checkpoints" / "100").mkdir(parents=True)
    (run / "checkpoints" / "100" / "run.json").write_text(json.dumps({}))
    assert load.find_run_dirs(tmp_path) == [run]


def test_score_dict_contract(fixture_results):
    final = stats.final_scores(load.load_results(fixture_results))
    with pytest.warns(UserWarning, match="floq \\(K=8\\).*no runs on task"):
        scores, tasks = load.to_score_dict(final)
    assert tasks == ["cube-double-play/task1", "cube-double-play/task2", "scene-play/task1",
                     "scene-play/task2"]
    assert set(scores) == {"floq (K=4)", "monolithic"}
    assert scores["monolithic"].shape == (3, 4)  # runs = seeds, tasks = tasks
    # seed s adds 0.02 s; fql score of ramp(0.30) is 0.30 * (2 + 3 + 4) / 12
    np.testing.assert_allclose(scores["monolithic"][:, 0], 0.225 + 0.02 * np.arange(3))
    with pytest.raises(load.AnalysisError, match="no runs on task"):
        load.to_score_dict(final, missing="raise")


def test_score_dict_keeps_every_seed_of_ragged_tasks(tmp_path):
    make_run(tmp_path, "a", env="e", task="task1", critic="c", success=ramp(0.5), seeds=(0, 1, 2))
    make_run(tmp_path, "b", env="e", task="task2", critic="c", success=ramp(0.5), seeds=(0, 1))
    final = stats.final_scores(load.load_results(tmp_path))
    with pytest.warns(UserWarning, match=r"'c' on e/task2 lacks seed\(s\) 2 .*2 seed\(s\) "
                                         r"present \(0, 1\)"):
        scores, _ = load.to_score_dict(final)
    mat = scores["c"]
    assert mat.shape == (3, 2) and np.isnan(mat[2, 1]) and not np.isnan(mat[:, 0]).any()
    # task1's mean uses all three seeds (0.375 + 0.02 s), task2's its two
    assert stats.aggregate_mean(mat) == pytest.approx(((0.395) + (0.385)) / 2)
