"""The reward-range rule: (r_min, r_max) the trainer reads from a dataset's rewards."""

import gin
import numpy as np
import pytest

from floq.config import ConfigError
from floq.critics.base import REWARD_RANGE_RULES, reward_range
from floq.critics.flow import FloqCritic
from floq.critics.iqn import IQNCritic
from floq.critics.monolithic import MonolithicCritic
from floq.train import build


@pytest.fixture(autouse=True)
def _clear():
    gin.clear_config()
    yield
    gin.clear_config()


def test_released_rule_always_includes_zero():
    # OGBench manipulation rewards without a success transition (e.g. puzzle-4x4 tasks whose
    # best reward in the data is -1): the released code's buffer is zero-padded, so 0 is in.
    rewards = np.array([-3.0, -2.0, -1.0, -2.0], np.float32)
    assert reward_range(rewards) == (-3.0, 0.0)
    assert reward_range(rewards, "released") == (-3.0, 0.0)
    assert reward_range(np.array([0.5, 2.0])) == (0.0, 2.0)  # positive rewards: r_min = 0
    assert reward_range([-1.0, 0.0]) == (-1.0, 0.0)  # already holds 0: unchanged


def test_data_rule_gives_the_raw_range():
    rewards = np.array([-3.0, -2.0, -1.0], np.float32)
    assert reward_range(rewards, "data") == (-3.0, -1.0)
    assert reward_range(np.array([0.5, 2.0]), "data") == (0.5, 2.0)
    lo, hi = reward_range(np.array([-1, 0], np.int32), "data")
    assert (lo, hi) == (-1.0, 0.0) and all(isinstance(v, float) for v in (lo, hi))


def test_bad_rule_and_empty_rewards():
    with pytest.raises(ValueError, match="reward range rule must be one of"):
        reward_range([0.0], "padded")
    with pytest.raises(ValueError, match="at least one reward"):
        reward_range([], "data")
    assert REWARD_RANGE_RULES == ("released", "data")


def test_critics_expose_the_rule_for_the_trainer():
    assert FloqCritic().reward_range_rule == "released"
    assert IQNCritic().reward_range_rule == "released"
    assert FloqCritic(reward_range_rule="data").reward_range_rule == "data"
    assert getattr(MonolithicCritic(), "reward_range_rule", "released") == "released"
    with pytest.raises(ValueError, match="reward_range_rule must be one of"):
        FloqCritic(reward_range_rule="raw")
    with pytest.raises(ValueError, match="reward_range_rule must be one of"):
        IQNCritic(reward_range_rule="raw")
    assert FloqCritic(reward_range_rule="data").describe()["reward_range_rule"] == "data"


@pytest.mark.parametrize("critic_file, cls", [("gin/critics/floq.gin", "FloqCritic"),
                                              ("gin/critics/iqn.gin", "IQNCritic")])
def test_reward_range_macro_reaches_the_critic(critic_file, cls):
    files = ["gin/algorithms/fql.gin", critic_file, "gin/tasks/puzzle-4x4-play.gin", "gin/recipes/floq_paper.gin"]
    exp = build(files)
    assert type(exp.critic).__name__ == cls and exp.critic.reward_range_rule == "released"
    exp = build(files, ["REWARD_RANGE = 'data'"])
    assert exp.critic.reward_range_rule == "data"
    rewards = np.array([-4.0, -2.0, -1.0])  # no success transition in the data
    assert reward_range(rewards, getattr(exp.critic, "reward_range_rule", "released")) == (-4.0, -1.0)
    with pytest.raises(ConfigError, match="REWARD_RANGE must be one of"):
        build(files, ["REWARD_RANGE = 'raw'"])
    with pytest.raises(ConfigError, match="reward_range_rule must be one of"):  # the critic's own check
        build(files, [f"{cls}.reward_range_rule = 'raw'"])
