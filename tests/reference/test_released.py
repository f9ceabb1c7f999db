"""floq's FQL, ReBRAC, IQL, IFQL and SAC (with the monolithic critic), and FQL with the floq
critic, against the released code's own numbers: tests/reference/<algo>_released.npz,
recorded by record_released.py (run by hand) from github:seohongpark/fql (and, for the floq
critic, github:CMU-AIRe/floq's FloQAgent) at the commit stored in each file.

Each test loads the released agent's initial parameters, key and batches, maps the parameter
tree onto floq's (RULES below: the map is part of the test), runs floq's `update` for as many
steps as were recorded (ReBRAC: critic-only and full updates alternate, as the released main.py
calls them), and compares every recorded metric that has a floq counterpart (METRICS below)
and the final parameters (online, targets, and the released TrainState's Adam'd modules).

Tolerance: |floq - released| <= ATOL + RTOL * |released|, ATOL = RTOL = 1e-5. The two
programs compute the same float32 operations but XLA may order reductions and fuse
differently (two different jitted programs), so agreement is to float32 rounding carried
through a few Adam steps (a few 1e-7 relative per step; Adam's first step moves every
parameter by ~lr = 3e-4, so a wrong gradient sign or term shows as >= 1e-4). The tests also
pass under XLA_FLAGS=--xla_cpu_max_isa=AVX.

Documented differences, asserted rather than skipped:
  * IQL / IFQL 'critic/loss' is the released critic_loss / 2 (floq averages the squared error
    over the two Qs; the released code sums over them). The halved gradient gives the same Adam
    step up to Adam's epsilon (1e-8), which the parameter comparison covers.
  * IQL / IFQL: the released 'critic/q_mean' (q_max, q_min) are the TD target's statistics
    (its variable q is the target r + gamma * mask * V(s')); floq's 'critic/target_mean' is
    compared with q_mean; floq logs no target max / min, and its 'critic/q_*' are the Qs'.
  * FQL's key schedule differs from the released one (floq's FQL splits its key four ways);
    the test replays the released code's random draws (next-action noise, flow-matching x0 and
    t, distillation noise) through floq's update, in the order floq draws them (FakeRandom).
    The released 'actor/mse' is measured on one more fresh sample that floq does not draw, so it
    is not compared; floq's 'actor/mse' is mean((mu(s, z) - a)^2) at the distillation noise z.
  * FQL + floq critic (FloQAgent): the same replay, with the critic's uniform draws (target
    and current start values, flow-matching times) replayed in floq.critics.flow too. Its
    metric names map as critic_loss -> critic/loss, floq_loss -> critic/flow_loss,
    distilled_critic_loss -> critic/distill_loss, q -> critic/q_mean (the distilled critic),
    var_flow_returns -> critic/flow_return_var, td_error -> critic/td_error.
  * 'grad/norm' (the released code: L1 norm of the per-leaf L2 norms; floq: global L2 norm),
    'grad/max' and 'grad/min' (floq logs neither) are not compared.
  * ReBRAC's released 'actor/std' is its constant-std Actor's std (1); floq's actor is
    deterministic (the released code reads only the mode) and logs none.
  * ReBRAC: the released code logs actor metrics on full updates only; floq logs zeros on
    critic-only updates (with 'actor/full_update' = 0), so actor metrics are compared on full
    updates, and on critic-only ones floq's must be 0.
"""

from __future__ import annotations

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from floq.critics.monolithic import MonolithicCritic
from floq.nets.specs import MLPNet

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL = ATOL = 1e-5
FQL_COMMIT = "719d04417cb0b206deddbc7d761b3e710c3d750c"  # github:seohongpark/fql
FLOQ_COMMIT = "2e461084757a8753fe5d1b8fb0ccb35c740caa60"  # github:CMU-AIRe/floq
ALGOS = ("fql", "rebrac", "iql", "ifql", "sac", "floq")  # floq: FQL with the floq critic (FloQAgent)
COMMITS = {**{a: FQL_COMMIT for a in ALGOS}, "floq": FLOQ_COMMIT}

# --- released module paths -> floq's parameter paths (prefix rewrites, first match wins) ---------
ACTOR_FLOW_RULES = [("modules_actor_bc_flow/mlp/", "actor_bc/"), ("modules_actor_onestep_flow/mlp/", "actor_onestep/")]
CRITIC_RULES = [("modules_critic/value_net/", "critic/online/q/"),
                ("modules_target_critic/value_net/", "critic/target/q/")]
RULES = {
    "rebrac": CRITIC_RULES + [("modules_actor/actor_net/", "actor/MLP_0/"), ("modules_actor/mean_net/", "actor/Dense_0/"),
                              ("modules_target_actor/actor_net/", "target_actor/MLP_0/"),
                              ("modules_target_actor/mean_net/", "target_actor/Dense_0/")],
    "fql": CRITIC_RULES + ACTOR_FLOW_RULES,
    # FloQAgent: 'critic' is the distilled scalar critic, 'floq' / 'target_floq' the velocity field
    "floq": ACTOR_FLOW_RULES + [("modules_critic/value_net/", "critic/online/distill/"),
                                ("modules_floq/mlp/", "critic/online/field/VmapMLP_0/"),
                                ("modules_target_floq/mlp/", "critic/target/field/VmapMLP_0/")],
    "iql": CRITIC_RULES + [("modules_value/value_net/", "value/"), ("modules_actor/actor_net/", "actor/trunk/"),
                           ("modules_actor/mean_net/", "actor/mean/")],
    "ifql": CRITIC_RULES + [("modules_value/value_net/", "value/"), ("modules_actor_flow/mlp/", "actor_bc/")],
    "sac": CRITIC_RULES + [("modules_actor/actor_net/", "actor/trunk/"), ("modules_actor/mean_net/", "actor/mean/"),
                           ("modules_actor/log_std_net/", "actor/log_std/"), ("modules_alpha/log_value", "log_alpha")],
}

# --- released metric -> (floq metric, factor): floq == factor * released ---------------------
COMMON_CRITIC = {"critic/q_mean": ("critic/q_mean", 1.0), "critic/q_max": ("critic/q_max", 1.0),
                 "critic/q_min": ("critic/q_min", 1.0)}
# IQL / IFQL (released): critic/q_mean, q_max, q_min are the TD target r + gamma * mask * V(s')'s
# statistics, not the Q's; floq's critic/q_* are the Q's, its critic/target_mean the target's mean.
TARGET_STATS = {"critic/q_mean": ("critic/target_mean", 1.0)}
FLOW_ACTOR = {"actor/actor_loss": ("actor/loss", 1.0), "actor/bc_flow_loss": ("actor/bc_flow_loss", 1.0),
              "actor/distill_loss": ("actor/distill_loss", 1.0), "actor/q_loss": ("actor/q_loss", 1.0),
              "actor/q": ("actor/q", 1.0)}
METRICS = {
    "floq": {**FLOW_ACTOR, "critic/critic_loss": ("critic/loss", 1.0), "critic/floq_loss": ("critic/flow_loss", 1.0),
             "critic/distilled_critic_loss": ("critic/distill_loss", 1.0), "critic/q": ("critic/q_mean", 1.0),
             "critic/var_flow_returns": ("critic/flow_return_var", 1.0), "critic/td_error": ("critic/td_error", 1.0)},
    "rebrac": {**COMMON_CRITIC, "critic/critic_loss": ("critic/loss", 1.0),
               "actor/total_loss": ("actor/loss", 1.0), "actor/actor_loss": ("actor/q_loss", 1.0),
               "actor/bc_loss": ("actor/bc_loss", 1.0), "actor/mse": ("actor/mse", 1.0)},
    "fql": {**COMMON_CRITIC, "critic/critic_loss": ("critic/loss", 1.0), **FLOW_ACTOR},
    "iql": {**TARGET_STATS, "critic/critic_loss": ("critic/loss", 0.5), "value/value_loss": ("value/loss", 1.0),
            "value/v_mean": ("value/v_mean", 1.0), "value/v_max": ("value/v_max", 1.0),
            "value/v_min": ("value/v_min", 1.0), "actor/actor_loss": ("actor/loss", 1.0),
            "actor/adv": ("actor/adv", 1.0), "actor/bc_log_prob": ("actor/bc_log_prob", 1.0),
            "actor/mse": ("actor/mse", 1.0), "actor/std": ("actor/std", 1.0)},
    "ifql": {**TARGET_STATS, "critic/critic_loss": ("critic/loss", 0.5), "value/value_loss": ("value/loss", 1.0),
             "value/v_mean": ("value/v_mean", 1.0), "value/v_max": ("value/v_max", 1.0),
             "value/v_min": ("value/v_min", 1.0), "actor/actor_loss": ("actor/loss", 1.0)},
    "sac": {**COMMON_CRITIC, "critic/critic_loss": ("critic/loss", 1.0), "actor/actor_loss": ("actor/actor_loss", 1.0),
            "actor/alpha_loss": ("actor/alpha_loss", 1.0), "actor/alpha": ("actor/alpha", 1.0),
            "actor/entropy": ("actor/entropy", 1.0), "actor/q": ("actor/q", 1.0), "actor/std": ("actor/std", 1.0),
            "actor/total_loss": ("actor/loss", 1.0)},
}
GRAD = {"grad/norm", "grad/max", "grad/min"}
NOT_COMPARED = {  # see the module docstring
    "fql": GRAD | {"actor/mse"},
    "floq": GRAD | {"actor/mse"},
    "rebrac": GRAD | {"actor/std"},  # the released Actor's constant std (1): floq's actor is deterministic
    "iql": GRAD | {"critic/q_max", "critic/q_min"},  # the TD target's max / min: floq logs neither
    "ifql": GRAD | {"critic/q_max", "critic/q_min"},
    "sac": GRAD,
}


def load(algo):
    path = os.path.join(HERE, f"{algo}_released.npz")
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    assert str(data["meta/commit"]) == COMMITS[algo], (algo, str(data["meta/commit"]))
    return data, json.loads(str(data["meta/config"]))


def to_floq(data, prefix, rules):
    """The released parameters under `prefix` (flat 'prefix/modules_x/...' keys) as floq's nested tree."""
    out = {}
    for key, value in data.items():
        if not key.startswith(prefix + "/"):
            continue
        path = key[len(prefix) + 1:]
        for src, dst in rules:
            if path.startswith(src):
                path = dst + path[len(src):]
                break
        else:
            raise AssertionError(f"no floq counterpart for the released parameter {path}")
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(value)
    return out


def build(algo, cfg):
    """floq's algorithm and monolithic critic with the released configuration's values."""
    hidden = cfg["actor_hidden_dims"]
    assert list(cfg["value_hidden_dims"]) == list(hidden)
    actor_net = MLPNet(width=hidden[0], depth=len(hidden), layer_norm=cfg["actor_layer_norm"])
    value_net = MLPNet(width=hidden[0], depth=len(hidden), layer_norm=cfg["layer_norm"])
    common = dict(lr=cfg["lr"], tau=cfg["tau"])
    if algo == "rebrac":
        from floq.agents.rebrac import ReBRAC
        a = ReBRAC(alpha_actor=cfg["alpha_actor"], alpha_critic=cfg["alpha_critic"], actor_net=actor_net,
                   actor_fc_scale=cfg["actor_fc_scale"], actor_freq=cfg["actor_freq"], actor_noise=cfg["actor_noise"],
                   actor_noise_clip=cfg["actor_noise_clip"], **common)
        q_agg = "min"
    elif algo == "floq":
        from floq.agents.fql import FQL
        from floq.critics.flow import FloqCritic
        a = FQL(alpha=cfg["alpha"], actor_net=actor_net, flow_steps=cfg["actor_flow_steps"],
                normalize_q_loss=cfg["normalize_q_loss"], **common)
        assert not cfg["use_resnets"]
        field_net = MLPNet(width=cfg["block_width"], depth=cfg["block_depth"], layer_norm=cfg["layer_norm"],
                           activate_before_layernorm=cfg["activate_before_layernorm"])
        critic = FloqCritic(field_net=field_net, distill_net=value_net, flow_steps=cfg["critic_flow_steps"],
                            noise_samples=cfg["noise_samples"], noise_coverage=cfg["noise_coverage"],
                            num_ensembles=cfg["flow_num_ensembles"], distill_ensembles=cfg["distill_num_ensembles"],
                            q_agg=cfg["q_agg"], reward_offset=cfg["reward_offset"], prob_embed=cfg["use_prob_embed"],
                            num_bins=cfg["num_bins"], sigma=cfg["sigma"],
                            time_embed="cos" if cfg["embed_time"] else "none", time_embed_dim=cfg["time_embed_dim"],
                            train_at_zero_only=cfg["train_at_zero_only"])
        return a, critic.configure(cfg["discount"], cfg["r_min"], cfg["r_max"])
    elif algo == "fql":
        from floq.agents.fql import FQL
        a = FQL(alpha=cfg["alpha"], actor_net=actor_net, flow_steps=cfg["flow_steps"],
                normalize_q_loss=cfg["normalize_q_loss"], **common)
        q_agg = cfg["q_agg"]
    elif algo == "iql":
        from floq.agents.iql import IQL
        a = IQL(alpha=cfg["alpha"], expectile=cfg["expectile"], actor_loss=cfg["actor_loss"], actor_net=actor_net,
                value_net=value_net, const_std=cfg["const_std"], **common)
        q_agg = "min"
    elif algo == "ifql":
        from floq.agents.ifql import IFQL
        a = IFQL(expectile=cfg["expectile"], num_samples=cfg["num_samples"], actor_net=actor_net, value_net=value_net,
                 flow_steps=cfg["flow_steps"], **common)
        q_agg = "min"
    elif algo == "sac":
        from floq.agents.sac import SAC
        a = SAC(actor_net=actor_net, target_entropy=cfg["target_entropy"],
                target_entropy_multiplier=cfg["target_entropy_multiplier"], backup_entropy=cfg["backup_entropy"],
                actor_fc_scale=cfg["actor_fc_scale"], **common)
        q_agg = cfg["q_agg"]
    else:
        raise AssertionError(algo)
    critic = MonolithicCritic(net=value_net, num_ensembles=2, q_agg=q_agg).configure(cfg["discount"], -1.0, 0.0)
    if hasattr(a, "bind_critic"):
        a = a.bind_critic(critic)
    return a, critic


def initial_state(algo, critic, data, rules):
    params = to_floq(data, "params0", rules)
    b1 = data["batch1/observations"], data["batch1/actions"]
    state = algo.init(jax.random.PRNGKey(0), critic, jnp.asarray(b1[0][:2]), jnp.asarray(b1[1][:2]))
    shapes = lambda t: jax.tree_util.tree_map(jnp.shape, t)  # noqa: E731
    assert shapes(params) == shapes(state["params"]), "the released layout does not map onto floq's"
    # Adam's initial state is zeros whatever the parameters: floq's own init is the released one's.
    return {**state, "params": params, "rng": jnp.asarray(data["rng0"]), "step": jnp.zeros((), jnp.int32)}


def batch_of(data, i):
    p = f"batch{i}/"
    return {k[len(p):]: jnp.asarray(v) for k, v in data.items() if k.startswith(p)}


# --- FQL: the released code's draws, replayed in floq's order ---------------------------------

def released_draws(algo_name, rng, b, a_dim, r):
    """The random arrays the released FQLAgent.update (algo 'fql') or FloQAgent.update ('floq',
    r noise samples) draw from the agent's key `rng`, in the order floq's FQL + critic draw them:
    {'normal': [next-action noise, flow x0, distillation noise], 'uniform': [critic's..., flow t]}."""
    _, rng = jax.random.split(rng)
    rng, actor_rng, critic_rng = jax.random.split(rng, 3)
    c, sample_rng = jax.random.split(critic_rng)
    action_seed, _ = jax.random.split(sample_rng)
    critic_uniform = []
    if algo_name == "floq":
        next_noise = jax.random.normal(action_seed, (b * r, a_dim))  # rows b * r + j, as floq's repeat_rows
        c, next_noise_rng = jax.random.split(c)
        critic_uniform.append(jax.random.uniform(next_noise_rng, (b * r, 1)))  # target start values
        c, noise_rng = jax.random.split(c)
        critic_uniform.append(jax.random.uniform(noise_rng, (b * r, 1)))  # current start values
        _, t_rng = jax.random.split(c)
        critic_uniform.append(jax.random.uniform(t_rng, (b * r, 1)))  # flow-matching times
    else:
        next_noise = jax.random.normal(action_seed, (b, a_dim))
    rng_a, x_rng, t_rng = jax.random.split(actor_rng, 3)
    x0 = jax.random.normal(x_rng, (b, a_dim))
    t = jax.random.uniform(t_rng, (b, 1))
    _, noise_rng = jax.random.split(rng_a)
    noises = jax.random.normal(noise_rng, (b, a_dim))
    return {"normal": [next_noise, x0, noises], "uniform": critic_uniform + [t]}


class FakeRandom:
    """jax.random with normal/uniform replaced by a queue of given arrays (sizes checked; an
    array is reshaped to the requested shape, e.g. (N, 1) -> (N,)), for the namespaces of
    floq.agents.fql and floq.critics.flow only."""

    def __init__(self, draws):
        self.queues = {k: list(v) for k, v in draws.items()}

    def _pop(self, kind, shape):
        assert self.queues[kind], f"floq drew one more {kind} array than the released code"
        x = self.queues[kind].pop(0)
        assert x.size == int(np.prod(shape)), (kind, x.shape, shape)
        return x.reshape(shape)

    def normal(self, key, shape, *a, **k):
        return self._pop("normal", shape)

    def uniform(self, key, shape, *a, **k):
        return self._pop("uniform", shape)

    def __getattr__(self, name):
        return getattr(jax.random, name)


def replay_update(algo_name, algo, critic, state, batch, monkeypatch):
    import floq.agents.fql as fql_module
    import floq.critics.flow as flow_module

    r = getattr(critic, "noise_samples", 1)
    draws = released_draws(algo_name, state["rng"], *batch["actions"].shape, r)
    fake = FakeRandom(draws)
    shim = types.SimpleNamespace(**{k: getattr(jax, k) for k in ("lax", "tree_util", "nn", "numpy", "jit", "grad",
                                                                   "vmap", "eval_shape")}, random=fake)
    with monkeypatch.context() as m:
        m.setattr(fql_module, "jax", shim)
        m.setattr(flow_module, "jax", shim)
        new, info = algo.update(critic, state, batch)
        jax.block_until_ready(new)
    assert not any(fake.queues.values()), "floq drew fewer arrays than the released code"
    # the released key moves as new_rng, _ = split(rng); floq's FQL moves its own way
    return {**new, "rng": jax.random.split(state["rng"])[0]}, info


# --- the test -----------------------------------------------------------------------------------

def max_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0.0))


def assert_close(ours, ref, what):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    bad = np.abs(ours - ref) > ATOL + RTOL * np.abs(ref)
    assert not bad.any(), f"{what}: max |floq - released| = {max_err(ours, ref):.3g} (ours {ours.ravel()[:3]}, " \
                          f"released {ref.ravel()[:3]})"


def run(algo_name, monkeypatch):
    """Replay the fixture through floq: (per-update floq metrics, final state, data, errors)."""
    data, cfg = load(algo_name)
    algo, critic = build(algo_name, cfg)
    state = initial_state(algo, critic, data, RULES[algo_name])
    n = int(data["meta/n_updates"])
    update = jax.jit(lambda s, b: algo.update(critic, s, b))
    infos = []
    for i in range(1, n + 1):
        b = batch_of(data, i)
        if algo_name in ("fql", "floq"):
            state, info = replay_update(algo_name, algo, critic, state, b, monkeypatch)
        else:
            state, info = update(state, b)
        infos.append(jax.device_get(info))
        np.testing.assert_array_equal(np.asarray(state["rng"]), data[f"rng{i}"])
    return infos, state, data


@pytest.mark.parametrize("algo_name", ALGOS)
def test_updates_equal_the_released_numbers(algo_name, monkeypatch):
    infos, state, data = run(algo_name, monkeypatch)
    n = len(infos)
    errors = {}
    for ref_key, (ours_key, factor) in METRICS[algo_name].items():
        ref = data[f"metrics/{ref_key}"]
        ours = np.asarray([float(info[ours_key]) for info in infos])
        if algo_name == "rebrac" and ref_key.startswith("actor/"):
            full = np.asarray([float(info["actor/full_update"]) for info in infos]) == 1
            np.testing.assert_array_equal(full, np.isfinite(ref))  # floq's full updates are the released ones
            np.testing.assert_array_equal(ours[~full], 0.0)
            ours, ref = ours[full], ref[full]
        assert ref.shape == (n,) or algo_name == "rebrac"
        assert_close(ours, factor * ref, f"{algo_name} {ref_key} -> {ours_key}")
        errors[ref_key] = max_err(ours, factor * ref)
    # every released metric is compared or documented as not comparable
    released = {k[len("metrics/"):] for k in data if k.startswith("metrics/")}
    allowed = set(METRICS[algo_name]) | NOT_COMPARED[algo_name]
    assert released <= allowed, released - allowed

    final = to_floq(data, "params_final", RULES[algo_name])
    leaves, treedef = jax.tree_util.tree_flatten_with_path(final)
    ours_leaves = jax.tree_util.tree_flatten_with_path(state["params"])[0]
    assert [p for p, _ in leaves] == [p for p, _ in ours_leaves]
    initial = to_floq(data, "params0", RULES[algo_name])
    moved = 0.0
    for (path, ref), (_, ours), (_, x0) in zip(leaves, ours_leaves, jax.tree_util.tree_flatten_with_path(initial)[0]):
        assert_close(ours, ref, f"{algo_name} parameter {jax.tree_util.keystr(path)}")
        errors["params"] = max(errors.get("params", 0.0), max_err(ours, ref))
        moved = max(moved, max_err(ref, x0))
    assert moved > 1e-4  # the updates moved the parameters by more than the tolerance
    print(f"{algo_name}: max abs error " + ", ".join(f"{k} {v:.2g}" for k, v in sorted(errors.items())))


def test_fixtures_are_small_and_record_their_source():
    for algo in ALGOS:
        path = os.path.join(HERE, f"{algo}_released.npz")
        assert os.path.getsize(path) < 1 << 20, path
        data, cfg = load(algo)
        assert str(data["meta/algorithm"]) == algo == cfg["agent_name"]
        assert int(data["meta/n_updates"]) >= 3
