"""Several tasks in one program (Task.task_ids / PROGRAM_TASK_IDS): each (task, seed) agent
gives the numbers of that task trained alone, rows name their task, and the analysis treats
every (run, task) as a run of its own."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from floq_test_utils import floq_main

from floq.agents.fql import FQL
from floq.config import ConfigError
from floq.critics.flow import FloqCritic
from floq.data.sources import Task
from floq.nets.specs import MLPNet
from floq.train import init_group_states, init_states, make_program, multi_task_data, task_view


def _toy_tasks(n=512, o=6, a=2, seed=0):
    """Two 'tasks' of one dataset: shared observations/actions, their own rewards and masks;
    task 1's rewards reach -2, so its critic is configured with another reward range."""
    rng = np.random.default_rng(seed)
    shared = {"observations": rng.standard_normal((n, o)).astype(np.float32),
              "actions": rng.uniform(-1, 1, (n, a)).astype(np.float32),
              "next_observations": rng.standard_normal((n, o)).astype(np.float32)}
    t0 = {**shared, "rewards": -(rng.random(n) > 0.2).astype(np.float32),
          "masks": (rng.random(n) > 0.05).astype(np.float32)}
    t1 = {**shared, "rewards": -2 * (rng.random(n) > 0.5).astype(np.float32),
          "masks": (rng.random(n) > 0.3).astype(np.float32)}
    return t0, t1


@pytest.mark.slow  # trains a five-member program and five lone ones
def test_multi_task_program_equals_lone_programs():
    t0, t1 = _toy_tasks()
    data = jax.device_put({k: jnp.asarray(v) for k, v in multi_task_data([t0, t1], ["t0", "t1"]).items()})
    assert data["rewards"].shape == (512, 2) and data["observations"].shape == (512, 6)
    base = FloqCritic(field_net=MLPNet(16, 2), distill_net=MLPNet(16, 2), flow_steps=2, noise_samples=3)
    critics = [base.configure(0.99, -1.0, 0.0), base.configure(0.99, -2.0, 0.0)]
    algo = FQL(alpha=10.0, actor_net=MLPNet(16, 2, layer_norm=False), flow_steps=3)
    ex_o, ex_a = data["observations"][:2], data["actions"][:2]
    seeds = [3, 4]
    # members task-major: (t0, 3), (t0, 4), (t1, 3), (t1, 4); one group per critic configuration
    groups = [(critics[0], [0, 1], [0, 0]), (critics[1], [2, 3], [1, 1])]
    member_seeds = seeds * 2
    together = init_group_states(algo, groups, member_seeds, ex_o, ex_a)
    program = make_program(algo, None, 32, 10, groups=groups)
    alone = []
    for t, (d, c) in enumerate(zip((t0, t1), critics)):
        lone_data = jax.device_put({k: jnp.asarray(v) for k, v in d.items()})
        states = init_states(algo, c, seeds, ex_o, ex_a)
        prog = make_program(algo, c, 32, 10)
        for n in (10, 7):
            states, m_alone, _, _ = prog(states, jnp.ones(2, bool), lone_data, jnp.asarray(n, jnp.int32))
        alone.append((states, m_alone))
    for n in (10, 7):
        together, m_tog, alive, bad_at = program(together, jnp.ones(4, bool), data, jnp.asarray(n, jnp.int32))
    assert np.asarray(alive).shape == (4,) and np.asarray(alive).all() and (np.asarray(bad_at) == 10).all()
    for m, (t, s) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        ref, m_ref = alone[t]
        for a, b in zip(jax.tree_util.tree_leaves(together), jax.tree_util.tree_leaves(ref)):
            np.testing.assert_allclose(np.asarray(a[m], np.float64), np.asarray(b[s], np.float64),
                                       rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(m_tog["critic/loss"][m], m_ref["critic/loss"][s], rtol=1e-3)
    # ...and the two tasks' agents really differ (their rewards differ).
    leaves = jax.tree_util.tree_leaves(together["params"])
    assert any(not np.allclose(x[0], x[2], rtol=1e-3, atol=1e-5) for x in leaves)
    np.testing.assert_array_equal(np.asarray(task_view(data, 1)["rewards"]), t1["rewards"])


def test_multi_task_data_refuses_different_observations():
    t0, t1 = _toy_tasks()
    t1 = {**t1, "observations": t1["observations"] + 1}
    with pytest.raises(ConfigError, match="observations' differ"):
        multi_task_data([t0, t1], ["a-task1", "a-task2"])


def test_task_ids_validation_and_one_task_is_a_lone_run():
    assert Task(task_ids=[1, 3]).ids == (1, 3) and Task(task_ids=[1, 3]).multi
    lone = Task(task_id=2, task_ids=[4])
    assert (lone.task_id, lone.task_ids, lone.multi) == (4, (), False)
    for bad in ([1, 1], [0, 2], [6], 3):
        with pytest.raises(ValueError, match="task_ids"):
            Task(task_ids=bad)


SMOKE = ["gin/experiments/smoke.gin", "--bind", "TRAIN_STEPS=100", "--bind", "EVAL_INTERVAL=100",
         "--bind", "LOG_INTERVAL=50", "--bind", "Trainer.progress=False"]
CLOCK = ["wall_time", "updates_per_s", "run"]


@pytest.mark.slow
def test_two_task_run_rows_equal_the_lone_run(tmp_path, smoke_dataset):
    """`floq run ... PROGRAM_TASK_IDS=[1, 2]`: task 2's eval.csv/train.csv rows equal a lone
    TASK_ID=2 run's (losses to float precision), every row names its task, run.json lists
    the members, and the analysis sees two runs."""
    multi, lone = tmp_path / "multi", tmp_path / "lone"
    r = floq_main("run", *SMOKE, "--bind", "PROGRAM_TASK_IDS=[1, 2]", "--run-dir", str(multi))
    assert r.returncode == 0, r.stderr[-2000:]
    r = floq_main("run", *SMOKE, "--bind", "TASK_ID=2", "--run-dir", str(lone))
    assert r.returncode == 0, r.stderr[-2000:]
    man = json.loads((multi / "run.json").read_text())
    assert man["task_id"] == [1, 2] and man["task"] == "tasks1,2"
    assert man["members"] == [{"task_id": 1, "seed": 0}, {"task_id": 2, "seed": 0}]
    for name in ("eval.csv", "train.csv"):
        a = pd.read_csv(multi / name)
        b = pd.read_csv(lone / name).drop(columns=CLOCK, errors="ignore")
        assert set(a["task"]) == {"task1", "task2"} and set(a["task_id"]) == {1, 2}
        assert "task_ids" not in a.columns and "program_task_ids" not in a.columns
        a2 = a[a["task"] == "task2"].reset_index(drop=True)
        assert len(a2) == len(b) and len(a) == 2 * len(b)
        for col in b.columns:
            x, y = a2[col], b[col]
            if pd.api.types.is_numeric_dtype(y):
                np.testing.assert_allclose(x.to_numpy(np.float64), y.to_numpy(np.float64), rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name}:{col}")
            else:
                assert (x.astype(str) == y.astype(str)).all(), f"{name}:{col}"
    ev = pd.read_csv(multi / "eval.csv")
    assert set(ev.loc[ev["task"] == "task1", "dataset"]) == {"cube-single-play-singletask-task1-v0"}

    from analysis.load import load_results

    df = load_results(multi)
    assert sorted(set(df["run_id"])) == [".#task1", ".#task2"]


def test_multi_task_refuses_online_phase(tmp_path, smoke_dataset):
    r = floq_main("run", *SMOKE, "--bind", "PROGRAM_TASK_IDS=[1, 2]", "--bind", "ONLINE_STEPS=10",
                 "--run-dir", str(tmp_path / "r"))
    assert r.returncode != 0
    assert "trains offline only" in r.stderr
    assert not os.path.exists(tmp_path / "r" / "eval.csv")
