"""Algorithm x critic grids that cannot confound (floq.launch.confound), and the composition that
makes the natural grid safe: gin/defaults.gin read once, first; every algorithm file an overlay.

All on the real gin files and floq's parser; nothing is built or compiled except where a test
says so (floq.train.build: specs only)."""

import dataclasses
import os

import gin
import pytest

from floq import config
from floq.launch import sweep
from floq.launch.sweep import SweepError
from floq_test_utils import REPO, floq_main

ALGORITHM_FILES = ["fql", "rebrac", "iql", "ifql", "sac", "rlpd"]

# The grid a new user writes (issue 39): a small quickstart budget, FQL and ReBRAC each with floq.
NATURAL = """
include 'gin/experiments/quickstart.gin'
TRAIN_STEPS = 1000
Sweep.name = 'natural'
Sweep.grids = [
    {{'name': 'fql-floq', 'files': ['{fql}', 'gin/critics/floq.gin']}},
    {{'name': 'rebrac-floq', 'files': ['gin/algorithms/rebrac.gin', 'gin/critics/floq.gin']}},
]
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _old_fql(tmp_path):
    """gin/algorithms/fql.gin as it was: it included the base defaults (here a copy of
    gin/defaults.gin under another name, since the parser now reads gin/defaults.gin itself once)."""
    defaults = _write(tmp_path, "base_copy.gin", open(os.path.join(REPO, "gin", "defaults.gin")).read())
    body = open(os.path.join(REPO, "gin", "algorithms", "fql.gin")).read()
    return _write(tmp_path, "fql_old.gin", f"include '{defaults}'\n{body}")


def test_the_natural_grid_is_refused_when_a_grid_file_re_reads_the_defaults(tmp_path):
    sweep_file = _write(tmp_path, "s.gin", NATURAL.format(fql=_old_fql(tmp_path)))
    with pytest.raises(SweepError) as e:
        sweep.expand(sweep_file, str(tmp_path / "out"))
    msg = str(e.value)
    assert "\n" not in msg
    assert "grids 'fql-floq' and 'rebrac-floq' differ in ACTOR_WIDTH (512 vs 128)" in msg
    assert "which the sweep does not declare" in msg and "declare the difference" in msg


def test_the_natural_grid_builds_runs_that_differ_only_in_algorithm_and_critic(tmp_path):
    from floq.train import build

    plan = sweep.expand(_write(tmp_path, "s.gin", NATURAL.format(fql="gin/algorithms/fql.gin")), str(tmp_path / "out"))
    exps = [build(list(r.gin_files), list(r.bindings)) for r in plan.runs]
    gin.clear_config()
    assert [type(e.algorithm).__name__ for e in exps] == ["FQL", "ReBRAC"]
    for e in exps:
        assert e.trainer.train_steps == 1000 and e.trainer.eval_interval == 2500 and e.trainer.eval_episodes == 25
        assert e.task.source == "generate" and e.task.task_id == 1 and e.trainer.batch_size == 256
        assert e.critic.field_net.width == 128 and e.algorithm.actor_net.width == 128
    assert exps[0].task == exps[1].task
    # the critics are equal but for ReBRAC's own definition of the target (min over the ensemble)
    assert (exps[0].critic.q_agg, exps[1].critic.q_agg) == ("mean", "min")
    assert dataclasses.replace(exps[0].critic, q_agg="min") == exps[1].critic


def test_a_declared_difference_is_accepted(tmp_path):
    text = NATURAL.format(fql=_old_fql(tmp_path)).replace(
        "'gin/critics/floq.gin']},\n    {'name': 'rebrac",
        "'gin/critics/floq.gin'], 'bind': {'TRAIN_STEPS': 1000, 'ACTOR_WIDTH': 128, 'CRITIC_WIDTH': 128, "
        "'DISTILL_WIDTH': 128, 'DATA_SOURCE': 'generate', 'EVAL_INTERVAL': 2500, 'EVAL_EPISODES': 25, "
        "'TASK_ID': 1}},\n    {'name': 'rebrac")
    plan = sweep.expand(_write(tmp_path, "s.gin", text), str(tmp_path / "out"))
    assert len(plan.runs) == 2


def test_a_critic_file_that_re_sets_the_budget_is_refused_but_an_algorithm_may_define_its_own(tmp_path):
    critic = _write(tmp_path, "long_critic.gin", "include 'gin/critics/floq.gin'\nTRAIN_STEPS = 5000\n")
    text = NATURAL.format(fql="gin/algorithms/fql.gin").replace(
        "['gin/algorithms/rebrac.gin', 'gin/critics/floq.gin']", f"['gin/algorithms/rebrac.gin', '{critic}']")
    with pytest.raises(SweepError, match=r"differ in TRAIN_STEPS \(1000 vs 5000\)"):
        sweep.expand(_write(tmp_path, "s.gin", text), str(tmp_path / "out"))
    # RLPD's file sets TRAIN_STEPS = 1 (no offline phase) as its definition: not a confound.
    text = NATURAL.format(fql="gin/algorithms/fql.gin").replace("gin/algorithms/rebrac.gin", "gin/algorithms/rlpd.gin")
    assert len(sweep.expand(_write(tmp_path, "s2.gin", text), str(tmp_path / "out")).runs) == 2


def test_floq_sweep_dry_run_refuses_in_one_line_before_building(tmp_path):
    sweep_file = _write(tmp_path, "s.gin", NATURAL.format(fql=_old_fql(tmp_path)))
    res = floq_main("sweep", sweep_file, "--dry-run", "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "differ in ACTOR_WIDTH" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ALGORITHM_FILES)
def test_every_algorithm_file_is_an_overlay(name):
    """No algorithm file binds a setting of the run protocol it does not own: with each one after
    the quickstart experiment, the budget, sizes and data source stay the experiment's."""
    from floq.launch import confound

    path = os.path.join(REPO, "gin", "algorithms", f"{name}.gin")
    keys = confound.file_bindings(path)
    protocol = {"EVAL_INTERVAL", "EVAL_EPISODES", "ACTOR_WIDTH", "CRITIC_WIDTH", "DISTILL_WIDTH", "DATA_SOURCE",
                "DATASET_PATH", "BATCH_SIZE", "TASK_ID", "SEED", "NUM_SEEDS"}
    assert not {k[0] for k in keys if k[1] == "gin.macro"} & protocol
    assert "include 'gin/defaults.gin'" not in open(path).read()
    config.parse(["gin/experiments/quickstart.gin", f"gin/algorithms/{name}.gin"], check=False)
    try:
        assert gin.query_parameter("%ACTOR_WIDTH") == 128 and gin.query_parameter("%DATA_SOURCE") == "generate"
        assert gin.query_parameter("%EVAL_EPISODES") == 25
        if name != "rlpd":  # RLPD has no offline phase: TRAIN_STEPS = 1 is its definition
            assert gin.query_parameter("%TRAIN_STEPS") == 30_000
    finally:
        gin.clear_config()


def test_the_defaults_are_read_once_first_whatever_the_order(tmp_path):
    again = _write(tmp_path, "again.gin", "include 'gin/defaults.gin'\nACTOR_WIDTH = 64\n")
    for files in (["gin/experiments/quickstart.gin", "gin/defaults.gin"],
                  ["gin/experiments/quickstart.gin", again],
                  ["gin/critics/floq.gin", "gin/tasks/cube-single-play.gin", "gin/recipes/fql_paper.gin",
                   "gin/algorithms/fql.gin", "gin/experiments/quickstart.gin"]):
        config.parse(files, check=False)
        try:
            assert gin.query_parameter("%TRAIN_STEPS") == 30_000, files
        finally:
            gin.clear_config()
    config.parse(["gin/experiments/quickstart.gin", again], check=False)
    try:
        assert gin.query_parameter("%ACTOR_WIDTH") == 64  # the file's own setting still applies
    finally:
        gin.clear_config()
    # Without any file, the base alone is there (the protocol's macros).
    config.parse([], check=False)
    try:
        assert gin.query_parameter("%TRAIN_STEPS") == 1_000_000
    finally:
        gin.clear_config()
