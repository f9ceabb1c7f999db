"""Shared test fixtures: caches for generated data and compiled programs, the smoke dataset."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from floq_test_utils import CACHE  # noqa: E402

# Generated test data and compiled programs are cached across sessions (both are pure
# functions of their inputs), which keeps the suite fast on a 2-core machine.
os.environ.setdefault("FLOQ_DATA_DIR", os.path.join(CACHE, "test-data"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(CACHE, "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


@pytest.fixture(scope="session")
def smoke_dataset():
    """The smoke experiment's generated dataset (made once, then cached)."""
    from floq.train import build

    exp = build(["gin/experiments/smoke.gin"])
    return exp.task.resolve_path(progress=False)
