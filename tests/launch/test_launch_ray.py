"""The Ray launcher on a local Ray instance the test starts and stops, with the fake trainer."""

import os

import pytest

ray = pytest.importorskip("ray")

from floq.launch import sweep  # noqa: E402

GRID = """
Sweep.name = 'grid'
Sweep.axes = {'CRITIC_FLOW_STEPS': [1, 2], 'TASK_ID': [1, 2]}
Sweep.seeds = [0, 1]
"""
FAILING = "critic_flow_steps=2,task_id=2,seed=0"


@pytest.fixture
def local_ray(control, monkeypatch):  # control first: Ray's workers inherit its env variable
    del control
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway local instance
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_sweep(fake_base, parse, fake_runner, control, local_ray, tmp_path):
    del local_ray
    file = fake_base(GRID)
    out = str(tmp_path / "out")
    control(fail=[FAILING])
    lines = []
    summary = sweep.run_sweep(file, "ray", out, runner=fake_runner, parse=parse, echo=lines.append)
    assert summary["launcher"] == "ray"
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 7, "failed": 1}
    by_name = {r["name"]: r for r in summary["runs"]}
    assert by_name[FAILING]["reason"] == f"floq run: error: fake failure of {FAILING}"
    assert all(r["task_id"] for r in summary["runs"])
    assert sum(" running (log: " in l for l in lines) == 8
    assert ray.is_initialized()  # the test's instance is left running for the test to stop
    # Again: nothing to do (done runs are skipped, the failure is kept).
    summary = sweep.run_sweep(file, "ray", out, runner=fake_runner, parse=parse, echo=lines.append)
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 7, "failed": 1}
    for run in summary["runs"]:
        with open(os.path.join(run["run_dir"], "invocations")) as f:
            assert len(f.read().splitlines()) == 1
