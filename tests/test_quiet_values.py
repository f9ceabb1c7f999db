"""The audit's 'values accepted without a word' and misleading messages
(../shared/audits/reliability_2026-12-04.md sections 11 and 12): each is one clear line and a
non-zero exit before anything is written, in this process."""

from __future__ import annotations

import json
import os

import pytest

from floq_test_utils import floq_main

SMOKE = "gin/experiments/smoke.gin"


@pytest.mark.parametrize("binding, message", [
    ("Task.max_transitions=-5", "Task.max_transitions must be >= 0"),
    ("ALPHA=-1", "FQL.alpha must be >= 0"),
    ("Trainer.eval_workers=-5", "Trainer.eval_workers must be >= -1"),
    ("TIME_EMBED='sin'", "TIME_EMBED must be one of ('cos', 'fourier', 'none'), got 'sin'"),
    ("REWARD_RANGE='foo'", "REWARD_RANGE must be one of ('released', 'data'), got 'foo'"),
    ("TRAIN_STEPS=%NOPE", "undefined macro NOPE: something reads %NOPE"),
    ("ONLINE_STEPS=-1", "Trainer.online_steps must be >= 0, got -1"),
    ("UTD_RATIO=0", "Trainer.utd_ratio must be >= 1, got 0"),
    ("Trainer.eval_envs_per_worker=0", "Trainer.eval_envs_per_worker must be >= 1, got 0"),
    ("NUM_SEEDS=100000", "Trainer.num_seeds = 100000 seeds in one vmapped program is more than 1024"),
])
def test_a_bad_value_is_one_line_and_exit_2(binding, message, tmp_path):
    res = floq_main("run", SMOKE, "--bind", binding, "--out", str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tag, message", [
    ("=5", "--tag needs a column name before '='"),
    ("status=done", "--tag status=... would shadow floq's own 'status' column"),
    ("success=1", "would shadow floq's own 'success' column"),
])
def test_a_tag_never_shadows_or_empties_a_column(tag, message, tmp_path):
    res = floq_main("run", SMOKE, "--tag", tag, "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    res = floq_main("run", SMOKE, "--run-dir", str(f))
    assert res.returncode == 2 and "is a file, not a directory" in res.stderr, res.stderr
    assert f.read_text() == "x"


@pytest.mark.parametrize("content", ["garbage{", "[1, 2]"])
def test_status_names_an_unreadable_run_json(content, tmp_path):
    from floq.status import read_run

    run = tmp_path / "r"
    run.mkdir()
    (run / "run.json").write_text(content)
    info = read_run(str(run))
    assert info.status == "unreadable" and "run.json" in info.reason
    (run / "run.json").write_text(json.dumps({"status": "done", "step": 5}))
    assert read_run(str(run)).status == "done"
    os.remove(run / "run.json")
    assert read_run(str(run)).status == "pending"  # nothing there: a run not started


def test_a_reason_that_names_its_step_is_not_given_a_second_one(tmp_path):
    """Audit 12: 'actor/bc_flow_loss is inf at step 2 (seed 0) (step 0)' in the sweep's table."""
    from floq.results import run_reason

    (tmp_path / "run.json").write_text(json.dumps({"status": "diverged", "step": 0,
                                                   "reason": "actor/bc_flow_loss is inf at step 2 (seed 0)"}))
    assert run_reason(str(tmp_path)) == "actor/bc_flow_loss is inf at step 2 (seed 0)"
    (tmp_path / "run.json").write_text(json.dumps({"status": "diverged", "step": 2, "reason": "critic/loss is nan (seed 0)"}))
    assert run_reason(str(tmp_path)) == "critic/loss is nan (seed 0) (step 2)"
