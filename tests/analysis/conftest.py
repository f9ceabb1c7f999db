"""Fixtures of the analysis tests (helpers live in analysis_fixtures.py)."""

from pathlib import Path

import pytest

from analysis_fixtures import build_fixture, import_rliable


@pytest.fixture
def fixture_results(tmp_path) -> Path:
    """Fake run dirs: 2 envs x 2 tasks, monolithic and floq K=4 everywhere, K=8 on one."""
    return build_fixture(tmp_path / "results")


@pytest.fixture(scope="session")
def rliable():
    """``(rliable.library, rliable.metrics)``, or the test is skipped."""
    return import_rliable()
