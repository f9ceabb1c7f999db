"""`floq run X.gin` then `floq run X.gin --bind SEED=1` are two run directories; --force never
deletes (it moves the old run aside, and says where) and never touches a run a live trainer
holds; a clash is never answered with a destructive flag."""

from __future__ import annotations

import json
import os
import warnings

from floq import results
from floq.cli import main

SMOKE = "gin/experiments/smoke.gin"
QUICK = ["--bind", "TRAIN_STEPS=20", "--bind", "EVAL_INTERVAL=0", "--bind", "Trainer.progress=False"]


def _run(capsys, *args):
    code = main(["run", SMOKE, *QUICK, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _results_dir(stdout):
    return next(ln[len("results: "):] for ln in stdout.splitlines() if ln.startswith("results: "))


def _snapshot(run_dir):
    out = {}
    for dirpath, _, files in os.walk(run_dir):
        for f in files:
            if f != ".lock":
                path = os.path.join(dirpath, f)
                with open(path, "rb") as fh:
                    out[os.path.relpath(path, run_dir)] = fh.read()
    return out


def test_another_seed_is_another_run_directory(tmp_path, smoke_dataset, capsys):
    code, out0, _ = _run(capsys, "--out", str(tmp_path))
    assert code == 0
    code, out1, err = _run(capsys, "--out", str(tmp_path), "--bind", "SEED=1")
    assert code == 0, err
    d0, d1 = _results_dir(out0), _results_dir(out1)
    assert d0 != d1 and d0.endswith("_seed=0") and d1.endswith("_seed=1")
    assert json.loads(open(os.path.join(d0, "run.json")).read())["seeds"] == [0]
    assert json.loads(open(os.path.join(d1, "run.json")).read())["status"] == "done"
    # The same seed again is that run: already done.
    code, out, _ = _run(capsys, "--out", str(tmp_path), "--bind", "SEED=0")
    assert code == 0 and "already done" in out and _results_dir(out) == d0


def test_a_directory_named_before_names_held_the_seed_is_still_that_run(tmp_path, smoke_dataset, capsys):
    legacy = tmp_path / "smoke" / "monolithic_cube-single-play_task1"
    assert _run(capsys, "--run-dir", str(legacy))[0] == 0
    code, out, _ = _run(capsys, "--out", str(tmp_path))
    assert code == 0 and "already done" in out and _results_dir(out) == str(legacy)


def test_force_moves_the_old_run_aside(tmp_path, smoke_dataset, capsys):
    run_dir = tmp_path / "r"
    assert _run(capsys, "--run-dir", str(run_dir))[0] == 0
    before = _snapshot(run_dir)
    # another config, whose program is the first one's (nothing to compile): more evaluation episodes
    code, _, err = _run(capsys, "--run-dir", str(run_dir), "--bind", "EVAL_EPISODES=3")
    assert code == 2 and "different config" in err
    assert "--force to move that run aside" in err and "start it over" not in err
    assert _snapshot(run_dir) == before
    code, _, err = _run(capsys, "--run-dir", str(run_dir), "--bind", "EVAL_EPISODES=3", "--force")
    assert code == 0, err
    aside = [p for p in os.listdir(tmp_path) if p.startswith("r.replaced-")]
    assert len(aside) == 1 and f"moved it to {tmp_path / aside[0]}" in err
    assert _snapshot(tmp_path / aside[0]) == before  # nothing deleted, nothing changed
    assert json.loads((run_dir / "run.json").read_text())["protocol"]["eval_episodes"] == 3
    # The analysis reads the new run, not the one moved aside (and says so).
    from analysis.load import load_results

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load_results(tmp_path)
    assert set(df["run_dir"]) == {"r"}
    assert any("moved aside" in str(w.message) for w in caught)


def test_force_never_touches_a_run_a_live_trainer_holds(tmp_path, smoke_dataset, capsys):
    run_dir = tmp_path / "r"
    assert _run(capsys, "--run-dir", str(run_dir))[0] == 0
    before = _snapshot(run_dir)
    with results.RunLock(str(run_dir)):  # a trainer at work in that directory
        code, _, err = _run(capsys, "--run-dir", str(run_dir), "--bind", "BATCH_SIZE=64", "--force")
    assert code == 1 and "is being trained by" in err, err
    assert _snapshot(run_dir) == before
    assert not [p for p in os.listdir(tmp_path) if ".replaced-" in p]
