"""Shared test fixtures: a cached tiny dataset and a subprocess runner for `floq`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(REPO, ".floq_cache")

# Generated test data and compiled programs are cached across sessions (both are pure
# functions of their inputs), which keeps the suite fast on a 2-core machine.
os.environ.setdefault("FLOQ_DATA_DIR", os.path.join(CACHE, "test-data"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(CACHE, "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def floq_cmd(*args, cwd=REPO, timeout=600, env=None):
    """Run `python -m floq ...`; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "floq", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture(scope="session")
def smoke_dataset():
    """The smoke experiment's generated dataset (made once, then cached)."""
    from floq.train import build

    exp = build(["gin/experiments/smoke.gin"])
    return exp.task.resolve_path(progress=False)
