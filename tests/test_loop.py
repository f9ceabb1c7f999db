"""The training loop: evaluation rows are the same whatever evaluates them (in-process,
1 or 2 whole-episode workers, synchronous or asynchronous) and however steps are grouped into
compiled calls; divergence is a state, never a result; a signal stops a run within seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pandas as pd
import pytest

from floq_test_utils import FULL, REPO, copy_run, floq_main

CLOCK = ["wall_time", "updates_per_s", "run"]
# floq, two seeds, chunks of 50: the program of floq_test_utils.RESUME_ARGS (compiled once a session)
BASE = ["gin/experiments/smoke.gin", "gin/critics/floq.gin", "--bind", "TRAIN_STEPS=120", "--bind", "EVAL_INTERVAL=60",
        "--bind", "LOG_INTERVAL=30", "--bind", "CHECKPOINT_INTERVAL=60", "--bind", "NUM_SEEDS=2",
        "--bind", "EVAL_EPISODES=3", "--bind", "Trainer.eval_envs_per_worker=2"]


def _params(run_dir, step):
    import orbax.checkpoint as ocp

    tree = ocp.PyTreeCheckpointer().restore(os.path.join(run_dir, "checkpoints", f"step_{step}"))
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _csvs(run_dir):
    ev = pd.read_csv(os.path.join(run_dir, "eval.csv")).drop(columns=CLOCK, errors="ignore")
    tr = pd.read_csv(os.path.join(run_dir, "train.csv")).drop(columns=CLOCK, errors="ignore")
    return ev, tr


def test_rows_identical_across_evaluators_and_chunking(tmp_path, smoke_dataset):
    variants = {
        "inprocess_sync": ["Trainer.eval_workers=0"],
        "one_worker_async": ["Trainer.eval_workers=1", "Trainer.async_eval=True"],
        # Two workers share both seeds' episodes; chunks of at most 7 steps, sized by a tiny
        # time budget (calls of 1..7 steps).
        "two_workers_async_small_chunks": ["Trainer.eval_workers=2", "Trainer.async_eval=True", "CHUNK_SIZE=7",
                                           "Trainer.max_chunk_seconds=0.002"],
        "two_workers_sync": ["Trainer.eval_workers=2", "Trainer.async_eval=False"],
    }
    if not FULL:  # small form: the reference and the variant that differs from it the most
        variants = {k: variants[k] for k in ("inprocess_sync", "two_workers_async_small_chunks")}
    out = {}
    for name, binds in variants.items():
        args = list(BASE)
        for b in binds:
            args += ["--bind", b]
        res = floq_main("run", *args, "--run-dir", str(tmp_path / name))
        assert res.returncode == 0, (name, res.stderr[-3000:])
        out[name] = (_csvs(tmp_path / name), _params(tmp_path / name, 120),
                     json.loads((tmp_path / name / "run.json").read_text()))
    (ref_ev, ref_tr), ref_p, ref_man = out["inprocess_sync"]
    assert sorted(set(zip(ref_ev.seed, ref_ev.step))) == [(s, t) for s in (0, 1) for t in (0, 60, 120)]
    assert (ref_ev.phase == "offline").all() and (ref_ev.env_steps == 0).all()
    assert ref_man["eval"] == {"workers": 0, "envs_per_worker": 2, "async": False}
    for name, ((ev, tr), p, man) in out.items():
        pd.testing.assert_frame_equal(ev, ref_ev, obj=f"{name} eval.csv")
        pd.testing.assert_frame_equal(tr, ref_tr, obj=f"{name} train.csv")
        for k in ref_p:
            assert np.array_equal(p[k], ref_p[k]), (name, k)
        assert man["status"] == "done"
        # Honest throughput: training time only, with compile/eval/checkpoint times apart.
        for k in ("compile_s", "train_s", "eval_wait_s", "eval_busy_s", "checkpoint_s"):
            assert man[k] >= 0, (name, k)
        assert man["updates_per_s"] == pytest.approx(120 / man["train_s"], rel=0.01)
    assert out["two_workers_async_small_chunks"][2]["eval"]["async"] is True
    # The seeds really differ (their episodes are evaluated together, not copies of one).
    assert not np.array_equal(ref_tr[ref_tr.seed == 0]["critic/loss"].to_numpy(),
                              ref_tr[ref_tr.seed == 1]["critic/loss"].to_numpy())


def test_divergence_is_a_status_not_a_result(tmp_path, smoke_dataset):
    run_dir = tmp_path / "diverged"
    args = ["gin/experiments/smoke.gin", "--bind", "FQL.lr=3.0", "--bind", "TRAIN_STEPS=400",
            "--bind", "CHECKPOINT_INTERVAL=10", "--bind", "EVAL_INTERVAL=0", "--run-dir", str(run_dir)]
    res = floq_main("run", *args)
    assert res.returncode == 3, res.stderr[-2000:]
    assert "diverged" in res.stderr and "non-finite" not in res.stdout
    man = json.loads((run_dir / "run.json").read_text())
    assert man["status"] == "diverged"
    assert "step" in man["reason"] and "seed 0" in man["reason"]
    assert 0 < man["diverged_at"] <= 400
    # No non-finite row was written and every kept checkpoint is finite.
    tr = pd.read_csv(run_dir / "train.csv")
    metric_cols = [c for c in tr.columns if "/" in c]
    assert np.isfinite(tr[metric_cols].to_numpy(np.float64)).all()
    steps = sorted(int(p.name[5:]) for p in (run_dir / "checkpoints").iterdir()
                   if p.is_dir() and p.name.startswith("step_"))
    assert steps and man["last_good_checkpoint"] == max(steps)  # lr=3 diverges after a few checkpoints
    for s in steps:
        assert s < man["diverged_at"]
        assert all(np.isfinite(v).all() for v in _params(run_dir, s).values() if v.dtype.kind == "f")
    # Re-running says so instead of silently retrying.
    again = floq_main("run", *args)
    assert again.returncode == 3 and "diverged before" in again.stderr and "--retry-failed" in again.stderr


def test_done_run_with_other_config_is_refused(tmp_path, smoke_run):
    run_dir = copy_run(smoke_run[0], tmp_path / "r")  # done: TRAIN_STEPS=100, EVAL_INTERVAL=50
    smoke = ["gin/experiments/smoke.gin", "--bind", "EVAL_INTERVAL=50", "--run-dir", str(run_dir)]
    before = (run_dir / "eval.csv").read_text()
    res = floq_main("run", *smoke, "--bind", "TRAIN_STEPS=60")
    assert res.returncode == 2 and "different config" in res.stderr
    assert (run_dir / "eval.csv").read_text() == before
    # Chunking is plumbing: the same run with another chunk size is the same run.
    same = floq_main("run", *smoke, "--bind", "TRAIN_STEPS=100", "--bind", "CHUNK_SIZE=7")
    assert same.returncode == 0 and "already done" in same.stdout
    assert (run_dir / "eval.csv").read_text() == before
    forced = floq_main("run", *smoke, "--bind", "TRAIN_STEPS=60", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.loads((run_dir / "run.json").read_text())["step"] == 60


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_checkpoints_and_exits_within_seconds(tmp_path, smoke_dataset):
    """Chunks of up to 100k steps: the loop still sizes its calls to ~max_chunk_seconds, so a
    SIGTERM is honoured within seconds, with a checkpoint at the step reached."""
    run_dir = tmp_path / "preempted"
    args = ["gin/experiments/smoke.gin", "--bind", "TRAIN_STEPS=1000000", "--bind", "CHUNK_SIZE=100000",
            "--bind", "EVAL_INTERVAL=0", "--bind", "LOG_INTERVAL=0", "--bind", "CHECKPOINT_INTERVAL=0",
            "--bind", "Trainer.max_chunk_seconds=0.5", "--run-dir", str(run_dir)]
    proc = subprocess.Popen([sys.executable, "-m", "floq", "run", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    # Wait until training is under way (config.gin is written after the first call).
    deadline = time.time() + 300
    while not (run_dir / "config.gin").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(2.0)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    latency = time.time() - t0
    assert proc.returncode == 143, err[-2000:]
    assert latency < 10, latency
    man = json.loads((run_dir / "run.json").read_text())
    assert man["status"] == "preempted" and "SIGTERM" in man["reason"]
    steps = [int(p.name[5:]) for p in (run_dir / "checkpoints").iterdir() if p.is_dir() and p.name.startswith("step_")]
    assert steps and 0 < max(steps) < 1_000_000
