"""The HL-Gauss, C51 and BRO critics inside every algorithm: `floq run smoke.gin <alg>.gin
<critic>.gin` trains at tiny size (in this process, on the session's cached smoke dataset),
and the FLOPs run.json records are XLA's count of the update, the count the sweep's cost
model (`floq sweep --dry-run`) prices."""

from __future__ import annotations

import json
import os
import warnings

import gin
import numpy as np
import pandas as pd
import pytest

from floq_test_utils import FULL

from floq.critics.c51 import C51Critic
from floq.critics.hlgauss import HLGaussCritic
from floq.nets.specs import MLPNet

NEW_CRITICS = ("hlgauss", "c51", "bro", "simbav2")
ALGORITHMS = ("fql", "rebrac", "iql", "ifql", "sac")
SMOKE = "gin/experiments/smoke.gin"
BINDINGS = ["TRAIN_STEPS=20", "EVAL_INTERVAL=20", "CHECKPOINT_INTERVAL=20", "LOG_INTERVAL=10", "CHUNK_SIZE=10",
            "IFQL_NUM_SAMPLES=4"]


def files_of(algorithm: str, critic: str) -> list[str]:
    # smoke.gin is FQL already; gin/algorithms/fql.gin is the base file (it includes
    # gin/defaults.gin), so naming it after smoke.gin would undo smoke's sizes and data.
    # The other algorithm files are overlays.
    alg = [] if algorithm == "fql" else [f"gin/algorithms/{algorithm}.gin"]
    return [SMOKE, *alg, f"gin/critics/{critic}.gin"]


# make test: each critic and each algorithm at least once (five runs); make test-full
# (FLOQ_FULL_TESTS=1): every pair (twenty runs).
SMALL_FORM = [("hlgauss", "fql"), ("c51", "rebrac"), ("c51", "sac"), ("bro", "iql"), ("simbav2", "ifql")]
PAIRS = [(c, a) for c in NEW_CRITICS for a in ALGORITHMS] if FULL else SMALL_FORM


@pytest.mark.slow
@pytest.mark.parametrize("critic,algorithm", PAIRS)
def test_smoke_run_trains_with_every_algorithm(smoke_dataset, tmp_path, critic, algorithm):
    from floq import train
    from floq.launch import cost
    from floq_test_utils import floq_main

    args = [a for b in BINDINGS for a in ("--bind", b)]
    res = floq_main("run", *files_of(algorithm, critic), *args, "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (ev_path,) = list(tmp_path.rglob("eval.csv"))
    ev = pd.read_csv(ev_path)
    assert (ev.critic == critic).all() and (ev.algorithm == algorithm).all()
    assert list(ev.step) == [0, 20]
    tr = pd.read_csv(ev_path.parent / "train.csv")
    assert np.isfinite(tr["critic/loss"]).all() and np.isfinite(tr["critic/q_mean"]).all()
    man = json.loads((ev_path.parent / "run.json").read_text())
    assert man["status"] == "done" and man["critic"] == critic
    assert man["params"]["critic/q"] > 0
    # The FLOPs in run.json are XLA's count of one update, the same the dry run's cost model
    # lowers for this configuration (floq.launch.cost.lowered_flops: shapes only).
    gin.clear_config()
    try:
        exp = train.build(files_of(algorithm, critic), BINDINGS)
        obs_dim, act_dim, _ = cost.OGBENCH_DIMS["cube-single-play"]
        c = exp.critic.configure(exp.task.discount, man["protocol"]["r_min"], man["protocol"]["r_max"])
        want = cost.lowered_flops(exp.algorithm, c, exp.trainer.batch_size, obs_dim, act_dim)
    finally:
        gin.clear_config()
    assert want and man["flops_per_update"] == pytest.approx(want, rel=1e-9)


def test_flops_grow_with_the_categorical_head():
    """The cost model's FLOPs (XLA's count of the lowered update, no compilation) see the M-wide
    head: at the smoke size a 51-bin critic costs more per update than the monolithic one, and
    more bins cost more."""
    from floq import train
    from floq.launch import cost

    obs_dim, act_dim, _ = cost.OGBENCH_DIMS["cube-single-play"]
    flops = {}
    gin.clear_config()
    try:
        for name, extra in [("monolithic", []), ("hlgauss", []), ("hlgauss-101", ["HL_BINS=101"]), ("c51", []),
                            ("bro", [])]:
            exp = train.build([SMOKE, f"gin/critics/{name.split('-')[0]}.gin"], extra)
            c = exp.critic.configure(exp.task.discount, -1.0, 0.0)
            flops[name] = cost.lowered_flops(exp.algorithm, c, exp.trainer.batch_size, obs_dim, act_dim)
            gin.clear_config()
    finally:
        gin.clear_config()
    assert all(v and v > 0 for v in flops.values()), flops
    assert flops["monolithic"] < flops["hlgauss"] < flops["hlgauss-101"]
    assert flops["monolithic"] < flops["c51"]
    # BRO at the same width and depth: one stem layer more than the MLP's depth.
    assert flops["monolithic"] < flops["bro"]


def test_iql_and_ifql_warn_for_c51_not_for_hl_gauss():
    """C51 inside IQL/IFQL fits the one scalar target r + gamma * V(s') (a two-hot histogram):
    the algorithms' one line at configuration says so; HL-Gauss is a scalar critic."""
    from floq.agents.base import check_pair
    from floq.agents.ifql import IFQL
    from floq.agents.iql import IQL

    net = MLPNet(width=8, depth=1)
    for algo in (IQL(), IFQL()):
        with pytest.warns(UserWarning, match="c51 critic"):
            check_pair(algo, C51Critic(net=net))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_pair(algo, HLGaussCritic(net=net))


@pytest.mark.parametrize("critic", NEW_CRITICS)
def test_gin_files_build_with_the_shared_knobs(critic):
    """CRITIC_WIDTH / CRITIC_DEPTH / CRITIC_ENSEMBLES / Q_AGG bind every new critic (compute-matched
    comparisons are one binding)."""
    from floq.train import build

    gin.clear_config()
    try:
        exp = build([SMOKE, f"gin/critics/{critic}.gin"],
                    ["CRITIC_WIDTH=24", "CRITIC_DEPTH=2", "CRITIC_ENSEMBLES=3", "Q_AGG='min'"])
    finally:
        gin.clear_config()
    c = exp.critic
    assert c.name == critic and c.num_ensembles == 3 and c.q_agg == "min"
    assert (c.net.width, c.net.depth) == (24, 2)
    if critic != "bro":
        assert c.num_bins == 51 and c.reward_offset == 0.01
    assert getattr(c.net, "hyperspherical", False) == (critic == "simbav2")


def test_cpu_critics_sweep_is_the_stated_grid(tmp_path):
    """gin/experiments/cpu_critics.gin: FQL and IQL x six critics, every run 30k steps, 3 seeds,
    width 128 (critic, actor), 100 generated cube-single-play task1 episodes. Its monolithic and
    floq arms have exactly results/cpu_algorithms' configuration (equal seedless config hash):
    the two studies differ only in the generated dataset's bytes (another CPU), which
    `floq analyze` keeps apart (tests/analysis/test_analysis_configurations.py)."""
    from floq.launch import sweep
    from floq.loop import config_fields, seedless_hash
    from floq.train import build

    plan = sweep.expand("gin/experiments/cpu_critics.gin", str(tmp_path))
    seen = set()
    try:
        for run in plan.runs:
            gin.clear_config()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exp = build(list(run.gin_files), list(run.bindings))
            c, tr = exp.critic, exp.trainer
            net = getattr(c, "net", None) or c.field_net
            assert (tr.train_steps, tr.num_seeds, net.width, exp.algorithm.actor_net.width) == (30_000, 3, 128, 128), run.name
            assert (exp.task.env, exp.task.task_id, exp.task.generate_episodes) == ("cube-single-play", 1, 100)
            if c.name == "floq":
                assert c.flow_steps == 4
            seen.add((exp.algorithm.name, c.name))
        for alg in ("fql", "iql"):
            for critic in ("monolithic", "floq"):
                gin.clear_config()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    exp = build(["gin/experiments/cpu_critics.gin", f"gin/algorithms/{alg}.gin",
                                 f"gin/critics/{critic}.gin"], [])
                with open(f"results/cpu_algorithms/grid={alg}-{critic}/run.json") as f:
                    committed = json.load(f)
                assert seedless_hash(config_fields(exp)) == committed["seedless_config_hash"], (alg, critic)
    finally:
        gin.clear_config()
    assert seen == {(a, k) for a in ("fql", "iql") for k in ("monolithic", "resnet", "hlgauss", "c51", "bro", "floq")}
