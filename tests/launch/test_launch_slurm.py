"""The Slurm launcher's code path (submitit jobs, Checkpointable requeue) on submitit's
local executor, with the fake trainer."""

import json
import os

import pytest

pytest.importorskip("submitit")

from floq.launch import sweep  # noqa: E402
from floq.launch.runner import Run  # noqa: E402
from floq.launch.slurm import RunJob, SlurmLauncher  # noqa: E402

FAILING = "critic_flow_steps=1,task_id=2,seed=0"


DIVERGING = "critic_flow_steps=2,task_id=1,seed=1"


def test_submitit_local_sweep(grid_file, parse, fake_runner, control, tmp_path):
    file = grid_file
    out = str(tmp_path / "out")
    control(fail=[FAILING], diverge=[DIVERGING])
    lines = []

    def run_sweep(**kw):
        return sweep.run_sweep(file, "slurm", out, runner=fake_runner, parse=parse, echo=lines.append,
                               cluster="local", time_min=5, gpus=0, **kw)

    summary = run_sweep()
    assert summary["launcher"] == "slurm"
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 6, "failed": 1, "diverged": 1}
    by_name = {r["name"]: r for r in summary["runs"]}
    assert by_name[FAILING]["reason"] == f"floq run: error: fake failure of {FAILING}"
    # The job raised (Slurm lists it FAILED); the start marker still says it diverged.
    assert by_name[DIVERGING]["state"] == "diverged"
    assert by_name[DIVERGING]["reason"] == "critic/loss is nan (seed 0) (step 2)"
    assert all(r["job_id"] for r in summary["runs"])  # one submitit job per run
    assert sum(" running (log: " in l for l in lines) == 8
    # --retry-failed: only the failed and the diverged run are submitted again, with the flag.
    control()
    summary = run_sweep(retry_failed=True)
    assert summary["counts"]["done"] == 8
    for run in summary["runs"]:
        with open(os.path.join(run["run_dir"], "invocations")) as f:
            calls = f.read().splitlines()
        retried = run["name"] in (FAILING, DIVERGING)
        assert len(calls) == (2 if retried else 1)
        assert calls[-1].endswith(" retry") == retried


def test_requeue_on_timeout_resumes(tmp_path, fake_runner, control):
    """The job is signalled before its time limit: checkpoint() stops the trainer, the job is
    requeued with a fresh RunJob, and the trainer resumes where it stopped."""
    control(steps=30, step_s=0.1)  # 3 s of "training"
    run = Run("r", (str(tmp_path / "x.gin"),), (), str(tmp_path / "r"))
    # Local time limit 6 s, signal 4 s before it: the first attempt is stopped at ~2 s.
    launcher = SlurmLauncher(
        cluster="local", time_min=0.1, signal_delay_s=4, gpus=0, runner=fake_runner
    )
    outcomes = launcher.launch([run], str(tmp_path / "state"))
    assert outcomes["r"].ok, outcomes["r"].reason
    with open(tmp_path / "r" / "invocations") as f:
        assert len(f.read().splitlines()) >= 2  # stopped and requeued (each attempt gets ~2 s)
    with open(tmp_path / "r" / "log.txt") as f:
        log = f.read()
    assert log.count("training 1/30") == 1  # later attempts resumed, never restarted
    assert "training 30/30" in log
    with open(tmp_path / "r" / "run.json") as f:
        assert json.load(f)["status"] == "done"


def test_checkpoint_returns_a_fresh_submission(tmp_path):
    job = RunJob(Run("r", ("a.gin",), ("X = 1",), str(tmp_path / "r")), None, str(tmp_path), "id")
    delayed = job.checkpoint()
    assert isinstance(delayed.function, RunJob) and delayed.function is not job
    assert delayed.function.run == job.run and delayed.function.launch_id == "id"


def test_no_slurm_is_one_line(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ValueError, match="no Slurm here"):
        SlurmLauncher()
