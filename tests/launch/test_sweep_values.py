"""A sweep builds every configuration it would run before launching anything: a bad value
(TRAIN_STEPS=-5, an axis value TASK_ID 9) is one line, exit 2, in --dry-run and in a real
sweep, which then launches nothing (no run failing one after the other, no sweep.json that
marks them failed)."""

from __future__ import annotations

import os

from floq.cli import main

SWEEP = "gin/experiments/sweep_smoke.gin"


def _err(capsys):
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


def test_a_bad_bound_value_is_refused_by_the_dry_run(tmp_path, capsys):
    assert main(["sweep", SWEEP, "--bind", "TRAIN_STEPS=-5", "--dry-run", "--out", str(tmp_path)]) == 2
    line = _err(capsys)
    assert "do not build" in line and "Trainer.train_steps must be positive, got -5" in line
    assert "In call to configurable" not in line


def test_a_bad_axis_value_is_refused_by_the_dry_run(tmp_path, capsys):
    f = tmp_path / "sweep.gin"
    f.write_text(f"include '{SWEEP}'\nSweep.axes = {{'TASK_ID': [1, 9]}}\n")
    assert main(["sweep", str(f), "--dry-run", "--out", str(tmp_path / "out")]) == 2
    line = _err(capsys)
    assert "2 of 4 run(s) do not build" in line and "task_id=9" in line, line


def test_a_real_sweep_with_a_bad_value_launches_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", SWEEP, "--bind", "Sweep.seeds=[0]", "--bind", "TRAIN_STEPS=-5", "--out", str(out)]) == 2
    assert "nothing was launched" in _err(capsys)
    assert not os.path.exists(out / "sweep_smoke" / "sweep.json")
    assert not [d for d in (os.listdir(out / "sweep_smoke") if (out / "sweep_smoke").exists() else [])
                if not d.startswith(".")]
