"""A `floq sweep` driver stopped by SIGTERM or SIGHUP behaves as on SIGINT: its trainers are
asked to checkpoint, no process it started survives it, and sweep.json has no 'running' run.
A trainer that crashes is reported with its log and the sweep goes on. A Ray that does not
start is one line with the remedy."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from floq.launch import runner as runner_lib
from floq.launch import sweep

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A trainer with an evaluation worker (a grandchild of the driver) that it does *not* stop on
# SIGTERM: the launcher must still leave nothing behind. On SIGTERM it "checkpoints" (writes
# RUN/checkpointed) and exits 143 like floq's trainer. CRASH_RUNS names runs that die of SIGSEGV.
SLOW_TRAINER = textwrap.dedent("""
    import argparse, json, os, signal, subprocess, sys, time
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+")
    p.add_argument("--bind", action="append", default=[])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--tag", action="append", default=[])
    a = p.parse_args()
    os.makedirs(a.run_dir, exist_ok=True)
    name = os.path.basename(a.run_dir)
    man = os.path.join(a.run_dir, "run.json")
    if os.path.exists(man) and json.load(open(man)).get("status") == "done":
        sys.exit(0)
    json.dump({"status": "running"}, open(man, "w"))
    if name in os.environ.get("CRASH_RUNS", "").split(";"):
        print("about to crash", flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    open(os.path.join(a.run_dir, "pids"), "w").write(f"{os.getpid()} {worker.pid}")
    def stop(signum, frame):
        open(os.path.join(a.run_dir, "checkpointed"), "w").write("step 1")
        print("preempted; checkpoint saved", flush=True)
        os._exit(143)
    signal.signal(signal.SIGTERM, stop)
    deadline = time.time() + float(os.environ.get("TRAIN_S", "120"))
    while time.time() < deadline:
        time.sleep(0.05)
    worker.kill()
    json.dump({"status": "done"}, open(man, "w"))
""")


@pytest.fixture
def slow_trainer(tmp_path):
    path = tmp_path / "slow_trainer.py"
    path.write_text(SLOW_TRAINER)
    return [sys.executable, str(path)]


def default_stop_signals() -> None:
    """The driver as a shell starts it in the foreground: SIGINT and SIGHUP not ignored. (A
    pytest-xdist worker ignores them, and the driver leaves an ignored signal ignored on
    purpose, as under nohup.)"""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next(l for l in f if l.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "Z" not in state.split()[1]  # a zombie is dead (a container's init may not reap)


def read_summary(sweep_dir):
    try:
        with open(os.path.join(sweep_dir, "sweep.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_stops_driver_and_every_trainer(sig, slow_trainer, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": REPO, "TRAIN_S": "120"}
    cmd = [sys.executable, "-m", "floq", "sweep", "gin/experiments/sweep_smoke.gin", "--out", str(out),
           "--workers", "2", "--runner", " ".join(slow_trainer)]
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=default_stop_signals)
    sweep_dir = out / "sweep_smoke"
    pids = {}
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(pids) < 2:
            assert driver.poll() is None, driver.communicate()
            summary = read_summary(sweep_dir)
            for r in (summary or {}).get("runs", []):
                pid_file = os.path.join(r["run_dir"], "pids")
                if r["state"] == "running" and os.path.exists(pid_file):
                    text = open(pid_file).read().split()
                    if len(text) == 2:
                        pids[r["name"]] = [int(p) for p in text]
            time.sleep(0.1)
        assert len(pids) == 2, "two trainers never started"
        assert all(alive(p) for ps in pids.values() for p in ps)
        driver.send_signal(sig)
        _, err = driver.communicate(timeout=90)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 128 + sig
    assert f"stopped by {signal.Signals(sig).name}" in err
    time.sleep(0.2)
    left = [p for ps in pids.values() for p in ps if alive(p)]
    assert not left, f"processes left behind: {left}"
    summary = read_summary(sweep_dir)
    states = {r["name"]: r["state"] for r in summary["runs"]}
    assert "running" not in states.values()
    assert summary["counts"]["running"] == 0 and summary["counts"]["pending"] == 8
    for name in pids:
        run_dir = sweep_dir / name
        assert (run_dir / "checkpointed").read_text() == "step 1"  # the trainer saved
        assert "stopped by the launcher" in (run_dir / "log.txt").read_text() or \
               "preempted" in (run_dir / "log.txt").read_text()


def test_crashed_trainer_is_reported_and_sweep_goes_on(fake_base, parse, slow_trainer, tmp_path, monkeypatch):
    file = fake_base("Sweep.name = 'crash'\nSweep.axes = {'CRITIC_FLOW_STEPS': [1, 2, 3]}\n")
    crashing = "critic_flow_steps=2"
    monkeypatch.setenv("CRASH_RUNS", crashing)
    monkeypatch.setenv("TRAIN_S", "0.2")
    lines = []
    summary = sweep.run_sweep(file, "local", str(tmp_path / "out"), runner=slow_trainer, parse=parse,
                              echo=lines.append, workers=1)
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 2, "failed": 1, "diverged": 0}
    entry = {r["name"]: r for r in summary["runs"]}[crashing]
    assert entry["reason"] == "killed by SIGSEGV (last line: about to crash)"
    failed_line = next(l for l in lines if f"{crashing} failed" in l)
    assert f"(log: {entry['log']})" in failed_line and os.path.exists(entry["log"])


def test_trainer_recorded_failure_reason_is_reported(tmp_path):
    """A trainer that records 'diverged' in run.json: the outcome quotes run.json."""
    run_dir = tmp_path / "r"
    script = tmp_path / "t.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys
        d = sys.argv[sys.argv.index("--run-dir") + 1]
        os.makedirs(d, exist_ok=True)
        json.dump({"status": "diverged", "step": 1200, "reason": "non-finite critic loss"},
                  open(os.path.join(d, "run.json"), "w"))
        print("floq run: diverged")
        sys.exit(3)
    """))
    run = runner_lib.Run("r", ("x.gin",), (), str(run_dir))
    outcome = runner_lib.execute(run, [sys.executable, str(script)])
    assert not outcome.ok and outcome.returncode == 3
    assert outcome.reason == "non-finite critic loss (step 1200)"
    assert runner_lib.run_status(str(run_dir)) == "diverged"


def test_ray_startup_failure_is_one_line_with_remedy(fake_base, parse, fake_runner, tmp_path, monkeypatch):
    ray_launcher = pytest.importorskip("floq.launch.ray_launcher")

    def init(**kwargs):
        raise Exception("The current node timed out during startup. This could happen because some of the "
                        "raylet failed to startup or the GCS has become overloaded.")

    monkeypatch.setattr(ray_launcher.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_launcher.ray, "init", init)
    monkeypatch.setattr(ray_launcher.ray, "shutdown", lambda: None)
    file = fake_base("Sweep.name = 'r'\nSweep.axes = {'CRITIC_FLOW_STEPS': [1, 2]}\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError) as e:
        sweep.run_sweep(file, "ray", str(out), runner=fake_runner, parse=parse, echo=lambda line: None)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("Ray could not start a local instance (The current node timed out during startup")
    assert "RAY_raylet_start_wait_time_s=120 ray start --head" in msg and "--ray-address=auto" in msg
    summary = read_summary(out / "r")
    assert summary["counts"] == {"pending": 2, "running": 0, "done": 0, "failed": 0, "diverged": 0}


def test_ray_connect_failure_names_the_address(monkeypatch):
    ray_launcher = pytest.importorskip("floq.launch.ray_launcher")
    err = ray_launcher.startup_error(ConnectionError("Could not find any running Ray instance."), "10.0.0.1:6379")
    assert str(err).startswith("cannot connect to the Ray cluster at 10.0.0.1:6379 (ConnectionError: ")
    assert "ray status --address 10.0.0.1:6379" in str(err)


def test_ray_interrupt_stops_trainers_gracefully(fake_base, parse, slow_trainer, tmp_path, monkeypatch):
    """Interrupting the Ray driver: tasks are cancelled without force first, so each task's
    execute() SIGTERMs its trainer (which checkpoints); nothing is left running — also when the
    driver was started with SIGINT ignored (a background job of a script), which Ray's workers
    inherit and which would make the graceful cancel a no-op."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("TRAIN_S", "120")  # Ray's workers inherit the driver's environment
    file = fake_base("Sweep.name = 'rs'\nSweep.axes = {'CRITIC_FLOW_STEPS': [1, 2]}\n")
    out = tmp_path / "out"
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job has it
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        signal.signal(signal.SIGINT, ignored)
    try:
        started = {}

        def echo(line):
            summary = read_summary(out / "rs") or {}
            for r in summary.get("runs", []):
                pid_file = os.path.join(r["run_dir"], "pids")
                if os.path.exists(pid_file) and len(open(pid_file).read().split()) == 2:
                    started[r["name"]] = [int(p) for p in open(pid_file).read().split()]

        from floq.launch.ray_launcher import RayLauncher

        launcher = RayLauncher(runner=slow_trainer, gpus_per_run=0)
        real_sleep = time.sleep

        interrupted = []

        def sleep(s):  # (time.sleep, as the poll loop calls it): interrupt once both trainers run
            if not interrupted:
                echo("")
                if len(started) == 2:
                    interrupted.append(1)
                    raise KeyboardInterrupt
            real_sleep(s)

        monkeypatch.setattr("floq.launch.base.time.sleep", sleep)
        with pytest.raises(KeyboardInterrupt):
            sweep.run_sweep(file, launcher, str(out), parse=parse, echo=echo)
        monkeypatch.undo()
        real_sleep(0.5)
        assert len(started) == 2
        left = [p for ps in started.values() for p in ps if alive(p)]
        assert not left, f"processes left behind: {left}"
        for name in started:
            assert (out / "rs" / name / "checkpointed").read_text() == "step 1"
        summary = read_summary(out / "rs")
        assert summary["counts"]["running"] == 0 and summary["counts"]["pending"] == 2
    finally:
        ray.shutdown()
