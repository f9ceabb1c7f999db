"""A resume continues only what its checkpoint saw: the CSV rows it committed and the same
dataset bytes. A lost or truncated eval.csv, or a dataset file replaced between a kill and
the re-run, is one line and nothing changed (not a 'done' run with evaluations missing, nor
training resumed on other data)."""

from __future__ import annotations

import json
import shutil

import numpy as np

from floq.cli import main

SMOKE = "gin/experiments/smoke.gin"


def _interrupted_run(tmp_path, capsys, *binds):
    """A run checkpointed at step 100 of 200, as a kill leaves it (status preempted)."""
    run_dir = tmp_path / "run"
    args = ["run", SMOKE, "--bind", "Trainer.progress=False", *binds, "--run-dir", str(run_dir)]
    # Trained to the end, then rolled back to the step-100 checkpoint as a kill leaves it.
    assert main(args) == 0
    man = json.loads((run_dir / "run.json").read_text())
    side = json.loads((run_dir / "checkpoints" / "step_100.json").read_text())
    shutil.rmtree(run_dir / "checkpoints" / "step_200")
    (run_dir / "checkpoints" / "step_200.json").unlink()
    man.update(status="preempted", step=100)
    (run_dir / "run.json").write_text(json.dumps(man))
    capsys.readouterr()
    return args, run_dir, side


def test_a_resume_refuses_an_eval_csv_that_lost_rows(tmp_path, smoke_dataset, capsys):
    args, run_dir, side = _interrupted_run(tmp_path, capsys)
    assert side["eval_rows"] == 2  # steps 0 and 100
    lines = (run_dir / "eval.csv").read_text().splitlines()
    (run_dir / "eval.csv").write_text("\n".join(lines[:2]) + "\n")  # header and the step-0 row
    before = (run_dir / "eval.csv").read_text()
    assert main(args) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "eval.csv in" in err[0] and "has 1 row(s) but the checkpoint at step 100" in err[0]
    assert (run_dir / "eval.csv").read_text() == before
    assert json.loads((run_dir / "run.json").read_text())["status"] == "preempted"


def test_a_resume_refuses_a_replaced_dataset(tmp_path, smoke_dataset, capsys):
    data = tmp_path / "data.npz"
    shutil.copy(smoke_dataset, data)
    shutil.copy(smoke_dataset.replace(".npz", "-val.npz"), tmp_path / "data-val.npz")
    args, run_dir, side = _interrupted_run(tmp_path, capsys, "--bind", f"DATASET_PATH='{data}'")
    assert str(data) in side["data_sha256"]
    with np.load(data) as f:  # same shapes, other content
        arrays = {k: f[k] for k in f.files}
    arrays["observations"] = arrays["observations"] + 0.5
    np.savez_compressed(data, **arrays)
    assert main(args) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "the dataset changed since" in err[0] and str(data) in err[0], err
    assert json.loads((run_dir / "run.json").read_text())["status"] == "preempted"
