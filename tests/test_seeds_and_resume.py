"""Vmapped seeds equal lone seeds; a run killed with SIGKILL and resumed is bitwise identical
to an uninterrupted one (parameters and every CSV row but the clock columns)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from floq_test_utils import FULL, REPO, RESUME_ARGS, floq_main

from floq.agents.fql import FQL
from floq.critics.flow import FloqCritic
from floq.critics.monolithic import MonolithicCritic
from floq.nets.specs import MLPNet
from floq.train import init_states, make_program


def _toy_data(n=512, o=6, a=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "observations": jnp.asarray(rng.standard_normal((n, o)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-1, 1, (n, a)), jnp.float32),
        "rewards": -jnp.asarray(rng.random(n) > 0.2, jnp.float32),
        "masks": jnp.asarray(rng.random(n) > 0.05, jnp.float32),
        "next_observations": jnp.asarray(rng.standard_normal((n, o)), jnp.float32),
    }


@pytest.mark.parametrize("critic", [
    MonolithicCritic(net=MLPNet(16, 2)),
    FloqCritic(field_net=MLPNet(16, 2), distill_net=MLPNet(16, 2), flow_steps=2, noise_samples=3),
], ids=["monolithic", "floq"])
def test_vmapped_seed_equals_lone_seed(critic):
    """The trainer's program (floq.train.make_program) on two seeds: seed 4's member equals
    seed 4 trained alone (the one-member program squeezes the member axis out). The floq case
    has the sizes of test_multitask's lone programs, so the two tests share that program."""
    data = _toy_data()
    critic = critic.configure(0.99, -1.0, 0.0)
    algo = FQL(alpha=10.0, actor_net=MLPNet(16, 2, layer_norm=False), flow_steps=3)
    program = make_program(algo, critic, 32, 10)
    ex_o, ex_a = data["observations"][:2], data["actions"][:2]

    together = init_states(algo, critic, [3, 4], ex_o, ex_a)
    alone = init_states(algo, critic, [4], ex_o, ex_a)
    for n in (10, 10, 7):
        n = jnp.asarray(n, jnp.int32)
        together, m_tog, alive_t, _ = program(together, jnp.ones(2, bool), data, n)
        alone, m_alone, alive_a, _ = program(alone, jnp.ones(1, bool), data, n)
    assert np.asarray(alive_t).all() and np.asarray(alive_a).all()
    for a, b in zip(jax.tree_util.tree_leaves(together), jax.tree_util.tree_leaves(alone)):
        np.testing.assert_allclose(np.asarray(a[1], np.float64), np.asarray(b[0], np.float64), rtol=2e-4, atol=2e-5)
    # ...and the seeds really differ from each other.
    p = jax.tree_util.tree_leaves(together["params"])[0]
    assert not np.allclose(p[0], p[1])
    np.testing.assert_allclose(m_tog["critic/loss"][1, :7], m_alone["critic/loss"][0, :7], rtol=1e-3)


# --------------------------------------------------------------------------------------
# Exact resume
# --------------------------------------------------------------------------------------

CLOCK = ["wall_time", "updates_per_s", "run"]  # clock columns, and the run name (the directory differs)


def _final_params(run_dir):
    import orbax.checkpoint as ocp

    ckpt = os.path.join(run_dir, "checkpoints", "step_300")
    tree = ocp.PyTreeCheckpointer().restore(ckpt)
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _csvs(run_dir):
    ev = pd.read_csv(os.path.join(run_dir, "eval.csv")).drop(columns=CLOCK, errors="ignore")
    tr = pd.read_csv(os.path.join(run_dir, "train.csv")).drop(columns=CLOCK, errors="ignore")
    return ev, tr


def _start(run_dir):
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-m", "floq", "run", *RESUME_ARGS, "--run-dir", str(run_dir)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkill_and_resume_is_bitwise_identical(tmp_path, resume_reference):
    """A `floq run` process killed with SIGKILL, then run again (here in this process), ends
    with the parameters and CSV rows of the uninterrupted run (conftest.resume_reference)."""
    ref_dir = resume_reference
    ref_params = _final_params(ref_dir)
    ref_ev, ref_tr = _csvs(ref_dir)
    assert len(ref_ev) == 2 * 4 and len(ref_tr) == 2 * 6  # two seeds

    rng = np.random.default_rng(0)
    # Kill after checkpoint N has appeared, plus a random extra delay: mid-chunk, mid-eval,
    # mid-checkpoint, wherever it lands. Small form: one kill, mid-run.
    kill_points = [50, 150, 250] if FULL else [150]
    outcomes = []
    for n in kill_points:
        run_dir = tmp_path / f"killed_after_{n}"
        proc = _start(run_dir)
        marker = run_dir / "checkpoints" / f"step_{n}.json"
        deadline = time.time() + 300
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0.0, 0.4)))
        finished_first = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        res = floq_main("run", *RESUME_ARGS, "--run-dir", str(run_dir))
        assert res.returncode == 0, res.stderr[-2000:]
        assert finished_first or "resuming" in res.stderr
        params = _final_params(run_dir)
        assert params.keys() == ref_params.keys()
        for k in ref_params:
            assert np.array_equal(params[k], ref_params[k]), f"kill after {n}: {k} differs"
        ev, tr = _csvs(run_dir)
        pd.testing.assert_frame_equal(ev, ref_ev)
        pd.testing.assert_frame_equal(tr, ref_tr)
        outcomes.append((n, finished_first))
    # At least some kills must have interrupted the run for the test to mean anything.
    assert sum(not f for _, f in outcomes) >= (2 if FULL else 1), outcomes
