"""`floq sweep --dry-run` names the budget and the score rule beside the reference code's, and
the released code's budget is one recipe away (issue 25 item 9)."""

from __future__ import annotations

import gin
import pytest

from floq.launch import sweep
from floq.launch.budget import budget_lines, eval_steps
from floq.train import build


@pytest.fixture(autouse=True)
def _clear():
    gin.clear_config()
    yield
    gin.clear_config()


def test_eval_steps_follow_the_loop():
    assert eval_steps(1_000_000, 100_000)[-3:] == [800_000, 900_000, 1_000_000]
    assert eval_steps(250, 100) == [0, 100, 200, 250]
    assert eval_steps(300, 0, at_start=False) == [300]


def test_dry_run_names_the_budget(tmp_path):
    lines = []
    sweep.run_sweep("gin/experiments/sweep_smoke.gin", out_dir=str(tmp_path / "out"), dry_run=True,
                    echo=lines.append, bench_dir=str(tmp_path / "no_bench"))
    budget = [line for line in lines if line.startswith("budget:")]
    assert budget == ["budget: 200 gradient steps, evaluation every 100 steps over 2 episodes; final score "
                      "(floq analyze's default, FQL's rule): mean of the evaluations at 0, 100, 200"]
    assert any("released floq code's default is 2M gradient steps, evaluation every 20k" in line for line in lines)


def test_the_released_budget_is_one_recipe():
    exp = build(["gin/experiments/quickstart.gin", "gin/recipes/released_budget.gin"])
    tr = exp.trainer
    assert (tr.train_steps, tr.eval_interval, tr.eval_episodes, tr.log_interval) == (2_000_000, 20_000, 50, 5_000)
    [line, ref] = budget_lines([type("R", (), {"gin_files": ("gin/experiments/quickstart.gin",
                                                             "gin/recipes/released_budget.gin"),
                                               "bindings": ()})()])
    assert line.startswith("budget: 2M gradient steps, evaluation every 20k steps over 50 episodes")
    assert line.endswith("mean of the evaluations at 1.96M, 1.98M, 2M")
