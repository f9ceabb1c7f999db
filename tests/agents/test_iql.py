"""IQL (floq.agents.iql) against an independent re-implementation of the FQL repository's
agents/iql.py (github:seohongpark/fql), a known answer (V reaches the expectile on a bandit)
and every critic."""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import sys
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from floq_test_utils import FULL, init_state
from scipy.optimize import brentq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from floq.agents.iql import IQL  # noqa: E402
from floq.critics.flow import FloqCritic  # noqa: E402
from floq.critics.iqn import IQNCritic  # noqa: E402
from floq.critics.monolithic import MonolithicCritic  # noqa: E402
from floq.nets.specs import MLPNet, ResNet  # noqa: E402

O, A, B, W = 5, 3, 16, 32


# --- the reference, re-implemented from agents/iql.py and utils/networks.py -------------------
def ref_init(scale=1.0):
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


class RefMLP(nn.Module):
    hidden_dims: Sequence[int]
    activate_final: bool = False
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x):
        for i, size in enumerate(self.hidden_dims):
            x = nn.Dense(size, kernel_init=ref_init())(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                x = nn.gelu(x)
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
        return x


class RefValue(nn.Module):
    hidden_dims: Sequence[int]
    layer_norm: bool = True
    num_ensembles: int = 2

    def setup(self):
        cls = RefMLP
        if self.num_ensembles > 1:
            cls = nn.vmap(RefMLP, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None,
                          out_axes=0, axis_size=self.num_ensembles)
        self.value_net = cls((*self.hidden_dims, 1), activate_final=False, layer_norm=self.layer_norm)

    def __call__(self, observations, actions=None):
        inputs = observations if actions is None else jnp.concatenate([observations, actions], -1)
        return self.value_net(inputs).squeeze(-1)


class RefActor(nn.Module):
    """Actor(state_dependent_std=False, tanh_squash=False): returns (means, scale_diag)."""
    hidden_dims: Sequence[int]
    action_dim: int
    const_std: bool = True

    def setup(self):
        self.actor_net = RefMLP(self.hidden_dims, activate_final=True, layer_norm=False)
        self.mean_net = nn.Dense(self.action_dim, kernel_init=ref_init(1e-2))
        if not self.const_std:
            self.log_stds = self.param("log_stds", nn.initializers.zeros, (self.action_dim,))

    def __call__(self, observations, temperature=1.0):
        means = self.mean_net(self.actor_net(observations))
        log_stds = jnp.zeros_like(means) if self.const_std else self.log_stds
        log_stds = jnp.clip(log_stds, -5, 2)
        return means, jnp.broadcast_to(jnp.exp(log_stds) * temperature, means.shape)


def mvn_diag_log_prob(means, scale, x):
    return jax.scipy.stats.norm.logpdf(x, means, scale).sum(-1)


def ref_total_loss(cfg, nets, params, grad_params, batch, rng):
    """IQLAgent.total_loss: params are the non-gradient (current) parameters."""
    value_def, critic_def, actor_def = nets
    expectile, alpha, discount = cfg["expectile"], cfg["alpha"], cfg["discount"]

    def expectile_loss(adv, diff):
        return jnp.where(adv >= 0, expectile, 1 - expectile) * diff**2

    # value_loss
    q1, q2 = critic_def.apply({"params": params["modules_target_critic"]}, batch["observations"], batch["actions"])
    q = jnp.minimum(q1, q2)
    v = value_def.apply({"params": grad_params["modules_value"]}, batch["observations"])
    value_loss = expectile_loss(q - v, q - v).mean()
    # critic_loss
    next_v = value_def.apply({"params": params["modules_value"]}, batch["next_observations"])
    tq = batch["rewards"] + discount * batch["masks"] * next_v
    q1, q2 = critic_def.apply({"params": grad_params["modules_critic"]}, batch["observations"], batch["actions"])
    critic_loss = ((q1 - tq) ** 2 + (q2 - tq) ** 2).mean()
    # actor_loss
    rng, actor_rng = jax.random.split(rng)
    if cfg["actor_loss"] == "awr":
        v = value_def.apply({"params": params["modules_value"]}, batch["observations"])
        q1, q2 = critic_def.apply({"params": params["modules_critic"]}, batch["observations"], batch["actions"])
        adv = jnp.minimum(q1, q2) - v
        exp_a = jnp.minimum(jnp.exp(adv * alpha), 100.0)
        means, scale = actor_def.apply({"params": grad_params["modules_actor"]}, batch["observations"])
        actor_loss = -(exp_a * mvn_diag_log_prob(means, scale, batch["actions"])).mean()
    else:
        means, scale = actor_def.apply({"params": grad_params["modules_actor"]}, batch["observations"])
        q_actions = jnp.clip(means, -1, 1)  # const_std: the mode
        q1, q2 = critic_def.apply({"params": params["modules_critic"]}, batch["observations"], q_actions)
        q = jnp.minimum(q1, q2)
        q_loss = -q.mean() / jax.lax.stop_gradient(jnp.abs(q).mean())
        bc_loss = -(alpha * mvn_diag_log_prob(means, scale, batch["actions"])).mean()
        actor_loss = q_loss + bc_loss
    return value_loss + critic_loss + actor_loss, (value_loss, critic_loss, actor_loss)


def ref_update(cfg, nets, params, opt_state, batch, agent_rng):
    """IQLAgent.update: one Adam step over every module (targets get zero gradients), then
    the target Polyak step from the pre-update parameters."""
    new_rng, rng = jax.random.split(agent_rng)
    grads, parts = jax.grad(lambda gp: ref_total_loss(cfg, nets, params, gp, batch, rng), has_aux=True)(params)
    tx = optax.adam(cfg["lr"])
    updates, opt_state = tx.update(grads, opt_state, params)
    new = optax.apply_updates(params, updates)
    new["modules_target_critic"] = jax.tree_util.tree_map(
        lambda p, tp: p * cfg["tau"] + tp * (1 - cfg["tau"]), params["modules_critic"], params["modules_target_critic"])
    return new, grads, parts, new_rng


# --- parameter layout: floq -> reference ----------------------------------------------------
def to_ref(p):
    return {
        "modules_value": {"value_net": p["value"]},
        "modules_critic": {"value_net": p["critic"]["online"]["q"]},
        "modules_target_critic": {"value_net": p["critic"]["target"]["q"]},
        "modules_actor": {"actor_net": p["actor"]["trunk"], "mean_net": p["actor"]["mean"],
                          **({"log_stds": p["actor"]["log_stds"]} if "log_stds" in p["actor"] else {})},
    }


def make_batch(seed=0, b=B):
    r = np.random.default_rng(seed)
    return {
        "observations": jnp.asarray(r.normal(size=(b, O)), jnp.float32),
        "actions": jnp.asarray(r.uniform(-1, 1, size=(b, A)), jnp.float32),
        "rewards": jnp.asarray(r.normal(size=(b,)), jnp.float32),
        "masks": jnp.asarray(r.integers(0, 2, size=(b,)), jnp.float32),
        "next_observations": jnp.asarray(r.normal(size=(b, O)), jnp.float32),
    }


def tiny_iql(**kw):
    kw.setdefault("alpha", 3.0)
    return IQL(actor_net=MLPNet(width=32, depth=2, layer_norm=False), value_net=MLPNet(width=32, depth=2),
               **kw)


def mono(q_agg="min", net=None):
    return MonolithicCritic(net=net or MLPNet(width=32, depth=2), num_ensembles=2, q_agg=q_agg).configure(0.99, -1, 0)


def perturbed_state(algo, critic, batch, seed=0):
    """An initial state whose target differs from the online critic (so that the test can
    tell them apart)."""
    state = init_state(algo, critic, jax.random.PRNGKey(seed), batch["observations"][:2], batch["actions"][:2])
    state["params"]["critic"]["target"] = _perturb(state["params"]["critic"]["target"])
    return state


@jax.jit  # one program, not an eager draw per leaf shape
def _perturb(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(99), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [x + 0.05 * jax.random.normal(k, x.shape)
                                                  for x, k in zip(leaves, keys)])


def assert_tree_close(a, b, rtol=1e-5, atol=1e-6):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# --- 1. reference equality ------------------------------------------------------------------
@pytest.mark.parametrize("actor_loss,const_std", [("awr", True), ("ddpgbc", True), ("awr", False)])
def test_one_update_equals_reference(actor_loss, const_std):
    algo = tiny_iql(actor_loss=actor_loss, expectile=0.7, const_std=const_std)
    critic = mono("min")
    batch = make_batch()
    state = perturbed_state(algo, critic, batch)

    new_state, info = jax.jit(algo.update, static_argnums=0)(critic, state, batch)

    nets = (RefValue((32, 32), layer_norm=True, num_ensembles=1), RefValue((32, 32), layer_norm=True),
            RefActor((32, 32), A, const_std=const_std))
    cfg = {"expectile": 0.7, "alpha": 3.0, "discount": 0.99, "actor_loss": actor_loss, "lr": 3e-4, "tau": 0.005}
    ref_params = to_ref(state["params"])
    # The reference's modules initialise to the same shapes (layouts agree).
    k = jax.random.PRNGKey(0)
    ref_shapes = {
        "modules_value": jax.eval_shape(nets[0].init, k, batch["observations"])["params"],
        "modules_critic": jax.eval_shape(nets[1].init, k, batch["observations"], batch["actions"])["params"],
        "modules_actor": jax.eval_shape(nets[2].init, k, batch["observations"])["params"],
    }
    for name, tree in ref_shapes.items():
        shape = lambda x: tuple(x.shape)  # noqa: E731
        assert jax.tree_util.tree_map(shape, tree) == jax.tree_util.tree_map(shape, ref_params[name])

    opt0 = optax.adam(3e-4).init(ref_params)
    # one program each (the reference and floq's gradients), not an eager compile per operation
    ref_new, ref_grads, (v_loss, c_loss, a_loss), ref_rng = jax.jit(functools.partial(ref_update, cfg, nets))(
        ref_params, opt0, batch, state["rng"])

    # Losses: V and actor exactly; the critic's is the reference's / 2 (mean over the two Qs
    # instead of their sum: the documented deviation).
    np.testing.assert_allclose(info["value/loss"], v_loss, rtol=1e-5)
    np.testing.assert_allclose(info["critic/loss"], c_loss / 2, rtol=1e-5)
    np.testing.assert_allclose(info["actor/loss"], a_loss, rtol=1e-5, atol=1e-7)

    # Gradients, from the same parameters, batch and key.
    @jax.jit
    def floq_grads(state):
        params = state["params"]
        trainable = {"actor": params["actor"], "value": params["value"], "critic": params["critic"]["online"]}
        from floq.agents.iql import value_losses
        new_rng, rng = jax.random.split(state["rng"])
        rng, k_actor = jax.random.split(rng)

        def loss_fn(tr):
            l1, _ = value_losses(algo.value_net, algo.expectile, critic, tr, params["critic"]["target"], batch, rng)
            l2, _ = algo.actor_loss_fn(tr, critic, batch, k_actor)
            return l1 + l2

        return jax.grad(loss_fn)(trainable)

    g = floq_grads(state)
    assert_tree_close({"value_net": g["value"]}, ref_grads["modules_value"])
    assert_tree_close({"value_net": jax.tree_util.tree_map(lambda x: 2 * x, g["critic"]["q"])},
                      ref_grads["modules_critic"])
    assert_tree_close(to_ref({**state["params"], "actor": g["actor"]})["modules_actor"], ref_grads["modules_actor"])
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda x: bool(jnp.all(x == 0)),
                                                         ref_grads["modules_target_critic"]))
    np.testing.assert_allclose(info["grad/norm"], optax.tree.norm(g), rtol=1e-5)

    # The step: Adam moves V, actor and target as the reference; the critic's Adam step from a
    # halved gradient is the same up to Adam's epsilon.
    new_ref = to_ref(new_state["params"])
    assert_tree_close(new_ref["modules_value"], ref_new["modules_value"])
    assert_tree_close(new_ref["modules_actor"], ref_new["modules_actor"])
    assert_tree_close(new_ref["modules_target_critic"], ref_new["modules_target_critic"])
    assert_tree_close(new_ref["modules_critic"], ref_new["modules_critic"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(new_state["rng"], ref_rng)


def test_act_is_the_reference_mode_and_sample():
    algo = tiny_iql()
    critic = mono()
    batch = make_batch()
    state = algo.init(jax.random.PRNGKey(1), critic, batch["observations"][:2], batch["actions"][:2])
    # a mean large enough to be clipped somewhere
    pp = algo.policy_params(state["params"])
    pp = jax.tree_util.tree_map(lambda x: x * 30.0, pp)
    obs = batch["observations"]
    noise = jax.random.normal(jax.random.PRNGKey(2), (B, A))
    ref_actor = {"actor_net": pp["actor"]["trunk"], "mean_net": pp["actor"]["mean"]}
    means, scale = RefActor((32, 32), A).apply({"params": ref_actor}, obs)
    ev = algo.act(pp, obs, noise)
    ex = algo.act(pp, obs, noise, explore=True)
    np.testing.assert_allclose(ev, np.clip(means, -1, 1), rtol=1e-6)  # temperature 0: the mean
    np.testing.assert_allclose(ex, np.clip(means + scale * noise, -1, 1), rtol=1e-6, atol=1e-7)
    assert ev.shape == (B, A) and float(jnp.abs(ev).max()) <= 1.0


# --- 2. known answer: V reaches the expectile of Q on a bandit --------------------------------
@dataclasses.dataclass(frozen=True)
class FixedQCritic:
    """A critic with fixed Q(s, a) = 2 a_0 - a_1 (no parameters to learn)."""
    q_agg: str = "min"
    discount: float = 0.99
    num_next_actions = 1
    name = "fixed"

    def init(self, rng, obs, act):
        z = {"w": jnp.zeros(())}
        return {"online": z, "target": z}

    def _q(self, act):
        return 2.0 * act[..., 0] - act[..., 1]

    def keys(self, rng):
        return rng, rng

    def next_values(self, target, next_obs, next_actions, rng):
        return self._q(next_actions)

    def fit(self, params, batch, targets, rng):
        loss = 0.0 * params["online"]["w"]
        return loss, {"critic/loss": loss}

    def q(self, online, obs, act, agg="mean"):
        return self._q(act)

    def target_update(self, params, tau):
        return params

    def param_counts(self, params):
        return {"critic/w": 1}


def expectile_of(values, tau):
    values = np.asarray(values, np.float64)
    f = lambda v: np.sum(np.where(values >= v, tau, 1 - tau) * (values - v))  # noqa: E731
    return brentq(f, values.min() - 1e-9, values.max() + 1e-9)


@pytest.mark.parametrize("expectile", [0.5, 0.9])
def test_value_reaches_the_expectile_on_a_bandit(expectile):
    n = 12
    r = np.random.default_rng(3)
    actions = jnp.asarray(r.uniform(-1, 1, size=(n, 2)), jnp.float32)
    obs = jnp.zeros((n, 1))
    batch = {"observations": obs, "actions": actions, "rewards": jnp.zeros((n,)), "masks": jnp.zeros((n,)),
             "next_observations": obs}
    critic = FixedQCritic()
    algo = IQL(alpha=1.0, expectile=expectile, lr=3e-3, actor_net=MLPNet(width=8, depth=1, layer_norm=False),
               value_net=MLPNet(width=8, depth=1))
    state = algo.init(jax.random.PRNGKey(0), critic, obs[:2], actions[:2])

    @jax.jit
    def train(state):
        def body(s, _):
            s, info = algo.update(critic, s, batch)
            return s, info["value/v_mean"]
        return jax.lax.scan(body, state, None, length=3000)

    state, v_trace = train(state)
    q = np.asarray(critic._q(actions))
    want = expectile_of(q, expectile)
    v = float(v_trace[-1])
    assert abs(v - want) < 1e-2 * (q.max() - q.min()), (v, want)
    # and the expectile is not the mean (for tau != 0.5 the test tells them apart)
    if expectile != 0.5:
        assert abs(want - q.mean()) > 0.1


# --- 3. every critic ------------------------------------------------------------------------
def critics():
    return {
        "monolithic": mono("min"),
        "resnet": mono("min", net=ResNet(width=32, block_depth=1, num_blocks=1)),
        "floq": FloqCritic(field_net=MLPNet(width=32, depth=2), distill_net=MLPNet(width=32, depth=2), flow_steps=2,
                           noise_samples=2, q_agg="min").configure(0.99, -1, 0),
        "iqn": IQNCritic(net=MLPNet(width=32, depth=2), num_quantiles=4, num_q_samples=4, quantile_embed_dim=8,
                         q_agg="min").configure(0.99, -1, 0),
    }


@pytest.mark.parametrize("kind", ["monolithic", "resnet", "floq", "iqn"])
@pytest.mark.parametrize("actor_loss", ["awr", "ddpgbc"])
def test_short_update_with_every_critic(kind, actor_loss):
    critic = critics()[kind]
    algo = tiny_iql(actor_loss=actor_loss, const_std=(actor_loss == "awr"))
    batch = make_batch(1)
    state = init_state(algo, critic, jax.random.PRNGKey(0), batch["observations"][:2], batch["actions"][:2])

    @jax.jit
    def steps(state):
        return jax.lax.scan(lambda s, _: algo.update(critic, s, batch), state, None, length=3)

    new_state, info = steps(state)
    for k in ("value/loss", "critic/loss", "actor/loss", "grad/norm"):
        assert info[k].shape == (3,) and bool(jnp.all(jnp.isfinite(info[k]))), (k, info[k])
    assert int(new_state["step"]) == 3
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
    pp = algo.policy_params(new_state["params"])
    assert set(pp) == {"actor"}
    noise = jnp.ones((W, A))
    for explore in (False, True):
        a = algo.act(pp, jnp.zeros((W, O)), noise, explore=explore)
        assert a.shape == (W, A) and bool(jnp.all(jnp.abs(a) <= 1))
    counts = algo.param_counts(critic, new_state["params"])
    assert counts["total"] == counts["actor"] + counts["value"] + counts["critic_total"]


def test_describe_and_validation():
    d = tiny_iql(expectile=0.8).describe()
    assert d["algorithm"] == "iql" and d["iql_expectile"] == 0.8 and d["iql_actor_loss"] == "awr"
    assert set(IQL.columns) <= set(d)
    with pytest.raises(ValueError, match="actor_loss"):
        IQL(actor_loss="sac")
    with pytest.raises(ValueError, match="expectile"):
        IQL(expectile=1.0)


# --- 4. end to end ---------------------------------------------------------------------------
@pytest.mark.slow
# Under make test one end-to-end run, with the floq critic (the monolithic path is the reference-
# equality tests' and the golden digests'); make test-full (FLOQ_FULL_TESTS=1) adds the monolithic run.
@pytest.mark.parametrize("critic_file", ["gin/critics/floq.gin"] + ([None] if FULL else []))
def test_floq_run_end_to_end(tmp_path, critic_file):
    from floq_test_utils import floq_main

    files = ["gin/experiments/smoke.gin", "gin/algorithms/iql.gin"] + ([critic_file] if critic_file else [])
    res = floq_main("run", *files, "--bind", "TRAIN_STEPS=20", "--bind", "EVAL_INTERVAL=20",
                    "--bind", "IQL_ALPHA=3.0", "--bind", "IQL_EXPECTILE=0.9", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    evals = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if f == "eval.csv"]
    assert evals, res.stdout[-2000:]
    rows = list(csv.DictReader(open(evals[0])))
    assert rows and all(r["algorithm"] == "iql" for r in rows)
    assert rows[0]["iql_alpha"] == "3.0" and rows[0]["iql_expectile"] == "0.9"


def test_a_distributional_critic_inside_iql_is_said_in_one_line():
    """IQN's quantiles all regress onto IQL's scalar target: a warning at config time, no refusal."""
    import warnings

    from floq.agents.base import check_pair
    from floq.agents.ifql import IFQL
    from floq.agents.iql import IQL
    from floq.critics.iqn import IQNCritic
    from floq.critics.monolithic import MonolithicCritic

    for algo in (IQL(), IFQL()):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            check_pair(algo, IQNCritic())
            check_pair(algo, MonolithicCritic())
        assert len(w) == 1 and "every quantile regresses onto it" in str(w[0].message)
