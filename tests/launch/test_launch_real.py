"""Real sweeps: `floq run` trains tiny smoke runs (about 30 s each on a 2-core CPU).

To stay fast these use a 2-run grid on top of gin/experiments/sweep_smoke.gin
(CRITIC_FLOW_STEPS x TASK_ID = [1, 2] x [1], seed 0); the full 2 x 2 x 2 grid runs with
the fake trainer in test_launch_local.py / test_launch_slurm.py / test_launch_ray.py.
"""

import csv
import json
import os
import subprocess
import sys

import pytest

from floq.launch import spec, sweep

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

SMOKE = os.path.join(spec.REPO_ROOT, "gin", "experiments", "sweep_smoke.gin")
NAMES = ["critic_flow_steps=1,task_id=1,seed=0", "critic_flow_steps=2,task_id=1,seed=0"]


def _trainer_available():
    try:
        import floq.train  # noqa: F401
    except ImportError:
        return False
    return os.path.isfile(SMOKE)


if not _trainer_available():
    pytest.skip("the trainer (floq.train) or sweep_smoke.gin is not here", allow_module_level=True)


def _write_sweep(tmp_path, name):
    path = tmp_path / f"{name}.gin"
    path.write_text(f"""include 'gin/experiments/sweep_smoke.gin'
TRAIN_STEPS = 100
EVAL_INTERVAL = 100
Sweep.name = '{name}'
Sweep.axes = {{'CRITIC_FLOW_STEPS': [1, 2], 'TASK_ID': [1]}}
Sweep.seeds = [0]
""")
    return str(path)


def _check(sweep_dir):
    with open(os.path.join(sweep_dir, "sweep.json")) as f:
        summary = json.load(f)
    assert [r["name"] for r in summary["runs"]] == NAMES
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 2, "failed": 0, "diverged": 0}, summary
    for name, steps in zip(NAMES, ("1", "2")):
        with open(os.path.join(sweep_dir, name, "eval.csv")) as f:
            rows = list(csv.DictReader(f))
        assert rows, name
        assert {
            "experiment",
            "run",
            "seed",
            "step",
            "success",
            "critic_flow_steps",
            "task_id",
        } <= set(rows[0])
        assert {(r["critic_flow_steps"], r["task_id"], r["seed"]) for r in rows} == {
            (steps, "1", "0")
        }
        assert rows[0]["experiment"] == "sweep_smoke" and rows[0]["run"] == name
        with open(os.path.join(sweep_dir, name, "run.json")) as f:
            assert json.load(f)["status"] == "done"
    return summary


def _log_sizes(sweep_dir):
    return {n: os.path.getsize(os.path.join(sweep_dir, n, "log.txt")) for n in NAMES}


def test_real_local_sweep_via_cli(tmp_path):
    file = _write_sweep(tmp_path, "real_local")
    out = str(tmp_path / "out")
    cmd = [sys.executable, "-m", "floq", "sweep", file, "--out", out, "--workers", "2"]

    def floq_sweep(timeout):  # the real launcher: `python -m floq sweep` in a child process
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(tmp_path),
            env={**os.environ, "PYTHONPATH": spec.REPO_ROOT},
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert "sweep real_local finished: 2 done, 0 failed" in floq_sweep(400)
    sweep_dir = os.path.join(out, "real_local")
    _check(sweep_dir)
    sizes = _log_sizes(sweep_dir)
    # Re-running is a no-op: nothing is launched (the same command, in this process).
    from floq_test_utils import floq_main

    again = floq_main("sweep", file, "--out", out, "--workers", "2", cwd=str(tmp_path))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 runs, 2 done; 0 to run" in again.stdout
    assert _log_sizes(sweep_dir) == sizes


def test_real_submitit_local_sweep(tmp_path):
    pytest.importorskip("submitit")
    file = _write_sweep(tmp_path, "real_slurm")
    out = str(tmp_path / "out")
    summary = sweep.run_sweep(
        file, "slurm", out, cluster="local", time_min=15, gpus=0, echo=lambda _: None
    )
    assert summary["counts"]["done"] == 2, summary
    sweep_dir = os.path.join(out, "real_slurm")
    _check(sweep_dir)
    sizes = _log_sizes(sweep_dir)
    summary = sweep.run_sweep(
        file, "slurm", out, cluster="local", time_min=15, gpus=0, echo=lambda _: None
    )
    assert summary["counts"]["done"] == 2
    assert _log_sizes(sweep_dir) == sizes
