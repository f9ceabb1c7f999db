"""After SIGKILL of a sweep driver its trainers run on (sessions of their own). Re-running the
sweep meanwhile must not launch a second trainer on a run a live trainer holds (its lock
refuses it, and the run was recorded 'failed' with a progress-bar line as the reason): the
run stays 'running', named as still trained by that pid. A failure's reason is floq run's own
error line even when a progress bar was redrawn after it."""

from __future__ import annotations

import json
import os

from floq import results
from floq.launch import runner, sweep


def test_a_run_still_trained_by_an_earlier_driver_is_not_launched_again(fake_base, parse, fake_runner, control,
                                                                         tmp_path):
    file = fake_base("Sweep.axes = {'TASK_ID': [1, 2]}")
    out = str(tmp_path / "out")
    held = os.path.join(out, "sweep", "task_id=1")
    lines = []
    with results.RunLock(held):  # the orphan trainer of a killed driver
        summary = sweep.run_sweep(file, "local", out, runner=fake_runner, parse=parse, echo=lines.append)
    runs = {r["name"]: r for r in summary["runs"]}
    assert runs["task_id=2"]["state"] == "done"
    assert runs["task_id=1"]["state"] == "running"
    assert runs["task_id=1"]["reason"] == f"still being trained by pid {os.getpid()} (started by an earlier floq sweep)"
    assert not os.path.exists(os.path.join(held, "log.txt"))  # never launched
    assert any("1 still running" in ln for ln in lines), lines
    recorded = json.loads(open(os.path.join(out, "sweep", "sweep.json")).read())
    assert recorded["counts"]["failed"] == 0
    # Once the trainer is gone, the next sweep launches it.
    summary = sweep.run_sweep(file, "local", out, runner=fake_runner, parse=parse, echo=lines.append)
    assert {r["name"]: r["state"] for r in summary["runs"]} == {"task_id=1": "done", "task_id=2": "done"}


def test_the_reason_is_the_error_line_not_a_progress_bar_redrawn_after_it(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("run:  10%|#         | 100/1000 [00:01<00:09]\rfloq run: error: /x is being trained by pid 7"
                   "\rrun:  27%|##6       | 16050/60000 [00:20<00:47, 921.84step/s, success=0.00]")
    assert runner.last_log_line(str(log)) == "floq run: error: /x is being trained by pid 7"
    log.write_text("step 1\nrun:  27%|##6 | 16050/60000\n")
    assert runner.last_log_line(str(log)) == "run:  27%|##6 | 16050/60000"
