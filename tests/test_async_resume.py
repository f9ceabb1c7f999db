"""The SIGKILL / resume guarantee holds for asynchronous evaluation too: a run with
`Trainer.async_eval=True` and one evaluation worker, killed while an evaluation is pending
(submitted, recorded as pending in the checkpoint, its row not yet written), resumes to the
same eval.csv, train.csv (but the clock columns) and final parameters as an uninterrupted
run with synchronous evaluation (so the eval.csv rows are the same with asynchronous evaluation
on and off)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from floq_test_utils import REPO, RESUME_ARGS, floq_main
from test_seeds_and_resume import _csvs, _final_params

ASYNC = ["--bind", "Trainer.async_eval=True", "--bind", "Trainer.eval_workers=1"]
# Evaluations at 0, 100, 200, 300; checkpoints every 50 steps. The checkpoint at 200 is written
# right after the evaluation at 200 is submitted, so it records it as pending; the kill there
# leaves eval.csv with rows 0 and 100 only. 100 is a fallback should 200 miss the window.
PENDING_AT = (200, 100)


def _eval_steps(run_dir):
    path = run_dir / "eval.csv"
    if not path.exists():
        return []
    try:
        return pd.read_csv(path)["step"].tolist()
    except (pd.errors.EmptyDataError, KeyError):
        return []


def _kill_while_pending(run_dir, step, deadline_s=240):
    """Start the async run; SIGKILL it as soon as the checkpoint at `step` records the
    evaluation at `step` as pending. Returns True when, at the kill, that evaluation's row
    was not written yet (the kill really interrupted a pending evaluation)."""
    proc = subprocess.Popen([sys.executable, "-m", "floq", "run", *RESUME_ARGS, *ASYNC, "--run-dir", str(run_dir)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sidecar = run_dir / "checkpoints" / f"step_{step}.json"
    deadline = time.time() + deadline_s
    pending = False
    try:
        while proc.poll() is None and time.time() < deadline:
            if sidecar.exists():
                try:
                    meta = json.loads(sidecar.read_text())
                except (OSError, ValueError):  # being written
                    time.sleep(0.005)
                    continue
                pending = step in meta.get("pending_evals", [])
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return pending and step not in _eval_steps(run_dir)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkill_with_pending_async_eval_resumes_identically(tmp_path, resume_reference):
    """The reference is the uninterrupted run with synchronous in-process evaluation
    (conftest.resume_reference): the killed-and-resumed asynchronous run must equal it, which
    also proves asynchronous evaluation on and off give the same rows."""
    ref_dir = resume_reference
    assert json.loads((ref_dir / "run.json").read_text())["eval"]["async"] is False
    ref_params = _final_params(ref_dir)
    ref_ev, ref_tr = _csvs(ref_dir)
    assert sorted(set(ref_ev["step"])) == [0, 100, 200, 300] and len(ref_tr) == 2 * 6

    interrupted = []
    for step in PENDING_AT:
        run_dir = tmp_path / f"killed_pending_{step}"
        interrupted.append(_kill_while_pending(run_dir, step))
        res = floq_main("run", *RESUME_ARGS, *ASYNC, "--run-dir", str(run_dir))
        assert res.returncode == 0, res.stderr[-2000:]
        man = json.loads((run_dir / "run.json").read_text())
        assert man["status"] == "done"
        assert man["eval"]["async"] is True and man["eval"]["workers"] == 1
        params = _final_params(run_dir)
        assert params.keys() == ref_params.keys()
        for k in ref_params:
            assert np.array_equal(params[k], ref_params[k]), f"kill with eval {step} pending: {k} differs"
        ev, tr = _csvs(run_dir)
        pd.testing.assert_frame_equal(ev, ref_ev, obj=f"eval.csv, killed with eval {step} pending")
        pd.testing.assert_frame_equal(tr, ref_tr, obj=f"train.csv, killed with eval {step} pending")
        if interrupted[-1]:
            break
    # The test means something only if a kill hit a pending evaluation.
    assert any(interrupted), interrupted
