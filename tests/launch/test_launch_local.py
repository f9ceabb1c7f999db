"""The sweep driver with the local launcher and a fake trainer (no training).

Exercises: skip-done, resume, failure isolation, sweep.json states, --retry-failed,
--dry-run with and without benchmark figures, one GPU per worker, the CLI.
"""

import csv
import dataclasses
import json
import os
import threading
import time

import pytest

from floq.launch import runner as runner_lib
from floq.launch import sweep
from floq.launch.local import LocalLauncher
from floq.launch.runner import Run

FAILING = "critic_flow_steps=2,task_id=1,seed=1"


def _invocations(run_dir):
    path = os.path.join(run_dir, "invocations")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


def _sweep_json(out):
    with open(os.path.join(out, "grid", "sweep.json")) as f:
        return json.load(f)


def test_fake_sweep_skip_failure_retry(grid_file, parse, fake_runner, control, tmp_path):
    file = grid_file
    out = str(tmp_path / "out")
    control(fail=[FAILING])
    lines = []
    summary = sweep.run_sweep(
        file, "local", out, runner=fake_runner, parse=parse, echo=lines.append, workers=2
    )

    # One failing run never stops the others.
    states = {r["name"]: r["state"] for r in summary["runs"]}
    assert states.pop(FAILING) == "failed"
    assert set(states.values()) == {"done"}
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 7, "failed": 1, "diverged": 0}
    recorded = _sweep_json(out)
    assert recorded["counts"] == summary["counts"]
    failed = next(r for r in recorded["runs"] if r["name"] == FAILING)
    assert failed["reason"] == f"floq run: error: fake failure of {FAILING}"
    assert failed["attempts"] == 1
    assert failed["log"] == os.path.join(out, "grid", FAILING, "log.txt")

    # Runs saw themselves as 'running' in sweep.json while they trained.
    for run in recorded["runs"]:
        with open(os.path.join(run["run_dir"], "seen_state")) as f:
            assert f.read() == "running"
    # Progress: one line per state change, with counts and the log path.
    assert any(
        f"{FAILING} failed: floq run: error: fake failure" in l and "log.txt" in l for l in lines
    )
    assert sum(" running (log: " in l for l in lines) == 8
    # Each run's end says what is left, as floq status computes it; the last says nothing is.
    ends = [l for l in lines if l.startswith("[grid]") and (" done |" in l or " failed: " in l)]
    assert len(ends) == 8 and all(" | ETA " in l or "nothing left to train" in l for l in ends), ends
    assert "nothing left to train" in ends[-1]
    assert lines[-1].startswith("sweep grid finished: 7 done, 1 failed")
    # It ends with what ran (floq run's results table), where, and what to run next.
    grid = os.path.join(out, "grid")
    table = next(i for i, l in enumerate(lines) if l.startswith("run ") and "success" in l)
    assert sum(1 for l in lines[table].splitlines()) >= 9  # header, rule, a row per run.json
    assert f"next: floq analyze {sweep._rel(grid)} --out " in lines[-1]
    assert any(l.startswith(f"runs: {sweep._rel(grid)}/<run>/") and "floq status" in l
               for l in lines)
    assert any("--retry-failed" in l and l.startswith("run the failed") for l in lines)

    # eval.csv: a column per swept tag; log.txt per run.
    with open(os.path.join(out, "grid", "critic_flow_steps=1,task_id=2,seed=1", "eval.csv")) as f:
        row = next(csv.DictReader(f))
    assert (row["critic_flow_steps"], row["task_id"], row["seed"]) == ("1", "2", "1")
    assert os.path.getsize(os.path.join(out, "grid", FAILING, "log.txt")) > 0

    # Again: done runs are skipped, the failed one stays failed (no --retry-failed).
    summary = sweep.run_sweep(
        file, "local", out, runner=fake_runner, parse=parse, echo=lines.append, workers=2
    )
    assert summary["counts"]["failed"] == 1
    assert all(len(_invocations(r["run_dir"])) == 1 for r in summary["runs"])

    # --retry-failed re-runs just that one.
    control()
    summary = sweep.run_sweep(
        file,
        "local",
        out,
        runner=fake_runner,
        parse=parse,
        echo=lines.append,
        workers=2,
        retry_failed=True,
    )
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 8, "failed": 0, "diverged": 0}
    counts = {r["name"]: len(_invocations(r["run_dir"])) for r in summary["runs"]}
    assert counts.pop(FAILING) == 2
    assert set(counts.values()) == {1}
    entry = next(r for r in _sweep_json(out)["runs"] if r["name"] == FAILING)
    assert (entry["state"], entry["reason"], entry["attempts"]) == ("done", None, 2)


DIVERGING = "critic_flow_steps=1,task_id=2,seed=0"


def test_run_command_carries_retry_failed(tmp_path):
    run = Run("r", ("a.gin",), ("X = 1",), str(tmp_path / "r"), {"x": 1})
    assert run.command(["floq-run"]) == [
        "floq-run", "a.gin", "--bind", "X = 1", "--run-dir", str(tmp_path / "r"), "--tag", "x=1"]
    retry = dataclasses.replace(run, retry_failed=True)
    assert retry.command(["floq-run"]) == run.command(["floq-run"]) + ["--retry-failed"]
    assert retry.command()[-1] == "--retry-failed"  # with the default `python -m floq run` too


def test_diverged_runs_count_apart_and_retry_with_the_flag(
    grid_file, parse, fake_runner, control, tmp_path
):
    """A run that diverges is 'diverged' (never done, not a failure); it is not launched again
    until --retry-failed, which reaches its `floq run` (the fake trainer, like floq's, refuses
    a diverged run without it)."""
    file = grid_file
    out = str(tmp_path / "out")
    sweep_dir = os.path.join(out, "grid")
    control(fail=[FAILING], diverge=[DIVERGING])
    lines = []

    def run_sweep(**kw):
        return sweep.run_sweep(
            file, "local", out, runner=fake_runner, parse=parse, echo=lines.append, workers=2, **kw
        )

    summary = run_sweep()
    expected = {"pending": 0, "running": 0, "done": 6, "failed": 1, "diverged": 1}
    assert summary["counts"] == expected
    entry = {r["name"]: r for r in summary["runs"]}[DIVERGING]
    assert (entry["state"], entry["reason"]) == ("diverged", "critic/loss is nan (seed 0) (step 2)")
    assert any(f"{DIVERGING} diverged: critic/loss is nan" in l for l in lines)
    assert lines[-1].startswith("sweep grid finished: 6 done, 1 failed, 1 diverged (")
    assert _invocations(entry["run_dir"])[0].split()[2:] == []  # no --retry-failed yet

    # Again: nothing is launched; the driver says why.
    lines.clear()
    summary = run_sweep()
    assert summary["counts"] == expected
    assert "1 failed, 1 diverged before (--retry-failed runs them again)" in lines[0]
    assert all(len(_invocations(r["run_dir"])) == 1 for r in summary["runs"])

    # Without sweep.json, run.json alone keeps the diverged run from being launched.
    os.unlink(os.path.join(sweep_dir, "sweep.json"))
    lines.clear()
    sweep.run_sweep(file, out_dir=out, dry_run=True, parse=parse, echo=lines.append, estimate=False)
    assert any(l.split()[:2] == [DIVERGING, "diverged"] for l in lines)
    assert lines[-1] == "8 runs: 6 done, 1 diverged (not retried without --retry-failed), 1 to run"

    # --retry-failed: both launched again, each with `floq run --retry-failed`.
    control()
    lines.clear()
    summary = run_sweep(retry_failed=True)
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 8, "failed": 0, "diverged": 0}
    for name in (DIVERGING, FAILING):
        calls = _invocations(os.path.join(sweep_dir, name))
        assert len(calls) == 2 and calls[-1].split()[2:] == ["retry"]
        with open(os.path.join(sweep_dir, name, "log.txt")) as f:
            launched = [l for l in f if l.startswith(runner_lib.LOG_MARK) and "--run-dir" in l]
        assert launched[-1].rstrip().endswith("--retry-failed")
    with open(os.path.join(sweep_dir, DIVERGING, "run.json")) as f:
        assert json.load(f)["status"] == "done"
    done = [r["name"] for r in summary["runs"] if r["name"] not in (DIVERGING, FAILING)]
    assert all(len(_invocations(os.path.join(sweep_dir, n))) == 1 for n in done)  # not re-run


def test_unfinished_runs_resume(fake_base, parse, fake_runner, control, tmp_path):
    """A run interrupted earlier (run.json 'running', progress saved) resumes."""
    file = fake_base("Sweep.seeds = [0, 1]")
    out = str(tmp_path / "out")
    control(steps=4)
    partial = os.path.join(out, "sweep", "seed=1")
    os.makedirs(partial)
    with open(os.path.join(partial, "run.json"), "w") as f:
        json.dump({"status": "running"}, f)
    with open(os.path.join(partial, "progress"), "w") as f:
        f.write("3")
    summary = sweep.run_sweep(
        file, "local", out, runner=fake_runner, parse=parse, echo=lambda _: None
    )
    assert summary["counts"]["done"] == 2
    with open(os.path.join(partial, "log.txt")) as f:
        log = f.read()
    assert "training 4/4" in log and "training 1/4" not in log  # resumed at step 3


def test_dry_run_lists_and_estimates(grid_file, parse, tmp_path):
    file = grid_file
    out = str(tmp_path / "out")
    lines = []
    summary = sweep.run_sweep(
        file,
        out_dir=out,
        dry_run=True,
        parse=parse,
        echo=lines.append,
        bench_dir=str(tmp_path / "no_bench"),
    )
    assert len(summary["runs"]) == 8
    assert lines[0].startswith("sweep grid: 8 runs from ")
    assert "critic_flow_steps=1,task_id=1,seed=0" in lines[1] and "new" in lines[1]
    assert "CRITIC_FLOW_STEPS = 1; TASK_ID = 1; SEED = 0" in lines[1]
    assert lines[-2] == "8 runs: 0 done, 8 to run"
    assert lines[-1] == "estimated GPU-hours: unknown (run floq bench)"
    assert not os.path.exists(out)  # a dry run writes nothing

    # With `floq bench` figures: TRAIN_STEPS (100) / updates_per_s per critic_flow_steps.
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "bench.csv").write_text(
        "critic,critic_flow_steps,critic_width,device,updates_per_s\n"
        "floq,1,8,cpu,0.1\n"
        "floq,1,8,gpu: NVIDIA H100,0.01\n"
        "floq,2,8,gpu: NVIDIA H100,0.02\n"
        "floq,4,512,gpu: NVIDIA H100,99\n"
    )
    lines.clear()
    sweep.run_sweep(
        file, out_dir=out, dry_run=True, parse=parse, echo=lines.append, bench_dir=str(bench)
    )
    # 4 runs at 100 / 0.01 s and 4 at 100 / 0.02 s: (40000 + 20000) / 3600 h.
    assert lines[-1].startswith(f"estimated GPU-hours: {60000 / 3600:.2f} (training updates")
    assert "bench.csv on gpu: NVIDIA H100" in lines[-1]

    (bench / "bench.csv").write_text("critic_flow_steps,updates_per_s\n1,0.01\n")
    lines.clear()
    sweep.run_sweep(
        file, out_dir=out, dry_run=True, parse=parse, echo=lines.append, bench_dir=str(bench)
    )
    assert lines[-1].startswith(
        f"estimated GPU-hours: at least {40000 / 3600:.2f} (4 of 8 runs unknown: run floq bench)"
    )


def test_one_gpu_per_worker(tmp_path, fake_runner, control):
    control(step_s=0.3)
    launcher = LocalLauncher(workers=2, gpus=["3", "5"], runner=fake_runner)
    assert launcher.worker_env(0) == {"CUDA_VISIBLE_DEVICES": "3"}
    assert launcher.worker_env(1) == {"CUDA_VISIBLE_DEVICES": "5"}
    runs = [Run(f"r{i}", (str(tmp_path / "x.gin"),), (), str(tmp_path / f"r{i}")) for i in range(2)]
    outcomes = launcher.launch(runs, str(tmp_path / "state"))
    assert all(o.ok for o in outcomes.values())
    gpus = sorted(_invocations(str(tmp_path / f"r{i}"))[0].split()[1] for i in range(2))
    assert gpus == ["3", "5"]  # two runs at once: one on each GPU
    shared = LocalLauncher(workers=3, gpus=["0"], runner=fake_runner)
    assert shared.worker_env(2)["CUDA_VISIBLE_DEVICES"] == "0"
    assert LocalLauncher(gpus=[]).worker_env(0) == {}
    assert LocalLauncher(gpus=["0", "1"]).workers == 2


def test_a_run_never_trains_twice_at_once(tmp_path, fake_runner, control):
    control(steps=10, step_s=0.1)
    run = Run("r", (str(tmp_path / "x.gin"),), (), str(tmp_path / "r"))
    state_dir = str(tmp_path / "state")
    first = {}
    thread = threading.Thread(
        target=lambda: first.update(o=runner_lib.execute(run, fake_runner, state_dir, "a"))
    )
    thread.start()
    deadline = time.time() + 10
    while runner_lib.read_marker(state_dir, "r") is None and time.time() < deadline:
        time.sleep(0.02)
    second = runner_lib.execute(run, fake_runner, state_dir, "b")
    thread.join()
    assert first["o"].ok
    assert not second.ok and "already training" in second.reason


@pytest.fixture
def cli_env(monkeypatch, parse):
    monkeypatch.setattr(sweep, "default_parse", parse)


def test_cli_exit_codes(fake_base, fake_runner, control, tmp_path, capsys, cli_env):
    file = fake_base("Sweep.axes = {'TASK_ID': [1, 2]}")
    out = str(tmp_path / "out")
    runner = " ".join(fake_runner)
    control(fail=["task_id=2"])
    assert sweep.main([file, "--out", out, "--runner", runner, "--workers", "2"]) == 1
    printed = capsys.readouterr().out
    assert "task_id=2 failed: floq run: error: fake failure of task_id=2" in printed
    control()
    assert sweep.main([file, "--out", out, "--runner", runner, "--retry-failed"]) == 0
    assert sweep.main([file, "--out", out, "--dry-run"]) == 0
    assert "2 runs: 2 done, 0 to run" in capsys.readouterr().out
    bad = fake_base("Sweep.axes = {'TASK_ID': []}", name="bad.gin")
    assert sweep.main([bad, "--out", out]) == 2
    assert capsys.readouterr().err == "floq sweep: error: axis 'TASK_ID' has no values\n"
    assert sweep.main([file, "--workers", "0", "--out", out]) == 2
    assert capsys.readouterr().err == "floq sweep: error: --workers must be at least 1, got 0\n"


def test_one_driver_per_sweep(fake_base, parse, tmp_path):
    file = fake_base("")
    out = str(tmp_path / "out")
    with sweep._SweepLock(os.path.join(out, "sweep")):
        with pytest.raises(sweep.SweepError, match="already being run by pid"):
            sweep.run_sweep(file, "local", out, parse=parse, echo=lambda _: None)


def test_estimate_follows_the_swept_parameter(fake_base, parse, tmp_path):
    """A parameter axis fed by a macro in the file is matched by that macro's column."""
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "b.csv").write_text("critic_flow_steps,updates_per_s\n1,0.01\n4,1\n")
    file = fake_base("Sweep.axes = {'FakeCritic.flow_steps': [1], 'TRAIN_STEPS': [200]}")
    lines = []
    sweep.run_sweep(
        file,
        out_dir=str(tmp_path / "out"),
        dry_run=True,
        parse=parse,
        echo=lines.append,
        bench_dir=str(bench),
    )
    # 200 steps (the swept TRAIN_STEPS) at 0.01 updates/s (flow_steps 1, not the file's 4).
    assert lines[-1].startswith(f"estimated GPU-hours: {200 / 0.01 / 3600:.2f} ")
