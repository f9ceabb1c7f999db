"""Bad input is refused before anything is written, in one line that names the culprit:
gin syntax errors (file and line), unknown macros (closest known one), field types, run
directory names, --out, and datasets (row counts, widths, 1-D arrays, a broken -val file,
all-terminal data). Property-based checks of the field-type rule use hypothesis."""

import dataclasses
import os

import numpy as np
import pytest

from floq import config, results
from floq.config import ConfigError
from floq.data import sources

SMOKE = "gin/experiments/smoke.gin"
CUBE = "cube-single-play-singletask-task1-v0"


# --------------------------------------------------------------------------------------
# gin: syntax errors, unknown macros, field types

def test_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.gin"
    bad.write_text(f"include '{SMOKE}'\n\nTRAIN_STEPS = 10 )\n")
    with pytest.raises(ConfigError) as e:
        config.parse([str(bad)])
    assert str(e.value) == f"gin syntax error in {bad} line 3: Expected newline: TRAIN_STEPS = 10 )"


def test_unclosed_bracket_names_file_and_line_through_include(tmp_path):
    inner = tmp_path / "inner.gin"
    inner.write_text("TRAIN_STEPS = 10\nSEED = (1,\n")
    outer = tmp_path / "outer.gin"
    outer.write_text(f"include '{SMOKE}'\ninclude '{inner}'\n")
    with pytest.raises(ConfigError) as e:
        config.parse([str(outer)])
    assert str(e.value).startswith(f"gin syntax error in {inner} line 2: a bracket or quote is never closed")


def test_syntax_error_in_binding_names_the_binding():
    with pytest.raises(ConfigError, match=r"^gin syntax error in --bind \"TRAIN_STEPS='abc\""):
        config.parse([SMOKE], ["TRAIN_STEPS='abc"])


@pytest.mark.parametrize("binding, message", [
    ("TRAIN_STPES=10", "unknown macro TRAIN_STPES (did you mean TRAIN_STEPS?)"),
    ("critic_width=10", "unknown macro critic_width (did you mean CRITIC_WIDTH?)"),
    ("EVAL_EPISODE = 3", "unknown macro EVAL_EPISODE (did you mean EVAL_EPISODES?)"),
])
def test_unknown_macro_names_the_closest(binding, message):
    with pytest.raises(ConfigError) as e:
        config.parse([SMOKE], [binding])
    assert str(e.value) == message


def test_unknown_macro_in_a_file(tmp_path):
    f = tmp_path / "exp.gin"
    f.write_text(f"include '{SMOKE}'\nCRITIC_WIDHT = 64\n")
    with pytest.raises(ConfigError, match=r"^unknown macro CRITIC_WIDHT \(did you mean CRITIC_WIDTH\?\)$"):
        config.parse([str(f)])


def test_layer_macros_unread_by_this_critic_are_fine():
    # The monolithic critic does not read CRITIC_FLOW_STEPS, but it is floq's vocabulary.
    config.parse([SMOKE], ["CRITIC_FLOW_STEPS = 3", "TRAIN_STEPS = 7"])


@pytest.mark.parametrize("binding, message", [
    ("TRAIN_STEPS='abc'", "Trainer.train_steps must be an int, got 'abc'"),
    ("TRAIN_STEPS=100.5", "Trainer.train_steps must be an int, got 100.5"),
    ("TRAIN_STEPS=True", "Trainer.train_steps must be an int, got True"),
    ("EXPERIMENT=3", "Trainer.experiment must be a string, got 3"),
    ("Task.standin = 'yes'", "Task.standin must be a bool, got 'yes'"),
    ("DISCOUNT = 'high'", "Task.discount must be a float, got 'high'"),
])
def test_field_types_named(binding, message):
    with pytest.raises(ConfigError) as e:
        config.parse([SMOKE], [binding])
    assert str(e.value) == message


def test_float_field_takes_int():
    config.parse([SMOKE], ["DISCOUNT = 1"])  # the type rule passes; the range rule is Task's


@dataclasses.dataclass(frozen=True)
class Spec:
    steps: int = 1
    rate: float = 0.5
    name: str = "x"
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    maybe: float | None = None

    def __post_init__(self):
        config.check_fields(self)


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 100.5}, "Spec.steps must be an int, got 100.5"),
    ({"steps": True}, "Spec.steps must be an int, got True"),
    ({"steps": "3"}, "Spec.steps must be an int, got '3'"),
    ({"rate": "fast"}, "Spec.rate must be a float, got 'fast'"),
    ({"name": 3}, "Spec.name must be a string, got 3"),
    ({"flag": 1}, "Spec.flag must be a bool, got 1"),
    ({"sizes": 3}, "Spec.sizes must be a tuple, got 3"),
    ({"sizes": (1, 2.5)}, "Spec.sizes must be a tuple, got (1, 2.5)"),
    ({"maybe": "no"}, "Spec.maybe must be a float or None, got 'no'"),
])
def test_check_fields_refuses(kwargs, message):
    with pytest.raises(ConfigError) as e:
        Spec(**kwargs)
    assert str(e.value) == message


def test_check_fields_accepts():
    s = Spec(steps=np.int64(3), rate=2, sizes=[4, 5], maybe=1)
    assert s.rate == 2 and s.maybe == 1


def test_task_checks_its_fields():
    with pytest.raises(ConfigError) as e:
        sources.Task(task_id=1.5)
    # (gin's wrapper adds an "In call to configurable" line below the message)
    assert str(e.value).splitlines()[0] == "Task.task_id must be an int, got 1.5"


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.booleans(), st.text(max_size=5), st.none(),
                 st.lists(st.integers(), max_size=3)))
def test_property_int_field(value):
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok:
        assert Spec(steps=value).steps == value
    else:
        with pytest.raises(ConfigError, match=r"^Spec\.steps must be an int, got "):
            Spec(steps=value)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.text(max_size=5)))
def test_property_float_field(value):
    import math

    if isinstance(value, float) and not math.isfinite(value):  # 1e999 in gin: refused like NaN
        with pytest.raises(ConfigError, match=r"^Spec\.rate must be a finite number, got "):
            Spec(rate=value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        assert Spec(rate=value).rate == value
    else:
        with pytest.raises(ConfigError, match=r"^Spec\.rate must be a float, got "):
            Spec(rate=value)


MACROS = sorted(config.layer_macros())


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(MACROS), st.integers(0, 20), st.sampled_from(["drop", "swap", "double"]))
def test_property_macro_typo_suggests_the_macro(macro, pos, kind):
    """A one-character typo of a known macro is refused, and the suggestion is a known macro
    at most two edits away (usually the macro itself)."""
    pos = pos % len(macro)
    if kind == "drop":
        typo = macro[:pos] + macro[pos + 1:]
    elif kind == "swap" and pos + 1 < len(macro):
        typo = macro[:pos] + macro[pos + 1] + macro[pos] + macro[pos + 2:]
    else:
        typo = macro[:pos] + macro[pos] + macro[pos:]
    if typo in MACROS or not typo or typo[0].isdigit():
        return
    with pytest.raises(ConfigError) as e:
        config.parse([SMOKE], [f"{typo} = 1"])
    msg = str(e.value)
    assert msg.startswith(f"unknown macro {typo} (did you mean ")
    guess = msg.split("did you mean ")[1].rstrip("?)")
    assert guess in MACROS


def test_sweep_and_run_use_the_same_macro_rule():
    """floq sweep validates axes with floq.config.parse: an axis' value of the wrong type is
    rejected with the same field message."""
    with pytest.raises(ConfigError, match="Trainer.train_steps must be an int"):
        config.parse(["gin/experiments/sweep_smoke.gin"], ["TRAIN_STEPS = 'x'"])


# --------------------------------------------------------------------------------------
# Run directory names, --out, the run lock, run_status

@pytest.mark.parametrize("experiment, run, needle", [
    ("", "r", "non-empty"),
    ("exp", "   ", "non-empty"),
    ("/abs", "r", "path separators"),
    ("exp", "a/b", "path separators"),
    ("exp", "..", "'..'"),
    ("..", "r", "'..'"),
    ("exp", "x..y", "'..'"),
    ("exp", ".", "'..'"),
])
def test_safe_run_dir_refuses(tmp_path, experiment, run, needle):
    with pytest.raises(ConfigError, match=needle):
        results.safe_run_dir(str(tmp_path), experiment, run)
    assert os.listdir(tmp_path) == []


def test_safe_run_dir_accepts_sweep_names(tmp_path):
    path = results.safe_run_dir(str(tmp_path), "smoke", "critic_flow_steps=2,task_id=1,seed=0")
    assert path == os.path.join(str(tmp_path), "smoke", "critic_flow_steps=2,task_id=1,seed=0")


def test_out_pointing_at_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"^--out .*file is a file, not a directory$"):
        results.ensure_writable_dir(str(f))
    with pytest.raises(ConfigError, match=r"cannot be created: .*file is a file"):
        results.ensure_writable_dir(str(f / "sub"))
    assert f.read_text() == "x"


def test_out_read_only(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    # (tests run as root, which ignores permission bits: simulate a read-only mount)
    monkeypatch.setattr(os, "access", lambda p, m: False if os.path.abspath(p) == str(ro) else real(p, m))
    with pytest.raises(ConfigError, match=r"^--out .*ro/runs is not writable \(.*ro is not writable\)"):
        results.ensure_writable_dir(str(ro / "runs"))
    assert os.listdir(ro) == []
    assert results.ensure_writable_dir(str(tmp_path / "new" / "dir")) == str(tmp_path / "new" / "dir")
    assert not (tmp_path / "new").exists()  # checking writes nothing


def test_run_lock_second_trainer_refused(tmp_path):
    run = str(tmp_path / "run")
    with results.RunLock(run):
        with pytest.raises(results.RunError) as e:
            results.RunLock(run).acquire()
        assert str(e.value) == f"{run} is being trained by pid {os.getpid()}"
    with results.RunLock(run):  # released: free again
        pass


def test_run_lock_across_processes(tmp_path):
    import subprocess
    import sys

    run = str(tmp_path / "run")
    code = ("import sys, time; from floq import results; l = results.RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code, run], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(results.RunError, match=rf"is being trained by pid {proc.pid}$"):
            results.RunLock(run).acquire()
    finally:
        proc.kill()
        proc.wait()
    with results.RunLock(run):  # the kernel released the dead holder's lock
        pass


@pytest.mark.parametrize("status, expected", [
    ("running", "partial"), ("preempted", "partial"), ("done", "done"), ("diverged", "diverged"),
    ("failed", "failed"), ("weird", "partial"),
])
def test_run_status(tmp_path, status, expected):
    results.write_json(str(tmp_path / "run.json"), {"status": status, "step": 40, "reason": "non-finite loss"})
    assert results.run_status(str(tmp_path)) == expected
    from floq.launch import runner

    assert runner.run_status(str(tmp_path)) == expected
    if status in ("diverged", "failed"):
        assert results.run_reason(str(tmp_path)) == "non-finite loss (step 40)"


def test_run_status_absent_and_garbled(tmp_path):
    assert results.run_status(str(tmp_path / "nothing")) == "absent"
    (tmp_path / "run.json").write_text("{garbled")
    assert results.run_status(str(tmp_path)) == "partial"


# --------------------------------------------------------------------------------------
# Datasets

@pytest.fixture(scope="module")
def dims():
    return sources.env_space_dims(CUBE)


def qpos_width():
    """The cube environment's qpos width (its MuJoCo model's nq: 21)."""
    from floq.data.files import env_qpos_width

    return env_qpos_width(CUBE)


def write_npz(path, n=40, obs=None, act=None, episode=10, **override):
    obs_dim, act_dim = obs, act
    arrays = {
        "observations": np.zeros((n, obs_dim), np.float32),
        "actions": np.zeros((n, act_dim), np.float32),
        "terminals": (np.arange(n) % episode == episode - 1).astype(np.float32),
        "qpos": np.zeros((n, qpos_width()), np.float32),
        "qvel": np.zeros((n, 5), np.float32),
    }
    arrays.update(override)
    np.savez_compressed(path, **arrays)
    return str(path)


@pytest.fixture
def good(tmp_path, dims):
    train = write_npz(tmp_path / "d.npz", obs=dims[0], act=dims[1])
    write_npz(tmp_path / "d-val.npz", n=20, obs=dims[0], act=dims[1])
    return train


def task_for(path):
    return sources.Task(env="cube-single-play", source="path", dataset_path=path)


def test_good_dataset_passes(good):
    assert task_for(good).resolve_path(progress=False) == good


def test_row_counts_differ(tmp_path, dims):
    train = write_npz(tmp_path / "d.npz", obs=dims[0], act=dims[1], actions=np.zeros((39, dims[1]), np.float32))
    write_npz(tmp_path / "d-val.npz", obs=dims[0], act=dims[1])
    with pytest.raises(sources.DataError) as e:
        task_for(train).resolve_path()
    assert str(e.value) == (f"dataset file {train}: array 'actions' has 39 rows but 'observations' has 40 "
                            f"(arrays must have one row per transition)")


def test_observation_width_mismatch(tmp_path, dims):
    train = write_npz(tmp_path / "d.npz", obs=dims[0] + 3, act=dims[1])
    write_npz(tmp_path / "d-val.npz", obs=dims[0] + 3, act=dims[1])
    with pytest.raises(sources.DataError, match=rf"{train}: array 'observations' is {dims[0] + 3} wide, "
                                                rf"but the environment's observations are {dims[0]} wide"):
        task_for(train).resolve_path()


def test_action_width_mismatch(tmp_path, dims):
    train = write_npz(tmp_path / "d.npz", obs=dims[0], act=dims[1] + 1)
    write_npz(tmp_path / "d-val.npz", obs=dims[0], act=dims[1] + 1)
    with pytest.raises(sources.DataError, match=rf"array 'actions' is {dims[1] + 1} wide"):
        task_for(train).resolve_path()


@pytest.mark.parametrize("width", [5, 30])
def test_qpos_width_mismatch_is_one_line_not_numpy_broadcasting(tmp_path, dims, width):
    """OGBench relabels rewards from qpos columns by index: a qpos 5 wide failed in numpy
    ("cannot load dataset ...: ValueError: operands could not be broadcast together with
    shapes (1,3) (36,1,0)"), one 30 wide relabelled from the wrong columns without a word."""
    train = write_npz(tmp_path / "d.npz", obs=dims[0], act=dims[1], qpos=np.zeros((40, width), np.float32))
    write_npz(tmp_path / "d-val.npz", n=20, obs=dims[0], act=dims[1])
    with pytest.raises(sources.DataError) as e:
        task_for(train).load(progress=False)
    assert str(e.value) == (f"dataset file {train}: array 'qpos' is {width} wide, but the environment's qpos "
                            f"(its MuJoCo model's nq) is 21 wide (a dataset of another environment?)")
    assert qpos_width() == 21


def test_one_dimensional_observations(tmp_path, dims):
    train = write_npz(tmp_path / "d.npz", obs=dims[0], act=dims[1], observations=np.zeros(40, np.float32))
    write_npz(tmp_path / "d-val.npz", obs=dims[0], act=dims[1])
    with pytest.raises(sources.DataError, match=rf"^dataset file {train}: array 'observations' has shape \(40,\), "
                                                r"expected \(transitions, width\) \(1-D"):
        task_for(train).resolve_path()


def test_truncated_val_beside_good_train(good):
    val = good.replace(".npz", "-val.npz")
    size = os.path.getsize(val)
    with open(val, "r+b") as f:
        f.truncate(size - 30)
    with pytest.raises(sources.DataError, match=rf"^dataset file {val} is not a readable \.npz"):
        task_for(good).resolve_path()


def test_overwritten_val_member_detected(good, dims):
    val = good.replace(".npz", "-val.npz")
    # a same-size overwrite inside the compressed observations member: the zip CRC catches it
    raw = bytearray(open(val, "rb").read())
    start = raw.find(b"observations.npy") + 200
    for i in range(start, start + 16):
        raw[i] ^= 0x5A
    open(val, "wb").write(bytes(raw))
    with pytest.raises(sources.DataError, match=rf"^dataset file {val}"):
        task_for(good).resolve_path()


def test_every_transition_terminal(tmp_path, dims):
    train = write_npz(tmp_path / "d.npz", obs=dims[0], act=dims[1], terminals=np.ones(40, np.float32))
    write_npz(tmp_path / "d-val.npz", obs=dims[0], act=dims[1])
    with pytest.raises(sources.DataError, match=rf"^dataset file {train}: array 'terminals' marks every transition "
                                                r"terminal"):
        task_for(train).resolve_path()


def test_not_an_npz(tmp_path, dims):
    train = tmp_path / "d.npz"
    train.write_text("not a zip")
    write_npz(tmp_path / "d-val.npz", obs=dims[0], act=dims[1])
    with pytest.raises(sources.DataError, match=r"is not a \.npz archive \(numpy's zip of arrays; this file starts "
                                                r"with b'not '\)") as e:
        task_for(str(train)).resolve_path()
    assert "pickled" not in str(e.value)


def test_dataset_errors_are_config_errors_before_anything_is_written(tmp_path, dims):
    """floq.loop.run turns a DataError into a ConfigError before creating the run dir."""
    from floq import loop

    bad = write_npz(tmp_path / "d.npz", obs=dims[0], act=dims[1], terminals=np.ones(40, np.float32))
    write_npz(tmp_path / "d-val.npz", obs=dims[0], act=dims[1])
    out = tmp_path / "runs"
    with pytest.raises(ConfigError, match="marks every transition terminal"):
        loop.run([SMOKE], [f"DATASET_PATH = '{bad}'"], out_dir=str(out))
    assert not out.exists()


def _values_case(name, n, o, a):
    """The audit's bad datasets (made from a good one): the override of each."""
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((n, o)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, a)).astype(np.float32)
    term = (np.arange(n) % 10 == 9).astype(np.float32)
    if name == "nan_obs":
        obs[5, 3] = np.nan
        return dict(observations=obs), "array 'observations' holds 1 non-finite value(s), the first nan at row 5, column 3"
    if name == "allnan_obs":
        return dict(observations=np.full((n, o), np.nan, np.float32)), f"array 'observations' holds {n * o} non-finite"
    if name == "never_terminal":
        return dict(terminals=np.zeros(n, np.float32)), "array 'terminals' does not mark the last transition terminal"
    if name == "one_row":
        return (dict(observations=obs[:1], actions=act[:1], terminals=term[:1], qpos=np.zeros((1, qpos_width()), np.float32),
                     qvel=np.zeros((1, 5), np.float32)), "array 'terminals' does not mark the last transition terminal")
    if name == "nan_qpos":
        return dict(qpos=np.full((n, qpos_width()), np.nan, np.float32)), "array 'qpos' holds"
    if name == "act_scaled":
        return dict(actions=act * 10), "array 'actions' has"
    if name == "inf_act":
        act[7, 1] = np.inf
        return dict(actions=act), "array 'actions' holds 1 non-finite value(s), the first inf at row 7, column 1"
    raise ValueError(name)


@pytest.mark.parametrize("case", ["nan_obs", "allnan_obs", "never_terminal", "one_row", "nan_qpos", "act_scaled",
                                  "inf_act"])
@pytest.mark.parametrize("which", ["train", "val"])
def test_bad_values_are_refused_naming_file_and_array(tmp_path, dims, case, which):
    """Each passed validation before (and ended 'diverged', crashed in JAX or trained on
    garbage to 'done'): now one DataError naming the file and the array."""
    override, message = _values_case(case, 40, *dims)
    train = write_npz(tmp_path / "d.npz", obs=dims[0], act=dims[1], **(override if which == "train" else {}))
    val = write_npz(tmp_path / "d-val.npz", obs=dims[0], act=dims[1], **(override if which == "val" else {}))
    with pytest.raises(sources.DataError) as e:
        task_for(train).resolve_path()
    assert str(e.value).startswith(f"dataset file {train if which == 'train' else val}: "), str(e.value)
    assert message in str(e.value)


def test_actions_on_the_box_edge_pass(tmp_path, dims):
    act = np.tile(np.array([-1.0, 1.0] * dims[1], np.float32)[:dims[1]], (40, 1))
    train = write_npz(tmp_path / "d.npz", obs=dims[0], act=dims[1], actions=act)
    write_npz(tmp_path / "d-val.npz", obs=dims[0], act=dims[1])
    assert task_for(train).resolve_path(progress=False) == train


def test_nan_observations_in_the_real_data_are_one_line_before_a_run_dir(tmp_path, smoke_dataset, capsys):
    """The audit: NaN at observations[5, 3] of the smoke dataset ended as exit 3, 'diverged'."""
    from floq.cli import main

    with np.load(smoke_dataset) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["observations"] = arrays["observations"].copy()
    arrays["observations"][5, 3] = np.nan
    bad = tmp_path / "nan_obs.npz"
    np.savez_compressed(bad, **arrays)
    with np.load(smoke_dataset.replace(".npz", "-val.npz")) as f:
        np.savez_compressed(tmp_path / "nan_obs-val.npz", **{k: f[k] for k in f.files})
    run_dir = tmp_path / "run"
    code = main(["run", SMOKE, "--bind", f"DATASET_PATH='{bad}'", "--run-dir", str(run_dir)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1, err
    assert f"dataset file {bad}: array 'observations' holds 1 non-finite value(s)" in err[0]
    assert not run_dir.exists()
