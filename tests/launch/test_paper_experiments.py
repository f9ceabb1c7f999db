"""The paper's experiments (gin/experiments/paper/): each parses, expands to its run count,
and its runs carry each environment's settings; --dry-run lists and prices them."""

from __future__ import annotations

import glob
import os

import gin
import pytest

from floq.launch import cost, spec, sweep
from floq.train import build

PAPER_DIR = os.path.join(spec.REPO_ROOT, "gin", "experiments", "paper")
RUN_COUNTS = {
    "offline.gin": 750,
    "offline_programs.gin": 150,
    "scaling_flow_steps.gin": 120,
    "scaling_capacity.gin": 114,
    "ablation_noise_coverage.gin": 45,
    "ablation_embeddings.gin": 36,
    "ablation_noise_samples.gin": 30,
    "online_finetune.gin": 60,
}
TEN_ENVS = {
    "antmaze-large-navigate", "antmaze-giant-navigate", "humanoidmaze-medium-navigate",
    "humanoidmaze-large-navigate", "antsoccer-arena-navigate", "cube-single-play",
    "cube-double-play", "scene-play", "puzzle-3x3-play", "puzzle-4x4-play",
}


@pytest.fixture(autouse=True)
def _clear(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOQ_CACHE_DIR", str(tmp_path / "cache"))
    gin.clear_config()
    yield
    gin.clear_config()


_PLANS: dict = {}


def plan_of(name: str):
    if name not in _PLANS:
        _PLANS[name] = sweep.expand(os.path.join(PAPER_DIR, name), "/tmp/unused-sweeps")
    return _PLANS[name]


# The FQL paper's baseline rows (IQL, ReBRAC, IFQL): checked in tests/test_algorithm_settings.py
# (its grids expand only once gin/algorithms/{iql,rebrac,ifql}.gin exist).
FQL_PAPER_FILES = {"baselines.gin": 1200}


def test_every_paper_file_is_listed_and_opens_with_its_description():
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(PAPER_DIR, "*.gin"))) == sorted(
        {**RUN_COUNTS, **FQL_PAPER_FILES})
    for name, count in FQL_PAPER_FILES.items():
        with open(os.path.join(PAPER_DIR, name)) as f:
            head = f.read().split("\ninclude", 1)[0]
        assert head.startswith(f"# {name[:-4]}:") and "FQL paper" in head and "Park" in head, name
        assert "GPU-hours" in head and "Narrow it" in head and f"{count} runs" in head, name
    for name, count in RUN_COUNTS.items():
        with open(os.path.join(PAPER_DIR, name)) as f:
            head = f.read().split("\ninclude", 1)[0]
        assert head.startswith(f"# {name[:-4]}:"), name
        assert "floq paper" in head and "Agrawalla" in head, name  # what it reproduces
        assert "GPU-hours" in head and "Narrow it" in head, name  # cost, and how to narrow it
        assert f"{count} runs" in head.replace(",", ""), name


@pytest.mark.parametrize("name", sorted(RUN_COUNTS))
def test_paper_file_expands_to_its_run_count(name):
    plan = plan_of(name)
    assert len(plan.runs) == RUN_COUNTS[name]
    assert len({r.name for r in plan.runs}) == len(plan.runs)
    assert len({(r.gin_files, r.bindings) for r in plan.runs}) == len(plan.runs)


def _run(plan, **tags):
    matches = [r for r in plan.runs if all(r.tags.get(k) == v for k, v in tags.items())]
    assert matches, tags
    return matches[0]


def _exp(run):
    return build(list(run.gin_files), list(run.bindings))


def test_offline_table_runs_carry_each_environments_settings():
    plan = plan_of("offline.gin")
    assert {r.tags["env"] for r in plan.runs} == TEN_ENVS
    assert {r.tags["grid"] for r in plan.runs} == {"floq-def", "floq-best", "fql", "fql-resnet", "fql-iqn"}
    assert {r.tags["task_id"] for r in plan.runs} == {1, 2, 3, 4, 5} and plan.seeds == [0, 1, 2]
    for grid in ("floq-def", "fql", "fql-iqn"):
        exp = _exp(_run(plan, grid=grid, env="scene-play", task_id=3))
        assert exp.algorithm.alpha == 300 and exp.task.discount == 0.99 and exp.task.task_id == 3
        exp = _exp(_run(plan, grid=grid, env="humanoidmaze-medium-navigate"))
        assert exp.task.discount == 0.995 and exp.task.env == "humanoidmaze-medium-navigate"
    floq = _exp(_run(plan, grid="floq-def", env="humanoidmaze-large-navigate"))
    assert (floq.algorithm.alpha, floq.trainer.batch_size, floq.task.discount) == (20, 512, 0.995)
    fql = _exp(_run(plan, grid="fql", env="humanoidmaze-large-navigate"))
    # The floq paper's FQL column (gin/recipes/floq_paper_fql.gin): FQL's alpha 30, but batch 512
    # as the floq README's FQL command there (issue 25 item 3).
    assert (fql.algorithm.alpha, fql.trainer.batch_size) == (30, 512)
    giant = _exp(_run(plan, grid="fql", env="antmaze-giant-navigate"))
    assert (giant.algorithm.alpha, giant.trainer.batch_size, giant.critic.q_agg) == (10, 512, "min")
    assert _exp(_run(plan, grid="fql", env="scene-play")).trainer.batch_size == 256
    for env, shape in (("humanoidmaze-large-navigate", (4, 2)), ("antmaze-giant-navigate", (2, 4)),
                       ("cube-double-play", (2, 2))):
        net = _exp(_run(plan, grid="fql-resnet", env=env)).critic.net
        assert (net.num_blocks, net.block_depth) == shape, env
    assert _exp(_run(plan, grid="fql", env="antmaze-large-navigate")).critic.q_agg == "min"
    assert _exp(_run(plan, grid="floq-def", env="antmaze-large-navigate")).critic.q_agg == "mean"
    cube = _exp(_run(plan, grid="floq-def", env="cube-double-play"))
    assert cube.critic.field_net.depth == 2 and cube.critic.flow_steps == 8
    assert _exp(_run(plan, grid="floq-best", env="antmaze-giant-navigate")).critic.flow_steps == 4
    assert _exp(_run(plan, grid="floq-def", env="antmaze-giant-navigate")).critic.flow_steps == 8
    assert _exp(_run(plan, grid="floq-best", env="puzzle-4x4-play")).critic.noise_coverage == 0.25
    iqn = _exp(_run(plan, grid="fql-iqn", env="puzzle-3x3-play"))
    assert type(iqn.critic).__name__ == "IQNCritic" and iqn.critic.loss_type == "released"
    assert iqn.algorithm.alpha == 1000
    resnet = _exp(_run(plan, grid="fql-resnet", env="cube-single-play"))
    assert type(resnet.critic.net).__name__ == "ResNet" and resnet.critic.name == "resnet"
    assert resnet.trainer.train_steps == 1_000_000 and resnet.trainer.eval_episodes == 50


def test_offline_table_narrows_through_its_macros():
    plan = sweep.expand(os.path.join(PAPER_DIR, "offline.gin"), None, bindings=[
        "ENVS = ['gin/tasks/cube-double-play.gin', 'gin/tasks/puzzle-4x4-play.gin']",
        "FLOQ_BEST_ENVS = ['gin/tasks/puzzle-4x4-play.gin']", "TASK_IDS = [4]", "SEEDS = [0]"])
    assert len(plan.runs) == 2 * 4 + 1
    assert {r.tags["env"] for r in plan.runs if r.tags["grid"] == "floq-best"} == {"puzzle-4x4-play"}


def test_scaling_studies_sweep_what_they_say():
    plan = plan_of("scaling_flow_steps.gin")
    k1 = _run(plan, grid="paper", env="humanoidmaze-large-navigate", critic_flow_steps=1)
    exp = _exp(k1)
    assert exp.critic.flow_steps == 1 and exp.critic.train_at_zero_only  # the released one-step setting
    exp = _exp(_run(plan, grid="cube", critic_flow_steps=32, task_id=5))
    assert exp.critic.flow_steps == 32 and not exp.critic.train_at_zero_only and exp.task.task_id == 5

    plan = plan_of("scaling_capacity.gin")
    floq = _exp(_run(plan, grid="floq", critic_width=1024, flow_field_depth=4))
    assert (floq.critic.field_net.width, floq.critic.field_net.depth) == (1024, 4)
    mlp = _exp(_run(plan, grid="mlp", critic_width=2048, critic_depth=8))
    assert (mlp.critic.net.width, mlp.critic.net.depth) == (2048, 8)
    resnet = _exp(_run(plan, grid="resnet", resnet_blocks=8))
    assert resnet.critic.net.num_blocks == 8
    # Issue 25 item 4: the ensemble-size axis, and the compute-matched ResNet on antmaze-giant.
    assert sorted(r.tags["critic_ensembles"] for r in plan.runs if r.tags["grid"] == "ensemble") == \
        [2, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16]
    ens = _exp(_run(plan, grid="ensemble", critic_ensembles=16))
    assert ens.critic.num_ensembles == 16 and (ens.critic.net.width, ens.critic.net.depth) == (512, 4)
    giant = _exp(_run(plan, grid="giant-resnet", critic_width=2048, resnet_blocks=4))
    assert giant.task.env == "antmaze-giant-navigate" and giant.task.task_id == 1
    assert (giant.critic.net.width, giant.critic.net.num_blocks, giant.critic.net.block_depth) == (2048, 4, 4)
    assert (giant.trainer.batch_size, giant.critic.q_agg, giant.task.discount) == (512, "min", 0.995)
    gfloq = _exp(_run(plan, grid="giant-floq"))
    assert gfloq.task.env == "antmaze-giant-navigate" and gfloq.critic.flow_steps == 8
    assert {r.tags["env"] for r in plan.runs if r.tags["grid"] in ("floq", "mlp", "resnet", "ensemble")} == \
        {"cube-double-play"}
    assert all("flow_field_depth" not in r.tags for r in plan.runs if r.tags["grid"] != "floq")


def test_ablations_sweep_what_they_say():
    exp = _exp(_run(plan_of("ablation_noise_coverage.gin"), env="puzzle-4x4-play", noise_coverage=0.5))
    assert exp.critic.noise_coverage == 0.5
    exp = _exp(_run(plan_of("ablation_embeddings.gin"), time_embed="fourier", prob_embed=False))
    assert exp.critic.time_embed == "fourier" and exp.critic.prob_embed is False
    exp = _exp(_run(plan_of("ablation_noise_samples.gin"), env="antmaze-giant-navigate", noise_samples=16))
    assert exp.critic.noise_samples == 16 and exp.critic.q_agg == "min"


def test_online_finetune_uses_the_fine_tuning_flags():
    plan = plan_of("online_finetune.gin")
    assert {r.tags["env"] for r in plan.runs} == TEN_ENVS
    floq = _exp(_run(plan, grid="floq", env="humanoidmaze-large-navigate"))
    assert floq.critic.flow_steps == 16 and floq.trainer.online_steps == 1_000_000
    assert floq.trainer.train_steps == 1_000_000
    assert _exp(_run(plan, grid="floq", env="antsoccer-arena-navigate")).algorithm.alpha == 30
    assert _exp(_run(plan, grid="floq", env="antmaze-giant-navigate")).critic.flow_steps == 4
    assert _exp(_run(plan, grid="fql", env="humanoidmaze-medium-navigate")).algorithm.alpha == 100
    fql = _exp(_run(plan, grid="fql", env="cube-double-play"))
    assert type(fql.critic).__name__ == "MonolithicCritic" and fql.algorithm.alpha == 300


@pytest.mark.slow  # builds all 750 configurations
def test_offline_dry_run_lists_750_runs_over_10_envs_and_prices_them(monkeypatch, tmp_path, capsys):
    """The CLI path; lowering is replaced by a fixed FLOP count (the real one: below)."""
    calls = []

    def fake_flops(algorithm, critic, batch_size, obs_dim, act_dim):
        calls.append((type(critic).__name__, batch_size, obs_dim, act_dim))
        return 1e10

    monkeypatch.setattr(cost, "lowered_flops", fake_flops)
    from floq import train

    builds, real_build = [], train.build
    monkeypatch.setattr(train, "build", lambda files, binds=(): builds.append((tuple(files), tuple(binds)))
                        or real_build(files, binds))
    path = os.path.join(PAPER_DIR, "offline.gin")
    assert sweep.main([path, "--dry-run", "--out", str(tmp_path / "out")]) == 0
    # The value check, the budget and the estimate build each seed group once, together.
    assert len(builds) == len(set(builds)) == 250
    out = capsys.readouterr().out.splitlines()
    runs = [line for line in out if line.startswith("  grid=")]
    assert out[0] == "sweep paper_offline: building 250 configurations (checking every value before anything is launched)..."
    assert len(runs) == 750 and out[1].startswith("sweep paper_offline: 750 runs")
    assert {line.split("env=")[1].split(",")[0] for line in runs} == TEN_ENVS
    assert "750 runs: 0 done, 750 to run" in out
    gpu = next(line for line in out if line.startswith("estimated GPU-hours"))
    assert "unknown" not in gpu and "at least" not in gpu and "for 750 runs" in gpu
    assert any("ASSUMED" in line or "GFLOP/s" in line for line in out)
    assert any(line.startswith("  GPU-hours by grid: floq-def") for line in out)
    # One lowering per distinct configuration (seeds and tasks share one).
    assert 10 <= len(calls) <= 50
    assert ("FloqCritic", 512, 69, 21) in calls  # humanoidmaze-large: batch 512, OGBench widths
    assert not os.path.exists(tmp_path / "out")


def test_estimate_lowers_each_configuration_like_run_json(tmp_path):
    """FLOPs per update as the trainer counts them; hours = FLOPs x updates / bench rate + sim."""
    import jax
    import jax.numpy as jnp

    from floq import train

    file = tmp_path / "tiny.gin"
    file.write_text(
        "include 'gin/experiments/smoke.gin'\ninclude 'gin/critics/floq.gin'\n"
        "Sweep.tasks = ['gin/tasks/cube-single-play.gin']\n"
        "Sweep.axes = {'CRITIC_FLOW_STEPS': [1, 2]}\nSweep.seeds = [0, 1]\n")
    plan = sweep.expand(str(file), str(tmp_path / "out"))
    assert [r.name for r in plan.runs][0] == "env=cube-single-play,critic_flow_steps=1,seed=0"
    cache = sweep.FlopsCache(str(tmp_path / "flops.json"))
    costs = sweep.run_costs(plan, plan.runs, cache)
    assert all(isinstance(c, sweep.RunCost) for c in costs.values())
    assert os.path.isfile(tmp_path / "flops.json") and len(cache.values) == 2  # one per K

    run = plan.runs[2]  # K = 2, seed 0
    exp = build(list(run.gin_files), list(run.bindings))
    critic = exp.critic.configure(exp.task.discount, -1.0, 0.0)
    obs_dim, act_dim, horizon = sweep.OGBENCH_DIMS["cube-single-play"]
    data = {"observations": jnp.zeros((64, obs_dim)), "actions": jnp.zeros((64, act_dim)),
            "rewards": jnp.zeros((64,)), "masks": jnp.ones((64,)), "next_observations": jnp.zeros((64, obs_dim))}
    states = train.init_states(exp.algorithm, critic, [0], data["observations"][:2], data["actions"][:2])
    state1 = jax.tree_util.tree_map(lambda x: x[0], states)
    want = train.update_flops(exp.algorithm, critic, state1, data, exp.trainer.batch_size)
    cost = costs[run.name]
    assert cost.flops_per_update == pytest.approx(want, rel=1e-9)
    assert costs[plan.runs[3].name] == cost  # the seed does not change the configuration
    assert cost.family == "floq" and cost.updates == 200
    # smoke.gin: 200 steps, evaluation at 0, 100, 200 over 2 episodes of (at most) 200 steps.
    assert cost.env_steps == 3 * 2 * horizon

    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "b.csv").write_text(
        "benchmark,critic,config,precision,gflop_per_update,gflop_per_s,device,workers,episodes_per_s,notes\n"
        "throughput,floq,paper,float32,145.6,2000,gpu: NVIDIA H100,,,\n"
        "throughput,floq,small,float32,1.7,500,gpu: NVIDIA H100,,,\n"
        "throughput,floq,paper,float32,145.6,50,cpu: 2 cores,,,\n"
        "eval,floq,small,float32,,,cpu: 2 cores,1,2.5,untrained policy; mean length 200\n")
    lines = sweep.estimate_lines(plan, plan.runs, str(bench), costs=costs, on_gpu=False)
    flops = sum(costs[r.name].flops_per_update * 200 for r in plan.runs)
    sim = 4 * 3 * 2 * horizon / (2.5 * 200)
    gpu_h = (flops / 2000e9 + sim) / 3600
    cpu_h = (flops / 50e9 + sim) / 3600
    assert lines[0] == (f"estimated GPU-hours: {gpu_h:.2f} (training {flops / 2000e9 / 3600:.2f} + "
                        f"evaluation {sim / 3600:.2f}) for 4 runs, 1 GPU each")
    assert "floq 2.0 TFLOP/s" in lines[1] and "paper" in lines[1] and "ASSUMED" not in lines[1]
    assert lines[2].startswith(f"estimated CPU-hours (this machine has no GPU): {cpu_h:.2f}")
    assert any("500 env steps/s" in line for line in lines)
    # Without any GPU row the rate is an assumption, and the line says so.
    (bench / "b.csv").write_text("benchmark,critic,gflop_per_update,gflop_per_s,device\n")
    lines = sweep.estimate_lines(plan, plan.runs, str(bench), costs=costs, on_gpu=True)
    assert "ASSUMED" in lines[1] and not any(line.startswith("estimated CPU") for line in lines)
    assert f"{sweep.ASSUMED_GPU_TFLOPS:.1f} TFLOP/s" in lines[1]
