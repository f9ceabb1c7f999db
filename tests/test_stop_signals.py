"""A scheduler's stop or Ctrl-C reaches every process of the job, evaluation workers
included: the run must end 'preempted' (exit 143) with a checkpoint at the step reached, and
print no worker traceback. Workers ignore the stop signals; the trainer checkpoints without
waiting for evaluations still running (their policies go into the checkpoint)."""

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

from floq_test_utils import REPO, floq_main

ARGS = ["gin/experiments/smoke.gin", "--bind", "Trainer.eval_workers=1", "--bind", "TRAIN_STEPS=300",
        "--bind", "EVAL_EPISODES=4"]


def _signal_group_during_training(run_dir, sig):
    """`floq run ARGS` in a process group of its own (as a job under a scheduler or a shell
    is); `sig` goes to the whole group once the step-100 train.csv row is written (the
    evaluation worker is then starting or evaluating step 0). Returns (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "floq", "run", *ARGS, "--run-dir", str(run_dir)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    train = run_dir / "train.csv"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if train.exists() and len(train.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal"
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_sigterm_to_the_process_group_is_a_preemption_with_a_checkpoint(tmp_path, smoke_dataset):
    run_dir = tmp_path / "run"
    code, err = _signal_group_during_training(run_dir, signal.SIGTERM)
    assert code == 143, err[-3000:]
    man = json.loads((run_dir / "run.json").read_text())
    assert man["status"] == "preempted" and man["reason"].startswith("SIGTERM"), man.get("reason")
    step = int(man["reason"].split()[-1])
    assert step >= 100
    assert (run_dir / "checkpoints" / f"step_{step}.json").exists(), sorted(os.listdir(run_dir))
    assert f"checkpoint at step {step} kept" in err
    # Re-running (here in this process) resumes and finishes with every evaluation once.
    done = floq_main("run", *ARGS, "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"from step {step}" in done.stderr
    ev = pd.read_csv(run_dir / "eval.csv")
    assert list(ev.step) == [0, 100, 200, 300]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"


def test_ctrl_c_prints_no_worker_traceback(tmp_path, smoke_dataset):
    code, err = _signal_group_during_training(tmp_path / "run", signal.SIGINT)
    assert code == 143, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "preempted (SIGINT)" in err


def test_checkpoint_at_a_stop_holds_the_policies_of_pending_evaluations(tmp_path, smoke_dataset):
    """In-process: the step-0 evaluation is still pending at step 100 when the stop comes; the
    checkpoint at step 100 carries its policy, and a resume re-submits it with exactly those
    parameters."""
    from floq.loop import Run

    binds = ["TRAIN_STEPS=300", "Trainer.progress=False"]

    def fresh():
        run = Run(["gin/experiments/smoke.gin"], binds, run_dir=str(tmp_path / "run"))
        run.setup()
        run.async_eval = True  # in-process units run only when waited for: the evaluation stays pending
        os.makedirs(run.run_dir, exist_ok=True)
        run.open()
        run.resume()
        return run

    run = fresh()
    run.evaluate(0)
    policy0 = jax.tree_util.tree_map(np.array, run.eval_snapshots[0])
    while run.step < 100:
        run.step_chunk(100)
    run.log()
    assert run.evaluator.pending_steps() == [0]
    run.preempt_signal = signal.SIGTERM
    run._on_preempt()
    run.evaluator.close()
    side = json.loads((tmp_path / "run" / "checkpoints" / "step_100.json").read_text())
    assert side["pending_evals"] == [0] and side["pending_policies"] == [0]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "preempted"

    again = fresh()
    assert again.step == 100 and again.pending_resubmit == [0]
    restored = again.resubmit_policies[0]
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(policy0)):
        assert np.array_equal(np.asarray(a), b)
    # ...and the state is step 100's, not step 0's.
    now = jax.device_get(again.states["params"]["actor_onestep"])
    assert any(not np.array_equal(np.asarray(a), b) for a, b in
               zip(jax.tree_util.tree_leaves(now), jax.tree_util.tree_leaves(policy0["actor_onestep"])))


def test_sigterm_while_xla_compiles_exits_143_not_abort(tmp_path, smoke_dataset):
    """The update compiles in a thread (about 7 s here, with the compilation cache off);
    a SIGTERM then must end the process with 143, not abort it (SIGABRT, 134) while XLA is
    still compiling."""
    run_dir = tmp_path / "run"
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
    proc = subprocess.Popen([sys.executable, "-m", "floq", "run", "gin/experiments/smoke.gin", "gin/critics/floq.gin",
                             "--bind", "CRITIC_FLOW_STEPS=16", "--bind", "Trainer.progress=False",
                             "--run-dir", str(run_dir)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    ev = run_dir / "eval.csv"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:  # the step-0 evaluation comes just before compiling
        if ev.exists() and len(ev.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    time.sleep(2.0)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "terminate called" not in err
    man = json.loads((run_dir / "run.json").read_text())
    assert man["status"] == "preempted" and man["compile_s"] == 0.0  # stopped while compiling
