"""A run directory that holds a run of another configuration (a binding changed after an
interrupt): the dry run names it (which setting, old -> new), a real sweep refuses before
anything is built into a program or launched, and `floq sweep --force` moves the old run aside
as `floq run --force` does."""

from __future__ import annotations

import json
import os

from floq.cli import main
from floq.launch import sweep as sweep_lib
from floq.launch.base import Launcher
from floq.launch.runner import Outcome

SWEEP = "gin/experiments/sweep_smoke.gin"
ONE = ["--bind", "Sweep.seeds=[0]", "--bind", "Sweep.axes={'CRITIC_FLOW_STEPS': [1]}"]
NAME = "critic_flow_steps=1,seed=0"


def _old_run(out, bindings, status="preempted"):
    """The run directory of the sweep's one run, holding a run.json of the sweep file built with
    `bindings` (as floq run writes it: config_hash, config_fields, seeds, task)."""
    from floq.loop import config_fields, seedless_hash, spec_hash
    from floq.train import build

    exp = build([SWEEP], ["CRITIC_FLOW_STEPS = 1", "SEED = 0", *bindings])
    d = out / "sweep_smoke" / NAME
    d.mkdir(parents=True)
    fields = json.loads(json.dumps(config_fields(exp), default=repr))
    (d / "run.json").write_text(json.dumps({
        "status": status, "config_hash": spec_hash(exp), "config_fields": fields,
        "seedless_config_hash": seedless_hash(fields), "seeds": list(exp.trainer.seeds), "task_id": 1, "step": 100}))
    return d


def test_the_dry_run_names_the_changed_setting(tmp_path, capsys):
    out = tmp_path / "out"
    _old_run(out, ["BATCH_SIZE = 64"])
    assert main(["sweep", SWEEP, *ONE, "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    row = next(ln for ln in text.splitlines() if ln.strip().startswith(NAME))
    assert row.split()[1] == "conflict"  # not 'resume'
    assert "trainer.batch_size: 64 -> 32" in text
    assert "floq sweep --force moves them aside" in text


def test_a_real_sweep_refuses_before_launching_and_the_line_is_whole(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    d = _old_run(out, ["BATCH_SIZE = 64"])
    launched = []
    monkeypatch.setattr(sweep_lib, "make_launcher", lambda *a, **k: launched.append(a) or None)
    assert main(["sweep", SWEEP, *ONE, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.endswith("nothing was launched")  # never cut
    assert "trainer.batch_size: 64 -> 32" in err and "--force" in err
    assert launched == [] and sorted(os.listdir(d)) == ["run.json"]
    assert not (out / "sweep_smoke" / "sweep.json").exists()


def test_an_unchanged_run_is_no_conflict(tmp_path):
    out = tmp_path / "out"
    _old_run(out, [])
    plan = sweep_lib.expand(SWEEP, str(out), sweep_lib.default_parse, ONE[1::2])
    assert sweep_lib.config_conflicts(plan.runs) == {}


class _Recorder(Launcher):
    """Stands in for the launcher: records what it is given and reports it done."""

    name = "recorder"

    def __init__(self):
        super().__init__()
        self.runs = []

    def launch(self, runs, state_dir, on_state=None):
        self.runs += [r.name for r in runs]
        return {r.name: Outcome(True) for r in runs}


def test_force_moves_the_old_run_aside_before_launching(tmp_path):
    out = tmp_path / "out"
    d = _old_run(out, ["BATCH_SIZE = 64"], status="done")
    rec, lines = _Recorder(), []
    sweep_lib.run_sweep(SWEEP, rec, str(out), force=True, bindings=ONE[1::2], echo=lines.append)
    assert rec.runs == [NAME]  # a done run of other settings is not this sweep's result: trained anew
    moved = [n for n in os.listdir(out / "sweep_smoke") if n.startswith(NAME + ".replaced-")]
    assert len(moved) == 1 and not d.exists()
    assert json.loads((out / "sweep_smoke" / moved[0] / "run.json").read_text())["status"] == "done"
    assert any("moved it to" in ln and "trainer.batch_size: 64 -> 32" in ln for ln in lines)


def test_floq_runs_error_line_reaches_the_sweep_whole(tmp_path):
    """The sweep's 'failed: <reason>' line carries floq run's own error line uncut (its advice
    was cut mid-word at 300 characters)."""
    from floq.launch.runner import last_log_line

    line = ("floq run: error: " + "/very/long/path" * 40 + " holds a run with a different config (status done); "
            "give this run another --run-dir (or --out), or pass --force to move that run aside")
    log = tmp_path / "log.txt"
    log.write_text("training...\r 50%|#####\n" + line + "\n==== floq launch: exit code 2 after 3.0 s\n")
    assert len(line) > 600 and last_log_line(str(log)) == line
