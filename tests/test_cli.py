"""The `floq` command's contract: help and version on stdout, one-line errors with exit codes
(2 bad input, 1 failure, 3 divergence), --debug tracebacks, --logger bindings; and the
GPUs the Slurm launcher's local executor asks for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from importlib import metadata

import pytest

from floq import cli, results
from floq.config import REPO_ROOT, ConfigError


@pytest.fixture
def fake_train(monkeypatch, tmp_path):
    """floq.loop replaced by a module whose run() records its arguments and does `action`."""
    calls = []
    state = {"action": None, "targets": []}

    def run(gin_files, bindings, out_dir=None, run_dir=None, tags=None, force=False, retry_failed=False):
        calls.append({"gin_files": gin_files, "bindings": list(bindings), "tags": tags, "force": force,
                      "retry_failed": retry_failed})
        state["targets"].append((out_dir, run_dir))
        if state["action"] is not None:
            raise state["action"]
        d = tmp_path / "run"
        d.mkdir(exist_ok=True)
        (d / "run.json").write_text(json.dumps({"run": "r", "critic": "floq", "status": "done", "seeds": [0],
                                                "params": {"total": 10, "critic_total": 4}}))
        (d / "eval.csv").write_text("seed,step,success,eval_episodes\n0,0,0.0,50\n0,1000,0.5,50\n0,2000,0.25,50\n")
        return str(d)

    module = types.ModuleType("floq.loop")
    module.run = run
    monkeypatch.setitem(sys.modules, "floq.loop", module)
    return calls, state


def err_lines(capsys):
    captured = capsys.readouterr()
    return captured.out, [ln for ln in captured.err.splitlines() if ln.strip()]


def test_help_goes_to_stdout_with_exit_0(capsys):
    for flag in ("--help", "-h"):
        assert cli.main([flag]) == 0
        out, err = err_lines(capsys)
        assert out.startswith("usage: floq {run,status,") and "status DIR" in out and not err
    with pytest.raises(SystemExit) as e:  # argparse's own --help of a command: stdout, 0
        cli._run(["--help"])
    assert e.value.code == 0
    assert "--logger {wandb,tensorboard}" in capsys.readouterr().out
    assert cli.main(["run", "--help"]) == 0


def test_usage_errors_go_to_stderr_with_exit_2(capsys):
    assert cli.main([]) == 2
    out, err = err_lines(capsys)
    assert not out and err[0].startswith("usage: floq")
    assert cli.main(["frobnicate"]) == 2
    out, err = err_lines(capsys)
    assert err[0] == "floq: error: unknown command 'frobnicate'"


def test_version_names_the_package_and_the_commit(capsys):
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"floq {metadata.version('floq')} (git ")
    sha = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    if sha:
        assert sha in out


@pytest.mark.subprocess
def test_the_installed_entry_point(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    res = subprocess.run([sys.executable, "-m", "floq", "--help"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("usage: floq") and not res.stderr
    res = subprocess.run([sys.executable, "-m", "floq", "run"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "the following arguments are required: gin_files" in res.stderr


def test_success_prints_the_run_dir_and_the_summary(fake_train, capsys):
    calls, _ = fake_train
    assert cli.main(["run", "a.gin", "b.gin", "--bind", "X = 1", "--tag", "k=v"]) == 0
    out, err = err_lines(capsys)
    assert calls == [{"gin_files": ["a.gin", "b.gin"], "bindings": ["X = 1"], "tags": {"k": "v"}, "force": False,
                      "retry_failed": False}]
    assert out.splitlines()[0].startswith("results: ") and "0% -> best 50%@1k -> 25%@2k" in out


def _run_dir(root, tags):
    """A finished run directory as the trainer leaves it: run.json and config.gin."""
    d = root / "runs" / "smoke" / "floq_cube_task1_critic_flow_steps=3"
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"experiment": "smoke", "status": "done", "tags": tags}))
    (d / "config.gin").write_text("CRITIC_FLOW_STEPS = 3\n")
    return d


def test_a_run_dirs_config_gin_reruns_that_run(fake_train, tmp_path, capsys):
    """`floq run RUN/config.gin` (or `floq run RUN`) targets RUN itself with run.json's tags, so
    a done run says it is done; with --out, the run of that name under OUT/<experiment>/."""
    calls, state = fake_train
    tags = {"critic_flow_steps": 3, "foo": "bar"}
    d = _run_dir(tmp_path, tags)
    config = str(d / "config.gin")
    for arg in (config, str(d), os.path.relpath(config)):
        assert cli.main(["run", arg, "--retry-failed"]) == 0
        assert calls[-1] == {"gin_files": [config], "bindings": [], "tags": tags, "force": False,
                             "retry_failed": True}
        assert state["targets"][-1] == (None, str(d))
    out = tmp_path / "elsewhere"
    assert cli.main(["run", config, "--out", str(out)]) == 0
    assert calls[-1]["tags"] == tags
    assert state["targets"][-1] == (str(out), str(out / "smoke" / d.name))

    # More files, bindings, tags or an explicit --run-dir: a new run from that config.
    for extra in (["--bind", "SEED = 1"], ["--tag", "k=v"], ["--run-dir", str(tmp_path / "x")], ["b.gin"]):
        assert cli.main(["run", str(d), *extra]) == 0
        assert calls[-1]["gin_files"][0] == config
        assert calls[-1]["tags"] == ({"k": "v"} if "--tag" in extra else {})
        assert state["targets"][-1][1] == (str(tmp_path / "x") if "--run-dir" in extra else None)
    capsys.readouterr()


def test_not_a_run_directory_is_one_line_exit_2(fake_train, tmp_path, capsys):
    calls, _ = fake_train
    assert cli.main(["run", str(tmp_path)]) == 2
    assert err_lines(capsys)[1] == [f"floq run: error: {tmp_path} is a directory but not a run directory "
                                    "(no run.json in it)"]
    d = _run_dir(tmp_path, {})
    (d / "config.gin").unlink()
    assert cli.main(["run", str(d)]) == 2
    assert err_lines(capsys)[1][0].startswith(f"floq run: error: {d} holds no config.gin yet")
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "config.gin").write_text("X = 1\n")  # a config.gin outside a run directory
    assert cli.main(["run", str(tmp_path / "own" / "config.gin")]) == 0
    assert calls[-1]["gin_files"] == [str(tmp_path / "own" / "config.gin")] and calls[-1]["tags"] == {}


def test_config_gin_of_a_real_run_is_that_run(tmp_path, smoke_dataset):
    """End to end (in-process `floq run`): a run's config.gin, run from elsewhere, finds the
    same run (its directory, tags and specs hash) and says it is done; nothing new is written."""
    from floq_test_utils import floq_main

    # 100 steps in chunks of 50: the session smoke run's training program (compiled once)
    first = floq_main("run", "gin/experiments/smoke.gin", "--bind", "TRAIN_STEPS=100", "--bind", "EVAL_INTERVAL=0",
                      "--bind", "CRITIC_FLOW_STEPS=3", "--tag", "foo=bar", "--out", str(tmp_path / "out"))
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = first.stdout.split("results: ", 1)[1].splitlines()[0].strip()
    before = {n: os.path.getmtime(os.path.join(run_dir, n)) for n in ("run.json", "eval.csv", "train.csv")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for arg in (os.path.join(run_dir, "config.gin"), run_dir):
        again = floq_main("run", arg, cwd=str(elsewhere))
        assert again.returncode == 0, again.stderr[-2000:]
        assert f"floq: {run_dir} is already done; nothing to do" in again.stdout
        assert f"results: {run_dir}" in again.stdout
    assert not os.listdir(elsewhere)  # no new run under ./runs
    assert {n: os.path.getmtime(os.path.join(run_dir, n)) for n in before} == before
    assert json.loads(open(os.path.join(run_dir, "run.json")).read())["tags"] == {"critic_flow_steps": 3,
                                                                                 "foo": "bar"}


def test_unexpected_error_is_one_line_exit_1(fake_train, capsys):
    _, state = fake_train
    state["action"] = ValueError("shapes (3,) and (4,) do not match\nsecond line of detail")
    assert cli.main(["run", "x.gin"]) == 1
    out, err = err_lines(capsys)
    assert err == ["floq run: error: ValueError: shapes (3,) and (4,) do not match "
                   "(re-run with --debug for the traceback)"]


def test_an_error_without_a_message(fake_train, capsys):
    _, state = fake_train
    state["action"] = AssertionError()
    assert cli.main(["run", "x.gin"]) == 1
    assert err_lines(capsys)[1] == ["floq run: error: AssertionError (re-run with --debug for the traceback)"]


def test_debug_prints_the_traceback(fake_train, capsys):
    _, state = fake_train
    state["action"] = KeyError("critic/loss")
    assert cli.main(["run", "x.gin", "--debug"]) == 1
    _, err = err_lines(capsys)
    assert err[0] == "Traceback (most recent call last):"
    assert any('raise state["action"]' in ln for ln in err)
    assert err[-1] == "floq run: error: KeyError: 'critic/loss'"


def test_config_error_is_one_line_exit_2(fake_train, capsys):
    _, state = fake_train
    state["action"] = ConfigError("unknown OGBench dataset 'cube-sextuple-play'")
    assert cli.main(["run", "x.gin"]) == 2
    assert err_lines(capsys)[1] == ["floq run: error: unknown OGBench dataset 'cube-sextuple-play'"]


def test_run_error_is_one_line_exit_1(fake_train, capsys, monkeypatch):
    _, state = fake_train
    run_error = getattr(results, "RunError", None)
    if run_error is None:  # floq.results without RunError: define it as the trainer would
        run_error = type("RunError", (Exception,), {})
        monkeypatch.setattr(results, "RunError", run_error, raising=False)
    state["action"] = run_error("disk full while writing /x/train.csv: No space left on device")
    assert cli.main(["run", "x.gin"]) == 1
    assert err_lines(capsys)[1] == [
        "floq run: error: disk full while writing /x/train.csv: No space left on device"]


def test_divergence_exits_3(fake_train, capsys):
    _, state = fake_train
    state["action"] = results.RunDiverged("r diverged: critic/loss is nan at step 3000")
    assert cli.main(["run", "x.gin"]) == 3
    assert err_lines(capsys)[1] == ["floq run: r diverged: critic/loss is nan at step 3000"]
    # The message gets the word when it lacks it; a plain RunError is a failure (exit 1).
    state["action"] = results.RunDiverged("grad/norm is inf at step 10")
    assert cli.main(["run", "x.gin"]) == 3
    assert err_lines(capsys)[1] == ["floq run: diverged: grad/norm is inf at step 10"]
    state["action"] = results.RunError("disk full")
    assert cli.main(["run", "x.gin"]) == 1


def test_preemption_and_interrupt_exit_codes(fake_train, capsys):
    _, state = fake_train
    state["action"] = SystemExit(143)
    assert cli.main(["run", "x.gin"]) == 143
    state["action"] = KeyboardInterrupt()
    assert cli.main(["run", "x.gin"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_logger_flags_become_one_binding(fake_train, capsys):
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboardX")
    calls, _ = fake_train
    assert cli.main(["run", "x.gin", "--bind", "Trainer.loggers = ()", "--logger", "wandb",
                     "--logger", "tensorboard", "--logger", "wandb"]) == 0
    assert calls[-1]["bindings"] == ["Trainer.loggers = ()", "Trainer.loggers = ('wandb', 'tensorboard',)"]
    assert cli.main(["run", "x.gin", "--logger", "tensorboard"]) == 0
    assert calls[-1]["bindings"] == ["Trainer.loggers = ('tensorboard',)"]


def test_logger_without_its_package_fails_before_training(fake_train, capsys, monkeypatch):
    calls, _ = fake_train
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert cli.main(["run", "x.gin", "--logger", "wandb"]) == 2
    assert err_lines(capsys)[1] == [
        "floq run: error: --logger wandb needs the wandb package: pip install -e '.[wandb]'"]
    assert calls == []
    assert cli.main(["run", "x.gin", "--logger", "mlflow"]) == 2
    assert "invalid choice: 'mlflow'" in capsys.readouterr().err
    assert cli.main(["run", "x.gin", "--tag", "novalue"]) == 2
    assert "--tag needs key=value" in capsys.readouterr().err


# -- the Slurm launcher's GPU request ----------------------------------------------------------


@pytest.mark.parametrize("visible, asked, gpus, ids", [
    ([], None, 0, None),            # CPU-only machine: no GPU claimed
    ([], 1, 0, None),               # `--slurm-gpus 1` (the flag's default) on a CPU-only machine
    (["0", "1"], None, 1, (0, 1)),  # a GPU machine: one per job, from the visible ids
    (["3"], 2, 1, (3,)),            # capped at what the machine has; CUDA_VISIBLE_DEVICES ids kept
    (["0", "1"], 0, 0, None),       # the user asked for none
])
def test_slurm_local_executor_gpus(monkeypatch, tmp_path, visible, asked, gpus, ids):
    pytest.importorskip("submitit")
    from floq.launch import slurm

    monkeypatch.setattr(slurm, "local_gpus", lambda: list(visible))
    launcher = slurm.SlurmLauncher(cluster="local", gpus=asked, time_min=1)
    params = launcher.executor(str(tmp_path)).parameters
    assert params["gpus_per_node"] == gpus
    assert params.get("visible_gpus") == ids
    assert f"gpus={gpus}" in launcher.describe()
    if asked is not None and asked != gpus:
        assert f"({asked} requested, {len(visible)} on this machine)" in launcher.describe()


def test_slurm_cluster_default_is_one_gpu(monkeypatch):
    pytest.importorskip("submitit")
    from floq.launch import slurm

    monkeypatch.setattr(slurm, "local_gpus", lambda: pytest.fail("a Slurm job's GPUs are not this machine's"))
    assert slurm.SlurmLauncher(cluster="slurm").gpus == 1
    assert slurm.SlurmLauncher(cluster="slurm", gpus=0).gpus == 0


@pytest.mark.parametrize("argv", [
    ["run", "gin/experiments/smoke.gin", "--run-dir", ""],
    ["run", "gin/experiments/smoke.gin", "--out", " "],
    ["sweep", "gin/experiments/sweep_smoke.gin", "--out", "", "--dry-run"],
    ["data", "generate", "cube-single-play-v0", "--episodes", "1", "--out", ""],
    ["analyze", "results", "--out", ""],
], ids=["run-dir", "out", "sweep-out", "data-out", "analyze-out"])
def test_an_empty_directory_option_is_refused(argv, fake_train, tmp_path, monkeypatch, capsys):
    """`--run-dir "$RUN"` with RUN unset trained into the working directory; `--out ''` meant ./runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gin").symlink_to(os.path.join(REPO_ROOT, "gin"))
    (tmp_path / "results").mkdir()
    assert cli.main(argv) == 2
    _, err = err_lines(capsys)
    assert any("is empty (an unset shell variable?)" in ln for ln in err), err
    assert fake_train[0] == []  # nothing was trained
    assert sorted(os.listdir(tmp_path)) == ["gin", "results"]
