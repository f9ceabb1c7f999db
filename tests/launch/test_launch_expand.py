"""Sweep expansion (names, order, tags, bindings) and validation, on a fake base config."""

import os

import gin
import pytest

from floq.launch import spec, sweep
from floq.launch.sweep import SweepError

GRID = """
Sweep.name = 'grid'
Sweep.axes = {'CRITIC_FLOW_STEPS': [1, 2], 'TASK_ID': [1, 2]}
Sweep.seeds = [0, 1]
"""


def test_grid_names_order_tags_bindings(fake_base, parse, tmp_path):
    plan = sweep.expand(fake_base(GRID), str(tmp_path / "out"), parse)
    assert plan.name == "grid"
    assert plan.sweep_dir == str(tmp_path / "out" / "grid")
    assert [r.name for r in plan.runs] == [
        "critic_flow_steps=1,task_id=1,seed=0",
        "critic_flow_steps=1,task_id=1,seed=1",
        "critic_flow_steps=1,task_id=2,seed=0",
        "critic_flow_steps=1,task_id=2,seed=1",
        "critic_flow_steps=2,task_id=1,seed=0",
        "critic_flow_steps=2,task_id=1,seed=1",
        "critic_flow_steps=2,task_id=2,seed=0",
        "critic_flow_steps=2,task_id=2,seed=1",
    ]
    run = plan.runs[5]
    assert run.bindings == ("CRITIC_FLOW_STEPS = 2", "TASK_ID = 1", "SEED = 1")
    assert run.tags == {"critic_flow_steps": 2, "task_id": 1}
    assert run.gin_files == (str(tmp_path / "sweep.gin"),)
    assert run.run_dir == os.path.join(plan.sweep_dir, run.name)
    assert [a.tag for a in plan.axes] == ["critic_flow_steps", "task_id"]
    assert plan.base_values["train_steps"] == 100
    # Stable: the same file expands to the same runs.
    assert sweep.expand(fake_base(GRID), str(tmp_path / "out"), parse).runs == plan.runs


def test_bindings_apply(fake_base, parse):
    """Each run's bindings, parsed after the file, set what the name says."""
    plan = sweep.expand(fake_base(GRID), None, parse)
    run = plan.runs[6]  # critic_flow_steps=2,task_id=2,seed=0
    parse(run.gin_files, run.bindings)
    assert gin.query_parameter("%CRITIC_FLOW_STEPS") == 2
    assert gin.query_parameter("%TASK_ID") == 2
    assert gin.query_parameter("%SEED") == 0


def test_param_axes_references_and_odd_values(fake_base, parse):
    plan = sweep.expand(
        fake_base("""
Sweep.axes = {'FakeTask.env': ['cube/double', 'maze'],
              'fakefloq.FakeCritic.depth': [@FakeCritic, 3e-4, [2, 3]]}
"""),
        None,
        parse,
    )
    assert plan.name == "sweep"  # defaults to the file's name
    assert plan.seeds is None
    names = [r.name for r in plan.runs]
    assert names[:3] == [
        "fake_task_env=cube_double,depth=FakeCritic",
        "fake_task_env=cube_double,depth=0.0003",
        "fake_task_env=cube_double,depth=2_3",
    ]
    # 'env' is a standard eval.csv column: the tag is qualified by its configurable.
    assert plan.runs[0].tags == {"fake_task_env": "cube/double", "depth": "FakeCritic"}
    assert plan.runs[2].bindings == (
        "FakeTask.env = 'cube/double'",
        "fakefloq.FakeCritic.depth = [2, 3]",
    )
    assert plan.runs[0].bindings[1] == "fakefloq.FakeCritic.depth = @FakeCritic"
    for run in plan.runs:
        parse(run.gin_files, run.bindings)  # every binding is valid gin


def test_single_run_without_axes_or_seeds(fake_base, parse):
    plan = sweep.expand(fake_base(""), None, parse)
    assert [(r.name, r.bindings, dict(r.tags)) for r in plan.runs] == [("base", (), {})]
    plan = sweep.expand(fake_base("Sweep.seeds = [3]"), None, parse)
    assert [(r.name, r.bindings) for r in plan.runs] == [("seed=3", ("SEED = 3",))]


def test_tag_clashes_are_qualified(fake_base, parse):
    plan = sweep.expand(
        fake_base("""
Sweep.axes = {'FakeTask.seed': [1], 'TRAIN_STEPS': [5], 'FakeCritic.width': [4],
              'FakeCritic.depth': [2]}
"""),
        None,
        parse,
    )
    assert plan.runs[0].tags == {
        "fake_task_seed": 1,
        "sweep_train_steps": 5,
        "width": 4,
        "depth": 2,
    }


@pytest.mark.parametrize(
    "body, message",
    [
        ("Sweep.axes = {'NOPE': [1]}", "axis 'NOPE' is not a macro that sweep.gin"),
        (
            "Sweep.axes = {'FakeCritic.nope': [1]}",
            "axis 'FakeCritic.nope' is not a known binding: Configurable 'FakeCritic' doesn't have a "
            "parameter named 'nope'",
        ),
        ("Sweep.axes = {'Nope.x': [1]}", "axis 'Nope.x' is not a known binding"),
        ("Sweep.axes = {'CRITIC_FLOW_STEPS': []}", "axis 'CRITIC_FLOW_STEPS' has no values"),
        ("Sweep.axes = {'CRITIC_FLOW_STEPS': 3}", "axis 'CRITIC_FLOW_STEPS' must map to a list"),
        ("Sweep.axes = {'CRITIC_FLOW_STEPS': [1, 1]}", "lists the value 1 twice"),
        ("Sweep.axes = [1]", "Sweep.axes must be a dict"),
        # a macro and the parameter it feeds (directly or through another macro)
        (
            "Sweep.axes = {'CRITIC_FLOW_STEPS': [1], 'FakeCritic.flow_steps': [2]}",
            "axes 'CRITIC_FLOW_STEPS' and 'FakeCritic.flow_steps' both bind FakeCritic.flow_steps",
        ),
        (
            "Sweep.axes = {'CRITIC_FLOW_STEPS': [1], 'FLOWS': [2]}",
            "axes 'CRITIC_FLOW_STEPS' and 'FLOWS' both bind FakeCritic.flow_steps",
        ),
        # the same key spelled twice
        (
            "Sweep.axes = {'CRITIC_FLOW_STEPS': [1], '%CRITIC_FLOW_STEPS': [2]}",
            "axes 'CRITIC_FLOW_STEPS' and '%CRITIC_FLOW_STEPS' both bind",
        ),
        (
            "Sweep.axes = {'FakeCritic.width': [1], 'fakefloq.FakeCritic.width': [2]}",
            "both bind FakeCritic.width",
        ),
        ("Sweep.axes = {'SEED': [1]}\nSweep.seeds = [0]", "axis 'SEED' and Sweep.seeds both bind"),
        ("Sweep.seeds = []", "Sweep.seeds must be a non-empty list"),
        ("Sweep.seeds = [0, 0]", "Sweep.seeds lists a seed twice"),
        ("Sweep.seeds = ['a']", "Sweep.seeds must be integers"),
        ("Sweep.seeds = [0]\nSweep.seed_macro = 'RNG'", "macro RNG, which sweep.gin"),
        ("Sweep.name = 'a/b'", "Sweep.name must be a plain folder name"),
        ("Sweep.axes = {'FakeCritic.width': [@Nope]}", "sweep.gin does not parse"),
        ("Sweep.axes = {'FakeTask.env': ['a/b', 'a_b']}", "two runs get the same name"),
    ],
)
def test_validation_errors(fake_base, parse, body, message):
    with pytest.raises(SweepError) as info:
        sweep.expand(fake_base(body), None, parse)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_missing_file_and_cli_exit_code(tmp_path, capsys):
    with pytest.raises(SweepError, match="sweep file not found"):
        sweep.expand(str(tmp_path / "nope.gin"))
    assert sweep.main([str(tmp_path / "nope.gin")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"floq sweep: error: sweep file not found: {tmp_path / 'nope.gin'}"


def test_repo_root_is_a_gin_search_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec.add_repo_search_path()
    assert gin.config._LOCATION_PREFIXES.count(spec.REPO_ROOT) == 1
    assert os.path.isfile(os.path.join(spec.REPO_ROOT, "floq", "launch", "spec.py"))


def _real_parse_available():
    try:
        from floq import config  # noqa: F401
    except ImportError:
        return False
    return os.path.isfile(os.path.join(spec.REPO_ROOT, "gin", "experiments", "smoke.gin"))


@pytest.mark.skipif(not _real_parse_available(), reason="floq.config / smoke.gin not here")
def test_shipped_sweep_files_expand(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # includes resolve from the repo root, not the cwd
    plan = sweep.expand("gin/experiments/sweep_smoke.gin", "out")
    assert len(plan.runs) == 8
    assert plan.runs[0].name == "critic_flow_steps=1,task_id=1,seed=0"
    assert plan.runs[-1].tags == {"critic_flow_steps": 2, "task_id": 2}
    path = os.path.join(spec.REPO_ROOT, "gin", "experiments", "paper", "scaling_flow_steps.gin")
    if not all(
        os.path.isfile(os.path.join(spec.REPO_ROOT, "gin", f))
        for f in ("tasks/cube-double-play.gin", "critics/floq.gin", "algorithms/fql.gin")
    ):
        pytest.skip("the scaling study includes files that are not here yet")
    plan = sweep.expand(path, "out")
    assert plan.name == "scaling_flow_steps"
    steps = sorted({r.tags["critic_flow_steps"] for r in plan.runs})
    assert steps == [1, 2, 4, 8, 16, 32]
    assert plan.seeds == [0, 1, 2]
    # The sweep adds no critic-specific binding: the floq critic resolves K = 1 itself, so a
    # K = 1 run of the sweep is the run `floq run` would train with the same bindings.
    assert not any("train_at_zero_only" in b for r in plan.runs for b in r.bindings)
    from floq.train import build

    for k in (1, 2):
        run = next(r for r in plan.runs if r.tags["critic_flow_steps"] == k)
        assert build(run.gin_files, run.bindings).critic.train_at_zero_only is (k == 1)


# --------------------------------------------------------------------------------------
# Environments (Sweep.tasks) and unions of grids (Sweep.grids), on the fake base.


@pytest.fixture
def task_files(tmp_path):
    """Two fake task files and a floq-best-like overlay folder."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "cube.gin").write_text("FakeTask.env = 'cube'\nTASK_ID = 2\n")
    (tmp_path / "tasks" / "maze.gin").write_text("FakeTask.env = 'maze'\nTASK_ID = 1\n")
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "cube.gin").write_text("CRITIC_WIDTH = 64\n")
    (tmp_path / "best" / "maze.gin").write_text("# nothing\n")
    return {name: str(tmp_path / "tasks" / f"{name}.gin") for name in ("cube", "maze")}


def test_tasks_axis_selects_whole_task_files(fake_base, parse, task_files):
    plan = sweep.expand(fake_base(f"""
Sweep.tasks = ['{task_files["cube"]}', '{task_files["maze"]}']
Sweep.axes = {{'CRITIC_FLOW_STEPS': [1, 2]}}
Sweep.seeds = [0]
"""), None, parse)
    assert [r.name for r in plan.runs] == [
        "env=cube,critic_flow_steps=1,seed=0",
        "env=cube,critic_flow_steps=2,seed=0",
        "env=maze,critic_flow_steps=1,seed=0",
        "env=maze,critic_flow_steps=2,seed=0",
    ]
    run = plan.runs[2]
    assert run.tags == {"env": "maze", "critic_flow_steps": 1}
    # The task file comes after the sweep file (so after what the sweep file includes).
    assert run.gin_files[-1] == task_files["maze"] and run.gin_files[0].endswith("sweep.gin")
    parse(run.gin_files, run.bindings)
    assert gin.query_parameter("FakeTask.env") == "maze" and gin.query_parameter("%TASK_ID") == 1


@pytest.mark.parametrize("body, message", [
    ("Sweep.tasks = ['gin/tasks/cube-dubble-play.gin']",
     "Sweep.tasks: gin file not found: gin/tasks/cube-dubble-play.gin"),
    ("Sweep.tasks = []", "Sweep.tasks must be a non-empty list"),
    ("Sweep.tasks = 'x.gin'", "Sweep.tasks must be a list of gin file paths"),
    ("Sweep.grids = [{'name': 'a'}, {'name': 'a'}]", "names the grid 'a' twice"),
    ("Sweep.grids = [{'name': 'a'}, {}]", "Sweep.grids[1] needs a 'name'"),
    ("Sweep.grids = [{'name': 'a', 'axis': {}}]", "Sweep.grids[0] has unknown key(s) axis"),
    ("Sweep.grids = [{'name': 'a', 'files': ['nope.gin']}]", "grid 'a' files: gin file not found: nope.gin"),
    ("Sweep.grids = [{'name': 'a', 'axes': {'CRITIC_WIDTH': [1]}}]\nSweep.axes = {'CRITIC_WIDTH': [2]}",
     "grid 'a' sweeps 'CRITIC_WIDTH', which Sweep.axes also sweeps"),
    ("Sweep.grids = [{'name': 'a', 'axes': {'NOPE': [1]}}]", "axis 'NOPE' of grid 'a' is not a macro"),
    ("Sweep.grids = [{'name': 'a', 'bind': {'CRITIC_WIDTH': 3}, 'axes': {'FakeCritic.width': [1]}}]",
     "grid 'a' bind 'CRITIC_WIDTH' and axis 'FakeCritic.width' both bind FakeCritic.width"),
    ("Sweep.grids = [{'name': 'a', 'overlays': ['best/{task}.gin']}]", "names {task} but the grid has no tasks"),
    # the same configuration twice (two grids that do the same thing)
    ("Sweep.grids = [{'name': 'a', 'bind': {'CRITIC_WIDTH': 3}}, {'name': 'b', 'bind': {'CRITIC_WIDTH': 3}}]",
     "runs 'grid=a' and 'grid=b' have the same files and bindings"),
    ("Sweep.tasks = %NOPE", "sweep.gin does not parse: No bindings specified for 'NOPE/gin.macro'"),
])
def test_grid_and_task_errors(fake_base, parse, body, message):
    with pytest.raises(SweepError) as info:
        sweep.expand(fake_base(body), None, parse)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_task_file_that_does_not_parse_fails_before_launch(fake_base, parse, tmp_path):
    bad = tmp_path / "bad.gin"
    bad.write_text("FakeTask.nope = 1\n")
    with pytest.raises(SweepError, match="with .*bad.gin does not parse"):
        sweep.expand(fake_base(f"Sweep.tasks = ['{bad}']"), None, parse)


def test_union_of_grids_shares_tasks_seeds_and_axes(fake_base, parse, task_files, tmp_path):
    """floq x K x width + monolithic x width: no K in the monolithic names, no duplicates."""
    plan = sweep.expand(fake_base(f"""
WIDTHS = [8, 16]
Sweep.name = 'union'
Sweep.tasks = ['{task_files["cube"]}', '{task_files["maze"]}']
Sweep.axes = {{'CRITIC_WIDTH': %WIDTHS}}
Sweep.seeds = [0, 1]
Sweep.grids = [
    {{'name': 'floq', 'axes': {{'CRITIC_FLOW_STEPS': [1, 4]}}}},
    {{'name': 'mono', 'bind': {{'FakeCritic.depth': 7}}}},
    {{'name': 'best', 'tasks': ['{task_files["cube"]}'], 'overlays': ['{tmp_path}/best/{{task}}.gin']}},
]
"""), str(tmp_path / "out"), parse)
    names = [r.name for r in plan.runs]
    assert len(names) == len(set(names)) == 2 * 2 * 2 * 2 + 2 * 2 * 2 + 1 * 2 * 2
    assert names[0] == "grid=floq,env=cube,critic_flow_steps=1,critic_width=8,seed=0"
    mono = [r for r in plan.runs if r.tags["grid"] == "mono"]
    assert len(mono) == 8 and all("critic_flow_steps" not in r.tags for r in mono)
    assert mono[0].name == "grid=mono,env=cube,critic_width=8,seed=0"
    assert mono[0].bindings == ("FakeCritic.depth = 7", "CRITIC_WIDTH = 8", "SEED = 0")
    best = [r for r in plan.runs if r.tags["grid"] == "best"]
    assert {r.tags["env"] for r in best} == {"cube"}
    assert best[0].gin_files[-1] == str(tmp_path / "best" / "cube.gin")  # overlay after the task file
    assert {r.run_dir.rsplit(os.sep, 2)[-2] for r in plan.runs} == {"union"}  # one output folder
    # Every run's config is what its name says.
    parse(mono[0].gin_files, mono[0].bindings)
    assert gin.query_parameter("FakeCritic.depth") == 7 and gin.query_parameter("%CRITIC_WIDTH") == 8
    assert [a.key for a in plan.axes] == ["CRITIC_FLOW_STEPS", "CRITIC_WIDTH"]
    # The sweep knows no critic: no one-step binding at K = 1.
    assert not any("train_at_zero_only" in b for r in plan.runs for b in r.bindings)


def test_extra_bindings_narrow_the_sweep_through_its_macros(fake_base, parse, task_files):
    file = fake_base(f"""
ENVS = ['{task_files["cube"]}', '{task_files["maze"]}']
SEEDS = [0, 1, 2]
Sweep.tasks = %ENVS
Sweep.seeds = %SEEDS
""")
    assert len(sweep.expand(file, None, parse).runs) == 6
    plan = sweep.expand(file, None, parse, bindings=[f"ENVS = ['{task_files['maze']}']", "SEEDS = [1]"])
    assert [r.name for r in plan.runs] == ["env=maze,seed=1"]
    assert plan.runs[0].bindings[:2] == (f"ENVS = ['{task_files['maze']}']", "SEEDS = [1]")
    with pytest.raises(SweepError, match="does not parse"):
        sweep.expand(file, None, parse, bindings=["NOT VALID GIN ="])


def test_sweep_logger_reaches_every_run(monkeypatch, capsys):
    """`floq sweep --logger tensorboard` is `floq run --logger`: the binding goes to every run
    after the --bind bindings; an unknown tracker package is one line and exit 2."""
    seen = {}
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: seen.update(k) or {
        "counts": {"done": 0}, "runs": []})
    monkeypatch.setattr("floq.loggers.check_loggers", lambda names: tuple(names))
    assert sweep.main(["x.gin", "--dry-run", "--bind", "SEED = 3", "--logger", "tensorboard"]) == 0
    assert seen["bindings"] == ["SEED = 3", "Trainer.loggers = ('tensorboard',)"]

    def missing(names):
        from floq.config import ConfigError
        raise ConfigError("--logger wandb needs the wandb package: pip install -e '.[wandb]'")

    monkeypatch.setattr("floq.loggers.check_loggers", missing)
    assert sweep.main(["x.gin", "--logger", "wandb"]) == 2
    assert capsys.readouterr().err.strip() == (
        "floq sweep: error: --logger wandb needs the wandb package: pip install -e '.[wandb]'")
