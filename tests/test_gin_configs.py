"""Every shipped gin file parses with skip_unknown=False and binds what it claims."""

from __future__ import annotations

import glob
import os

import gin
import pytest

from floq_test_utils import REPO

from floq.config import ConfigError, parse
from floq.train import build

TASKS = sorted(glob.glob(os.path.join(REPO, "gin", "tasks", "*.gin")))
CRITICS = sorted(glob.glob(os.path.join(REPO, "gin", "critics", "*.gin")))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "gin", "experiments", "*.gin")))


@pytest.fixture(autouse=True)
def _clear():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.mark.parametrize("task", TASKS, ids=os.path.basename)
@pytest.mark.parametrize("critic", CRITICS, ids=os.path.basename)
def test_every_task_and_critic_combination_builds(task, critic):
    exp = build(["gin/algorithms/fql.gin", critic, task])
    assert exp.task.env == os.path.basename(task)[:-4]
    assert exp.critic.num_ensembles == 2
    assert exp.trainer.train_steps == 1_000_000 and exp.trainer.eval_episodes == 50
    assert exp.trainer.eval_interval == 100_000


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=os.path.basename)
def test_every_experiment_parses(experiment):
    parse([experiment])


PAPER = {
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
    exp = build(["gin/algorithms/fql.gin", "gin/critics/floq.gin", f"gin/tasks/{env}.gin"])
    assert exp.algorithm.alpha == alpha and exp.task.discount == gamma
    assert exp.trainer.batch_size == batch and exp.critic.q_agg == q_agg and exp.task.task_id == task
    assert exp.critic.field_net.depth == (2 if env.startswith("cube") else 4)
    assert exp.critic.flow_steps == 8 and exp.critic.noise_samples == 8 and exp.critic.noise_coverage == 0.1


def test_floq_best_overrides_are_one_include_away():
    best = build(["gin/algorithms/fql.gin", "gin/critics/floq.gin", "gin/tasks/antmaze-giant-navigate.gin",
                  "gin/tasks/floq_best/antmaze-giant-navigate.gin"])
    assert best.critic.flow_steps == 4
    best = build(["gin/algorithms/fql.gin", "gin/critics/floq.gin", "gin/tasks/puzzle-4x4-play.gin",
                  "gin/tasks/floq_best/puzzle-4x4-play.gin"])
    assert best.critic.noise_coverage == 0.25


def test_later_files_and_bindings_override_earlier_ones():
    exp = build(["gin/experiments/smoke.gin", "gin/critics/floq.gin"], ["CRITIC_FLOW_STEPS = 3"])
    assert type(exp.critic).__name__ == "FloqCritic" and exp.critic.flow_steps == 3
    assert exp.critic.field_net.width == 32  # the smoke experiment's size survives the critic include


@pytest.mark.parametrize("binding, needle", [
    ("CRITIC_FLOW_STEPS = 0", "flow_steps (K) must be >= 1"),
    ("NOISE_COVERAGE = 0.0", "noise_coverage must be > 0"),
    ("CRITIC_ENSEMBLES = 0", "num_ensembles must be >= 1"),
    ("TIME_EMBED = 'wavelet'", "time_embed must be one of"),
    ("FloqCritic.r_min = 1.0", "r_min"),
])
def test_invalid_floq_configs_fail_at_config_time(binding, needle):
    extra = ["FloqCritic.r_max = 0.0"] if "r_min" in binding else []
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        build(["gin/experiments/smoke.gin", "gin/critics/floq.gin"], [binding, *extra])
