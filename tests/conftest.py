"""Shared test fixtures: caches for generated data and compiled programs (outside the clone),
the smoke dataset, and the runs that many tests read (trained once per session)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from floq_test_utils import jax_cache_dir, test_data_dir  # noqa: E402

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


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SUBPROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.subprocess)


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


SMOKE_RUN_ARGS = ["gin/experiments/smoke.gin", "--bind", "TRAIN_STEPS=100", "--bind", "EVAL_INTERVAL=50"]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, smoke_dataset):
    """A finished smoke run (monolithic critic, one seed, 100 steps, evaluations at 0, 50, 100),
    trained once per session in this process: (run_dir, CompletedProcess of `floq run`). Read
    it freely; a test that changes it works on a copy (floq_test_utils.copy_run)."""
    from floq_test_utils import REPO, floq_main

    out = tmp_path_factory.mktemp("smoke_runs")
    # the gin file by its absolute path, as a clone elsewhere would pass it (run.json records it
    # relative to the repository)
    res = floq_main("run", os.path.join(REPO, SMOKE_RUN_ARGS[0]), *SMOKE_RUN_ARGS[1:], "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    # The run directory's name depends on the bindings (the default naming): the one run there.
    (run_dir,) = [p for p in (out / "smoke").iterdir() if p.is_dir()]
    return run_dir, res


@pytest.fixture(scope="session")
def resume_reference(tmp_path_factory, smoke_dataset):
    """The uninterrupted run of floq_test_utils.RESUME_ARGS (synchronous in-process evaluation), trained once
    per session in this process."""
    from floq_test_utils import RESUME_ARGS, floq_main

    run_dir = tmp_path_factory.mktemp("resume") / "uninterrupted"
    res = floq_main("run", *RESUME_ARGS, "--run-dir", str(run_dir))
    assert res.returncode == 0, res.stderr[-2000:]
    return run_dir
