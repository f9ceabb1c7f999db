"""IFQL (floq.agents.ifql) against an independent re-implementation of the FQL repository's
agents/ifql.py (github:seohongpark/fql), known answers (V reaches the expectile on a bandit;
act picks the best sample) and every critic."""

from __future__ import annotations

import csv
import os
import sys
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from floq_test_utils import FULL, init_state

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_iql import (A, B, O, W, FixedQCritic, RefMLP, RefValue, assert_tree_close, critics,  # noqa: E402
                      expectile_of, make_batch, mono, perturbed_state)

from floq.agents.ifql import IFQL  # noqa: E402
from floq.nets.specs import MLPNet  # noqa: E402

N = 5  # samples per state in the tests


class RefActorVectorField(nn.Module):
    hidden_dims: Sequence[int]
    action_dim: int

    def setup(self):
        self.mlp = RefMLP((*self.hidden_dims, self.action_dim), activate_final=False, layer_norm=False)

    def __call__(self, observations, actions, times):
        return self.mlp(jnp.concatenate([observations, actions, times], axis=-1))


NETS = (RefValue((32, 32), layer_norm=True, num_ensembles=1), RefValue((32, 32), layer_norm=True),
        RefActorVectorField((32, 32), A))


def ref_total_loss(cfg, params, grad_params, batch, rng):
    """IFQLAgent.total_loss (params: the current, non-gradient parameters)."""
    value_def, critic_def, flow_def = NETS
    expectile, discount = cfg["expectile"], cfg["discount"]
    q1, q2 = critic_def.apply({"params": params["modules_target_critic"]}, batch["observations"], batch["actions"])
    q = jnp.minimum(q1, q2)
    v = value_def.apply({"params": grad_params["modules_value"]}, batch["observations"])
    value_loss = (jnp.where(q - v >= 0, expectile, 1 - expectile) * (q - v) ** 2).mean()

    next_v = value_def.apply({"params": params["modules_value"]}, batch["next_observations"])
    tq = batch["rewards"] + discount * batch["masks"] * next_v
    q1, q2 = critic_def.apply({"params": grad_params["modules_critic"]}, batch["observations"], batch["actions"])
    critic_loss = ((q1 - tq) ** 2 + (q2 - tq) ** 2).mean()

    rng, actor_rng = jax.random.split(rng)
    batch_size, action_dim = batch["actions"].shape
    _, x_rng, t_rng = jax.random.split(actor_rng, 3)
    x_0 = jax.random.normal(x_rng, (batch_size, action_dim))
    x_1 = batch["actions"]
    t = jax.random.uniform(t_rng, (batch_size, 1))
    x_t = (1 - t) * x_0 + t * x_1
    pred = flow_def.apply({"params": grad_params["modules_actor_flow"]}, batch["observations"], x_t, t)
    actor_loss = jnp.mean((pred - (x_1 - x_0)) ** 2)
    return value_loss + critic_loss + actor_loss, (value_loss, critic_loss, actor_loss)


def ref_sample_actions(params, observation, noise, flow_steps):
    """IFQLAgent.sample_actions for ONE observation, from its (num_samples, A) noise."""
    _, critic_def, flow_def = NETS
    n = noise.shape[0]
    actions = noise
    n_obs = jnp.repeat(observation[None], n, axis=0)
    for i in range(flow_steps):
        t = jnp.full((n, 1), i / flow_steps)
        actions = actions + flow_def.apply({"params": params["modules_actor_flow"]}, n_obs, actions, t) / flow_steps
    actions = jnp.clip(actions, -1, 1)
    q = critic_def.apply({"params": params["modules_critic"]}, n_obs, actions).min(axis=0)
    return actions[jnp.argmax(q)]


def to_ref(p):
    return {
        "modules_value": {"value_net": p["value"]},
        "modules_critic": {"value_net": p["critic"]["online"]["q"]},
        "modules_target_critic": {"value_net": p["critic"]["target"]["q"]},
        "modules_actor_flow": {"mlp": p["actor_bc"]},
    }


def tiny_ifql(**kw):
    kw.setdefault("num_samples", N)
    kw.setdefault("flow_steps", 3)
    return IFQL(actor_net=MLPNet(width=32, depth=2, layer_norm=False), value_net=MLPNet(width=32, depth=2), **kw)


# --- 1. reference equality ------------------------------------------------------------------
def test_one_update_equals_reference():
    critic = mono("min")
    algo = tiny_ifql(expectile=0.7).bind_critic(critic)
    batch = make_batch(2)
    state = perturbed_state(algo, critic, batch)
    new_state, info = jax.jit(algo.update, static_argnums=0)(critic, state, batch)

    cfg = {"expectile": 0.7, "discount": 0.99}
    ref_params = to_ref(state["params"])
    k = jax.random.PRNGKey(0)
    shapes = {"modules_value": jax.eval_shape(NETS[0].init, k, batch["observations"])["params"],
              "modules_critic": jax.eval_shape(NETS[1].init, k, batch["observations"], batch["actions"])["params"],
              "modules_actor_flow": jax.eval_shape(NETS[2].init, k, batch["observations"], batch["actions"],
                                                   batch["actions"][:, :1])["params"]}
    shape = lambda x: tuple(x.shape)  # noqa: E731
    for name, tree in shapes.items():
        assert jax.tree_util.tree_map(shape, tree) == jax.tree_util.tree_map(shape, ref_params[name])

    new_rng, rng = jax.random.split(state["rng"])  # IFQLAgent.update
    ref_grads, (v_loss, c_loss, a_loss) = jax.jit(jax.grad(
        lambda gp, p, b, r: ref_total_loss(cfg, p, gp, b, r), has_aux=True))(ref_params, ref_params, batch, rng)
    np.testing.assert_allclose(info["value/loss"], v_loss, rtol=1e-5)
    np.testing.assert_allclose(info["critic/loss"], c_loss / 2, rtol=1e-5)  # mean, not sum, over the 2 Qs
    np.testing.assert_allclose(info["actor/loss"], a_loss, rtol=1e-5)
    np.testing.assert_array_equal(new_state["rng"], new_rng)

    # Gradients from the same parameters, batch and keys (the critic's: x2, the documented
    # deviation); then the Adam step and the target's Polyak step.
    from floq.agents.iql import value_losses
    params = state["params"]
    trainable = {"actor_bc": params["actor_bc"], "value": params["value"], "critic": params["critic"]["online"]}
    rng2, k_actor = jax.random.split(rng)

    def loss_fn(tr):
        l1, _ = value_losses(algo.value_net, algo.expectile, critic, tr, params["critic"]["target"], batch, rng2)
        l2, _ = algo.actor_loss_fn(tr, batch, k_actor)
        return l1 + l2

    g = jax.jit(jax.grad(loss_fn))(trainable)
    assert_tree_close({"value_net": g["value"]}, ref_grads["modules_value"])
    assert_tree_close({"value_net": jax.tree_util.tree_map(lambda x: 2 * x, g["critic"]["q"])},
                      ref_grads["modules_critic"])
    assert_tree_close({"mlp": g["actor_bc"]}, ref_grads["modules_actor_flow"])

    @jax.jit  # the reference's Adam step and Polyak update, as one program
    def ref_step(ref_grads, ref_params):
        tx = optax.adam(3e-4)
        updates, _ = tx.update(ref_grads, tx.init(ref_params), ref_params)
        ref_new = optax.apply_updates(ref_params, updates)
        ref_new["modules_target_critic"] = jax.tree_util.tree_map(
            lambda p, tp: p * 0.005 + tp * 0.995, ref_params["modules_critic"], ref_params["modules_target_critic"])
        return ref_new

    ref_new = ref_step(ref_grads, ref_params)
    new_ref = to_ref(new_state["params"])
    for name in ("modules_value", "modules_actor_flow", "modules_target_critic", "modules_critic"):
        assert_tree_close(new_ref[name], ref_new[name])


def test_act_equals_reference_sample_actions():
    critic = mono("min")
    algo = tiny_ifql().bind_critic(critic)
    batch = make_batch(3)
    state = init_state(algo, critic, jax.random.PRNGKey(4), batch["observations"][:2], batch["actions"][:2])
    # a flow that moves the samples apart (and past the clip) so that the argmax matters
    state["params"]["actor_bc"] = jax.jit(lambda t: jax.tree_util.tree_map(lambda x: 3.0 * x, t))(
        state["params"]["actor_bc"])
    pp = algo.policy_params(state["params"])
    assert set(pp) == {"actor_bc", "critic"}
    assert algo.noise_shape(A) == (N, A)
    obs = batch["observations"][:8]
    noise = jax.random.normal(jax.random.PRNGKey(5), (8, N, A))
    got = jax.jit(algo.act)(pp, obs, noise)
    ref_params = to_ref(state["params"])
    ref = jax.jit(ref_sample_actions, static_argnums=3)  # one observation at a time, as the reference
    want = jnp.stack([ref(ref_params, obs[i], noise[i], algo.flow_steps) for i in range(8)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(jax.jit(algo.act, static_argnames="explore")(pp, obs, noise, explore=True), got)


def test_act_needs_a_bound_critic():
    algo = tiny_ifql()
    with pytest.raises(ValueError, match="bind_critic"):
        algo.act({"actor_bc": None, "critic": None}, jnp.zeros((1, O)), jnp.zeros((1, N, A)))
    c = mono()
    bound = algo.bind_critic(c)
    assert bound.critic == c and "critic" not in bound.describe() and hash(bound) is not None


# --- 2. known answers -----------------------------------------------------------------------
def test_act_picks_the_best_sample_under_the_critic():
    """With a zero flow (actions = clipped noise) and Q = 2 a0 - a1 the choice is the argmax."""
    critic = FixedQCritic()
    algo = tiny_ifql(num_samples=7).bind_critic(critic)
    state = algo.init(jax.random.PRNGKey(0), critic, jnp.zeros((2, 2)), jnp.zeros((2, 2)))
    zero = jax.tree_util.tree_map(jnp.zeros_like, state["params"]["actor_bc"])
    noise = jax.random.normal(jax.random.PRNGKey(1), (4, 7, 2))
    got = algo.act({"actor_bc": zero, "critic": state["params"]["critic"]["online"]}, jnp.ones((4, 2)), noise)
    cand = np.clip(np.asarray(noise), -1, 1)
    want = cand[np.arange(4), np.argmax(2 * cand[..., 0] - cand[..., 1], axis=1)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_value_reaches_the_expectile_on_a_bandit():
    n, expectile = 12, 0.8
    r = np.random.default_rng(7)
    actions = jnp.asarray(r.uniform(-1, 1, size=(n, 2)), jnp.float32)
    obs = jnp.zeros((n, 1))
    batch = {"observations": obs, "actions": actions, "rewards": jnp.zeros((n,)), "masks": jnp.zeros((n,)),
             "next_observations": obs}
    critic = FixedQCritic()
    algo = IFQL(expectile=expectile, lr=3e-3, num_samples=2, flow_steps=1,
                actor_net=MLPNet(width=8, depth=1, layer_norm=False), value_net=MLPNet(width=8, depth=1))
    state = algo.init(jax.random.PRNGKey(0), critic, obs[:2], actions[:2])

    @jax.jit
    def train(state):
        return jax.lax.scan(lambda s, _: (algo.update(critic, s, batch)[0], None), state, None, length=3000)[0]

    state = train(state)
    from floq.agents.iql import value_apply
    v = float(value_apply(algo.value_net, state["params"]["value"], obs[:1])[0])
    q = np.asarray(critic._q(actions))
    want = expectile_of(q, expectile)
    assert abs(v - want) < 1e-2 * (q.max() - q.min()), (v, want)


# --- 3. every critic ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["monolithic", "resnet", "floq", "iqn"])
def test_short_update_with_every_critic(kind):
    critic = critics()[kind]
    algo = tiny_ifql().bind_critic(critic)
    batch = make_batch(1)
    state = init_state(algo, critic, jax.random.PRNGKey(0), batch["observations"][:2], batch["actions"][:2])

    @jax.jit
    def steps(state):
        return jax.lax.scan(lambda s, _: algo.update(critic, s, batch), state, None, length=3)

    new_state, info = steps(state)
    for k in ("value/loss", "critic/loss", "actor/loss", "grad/norm"):
        assert info[k].shape == (3,) and bool(jnp.all(jnp.isfinite(info[k]))), (k, info[k])
    assert int(new_state["step"]) == 3
    pp = algo.policy_params(new_state["params"])
    a = jax.jit(algo.act)(pp, jnp.zeros((W, O)), jnp.ones((W, *algo.noise_shape(A))))
    assert a.shape == (W, A) and bool(jnp.all(jnp.abs(a) <= 1))
    counts = algo.param_counts(critic, new_state["params"])
    assert counts["total"] == counts["actor_bc_flow"] + counts["value"] + counts["critic_total"]


def test_describe_and_validation():
    d = tiny_ifql(expectile=0.8).describe()
    assert d["algorithm"] == "ifql" and d["ifql_expectile"] == 0.8 and d["ifql_num_samples"] == N
    assert set(IFQL.columns) <= set(d)
    with pytest.raises(ValueError, match="num_samples"):
        IFQL(num_samples=0)


# --- 4. end to end ---------------------------------------------------------------------------
@pytest.mark.slow
# Under make test one end-to-end run, with the floq critic (the monolithic path is the reference-
# equality tests' and the golden digests'); make test-full (FLOQ_FULL_TESTS=1) adds the monolithic run.
@pytest.mark.parametrize("critic_file", ["gin/critics/floq.gin"] + ([None] if FULL else []))
def test_floq_run_end_to_end(tmp_path, critic_file):
    from floq_test_utils import floq_main

    files = ["gin/experiments/smoke.gin", "gin/algorithms/ifql.gin"] + ([critic_file] if critic_file else [])
    res = floq_main("run", *files, "--bind", "TRAIN_STEPS=20", "--bind", "EVAL_INTERVAL=20",
                    "--bind", "IFQL_EXPECTILE=0.9", "--bind", "IFQL_NUM_SAMPLES=4", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    evals = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if f == "eval.csv"]
    assert evals, res.stdout[-2000:]
    rows = list(csv.DictReader(open(evals[0])))
    assert rows and all(r["algorithm"] == "ifql" for r in rows)
    assert rows[0]["ifql_num_samples"] == "4"
