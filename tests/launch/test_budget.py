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


def test_runs_that_differ_only_in_the_seed_are_built_once_and_all_counted():
    built = []

    def fake_build(files, bindings):
        built.append(tuple(bindings))
        steps = 100 if "STEPS = 100" in bindings else 200
        tr = type("T", (), {"train_steps": steps, "eval_interval": 0, "eval_episodes": 5, "online_steps": 0})()
        return type("E", (), {"trainer": tr})()

    def run(*bindings):
        return type("R", (), {"gin_files": ("a.gin",), "bindings": bindings})()

    runs = [run("STEPS = 100", f"SEED = {s}") for s in range(3)] + [run("STEPS = 200", f"SEED = {s}") for s in range(2)]
    lines = budget_lines(runs, build=fake_build, seed_binding_prefix="SEED =")
    assert built == [("STEPS = 100", "SEED = 0"), ("STEPS = 200", "SEED = 0")]  # one build per configuration
    assert lines[0].startswith("budget: 100 gradient steps") and lines[0].endswith("(3 runs)")
    assert lines[1].startswith("budget: 200 gradient steps") and lines[1].endswith("(2 runs)")
    # without the prefix every run is built (the counts are the same)
    built.clear()
    assert budget_lines(runs, build=fake_build) == lines and len(built) == 5
