"""End-to-end trainer behaviour on the smoke experiment (real data, real simulator)."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest

from floq_test_utils import REPO, floq_cmd, floq_main

from floq.loop import EVAL_COLUMNS


def test_smoke_run_writes_a_well_formed_run_directory(smoke_run):
    run_dir, res = smoke_run
    assert sorted(p for p in os.listdir(run_dir) if not p.startswith(".")) == [
        "checkpoints", "config.gin", "eval.csv", "run.json", "train.csv"]
    ev = pd.read_csv(run_dir / "eval.csv")
    for col in EVAL_COLUMNS:
        assert col in ev.columns, col
    assert list(ev.step) == [0, 50, 100]
    assert ev.success.between(0, 1).all()
    assert (ev.episode_length > 0).all() and (ev.episode_length <= 1000).all()
    assert (ev.env == "cube-single-play").all() and (ev.task == "task1").all()
    assert (ev.critic == "monolithic").all() and (ev.algorithm == "fql").all()
    assert (ev.success_timing == "post").all() and (ev.eval_episodes == 2).all()
    tr = pd.read_csv(run_dir / "train.csv")
    assert list(tr.step) == [50, 100]
    for col in ("critic/loss", "critic/q_mean", "actor/bc_flow_loss", "actor/distill_loss", "grad/norm",
                "updates_per_s"):
        assert np.isfinite(tr[col]).all(), col
    man = json.loads((run_dir / "run.json").read_text())
    assert man["status"] == "done" and man["seeds"] == [0] and man["step"] == 100
    assert man["params"]["total"] == (man["params"]["actor_bc_flow"] + man["params"]["actor_onestep"]
                                      + man["params"]["critic_total"])
    assert man["flops_per_update"] > 0
    p = man["protocol"]
    assert p["r_min"] == -1.0 and p["r_max"] == 0.0 and p["success_timing"] == "post"
    assert p["ogbench_version"] and p["train_steps"] == 100
    assert man["git_commit"] and "jax" in man["packages"] and man["device"].startswith("cpu")
    # provenance: gin files relative to the repository, every dataset file's size and sha256
    assert man["gin_files"] == ["gin/experiments/smoke.gin"]
    data = {d["path"]: d for d in man["data_files"]}
    assert len(data) == 2 and any(p.endswith("-val.npz") for p in data)
    for d in man["data_files"]:
        path = d["path"] if os.path.isabs(d["path"]) else os.path.join(REPO, d["path"])
        with open(path, "rb") as f:
            assert d["sha256"] == hashlib.sha256(f.read()).hexdigest()
        assert d["bytes"] == os.path.getsize(path)
    assert "TRAIN_STEPS = 100" in (run_dir / "config.gin").read_text()
    # The summary line is printed.
    assert "success" in res.stdout and "updates/s" in res.stdout


def test_config_gin_reruns_as_is(smoke_run, tmp_path):
    """A run directory's config.gin is itself a runnable config."""
    from floq.train import build

    run_dir, _ = smoke_run
    exp = build([str(run_dir / "config.gin")])
    assert exp.trainer.train_steps == 100 and exp.task.env == "cube-single-play"


def test_rerunning_a_done_run_is_a_no_op(smoke_run):
    run_dir, _ = smoke_run
    before = (run_dir / "eval.csv").read_text()
    res = floq_main("run", "gin/experiments/smoke.gin", "--run-dir", str(run_dir), "--bind", "TRAIN_STEPS=100",
                    "--bind", "EVAL_INTERVAL=50")
    assert res.returncode == 0
    assert "already done" in res.stdout
    assert (run_dir / "eval.csv").read_text() == before


@pytest.mark.parametrize("args, needle", [
    (["--bind", "Trainer.no_such_param = 3"], "no_such_param"),
    (["--bind", "NoSuchThing.x = 3"], "NoSuchThing"),
    (["--bind", "Task.env = 'cube-sextuple-play'"], "unknown OGBench dataset"),
    (["--bind", "TRAIN_STEPS = 0"], "train_steps must be positive"),
    (["--bind", "TRAIN_STEPS = -5"], "train_steps must be positive"),
    (["--bind", "TASK_ID = 9"], "task_id"),
    (["--bind", "DATASET_PATH = '/nonexistent/x.npz'"], "not found"),
    (["gin/experiments/no_such_file.gin"], "gin file not found"),
])
def test_bad_input_fails_before_training_with_one_line(tmp_path, args, needle):
    files = ["gin/experiments/smoke.gin"]
    if args[0].endswith(".gin"):
        files, args = files + args, []
    res = floq_main("run", *files, *args, "--out", str(tmp_path))
    assert res.returncode == 2, res.stderr[-1500:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("floq run:")]
    assert len(lines) == 1 and needle in lines[0], res.stderr[-1500:]
    assert not any(tmp_path.iterdir()), "nothing may be written on bad input"


@pytest.mark.subprocess
def test_bad_input_real_exit_path(tmp_path):
    """The table above runs in-process (floq.cli.main); this is the same refusal through
    `python -m floq run`: exit status 2, one `floq run:` line on stderr, nothing written."""
    res = floq_cmd("run", "gin/experiments/smoke.gin", "--bind", "TRAIN_STEPS = 0", "--out", str(tmp_path))
    assert res.returncode == 2, res.stderr[-1500:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("floq run:")]
    assert len(lines) == 1 and "train_steps must be positive" in lines[0], res.stderr[-1500:]
    assert not any(tmp_path.iterdir()), "nothing may be written on bad input"


def test_malformed_dataset_file_is_rejected(tmp_path):
    bad = tmp_path / "data" / "bad.npz"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not an npz file")
    (tmp_path / "data" / "bad-val.npz").write_bytes(b"nor this")
    out = tmp_path / "out"
    res = floq_main("run", "gin/experiments/smoke.gin", "--bind", f"DATASET_PATH = '{bad}'", "--out", str(out))
    assert res.returncode == 2
    assert "is not a .npz archive" in res.stderr and "pickled" not in res.stderr
    assert not out.exists()

    wrong = tmp_path / "data" / "wrong.npz"
    np.savez(wrong, foo=np.zeros(3))
    np.savez(tmp_path / "data" / "wrong-val.npz", foo=np.zeros(3))
    res = floq_main("run", "gin/experiments/smoke.gin", "--bind", f"DATASET_PATH = '{wrong}'", "--out", str(out))
    assert res.returncode == 2 and "not in OGBench's format" in res.stderr


def test_initialisation_is_compiled_fast_with_the_same_bits():
    """Parameter initialisation (run once per run) compiles on the CPU without LLVM's
    optimisation passes (floq.train.RUN_ONCE_CPU_OPTIONS): every parameter and optimiser
    state is bitwise the default compilation's. FQL with the monolithic, floq and IQN critics
    is covered by the golden digests (tests/test_golden.py); here SAC (its temperature) with
    an IQN ensemble (its quantile embedding)."""
    import jax
    import jax.numpy as jnp

    from floq.agents.sac import SAC
    from floq.critics.iqn import IQNCritic
    from floq.nets.specs import MLPNet
    from floq.train import RUN_ONCE_CPU_OPTIONS, init_states

    assert jax.default_backend() == "cpu" and RUN_ONCE_CPU_OPTIONS == {"xla_backend_optimization_level": 0}
    ex_o, ex_a = jnp.zeros((2, 6)), jnp.zeros((2, 2))
    pairs = [(SAC(actor_net=MLPNet(16, 2)), IQNCritic(net=MLPNet(16, 2), num_ensembles=2))]
    for algo, critic in pairs:
        critic = critic.configure(0.99, -1.0, 0.0)
        fast = init_states(algo, critic, [3, 4], ex_o, ex_a)
        keys = jnp.stack([jax.random.PRNGKey(s) for s in (3, 4)])
        default = jax.jit(jax.vmap(lambda k: algo.init(k, critic, ex_o, ex_a)))(keys)
        a, b = jax.tree_util.tree_leaves(fast), jax.tree_util.tree_leaves(default)
        assert len(a) == len(b) > 10
        for x, y in zip(a, b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
