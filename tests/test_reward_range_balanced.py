"""Reward range under balanced sampling (issue 25 item 6): the released code (github:CMU-AIRe/floq
main.py) reads r_min/r_max from the zero-padded replay buffer that starts as the dataset, so
0 is always in the range, except with --balanced_sampling, where its training set is the raw
dataset: then the range is the raw one. floq does the same and records it in run.json."""

from __future__ import annotations

import pytest

from floq.data.sources import Task
from floq.loop import Run, applied_reward_rule


def test_applied_rule():
    assert applied_reward_rule("released", False) == "released"
    assert applied_reward_rule("released", True) == "data"
    assert applied_reward_rule("data", False) == "data" and applied_reward_rule("data", True) == "data"


@pytest.mark.parametrize("balanced", [False, True])
def test_balanced_sampling_reads_the_raw_range(smoke_dataset, monkeypatch, tmp_path, balanced):
    real = Task.load

    def shifted(self, progress=True):  # a dataset without a reward-0 step (as puzzle-4x4's)
        train, val = real(self, progress=progress)
        return {**train, "rewards": train["rewards"] - 0.5}, val

    monkeypatch.setattr(Task, "load", shifted)
    run = Run(["gin/experiments/smoke.gin", "gin/critics/floq.gin"],
              ["ONLINE_STEPS=10", f"BALANCED_SAMPLING={balanced}", "Trainer.progress=False"],
              run_dir=str(tmp_path / "r"))
    run.setup()
    p = run.protocol
    assert (p["data_r_min"], p["data_r_max"]) == (-1.5, -0.5)
    want = (-1.5, -0.5) if balanced else (-1.5, 0.0)
    assert (p["r_min"], p["r_max"]) == want and (run.critic.r_min, run.critic.r_max) == want
    assert p["reward_range_rule"] == "released"
    assert p["reward_range_applied"] == ("data" if balanced else "released")
