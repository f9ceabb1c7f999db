"""Offline-to-online fine-tuning (floq/online.py): both phases in the CSVs, the replay buffer's
contents follow the singletask rules, batches mix dataset and online data as FQL does, and a
run killed with SIGKILL in the online phase resumes to the same CSVs and parameters."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from floq_test_utils import floq_main, kill_after_checkpoint

from floq.train import sample_mixed

CLOCK = ["wall_time", "updates_per_s", "run"]
ONLINE_ARGS = ["gin/experiments/smoke.gin", "gin/critics/floq.gin", "--bind", "TRAIN_STEPS=100",
               "--bind", "ONLINE_STEPS=240", "--bind", "NUM_SEEDS=2", "--bind", "EVAL_INTERVAL=170",
               "--bind", "LOG_INTERVAL=80", "--bind", "CHECKPOINT_INTERVAL=30", "--bind", "CHUNK_SIZE=50",
               # A tiny replay buffer: max(2, N + 1) rows, so the released FIFO eviction runs from the
               # second online step on, and the SIGKILL test below resumes through it.
               "--bind", "BUFFER_SIZE=2"]


def _csvs(run_dir):
    ev = pd.read_csv(os.path.join(run_dir, "eval.csv")).drop(columns=CLOCK, errors="ignore")
    tr = pd.read_csv(os.path.join(run_dir, "train.csv")).drop(columns=CLOCK, errors="ignore")
    return ev, tr


def _final(run_dir):
    import orbax.checkpoint as ocp

    ck = os.path.join(run_dir, "checkpoints")
    last = max(int(d.split("_")[1]) for d in os.listdir(ck) if d.startswith("step_") and not d.endswith(".json"))
    tree = ocp.PyTreeCheckpointer().restore(os.path.join(ck, f"step_{last}"))
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_sample_mixed_follows_fql():
    n, L = 10, 6
    data = {"observations": jnp.zeros((n, 1)), "rewards": jnp.zeros((n,))}
    buf = {"observations": jnp.ones((L, 1)), "rewards": jnp.ones((L,))}
    key = jax.random.PRNGKey(0)
    # Uniform over dataset + the first n_online rows; rows beyond n_online are never drawn.
    b = sample_mixed(data, {**buf, "rewards": buf["rewards"].at[3:].set(7.0)}, 3, key, 4000, balanced=False)
    frac = float(np.mean(np.asarray(b["observations"][:, 0])))
    assert abs(frac - 3 / 13) < 0.03
    assert set(np.unique(np.asarray(b["rewards"]))) <= {0.0, 1.0}
    # Balanced: exactly half from each (FQL's balanced_sampling).
    b = sample_mixed(data, buf, 2, key, 256, balanced=True)
    assert np.asarray(b["observations"][:128]).sum() == 0 and np.asarray(b["observations"][128:]).min() == 1


def _released_ring_buffer(data_rows, online_rows, capacity):
    """The rows of the released code's ReplayBuffer (CMU-AIRe/floq utils/datasets.py) after
    `create_from_initial_dataset(data, capacity)` (or `create(capacity)` when data_rows is
    empty) and one `add_transition` per online row: what a batch is uniform over."""
    rows = [None] * capacity
    rows[:len(data_rows)] = data_rows
    pointer = size = len(data_rows)
    for row in online_rows:
        rows[pointer] = row
        pointer = (pointer + 1) % capacity
        size = max(pointer, size)
    return rows[:size]


@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("n_online", [1, 2, 3, 5, 11, 40])
def test_sample_mixed_evicts_like_the_released_buffer(balanced, n_online):
    # Item 1 of issue 25: capacity max(buffer_size, N + 1) (balanced: buffer_size online rows),
    # the oldest rows (dataset rows first) overwritten once full, batches uniform over what is held.
    n, L, size = 10, 40, 12 if not balanced else 4
    data = {"observations": jnp.arange(n, dtype=jnp.float32)[:, None]}
    buf = {"observations": 100 + jnp.arange(L, dtype=jnp.float32)[:, None]}
    b = sample_mixed(data, buf, n_online, jax.random.PRNGKey(1), 6000, balanced=balanced, buffer_size=size)
    got = np.asarray(b["observations"][:, 0])
    online = [100 + k for k in range(n_online)]
    if balanced:
        held = _released_ring_buffer([], online, size)
        got = got[3000:]  # the online half
    else:
        held = _released_ring_buffer(list(range(n)), online, max(size, n + 1))
    values, counts = np.unique(got, return_counts=True)
    assert sorted(values.tolist()) == sorted(held)
    assert counts.min() > 0.6 * len(got) / len(held)  # uniform over the held rows
    # Without eviction, the draws are exactly those of the unbounded buffer.
    if n + n_online < size and not balanced:
        ref = sample_mixed(data, buf, n_online, jax.random.PRNGKey(1), 6000, balanced=False, buffer_size=10**6)
        assert np.array_equal(np.asarray(ref["observations"]), np.asarray(b["observations"]))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, smoke_dataset):
    run_dir = tmp_path_factory.mktemp("online") / "uninterrupted"
    res = floq_main("run", *ONLINE_ARGS, "--run-dir", str(run_dir))
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_online_run_has_both_phases(reference_run):
    import json

    ev, tr = _csvs(reference_run)
    # Evaluations at 0, 100 (end of the offline phase), 170 and 340 (the end), for 2 seeds.
    assert list(ev["step"]) == [0, 0, 100, 100, 170, 170, 340, 340]
    assert list(ev["phase"]) == ["offline"] * 4 + ["online"] * 4
    assert list(ev["env_steps"]) == [0, 0, 0, 0, 70, 70, 240, 240]
    online = tr[tr["phase"] == "online"]
    assert list(online["step"].unique()) == [160, 240, 320, 340]
    assert (online["env_steps"] == online["step"] - 100).all()
    # cube-single episodes end at success or after 200 steps: each seed finished one by env step 240.
    assert (online.groupby("seed")["online_episodes"].max() >= 1).all()
    meta = json.load(open(os.path.join(reference_run, "run.json")))
    assert meta["status"] == "done" and meta["step"] == 340
    assert meta["protocol"]["online_steps"] == 240 and meta["env_s"] > 0
    n_data = meta["protocol"]["dataset_transitions"]
    assert meta["protocol"]["buffer_size"] == 2 and meta["protocol"]["buffer_capacity"] == n_data + 1
    assert meta["protocol"]["buffer_eviction"] == "fifo"

    # The buffer: every online step written, masks 0 exactly where the env terminated, and
    # rewards from the same singletask rule as the dataset (the same set of values).
    params = _final(reference_run)
    buf = {k.split("'")[3]: v for k, v in params.items() if k.startswith("['buffer']")}
    assert buf["observations"].shape[:2] == (2, 240)
    assert np.abs(buf["observations"]).sum(axis=-1).min() > 0
    assert set(np.unique(buf["masks"])) <= {0.0, 1.0}
    assert buf["rewards"].max() <= 0 and buf["rewards"].min() >= meta["protocol"]["data_r_min"]
    # The seeds explore differently.
    assert not np.allclose(buf["actions"][0], buf["actions"][1])


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkill_in_online_phase_resumes_exactly(reference_run, tmp_path):
    ref_ev, ref_tr = _csvs(reference_run)
    ref = _final(reference_run)
    run_dir = tmp_path / "killed"
    interrupted = kill_after_checkpoint(ONLINE_ARGS, run_dir, 210)  # 110 env steps into the online phase
    assert interrupted, "the run finished before it could be killed in the online phase"
    res = floq_main("run", *ONLINE_ARGS, "--run-dir", str(run_dir))  # the resume, in this process
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming" in res.stderr
    ev, tr = _csvs(run_dir)
    pd.testing.assert_frame_equal(ev, ref_ev)
    pd.testing.assert_frame_equal(tr, ref_tr)
    got = _final(run_dir)
    assert got.keys() == ref.keys()
    for k in ref:
        assert np.array_equal(got[k], ref[k]), k
