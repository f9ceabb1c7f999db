"""Fixtures for the launcher tests: a fake gin config and a fake trainer."""

import json
import os
import sys

import gin
import pytest

from floq.launch import spec  # noqa: F401  (registers Sweep)

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_TRAINER = [sys.executable, os.path.join(HERE, "fake_trainer.py")]


@gin.configurable(module="fakefloq")
class FakeCritic:
    def __init__(self, flow_steps=1, width=8, depth=2):
        self.flow_steps, self.width, self.depth = flow_steps, width, depth


@gin.configurable(module="fakefloq")
class FakeTask:
    def __init__(self, task_id=1, env="cube", seed=0):
        self.task_id, self.env, self.seed = task_id, env, seed


@gin.configurable(module="fakefloq")
def fake_experiment(critic=None, task=None, seed=0, train_steps=10):
    return critic, task, seed, train_steps


def fake_parse(gin_files, bindings):
    """What ``floq.config.parse`` does, for the fake configurables."""
    gin.clear_config()
    gin.parse_config_files_and_bindings(list(gin_files), list(bindings), skip_unknown=False)


BASE_GIN = """
# A fake experiment: the macros every experiment file defines.
SEED = 0
TRAIN_STEPS = 100
CRITIC_FLOW_STEPS = 4
CRITIC_WIDTH = 8
TASK_ID = 1
FLOWS = %CRITIC_FLOW_STEPS
UNUSED = 3

fake_experiment.seed = %SEED
fake_experiment.train_steps = %TRAIN_STEPS
fake_experiment.critic = @FakeCritic()
fake_experiment.task = @FakeTask()
FakeCritic.flow_steps = %FLOWS
FakeCritic.width = %CRITIC_WIDTH
FakeTask.task_id = %TASK_ID
"""


@pytest.fixture
def fake_base(tmp_path):
    """Writes base.gin (a fake experiment) and returns a function that writes sweep files."""
    base = tmp_path / "base.gin"
    base.write_text(BASE_GIN)

    def write_sweep(body, name="sweep.gin"):
        path = tmp_path / name
        path.write_text(f"include '{base}'\n{body}\n")
        return str(path)

    return write_sweep


#: The 2 x 2 x 2 sweep the fake-trainer tests of every launcher run.
GRID = """
Sweep.name = 'grid'
Sweep.axes = {'CRITIC_FLOW_STEPS': [1, 2], 'TASK_ID': [1, 2]}
Sweep.seeds = [0, 1]
"""


@pytest.fixture
def grid_file(fake_base):
    """The sweep file of :data:`GRID` (8 runs named ``critic_flow_steps=K,task_id=T,seed=S``)."""
    return fake_base(GRID)


@pytest.fixture
def control(tmp_path, monkeypatch):
    """Sets the fake trainer's control file; returns a function to rewrite it."""
    path = tmp_path / "control.json"
    path.write_text("{}")
    monkeypatch.setenv("FAKE_TRAINER_CONTROL", str(path))

    def set_control(**values):
        path.write_text(json.dumps(values))

    return set_control


@pytest.fixture
def parse():
    """The fake ``floq.config.parse``."""
    return fake_parse


@pytest.fixture
def fake_runner():
    """The command prefix that runs the fake trainer."""
    return list(FAKE_TRAINER)


@pytest.fixture(autouse=True)
def _clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()
