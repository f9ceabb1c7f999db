"""floq status and the end-of-run summary table, on hand-made run directories."""

from __future__ import annotations

import csv
import json
import os
import time

import pytest

from floq import status
from floq.cli import main

NOW = time.time()
_LOCKS = []  # run locks held for the test's 'running' runs (a live trainer holds its run's lock)


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    while _LOCKS:
        _LOCKS.pop().release()


def hold(d):
    """Hold the run's lock as its trainer does (released after the test)."""
    from floq.results import RunLock

    _LOCKS.append(RunLock(str(d)).acquire())


def write_csv(path, rows):
    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def make_run(d, state="running", train_steps=100_000, train=(), evals=(), seeds=(0, 1), age_s=5.0,
             manifest_extra=None, live=None):
    """train: [(step, updates_per_s[, wall_time])], evals: [(step, [success per seed])]; a live run
    (default: state 'running') has its lock held, as by its trainer."""
    os.makedirs(d, exist_ok=True)
    if live if live is not None else state == "running":
        hold(d)
    if state is not None:
        man = {"experiment": "e", "run": os.path.basename(d), "status": state, "seeds": list(seeds),
               "critic": "floq", "protocol": {"train_steps": train_steps}, "step": 0,
               "params": {"total": 12345, "critic_total": 6789}, "flops_per_update": 2.5e9, "wall_time_s": 61.2}
        man.update(manifest_extra or {})
        with open(os.path.join(d, "run.json"), "w") as f:
            json.dump(man, f)
    if train:
        write_csv(os.path.join(d, "train.csv"), [
            {"experiment": "e", "run": "r", "seed": s, "step": t[0], "wall_time": t[2] if len(t) > 2 else 1.0,
             "updates_per_s": t[1], "critic/loss": 0.1} for t in train for s in seeds])
    if evals:
        write_csv(os.path.join(d, "eval.csv"), [
            {"experiment": "e", "seed": s, "step": st, "success": succ[i], "return": -10.0,
             "eval_episodes": 50, "train_steps": train_steps} for st, succ in evals for i, s in enumerate(seeds)])
    for f in ("run.json", "train.csv", "eval.csv"):
        p = os.path.join(d, f)
        if os.path.exists(p):
            os.utime(p, (NOW - age_s, NOW - age_s))
    return d


@pytest.fixture
def sweep_dir(tmp_path):
    sd = tmp_path / "out" / "grid"
    runs = {
        # wall clock: 600 s per 50k steps (0.012 s/step), 20 s setup + 40 s compilation
        "k=1,seed=0": dict(state="done", train=[(50_000, 90.0, 700.0), (100_000, 95.0, 1300.0)],
                           evals=[(0, [0.0, 0.0]), (100_000, [0.5, 0.3])],
                           manifest_extra={"updates_per_s": 93.0, "step": 100_000,
                                           "setup_s": 20.0, "compile_s": 40.0}),
        # 350 s per 25k steps: 0.014 s/step (evaluation included)
        "k=2,seed=0": dict(state="running", train=[(25_000, 80.0, 400.0), (50_000, 100.0, 750.0)],
                           evals=[(0, [0.0, 0.0]), (50_000, [0.2, 0.4])]),
        "k=4,seed=0": dict(state="running", train=[(10_000, 70.0)], age_s=3600.0, live=False),  # died: sweep says failed
        "k=8,seed=0": None,  # not started
    }
    entries = []
    for name, spec in runs.items():
        if spec is not None:
            make_run(str(sd / name), **spec)
        entries.append({"name": name, "run_dir": str(sd / name), "state": {"k=1,seed=0": "done",
                        "k=2,seed=0": "running", "k=4,seed=0": "failed", "k=8,seed=0": "pending"}[name],
                        "reason": "floq run: error: out of memory" if name == "k=4,seed=0" else None})
    with open(sd / "sweep.json", "w") as f:
        json.dump({"sweep": "grid", "launcher": "local", "runs": entries,
                   "counts": {"pending": 1, "running": 1, "done": 1, "failed": 1}}, f)
    return str(sd)


def rows_of(text):
    return {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith("k=")}


def test_sweep_status_and_eta(sweep_dir):
    groups = status.find_groups(sweep_dir)
    assert len(groups) == 1 and groups[0].sweep["sweep"] == "grid"
    by = {r.name: r for r in groups[0].runs}
    assert [r.status for r in groups[0].runs] == ["done", "running", "failed", "pending"]
    assert by["k=2,seed=0"].step == 50_000 and by["k=2,seed=0"].train_steps == 100_000
    assert by["k=2,seed=0"].last_success == pytest.approx(0.3) and by["k=2,seed=0"].last_eval_step == 50_000
    assert by["k=2,seed=0"].updates_per_s == 100.0  # the last logging point
    assert by["k=1,seed=0"].updates_per_s == 93.0  # run.json's median once done
    assert by["k=4,seed=0"].reason == "floq run: error: out of memory"

    e = status.eta(groups[0].runs, now=NOW)
    # Left: 50k of the running run + 100k of the absent one (the median train_steps); the failed
    # run is not counted. Time: the running run's own 0.014 s/step x 50k = 700 s; the absent
    # one must start and compile (60 s, the done run's) and train 100k at the median 0.013
    # s/step = 1360 s; one run trains at a time now: 2060 s. (Its 100 updates/s alone would
    # say 1500 s: compilation, evaluation and start-up left out.)
    assert e["remaining_steps"] == 150_000 and e["rate"] == 100.0
    assert e["eta_s"] == pytest.approx(2060.0) and not e["lower_bound"]
    assert e["total_steps"] == 400_000 and e["done_steps"] == 100_000 + 50_000 + 10_000

    text = status.group_text(groups[0], now=NOW)
    lines = rows_of(text)
    assert lines["k=1,seed=0"][1:4] == ["done", "100k/100k", "40%@100k"]
    assert lines["k=2,seed=0"][1:5] == ["running", "50k/100k", "30%@50k", "100.0"]
    assert lines["k=4,seed=0"][1:3] == ["failed:", "floq"]
    assert lines["k=8,seed=0"][1] == "pending"
    assert text.splitlines()[0].startswith("sweep grid (") and "launcher local" in text.splitlines()[0]
    assert text.splitlines()[-1] == (
        "4 runs: 1 done, 1 running, 1 pending, 1 failed | 160k of 400k steps | ETA 34m 20s "
        "(150k steps left; 0.013 s/step observed incl. evaluation; 1m 00s start-up + "
        "compilation per new run; 1 run training now)")


def test_eta_without_a_running_run_uses_one_run_at_a_time(tmp_path):
    root = tmp_path / "res"
    make_run(str(root / "a"), state="done", train=[(1000, 40.0)], train_steps=1000,
             manifest_extra={"updates_per_s": 40.0, "step": 1000})
    make_run(str(root / "b"), state="preempted", train=[(500, 60.0)], train_steps=1000)
    make_run(str(root / "c"), state="running", train=[(200, 500.0)], train_steps=1000, age_s=2 * status.STALE_S)
    runs = status.find_groups(str(root))[0].runs
    e = status.eta(runs, now=NOW)
    assert e["remaining_steps"] == 500 + 800
    assert e["rate"] == 60.0  # median of 40, 60, 500: the stale 'running' run is not running now
    # only training rates are known (no wall clock): each run's own, one at a time, a lower bound
    assert e["eta_s"] == pytest.approx(500 / 60.0 + 800 / 500.0) and e["lower_bound"]
    assert "one run at a time" in e["basis"] and "stalled" in e["basis"]
    text = status.group_text(status.find_groups(str(root))[0], now=NOW)
    assert "ETA >= " in text.splitlines()[-1]
    assert "nothing running" not in text and "none training now" not in text  # a 'running' row


def test_eta_is_unknown_while_nothing_has_a_speed(tmp_path):
    """A first run still compiling (no train.csv, no timings): the ETA is unknown, not 0 s."""
    root = tmp_path / "res"
    make_run(str(root / "a"), state="running", train_steps=1000)
    e = status.eta(status.find_groups(str(root))[0].runs, now=NOW)
    assert e["eta_s"] is None and e["active"] == 1
    last = status.group_text(status.find_groups(str(root))[0], now=NOW).splitlines()[-1]
    assert "ETA unknown (1k steps left; unknown: no run has measured its speed yet" in last
    assert "1 run training now" in last


def test_eta_uses_run_json_timings_and_parallel_runs(tmp_path):
    """Two runs training at once, speeds from run.json's times (train + evaluation +
    checkpoints per step), a new run pays the measured start-up and compilation."""
    root = tmp_path / "res"
    for name in ("a", "b"):
        make_run(str(root / name), state="running", train_steps=1000, manifest_extra={
            "step": 500, "train_s": 40.0, "eval_wait_s": 8.0, "checkpoint_s": 2.0,
            "setup_s": 5.0, "compile_s": 25.0})  # 0.1 s/step, 30 s start-up
    runs = status.find_groups(str(root))[0].runs
    e = status.eta(runs, now=NOW)
    assert [r.s_per_step for r in runs] == [pytest.approx(0.1)] * 2
    assert e["eta_s"] == pytest.approx((500 * 0.1 + 500 * 0.1) / 2)
    fresh = status.RunInfo(name="d", run_dir="", status="pending", train_steps=1000)
    e = status.eta(runs + [fresh], now=NOW)
    # (50 + 50 + 130) / 2 = 115 s of work for two workers, but the new run alone takes 130 s
    assert e["eta_s"] == pytest.approx(30 + 1000 * 0.1)


def test_folder_walk_finds_runs_and_sweeps(tmp_path, sweep_dir):
    root = str(tmp_path / "out")
    make_run(os.path.join(root, "exp", "run_a"), state="done", evals=[(0, [0.1, 0.1])])
    make_run(os.path.join(root, "exp", "run_b"), state="diverged", train=[(300, 10.0)])
    make_run(os.path.join(root, "exp", "run_c"), state=None, evals=[(0, [0.0, 0.0])])  # no run.json yet
    # A checkpoint folder's json is not a run; hidden folders are skipped.
    make_run(os.path.join(root, "exp", "run_a", "checkpoints", "100"), state="done")
    make_run(os.path.join(root, ".launch", "x"), state="done")
    groups = status.find_groups(root)
    assert [g.title.split()[0] for g in groups] == ["sweep", "runs"]
    loose = {r.name: r.status for r in groups[1].runs}
    assert loose == {"exp/run_a": "done", "exp/run_b": "diverged", "exp/run_c": "partial"}
    # One run directory on its own.
    one = status.find_groups(os.path.join(root, "exp", "run_b"))
    assert [(r.name, r.status, r.step) for r in one[0].runs] == [("run_b", "diverged", 300)]
    e = status.eta(groups[1].runs, now=NOW)
    assert e["remaining_steps"] == 100_000  # run_c; done and diverged runs are over
    text = status.group_text(groups[1], now=NOW)
    assert "3 runs: 1 done, 1 partial, 1 diverged" in text


def test_status_command(tmp_path, sweep_dir, capsys):
    # `floq status` reads the wall clock, the fixture dated its files from NOW (set at import,
    # minutes ago in a long suite): shift them so their ages are what the fixture meant.
    shift = time.time() - NOW
    for root, _, files in os.walk(sweep_dir):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            os.utime(p, (st.st_atime + shift, st.st_mtime + shift))
    assert main(["status", sweep_dir]) == 0
    out = capsys.readouterr().out
    assert "k=2,seed=0" in out and "ETA 34m" in out.replace("ETA 33m", "ETA 34m")
    assert main(["status", sweep_dir, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["remaining_steps"] == 150_000
    assert [r["status"] for r in data[0]["runs"]] == ["done", "running", "failed", "pending"]
    assert main(["status", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["status", str(tmp_path / "empty")]) == 1
    assert "no run directories" in capsys.readouterr().err


@pytest.mark.parametrize("curve, text", [
    ({0: 0.0, 20_000: 0.32, 25_000: 0.28}, "0% -> best 32%@20k -> 28%@25k"),
    ({0: 0.0, 10_000: 0.2, 25_000: 0.4}, "0% -> 40%@25k (best)"),
    ({0: 0.5, 10_000: 0.2}, "50% (best) -> 20%@10k"),
    ({5000: 0.1, 10_000: 0.3, 15_000: 0.3}, "10%@5k -> 30%@15k (best)"),
    ({0: 0.4, 5000: 0.1, 10_000: 0.4}, "40% -> 40%@10k (best)"),
    ({0: 0.0, 200: 0.0}, "0% -> 0%@200"),
    ({25_000: 0.28}, "28%@25k"),
    ({}, "no evaluation yet"),
])
def test_success_curve(curve, text):
    assert status.success_curve(curve) == text


def test_fmt_step():
    assert [status.fmt_step(s) for s in (0, 950, 1000, 1500, 25_000, 1_000_000, 1_250_000)] == [
        "0", "950", "1k", "1.5k", "25k", "1M", "1.25M"]
    assert status.fmt_duration(3725) == "1h 02m" and status.fmt_duration(59) == "59s"


def test_summary_table(tmp_path):
    a = make_run(str(tmp_path / "floq_k4"), state="done",
                 evals=[(0, [0.0, 0.0]), (20_000, [0.30, 0.34]), (25_000, [0.26, 0.30])],
                 manifest_extra={"updates_per_s": 456.7})
    b = make_run(str(tmp_path / "mono"), state="running", evals=[(0, [0.1, 0.1])],
                 manifest_extra={"critic": "monolithic", "params": {}, "flops_per_update": None})
    c = make_run(str(tmp_path / "fresh"), state="running")
    lines = status.summary_table([a, b, c]).splitlines()
    assert lines[0].split()[:3] == ["run", "critic", "status"]
    assert "success: first -> best -> last (50 episodes per evaluation)" in lines[0]
    assert lines[2].split() == ["floq_k4", "floq", "done", "0%", "->", "best", "32%@20k", "->", "28%@25k",
                                "2", "456.7", "12,345", "6,789", "2.50", "61"]
    assert lines[3].split()[:4] == ["mono", "monolithic", "running", "10%"]
    assert lines[3].split()[4:] == ["2", "?", "?", "?", "?", "61"]
    assert "no evaluation yet" in lines[4]
    # Every run done: no status column.
    assert status.summary_table([a]).splitlines()[0].split()[:3] == ["run", "critic", "success:"]


# -- status that tells the truth (run locks, the sweep's own state, unreadable files) ----------


def test_a_killed_run_is_stopped_not_running(tmp_path):
    """kill -9 leaves run.json 'running' and the trainer's pid in RUN/.lock, but nobody holds the
    lock: the run is 'stopped', counts as nothing training now, and its steps are still left."""
    root = tmp_path / "res"
    d = make_run(str(root / "r"), state="running", train_steps=200, train=[(50, 30.0, 2.0), (100, 30.0, 4.0)],
                 age_s=420.0, live=False)
    with open(os.path.join(d, ".lock"), "w") as f:
        f.write("4194303")  # the killed trainer's pid, never cleared
    info = status.read_run(d)
    assert info.status == "stopped" and "killed" in info.note and "resume" in info.note
    text = status.group_text(status.find_groups(str(root))[0], now=NOW)
    last = text.splitlines()[-1]
    assert last.startswith("1 run: 1 stopped | 100 of 200 steps | ETA")
    assert "1 run training now" not in last and "ETA 0s" not in last and "100 steps left" in last
    hold(d)  # a trainer resumed it: running again
    assert status.read_run(d).status == "running"


def test_a_sweep_before_its_first_run_has_runs_to_train(tmp_path):
    sd = tmp_path / "grid"
    sd.mkdir()
    entries = [{"name": f"k={k},seed=0", "run_dir": str(sd / f"k={k},seed=0"), "state": "pending"} for k in range(8)]
    (sd / "sweep.json").write_text(json.dumps({"sweep": "grid", "runs": entries}))
    (group,) = status.find_groups(str(sd))
    assert [r.status for r in group.runs] == ["pending"] * 8
    last = status.group_text(group, now=NOW).splitlines()[-1]
    assert "nothing left to train" not in last
    assert last.startswith("8 runs: 8 pending") and "ETA unknown (8 runs to train" in last


def test_a_relaunched_run_is_starting_while_the_sweep_driver_lives(tmp_path):
    """sweep.json says running (the driver relaunched a preempted run whose trainer is still
    reading data or compiling): status says 'starting', not 'preempted 6 min ago'; once the driver
    is gone it shows run.json's state and says that sweep.json's 'running' is stale."""
    import fcntl

    sd = tmp_path / "grid"
    make_run(str(sd / "a"), state="preempted", train_steps=1000, train=[(500, 60.0)], age_s=360.0)
    (sd / "sweep.json").write_text(json.dumps({"sweep": "grid", "runs": [
        {"name": "a", "run_dir": str(sd / "a"), "state": "running"}]}))
    with open(sd / ".sweep.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a live floq sweep drives it
        (info,) = status.find_groups(str(sd))[0].runs
        assert info.status == "starting" and "relaunched" in info.note
    (info,) = status.find_groups(str(sd))[0].runs
    assert info.status == "preempted" and "no floq sweep drives this sweep" in info.note


def test_a_truncated_sweep_json_is_reported(tmp_path):
    sd = tmp_path / "grid"
    make_run(str(sd / "a"), state="done", train_steps=1000, evals=[(1000, [0.5, 0.5])])
    (sd / "sweep.json").write_text('{"sweep": "grid", "runs": [{"name": "a", "st')
    (group,) = status.find_groups(str(sd))
    assert [r.name for r in group.runs] == ["a"]
    text = status.group_text(group, now=NOW)
    assert "warning:" in text and "sweep.json cannot be read (truncated or not JSON?)" in text


def test_a_header_only_eval_csv_is_reported(tmp_path):
    d = make_run(str(tmp_path / "r"), state="done", train_steps=1000)
    (tmp_path / "r" / "eval.csv").write_text("experiment,seed,step,success\n")
    info = status.read_run(d)
    assert info.status == "done" and info.note == "eval.csv holds no rows (only its header)"
    assert "(eval.csv holds no rows (only its header))" in status.group_text(status.find_groups(d)[0], now=NOW)


def test_a_status_floq_never_writes_is_unreadable(tmp_path):
    d = make_run(str(tmp_path / "r"), state=5, train_steps=1000, live=False)
    info = status.read_run(d)
    assert info.status == "unreadable" and "5" in info.reason


def test_summary_table_says_a_status_floq_never_writes_is_unreadable(tmp_path, capsys):
    """The end-of-run table (floq run, floq sweep) showed run.json's status as it was: '5'
    (floq status's own table already said 'unreadable: ...')."""
    five = make_run(str(tmp_path / "five"), state=5, live=False)
    weird = make_run(str(tmp_path / "weird"), state="weird", live=False)
    listed = make_run(str(tmp_path / "listed"), state=None)
    with open(os.path.join(listed, "run.json"), "w") as f:
        json.dump([1, 2], f)  # not an object: no crash
    lines = status.summary_table([five, weird, listed]).splitlines()
    assert lines[0].split()[:3] == ["run", "critic", "status"]
    assert lines[2].split()[:5] == ["five", "floq", "unreadable", "status", "5"]
    assert lines[3].split()[:5] == ["weird", "floq", "unreadable", "status", "'weird'"]
    assert lines[4].split()[:4] == ["listed", "?", "unreadable", "run.json"]
    assert status.main([five]) == 0
    row = capsys.readouterr().out.splitlines()[3]
    assert row.split()[:2] == ["five", "unreadable:"] and "run.json's status 5 is not one floq writes" in row
