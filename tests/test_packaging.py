"""What pyproject.toml promises matches what floq needs (issue 25 item 7)."""

from __future__ import annotations

import os
import tomllib

from packaging.requirements import Requirement

from floq_test_utils import REPO


def _requirements() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return {r.name: r for r in map(Requirement, deps)}


def test_ogbench_requirement_admits_only_versions_floq_runs_on():
    # floq passes success_timing to every OGBench singletask env (floq.evaluate._make_env,
    # floq/data/sources.py); ogbench 1.2.0 introduced it and 1.1.x rejects the argument.
    spec = _requirements()["ogbench"].specifier
    assert not spec.contains("1.1.0") and not spec.contains("1.1.2")
    assert spec.contains("1.2.0") and spec.contains("1.2.2")
