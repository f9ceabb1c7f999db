"""Every shipped gin file parses with skip_unknown=False and binds what it claims."""

from __future__ import annotations

import glob
import os

import gin
import pytest

from floq_test_utils import REPO, floq_main

from floq.config import ConfigError, parse
from floq.train import build

TASKS = sorted(glob.glob(os.path.join(REPO, "gin", "tasks", "*.gin")))
CRITICS = sorted(glob.glob(os.path.join(REPO, "gin", "critics", "*.gin")))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "gin", "experiments", "**", "*.gin"), recursive=True))
OVERLAYS = sorted(glob.glob(os.path.join(REPO, "gin", "tasks", "*", "*.gin")))


@pytest.fixture(autouse=True)
def _clear():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.mark.parametrize("task", TASKS, ids=os.path.basename)
@pytest.mark.parametrize("critic", CRITICS, ids=os.path.basename)
def test_every_task_and_critic_combination_builds(task, critic):
    exp = build(["gin/algorithms/fql.gin", critic, task, "gin/recipes/fql_paper.gin"])
    assert exp.task.env == os.path.basename(task)[:-4]
    assert exp.critic.num_ensembles == 2
    assert exp.trainer.train_steps == 1_000_000 and exp.trainer.eval_episodes == 50
    assert exp.trainer.eval_interval == 100_000


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_experiment_parses(experiment):
    parse([experiment])


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_overlay_builds_after_its_task_file(overlay):
    """gin/tasks/{floq_best,online,online_fql}/<env>.gin: one per task file, each builds."""
    env = os.path.basename(overlay)[:-4]
    critic = "monolithic" if "online_fql" in overlay else "floq"
    recipe = "gin/recipes/fql_paper.gin" if critic == "monolithic" else "gin/recipes/floq_paper.gin"
    exp = build(["gin/algorithms/fql.gin", f"gin/critics/{critic}.gin", f"gin/tasks/{env}.gin", recipe, overlay])
    assert exp.task.env == env


PAPER = {
    # The floq paper's command lines (github:CMU-AIRe/floq README).
    # env: (alpha, discount, batch, q_agg, default task)
    "antmaze-large-navigate": (10, 0.99, 256, "mean", 1),
    "antmaze-giant-navigate": (10, 0.995, 512, "min", 1),
    "humanoidmaze-medium-navigate": (30, 0.995, 256, "mean", 1),
    "humanoidmaze-large-navigate": (20, 0.995, 512, "mean", 1),
    "antsoccer-arena-navigate": (10, 0.995, 256, "mean", 4),
    "cube-single-play": (300, 0.99, 256, "mean", 2),
    "cube-double-play": (300, 0.99, 256, "mean", 2),
    "scene-play": (300, 0.99, 256, "mean", 2),
    "puzzle-3x3-play": (1000, 0.99, 256, "mean", 4),
    "puzzle-4x4-play": (1000, 0.99, 256, "mean", 4),
}


@pytest.mark.parametrize("env", sorted(PAPER))
def test_task_files_carry_the_papers_settings(env):
    alpha, gamma, batch, q_agg, task = PAPER[env]
    exp = build(["gin/algorithms/fql.gin", "gin/critics/floq.gin", f"gin/tasks/{env}.gin", "gin/recipes/floq_paper.gin"])
    assert exp.algorithm.alpha == alpha and exp.task.discount == gamma
    assert exp.trainer.batch_size == batch and exp.critic.q_agg == q_agg and exp.task.task_id == task
    assert exp.critic.field_net.depth == (2 if env.startswith("cube") else 4)
    assert exp.critic.flow_steps == 8 and exp.critic.noise_samples == 8 and exp.critic.noise_coverage == 0.1


def test_floq_best_overrides_are_one_include_away():
    best = build(["gin/algorithms/fql.gin", "gin/critics/floq.gin", "gin/tasks/antmaze-giant-navigate.gin",
                  "gin/tasks/floq_best/antmaze-giant-navigate.gin", "gin/recipes/floq_paper.gin"])
    assert best.critic.flow_steps == 4
    best = build(["gin/algorithms/fql.gin", "gin/critics/floq.gin", "gin/tasks/puzzle-4x4-play.gin",
                  "gin/tasks/floq_best/puzzle-4x4-play.gin", "gin/recipes/floq_paper.gin"])
    assert best.critic.noise_coverage == 0.25


def test_later_files_and_bindings_override_earlier_ones():
    exp = build(["gin/experiments/smoke.gin", "gin/critics/floq.gin"], ["CRITIC_FLOW_STEPS = 3"])
    assert type(exp.critic).__name__ == "FloqCritic" and exp.critic.flow_steps == 3
    assert exp.critic.field_net.width == 32  # the smoke experiment's size survives the critic include


@pytest.mark.parametrize("binding, needle", [
    ("CRITIC_FLOW_STEPS = 0", "flow_steps (K) must be >= 1"),
    ("NOISE_COVERAGE = 0.0", "noise_coverage must be > 0"),
    ("CRITIC_ENSEMBLES = 0", "num_ensembles must be >= 1"),
    ("TIME_EMBED = 'wavelet'", "TIME_EMBED must be one of"),
    ("FloqCritic.r_min = 1.0", "r_min"),
])
def test_invalid_floq_configs_fail_at_config_time(binding, needle):
    extra = ["FloqCritic.r_max = 0.0"] if "r_min" in binding else []
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        build(["gin/experiments/smoke.gin", "gin/critics/floq.gin"], [binding, *extra])


# FQL's own flags (github:seohongpark/fql README), batch 256 (its default) everywhere.
FQL = {
    # env: (alpha, q_agg)
    "antmaze-large-navigate": (10, "min"),
    "antmaze-giant-navigate": (10, "min"),
    "humanoidmaze-medium-navigate": (30, "mean"),
    "humanoidmaze-large-navigate": (30, "mean"),
    "antsoccer-arena-navigate": (10, "mean"),
    "cube-single-play": (300, "mean"),
    "cube-double-play": (300, "mean"),
    "scene-play": (300, "mean"),
    "puzzle-3x3-play": (1000, "mean"),
    "puzzle-4x4-play": (1000, "mean"),
}


@pytest.mark.parametrize("env", sorted(FQL))
def test_the_fql_baseline_runs_with_fqls_own_flags(env):
    alpha, q_agg = FQL[env]
    exp = build(["gin/algorithms/fql.gin", "gin/critics/monolithic.gin", f"gin/tasks/{env}.gin", "gin/recipes/fql_paper.gin"])
    assert exp.algorithm.alpha == alpha and exp.critic.q_agg == q_agg
    assert exp.trainer.batch_size == 256 and exp.task.discount == PAPER[env][1]


def test_recipes_not_critics_choose_the_tuned_values():
    # antmaze-large: FQL uses q_agg=min, floq mean; humanoidmaze-large: FQL alpha 30 / batch
    # 256, floq alpha 20 / batch 512. The recipe decides, whatever the critic.
    for env, fql, floq in [("antmaze-large-navigate", (10, "min", 256), (10, "mean", 256)),
                           ("humanoidmaze-large-navigate", (30, "mean", 256), (20, "mean", 512))]:
        for critic in ("monolithic", "floq", "resnet", "iqn"):
            for recipe, want in (("fql_paper", fql), ("floq_paper", floq)):
                exp = build(["gin/algorithms/fql.gin", f"gin/critics/{critic}.gin", f"gin/tasks/{env}.gin",
                             f"gin/recipes/{recipe}.gin"])
                assert (exp.algorithm.alpha, exp.critic.q_agg, exp.trainer.batch_size) == want, (env, critic, recipe)
    # An experiment's own value wins over every paper's.
    exp = build(["gin/algorithms/fql.gin", "gin/critics/monolithic.gin",
                 "gin/tasks/antmaze-large-navigate.gin", "gin/recipes/fql_paper.gin"], ["Q_AGG = 'mean'", "ALPHA = 3.0"])
    assert exp.critic.q_agg == "mean" and exp.algorithm.alpha == 3.0


def test_an_experiment_that_names_no_recipe_fails_with_one_line():
    with pytest.raises(ConfigError, match=r"^no recipe: RECIPE_\w+ is undefined.*gin/recipes/fql_paper.gin"):
        build(["gin/algorithms/fql.gin", "gin/critics/floq.gin", "gin/tasks/cube-single-play.gin"])
    res = floq_main("run", "gin/algorithms/fql.gin", "gin/critics/floq.gin", "gin/tasks/cube-single-play.gin",
                    "--out", "/nonexistent-never-written")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "no recipe" in res.stderr


def _settings(exp):
    return (exp.algorithm.alpha, exp.task.discount, exp.trainer.batch_size, exp.critic.q_agg,
            exp.task.task_id, exp.task.env, exp.critic.field_net.depth)


@pytest.mark.parametrize("env", ["scene-play", "humanoidmaze-large-navigate", "cube-double-play"])
def test_include_order_of_a_task_file_does_not_matter(env):
    """A task file before fql.gin (and so before defaults.gin) keeps its settings."""
    task = f"gin/tasks/{env}.gin"
    right = build(["gin/algorithms/fql.gin", "gin/critics/floq.gin", task, "gin/recipes/floq_paper.gin"])
    for files in ([task, "gin/algorithms/fql.gin", "gin/critics/floq.gin", "gin/recipes/floq_paper.gin"],
                  ["gin/recipes/floq_paper.gin", "gin/algorithms/fql.gin", task, "gin/critics/floq.gin"],
                  ["gin/critics/floq.gin", task, "gin/recipes/floq_paper.gin", "gin/algorithms/fql.gin"]):
        assert _settings(build(files)) == _settings(right), files
    alpha, gamma, batch, q_agg, task_id = PAPER[env]
    assert _settings(right)[:5] == (alpha, gamma, batch, q_agg, task_id)


def test_a_task_file_never_overwrites_an_experiments_overrides():
    # smoke.gin sets BATCH_SIZE = 32 and FLOW_FIELD_DEPTH = 2; a task file read afterwards
    # (as a sweep over Sweep.tasks reads it) changes the environment, not those.
    exp = build(["gin/experiments/smoke.gin", "gin/critics/floq.gin", "gin/tasks/scene-play.gin"])
    assert exp.task.env == "scene-play" and exp.algorithm.alpha == 300
    assert exp.trainer.batch_size == 32 and exp.critic.field_net.depth == 2
    assert exp.task.task_id == 1  # smoke.gin's TASK_ID = 1, not scene-play's default task 2


def test_cube_field_depth_comes_from_the_task_file():
    files = ["gin/algorithms/fql.gin", "gin/critics/floq.gin", "gin/tasks/cube-double-play.gin", "gin/recipes/floq_paper.gin"]
    assert build(files, ["CRITIC_DEPTH = 6"]).critic.field_net.depth == 2
    assert build(files, ["FLOW_FIELD_DEPTH = 6"]).critic.field_net.depth == 6
    scene = ["gin/algorithms/fql.gin", "gin/critics/floq.gin", "gin/tasks/scene-play.gin", "gin/recipes/floq_paper.gin"]
    assert build(scene, ["CRITIC_DEPTH = 6"]).critic.field_net.depth == 6


def test_online_macros_reach_the_trainer():
    exp = build(["gin/algorithms/fql.gin", "gin/critics/floq.gin", "gin/tasks/cube-double-play.gin", "gin/recipes/floq_paper.gin"])
    assert (exp.trainer.online_steps, exp.trainer.utd_ratio, exp.trainer.balanced_sampling) == (0, 1, False)
    exp = build(["gin/algorithms/fql.gin", "gin/critics/floq.gin", "gin/tasks/cube-double-play.gin", "gin/recipes/floq_paper.gin"],
                ["ONLINE_STEPS = 1000", "UTD_RATIO = 2", "BALANCED_SAMPLING = True"])
    assert (exp.trainer.online_steps, exp.trainer.utd_ratio, exp.trainer.balanced_sampling) == (1000, 2, True)


# Issue 25 item 3: per-environment baseline shapes and the floq paper's FQL column.
RESNET_SHAPES = {"humanoidmaze-large-navigate": (4, 2), "antmaze-giant-navigate": (2, 4)}


@pytest.mark.parametrize("env", sorted(PAPER))
def test_fql_resnet_takes_the_floq_readmes_shape_per_environment(env):
    # github:CMU-AIRe/floq README: FQL-ResNet num_transformations=4, block_depth=2 on
    # humanoidmaze-large; 2 and 4 on antmaze-giant; width 512.
    exp = build(["gin/algorithms/fql.gin", "gin/critics/resnet.gin", f"gin/tasks/{env}.gin", "gin/recipes/floq_paper.gin"])
    net = exp.critic.net
    assert (net.num_blocks, net.block_depth) == RESNET_SHAPES.get(env, (2, 2)) and net.width == 512
    # A binding (a scaling sweep's axis) still wins.
    exp = build(["gin/algorithms/fql.gin", "gin/critics/resnet.gin", f"gin/tasks/{env}.gin", "gin/recipes/floq_paper.gin"], ["RESNET_BLOCKS = 8"])
    assert exp.critic.net.num_blocks == 8


@pytest.mark.parametrize("env", sorted(PAPER))
def test_the_floq_papers_fql_column_is_a_recipe(env):
    files = ["gin/algorithms/fql.gin", "gin/critics/monolithic.gin", "gin/recipes/floq_paper_fql.gin",
             f"gin/tasks/{env}.gin"]
    exp = build(files)
    alpha, q_agg = FQL[env]
    want_batch = 512 if env in ("antmaze-giant-navigate", "humanoidmaze-large-navigate") else 256
    assert (exp.algorithm.alpha, exp.critic.q_agg, exp.trainer.batch_size) == (alpha, q_agg, want_batch)


def test_offline_recipe_names_the_floq_papers_fql_and_the_offline_alpha():
    text = open(os.path.join(REPO, "gin", "experiments", "paper", "offline.gin")).read()
    assert "'gin/critics/monolithic.gin', 'gin/recipes/floq_paper_fql.gin'" in text
    assert "alpha 40 on humanoidmaze-large)" not in text and "alpha stays 30 on humanoidmaze-large offline" in text
