"""Default run-directory names carry the algorithm (an IQL run of an experiment never lands in
its FQL run's folder); a directory named the older way that holds this very run is still that
run (resumed or done there); a clash's advice says what --force does to the analysis."""

from __future__ import annotations

import json
import os

import pytest

from floq.config import ConfigError
from floq.loop import Run

SMOKE = "gin/experiments/smoke.gin"


def _name(files, tmp_path):
    return os.path.basename(Run(files, out_dir=str(tmp_path)).run_dir)


@pytest.mark.parametrize("algo", ["iql", "rebrac", "ifql", "sac"])
def test_the_algorithm_leads_the_name(algo, tmp_path):
    fql = _name([SMOKE], tmp_path)
    other = _name([SMOKE, f"gin/algorithms/{algo}.gin"], tmp_path)
    assert fql == "monolithic_cube-single-play_task1_seed=0"  # FQL keeps the names it always had
    assert other == f"{algo}_monolithic_cube-single-play_task1_seed=0"


def test_a_run_under_its_older_name_is_still_found(tmp_path):
    files = [SMOKE, "gin/algorithms/iql.gin"]
    run = Run(files, out_dir=str(tmp_path))
    older = tmp_path / "smoke" / "monolithic_cube-single-play_task1_seed=0"
    older.mkdir(parents=True)
    (older / "run.json").write_text(json.dumps({"config_hash": run.config_hash, "status": "preempted"}))
    assert Run(files, out_dir=str(tmp_path)).run_dir == str(older)  # this very run: resumed there
    # ... but the FQL run of the experiment is not (another config): it gets its own name too
    (older / "run.json").write_text(json.dumps({"config_hash": "0" * 16, "status": "done"}))
    assert Run(files, out_dir=str(tmp_path)).run_dir.endswith("iql_monolithic_cube-single-play_task1_seed=0")


def test_a_clash_says_force_leaves_the_old_run_out_of_the_analysis(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"config_hash": "0" * 16, "status": "done"}))
    with pytest.raises(ConfigError, match=r"--force to move that run aside to r\.replaced-<time> "
                                          r"\(kept, but floq analyze then leaves it out\)"):
        Run([SMOKE], run_dir=str(d)).already_done()
