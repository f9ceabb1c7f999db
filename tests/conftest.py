"""Shared test fixtures: caches for generated data and compiled programs (outside the clone),
the smoke dataset, and the runs that many tests read (trained once per session)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from floq_test_utils import honour_xdist_groups, jax_cache_dir, test_data_dir  # noqa: E402

# Generated test data and compiled programs are cached across sessions and clones (both are
# pure functions of their inputs, and the folders are keyed by what they depend on: see
# floq_test_utils). Set before JAX is imported; child processes inherit them.
os.environ["FLOQ_DATA_DIR"] = test_data_dir()
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = jax_cache_dir()
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


# Fixtures that start processes (fake trainers run as child processes, a local Ray instance):
# a test using one is marked `subprocess` (deselected by `make test-fast`).
SUBPROCESS_FIXTURES = {"fake_runner", "slow_trainer", "local_ray"}


# Fixtures that train a run end to end (the smoke data is asked for by tests that train on it;
# the session runs are trained once): a test using one is marked `slow`, so `make test-fast`
# keeps unit and in-process checks that do not train.
TRAINING_FIXTURES = {"smoke_dataset", "smoke_run", "resume_reference"}


@pytest.hookimpl(wrapper=True)  # marks before pytest-xdist reads them; ids fixed after it
def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SUBPROCESS_FIXTURES & fixtures:
            item.add_marker(pytest.mark.subprocess)
        if TRAINING_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        # `make test` hands tests to the workers one at a time (--dist loadgroup), so that the
        # long ones spread over both; a module whose tests share state (a module-scoped fixture,
        # or ONE_WORKER = True for a module-level cache) runs on one worker, built once.
        defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        if getattr(item.module, "ONE_WORKER", False) or any(
                d.scope == "module" for ds in defs.values() for d in ds):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    yield
    honour_xdist_groups(items)


@pytest.fixture(autouse=True)
def _no_gin_leak():
    """Clear gin after every test: a gin-configurable class constructed directly in a later test
    (FloqCritic(...)) would otherwise take unset arguments from an earlier test's bindings
    (e.g. Q_AGG = 'min' of an algorithm overlay)."""
    yield
    import gin

    gin.clear_config()


@pytest.fixture(scope="session")
def smoke_dataset():
    """The smoke experiment's generated dataset (made once, then cached)."""
    from floq.train import build

    exp = build(["gin/experiments/smoke.gin"])
    return exp.task.resolve_path(progress=False)


def _once_per_session(tmp_path_factory, name, make):
    """The folder `name`, filled by make(folder) once per test session — once across all
    pytest-xdist workers too (`make test` runs two): the first worker to ask builds it under a
    file lock in the folder the workers share; the others wait and then read it. A build that
    failed leaves no completion mark, so the next worker tries again (and fails the same way)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the basetemp every worker's own basetemp lives in
    folder, done = root / name, root / f"{name}.done"
    # a blocking flock, as floq.data.sources guards dataset generation (released if a worker dies)
    with open(root / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            make(folder)
            done.write_text("")
    return folder


SMOKE_RUN_ARGS = ["gin/experiments/smoke.gin", "--bind", "TRAIN_STEPS=100", "--bind", "EVAL_INTERVAL=50"]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, smoke_dataset):
    """A finished smoke run (monolithic critic, one seed, 100 steps, evaluations at 0, 50, 100),
    trained once per session, in-process: (run_dir, CompletedProcess of `floq run`). Read it
    freely; a test that changes it works on a copy (floq_test_utils.copy_run)."""
    from floq_test_utils import REPO, floq_main

    def make(out):
        # the gin file by its absolute path, as a clone elsewhere would pass it (run.json records
        # it relative to the repository)
        res = floq_main("run", os.path.join(REPO, SMOKE_RUN_ARGS[0]), *SMOKE_RUN_ARGS[1:], "--out", str(out / "runs"))
        assert res.returncode == 0, res.stderr[-2000:]
        (out / "result.json").write_text(json.dumps([res.args, res.returncode, res.stdout, res.stderr]))

    out = _once_per_session(tmp_path_factory, "smoke_runs", make)
    args, code, stdout, stderr = json.loads((out / "result.json").read_text())
    # The run directory's name depends on the bindings (the default naming): the one run there.
    (run_dir,) = [p for p in (out / "runs" / "smoke").iterdir() if p.is_dir()]
    return run_dir, subprocess.CompletedProcess(args, code, stdout, stderr)


@pytest.fixture(scope="session")
def resume_reference(tmp_path_factory, smoke_dataset):
    """The uninterrupted run of floq_test_utils.RESUME_ARGS (synchronous in-process evaluation),
    trained once per session, in-process."""
    from floq_test_utils import RESUME_ARGS, floq_main

    def make(out):
        res = floq_main("run", *RESUME_ARGS, "--run-dir", str(out / "uninterrupted"))
        assert res.returncode == 0, res.stderr[-2000:]

    return _once_per_session(tmp_path_factory, "resume", make) / "uninterrupted"
