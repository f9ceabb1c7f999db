"""The Ray launcher on a local Ray instance the test starts and stops, with the fake trainer."""

import os

import pytest

ray = pytest.importorskip("ray")

from floq.launch import sweep  # noqa: E402

FAILING = "critic_flow_steps=2,task_id=2,seed=0"
DIVERGING = "critic_flow_steps=1,task_id=1,seed=1"


@pytest.fixture
def local_ray(control, monkeypatch):  # control first: Ray's workers inherit its env variable
    del control
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway local instance
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_sweep(grid_file, parse, fake_runner, control, local_ray, tmp_path):
    del local_ray
    file = grid_file
    out = str(tmp_path / "out")
    control(fail=[FAILING], diverge=[DIVERGING])
    lines = []
    summary = sweep.run_sweep(file, "ray", out, runner=fake_runner, parse=parse, echo=lines.append)
    assert summary["launcher"] == "ray"
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 6, "failed": 1, "diverged": 1}
    by_name = {r["name"]: r for r in summary["runs"]}
    assert by_name[FAILING]["reason"] == f"floq run: error: fake failure of {FAILING}"
    assert by_name[DIVERGING]["reason"] == "critic/loss is nan (seed 0) (step 2)"
    assert all(r["task_id"] for r in summary["runs"])
    assert sum(" running (log: " in l for l in lines) == 8
    assert ray.is_initialized()  # the test's instance is left running for the test to stop
    # Again: nothing to do (done runs are skipped, the failure and the divergence are kept).
    summary = sweep.run_sweep(file, "ray", out, runner=fake_runner, parse=parse, echo=lines.append)
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 6, "failed": 1, "diverged": 1}
    for run in summary["runs"]:
        with open(os.path.join(run["run_dir"], "invocations")) as f:
            assert len(f.read().splitlines()) == 1
    # --retry-failed: those two again, each with `floq run --retry-failed`.
    control()
    summary = sweep.run_sweep(file, "ray", out, runner=fake_runner, parse=parse, echo=lines.append,
                              retry_failed=True)
    assert summary["counts"]["done"] == 8
    for run in summary["runs"]:
        with open(os.path.join(run["run_dir"], "invocations")) as f:
            calls = f.read().splitlines()
        retried = run["name"] in (FAILING, DIVERGING)
        assert len(calls) == (2 if retried else 1) and calls[-1].endswith(" retry") == retried
