"""floq.loggers: the W&B and TensorBoard trackers log exactly the CSV rows they are given,
read back from the files the trackers write (W&B's offline .wandb file, TensorBoard's
event files)."""

from __future__ import annotations

import glob
import json
import math
import os
import struct
import sys
import time

import pytest

from floq import loggers
from floq.config import ConfigError

MANIFEST = {
    "experiment": "unit", "run": "floq_k4", "status": "running", "seeds": [0, 1],
    "env": "cube-single-play", "task": "task1", "algorithm": "fql", "critic": "floq",
    "tags": {"critic_flow_steps": "4"}, "describe": {"alpha": 3.0}, "step": 0,
    "protocol": {"train_steps": 200},
}
CONFIG = "# Parameters for Trainer:\nTrainer.train_steps = 200\nTrainer.loggers = ('wandb',)\n" \
         "FQL.alpha = 3.0\nSweep.axes = {'A': [1, 2],\n    'B': [3]}\n"


def train_rows(step, seeds=(0, 1)):
    return [{"experiment": "unit", "run": "floq_k4", "seed": s, "step": step, "wall_time": 1.5 * step,
             "updates_per_s": 100.0 + s, "critic/loss": 0.5 / (step + 1) + s, "grad/norm": float(step + s)}
            for s in seeds]


def eval_rows(step, seeds=(0, 1), task="task1"):
    return [{"experiment": "unit", "run": "floq_k4", "env": "cube-single-play", "task": task,
             "dataset": "d", "algorithm": "fql", "critic": "floq", "seed": s, "step": step,
             "success": 0.1 * s + step / 1000, "return": -50.0 + step, "episode_length": 200.0,
             "wall_time": 2.0, "eval_episodes": 50, "train_steps": 200, "ogbench_version": "1.2",
             "success_timing": "post", "critic_flow_steps": "4", "alpha": 3.0} for s in seeds]


def expected(kind, rows):
    """{(step, key): value} by floq.loggers' naming rule, for single-task rows."""
    out = {}
    for r in rows:
        for k, v in r.items():
            if k in loggers.IDENTITY_COLUMNS or k in ("critic_flow_steps", "alpha") or isinstance(v, str):
                continue
            out[(r["step"], f"{kind}/seed{r['seed']}/{k}")] = float(v)
    return out


# -- W&B: read the offline run's transaction log (.wandb, a LevelDB-style record log of
# wandb's protobuf Records) back.

def wandb_records(path):
    from wandb.proto import wandb_internal_pb2 as pb

    block = 32768
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            out.append(buf + chunk)
            buf = b""
    records = []
    for raw in out:
        r = pb.Record()
        r.ParseFromString(raw)
        records.append(r)
    return records


def wandb_history(path):
    """{(step, key): value} and the run's config {key: value} from a .wandb file."""
    hist, config, run_ids = {}, {}, set()
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            step = items["step"]
            for k, v in items.items():
                if k.startswith(("train/", "eval/")):
                    hist[(step, k)] = v
        elif kind == "config":
            for u in r.config.update:
                config[u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
        elif kind == "run":
            run_ids.add(r.run.run_id)
            for u in r.run.config.update:
                config[u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
    return hist, config, run_ids


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    (home / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(home / "netrc"))  # no stored login: offline by default
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return home


def test_wandb_offline_logs_the_rows_and_resume_keeps_the_run_id(tmp_path, wandb_env):
    run_dir = str(tmp_path / "run")
    lgs = loggers.make_loggers(("wandb",), run_dir=run_dir, manifest=MANIFEST, config_str=CONFIG)
    assert [lg.name for lg in lgs] == ["wandb"] and lgs[0].mode == "offline"
    logged = {}
    for step in (0, 100, 200):
        if step:
            rows = train_rows(step)
            for lg in lgs:
                lg.log("train", rows)
            logged.update(expected("train", rows))
        rows = eval_rows(step)
        for lg in lgs:
            lg.log("eval", rows)
        logged.update(expected("eval", rows))
    for lg in lgs:
        lg.close()

    run_id = (tmp_path / "run" / "wandb_id.txt").read_text().strip()
    files = glob.glob(os.path.join(run_dir, "wandb", f"offline-run-*-{run_id}", f"run-{run_id}.wandb"))
    assert len(files) == 1, os.listdir(os.path.join(run_dir, "wandb"))
    hist, config, run_ids = wandb_history(files[0])
    assert hist == pytest.approx(logged)
    assert (100, "train/seed1/critic/loss") in hist and (200, "eval/seed0/success") in hist
    assert not any("critic_flow_steps" in k or "eval_episodes" in k for _, k in hist)  # constants
    assert run_ids == {run_id}
    assert config["experiment"] == "unit" and config["critic"] == "floq"
    assert config["gin"]["Trainer.train_steps"] == "200"
    assert config["gin"]["Sweep.axes"] == "{'A': [1, 2], 'B': [3]}"
    assert config["gin_config"] == CONFIG

    # Resume: the same W&B run id, its files beside the first attempt's (offline run
    # directories are named to the second).
    time.sleep(1.05)
    resumed = dict(MANIFEST, step=100)
    lgs = loggers.make_loggers(("wandb",), run_dir=run_dir, manifest=resumed, config_str=CONFIG)
    assert lgs[0].run_id == run_id
    for lg in lgs:
        lg.log("train", train_rows(300))
        lg.close()
    second = sorted(glob.glob(os.path.join(run_dir, "wandb", f"offline-run-*-{run_id}", "*.wandb")))
    assert len(second) == 2
    hist2, _, ids2 = wandb_history(second[1] if second[1] != files[0] else second[0])
    assert ids2 == {run_id}
    assert hist2 == pytest.approx(expected("train", train_rows(300)))


def test_wandb_mode_rules(tmp_path):
    empty = tmp_path / "netrc"
    empty.write_text("")
    assert loggers.wandb_mode({"NETRC": str(empty)}) == "offline"
    assert loggers.wandb_mode({"NETRC": str(empty), "WANDB_API_KEY": "k" * 40}) == "online"
    assert loggers.wandb_mode({"NETRC": str(empty), "WANDB_API_KEY": "k", "WANDB_MODE": "offline"}) == "offline"
    assert loggers.wandb_mode({"NETRC": str(empty), "WANDB_MODE": "disabled"}) == "disabled"
    logged_in = tmp_path / "netrc2"
    logged_in.write_text("machine api.wandb.ai\n  login user\n  password abcdef\n")
    logged_in.chmod(0o600)
    assert loggers.wandb_mode({"NETRC": str(logged_in)}) == "online"
    other_host = {"NETRC": str(logged_in), "WANDB_BASE_URL": "https://wandb.example.org"}
    assert loggers.wandb_mode(other_host) == "offline"


def test_wandb_id_is_stored_once(tmp_path):
    rid = loggers.wandb_run_id(str(tmp_path))
    assert len(rid) == 8 and rid.isalnum()
    assert (tmp_path / "wandb_id.txt").read_text() == rid + "\n"
    assert loggers.wandb_run_id(str(tmp_path)) == rid
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


# -- TensorBoard: read the event files (TFRecord framing of Event protos) back.

def tb_events(logdir):
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = event_pb2.Event()
            ev.ParseFromString(data[pos + 12:pos + 12 + length])
            events.append((os.path.basename(path), ev))
            pos += 12 + length + 4
    return events


def tb_scalars(logdir):
    out = {}
    for _, ev in tb_events(logdir):
        for v in ev.summary.value:
            if v.HasField("simple_value"):
                out[(ev.step, v.tag)] = v.simple_value
    return out


def test_tensorboard_logs_the_rows(tmp_path):
    pytest.importorskip("tensorboardX")
    run_dir = str(tmp_path / "run")
    lgs = loggers.make_loggers(["tensorboard"], run_dir=run_dir, manifest=MANIFEST, config_str=CONFIG)
    logged = {}
    rows = eval_rows(0)
    lgs[0].log("eval", rows)
    logged.update(expected("eval", rows))
    for step in (100, 200):
        rows = train_rows(step)
        lgs[0].log("train", rows)
        logged.update(expected("train", rows))
    nan_row = dict(train_rows(200, seeds=(0,))[0], step=250)
    nan_row["critic/loss"] = float("nan")
    lgs[0].log("train", [nan_row])
    lgs[0].close()
    got = tb_scalars(os.path.join(run_dir, "tensorboard"))
    assert math.isnan(got.pop((250, "train/seed0/critic/loss")))
    got = {k: v for k, v in got.items() if k[0] != 250}
    assert got == pytest.approx(logged, rel=1e-6)  # event files hold float32
    texts = [v.tag for _, ev in tb_events(os.path.join(run_dir, "tensorboard")) for v in ev.summary.value
             if not v.HasField("simple_value")]
    assert any("config/gin" in t for t in texts)


def test_tensorboard_resume_purges_steps_trained_again(tmp_path):
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto import event_pb2

    run_dir = str(tmp_path / "run")
    first = loggers.make_loggers(("tensorboard",), run_dir=run_dir, manifest=MANIFEST)[0]
    first.log("train", train_rows(100) + train_rows(200))
    first.close()
    second = loggers.make_loggers(("tensorboard",), run_dir=run_dir, manifest=dict(MANIFEST, step=100))[0]
    second.log("train", train_rows(200))
    second.close()
    # The resume step can also be passed on its own (a manifest written before the restore).
    third = loggers.make_loggers(("tensorboard",), run_dir=run_dir, manifest=MANIFEST, resume_step=150)[0]
    third.close()
    events = tb_events(os.path.join(run_dir, "tensorboard"))
    files = sorted({name for name, _ in events})
    assert len(files) == 3
    starts = [ev.step for _, ev in events if ev.HasField("session_log")
              and ev.session_log.status == event_pb2.SessionLog.START]
    assert sorted(starts) == [100, 150]  # TensorBoard discards earlier events at step >= these


def test_multi_task_rows_carry_the_task_in_the_key():
    keys = loggers._Keys(MANIFEST)
    rows = eval_rows(10, seeds=(0,), task="task1") + eval_rows(10, seeds=(0,), task="task2")
    groups = keys.groups("eval", rows)
    assert [s for s, _ in groups] == [10]
    assert groups[0][1]["eval/task1/seed0/success"] == pytest.approx(0.01)
    assert "eval/task2/seed0/return" in groups[0][1]
    # Train rows without a task column keep the plain per-seed names.
    assert set(keys.groups("train", train_rows(10, seeds=(1,)))[0][1]) == {
        "train/seed1/wall_time", "train/seed1/updates_per_s", "train/seed1/critic/loss", "train/seed1/grad/norm"}


def test_missing_package_and_unknown_name_are_config_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ConfigError) as e:
        loggers.make_loggers(("wandb",), run_dir="/nonexistent/never/written")
    assert str(e.value) == "--logger wandb needs the wandb package: pip install -e '.[wandb]'"
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ConfigError, match=r"needs the tensorboardX package: pip install -e '\.\[tensorboard\]'"):
        loggers.check_loggers("tensorboard")
    with pytest.raises(ConfigError, match="unknown logger 'mlflow'; choose from wandb, tensorboard"):
        loggers.check_loggers(("mlflow",))
    assert loggers.make_loggers((), run_dir="/nonexistent") == []
    assert loggers.normalize(("csv", "TensorBoard", "tensorboard")) == ("tensorboard",)


class _Flaky:
    name = "flaky"

    def __init__(self):
        self.calls = 0

    def log(self, kind, rows):
        self.calls += 1
        raise OSError("disk quota exceeded")

    def close(self):
        raise RuntimeError("never reached")


def test_a_failing_logger_warns_once_and_stops(capsys):
    inner = _Flaky()
    lg = loggers._Guarded(inner)
    for _ in range(3):
        lg.log("train", train_rows(1))
    lg.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "flaky logger failed (OSError: disk quota exceeded)" in err[0] and "eval.csv are complete" in err[0]
    assert inner.calls == 1


def test_a_logger_that_cannot_start_is_left_out(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboardX")

    def boom(self, *a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(loggers.TensorBoardLogger, "__init__", boom)
    assert loggers.make_loggers(("tensorboard",), run_dir=str(tmp_path)) == []
    assert "tensorboard logger could not start (ConnectionError: no route to host)" in capsys.readouterr().err


def test_parse_operative_config():
    got = loggers.parse_operative_config(CONFIG)
    assert got == {"Trainer.train_steps": "200", "Trainer.loggers": "('wandb',)", "FQL.alpha": "3.0",
                   "Sweep.axes": "{'A': [1, 2], 'B': [3]}"}


def test_only_numbers_are_metrics():
    np = pytest.importorskip("numpy")
    keys = loggers._Keys(MANIFEST)
    row = {"seed": 0, "step": np.int64(7), "a": np.float32(1.5), "b": np.int64(3), "flag": np.bool_(True),
           "ok": True, "phase": "offline", "vec": np.zeros(2), "c": 2}
    assert keys.groups("train", [row]) == [(7, {"train/seed0/a": 1.5, "train/seed0/b": 3.0, "train/seed0/c": 2.0})]


def test_tensorboard_hparams_session(tmp_path):
    """A new run writes TensorBoard's HParams session (swept tags, critic, algorithm, the
    critic's settings; each seed's eval success as the metrics) and ends it on close; a
    resumed run does not start a second session."""
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    run_dir = str(tmp_path / "run")
    lg = loggers.make_loggers(["tensorboard"], run_dir=run_dir, manifest=MANIFEST)[0]
    lg.log("eval", eval_rows(0))
    lg.close()
    plugin = {}
    for _, ev in tb_events(os.path.join(run_dir, "tensorboard")):
        for v in ev.summary.value:
            if v.tag.startswith("_hparams_/"):
                data = HParamsPluginData()
                data.ParseFromString(v.metadata.plugin_data.content)
                plugin[v.tag] = data
    assert set(plugin) == {"_hparams_/experiment", "_hparams_/session_start_info",
                           "_hparams_/session_end_info"}
    start = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert start["critic"].string_value == "floq" and start["algorithm"].string_value == "fql"
    assert start["critic_flow_steps"].number_value == 4.0 and start["alpha"].number_value == 3.0
    metrics = [m.name.tag for m in plugin["_hparams_/experiment"].experiment.metric_infos]
    assert metrics == ["eval/seed0/success", "eval/seed1/success"]  # the tags the rows use
    assert ("eval/seed1/success" in {t for _, t in tb_scalars(os.path.join(run_dir, "tensorboard"))})
    resumed = str(tmp_path / "resumed")
    lg = loggers.make_loggers(["tensorboard"], run_dir=resumed, manifest=dict(MANIFEST, step=100))[0]
    lg.close()
    assert not [v for _, ev in tb_events(os.path.join(resumed, "tensorboard"))
                for v in ev.summary.value if v.tag.startswith("_hparams_/")]
