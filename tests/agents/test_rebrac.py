"""ReBRAC (floq/agents/rebrac.py): equality with the reference's update (FQL's
agents/rebrac.py, re-implemented below from its equations, module layout and key splits),
a known answer, every critic, and end-to-end runs."""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from floq_test_utils import FULL, init_state

from floq.agents.rebrac import ReBRAC
from floq.critics.flow import FloqCritic
from floq.critics.iqn import IQNCritic
from floq.critics.monolithic import MonolithicCritic
from floq.nets.specs import MLPNet, ResNet

B, O, A, W = 16, 5, 3, 32
RTOL, ATOL = 1e-5, 1e-6


# --- the reference, re-implemented (github:seohongpark/fql utils/networks.py, agents/rebrac.py)

def ref_init(scale=1.0):
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


class RefMLP(nn.Module):
    hidden_dims: tuple
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


class RefActor(nn.Module):
    """Actor(tanh_squash=True, const_std=True, state_dependent_std=False): its mode,
    tanh(mean), is all ReBRAC reads."""

    hidden_dims: tuple
    action_dim: int
    final_fc_init_scale: float = 1e-2

    def setup(self):
        self.actor_net = RefMLP(self.hidden_dims, activate_final=True, layer_norm=False)
        self.mean_net = nn.Dense(self.action_dim, kernel_init=ref_init(self.final_fc_init_scale))

    def __call__(self, obs):
        return jnp.tanh(self.mean_net(self.actor_net(obs)))


class RefValue(nn.Module):
    hidden_dims: tuple
    num_ensembles: int = 2

    def setup(self):
        cls = nn.vmap(RefMLP, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None,
                      out_axes=0, axis_size=self.num_ensembles)
        self.value_net = cls((*self.hidden_dims, 1), activate_final=False, layer_norm=True)

    def __call__(self, obs, actions):
        return self.value_net(jnp.concatenate([obs, actions], -1)).squeeze(-1)


CFG = dict(lr=3e-4, discount=0.99, tau=0.005, alpha_actor=0.3, alpha_critic=0.1, actor_noise=0.2,
           actor_noise_clip=0.5, actor_freq=2)


class Ref:
    """ReBRACAgent's update as pure functions over its ModuleDict parameter layout."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.actor = RefActor((W, W), A)
        self.critic = RefValue((W, W))

    def create(self, seed):
        rng = jax.random.PRNGKey(seed)
        rng, k_c, k_a = jax.random.split(rng, 3)
        obs, act = jnp.zeros((1, O)), jnp.zeros((1, A))
        c = self.critic.init(k_c, obs, act)["params"]
        a = self.actor.init(k_a, obs)["params"]
        params = {"modules_critic": c, "modules_target_critic": c, "modules_actor": a, "modules_target_actor": a}
        return {"params": params, "opt": optax.adam(self.cfg["lr"]).init(params), "rng": rng}

    def critic_loss(self, net, batch, grad_params, rng):
        cfg = self.cfg
        rng, sample_rng = jax.random.split(rng)
        next_actions = self.actor.apply({"params": net["modules_target_actor"]}, batch["next_observations"])
        noise = jnp.clip(jax.random.normal(sample_rng, next_actions.shape) * cfg["actor_noise"],
                         -cfg["actor_noise_clip"], cfg["actor_noise_clip"])
        next_actions = jnp.clip(next_actions + noise, -1, 1)
        next_q = self.critic.apply({"params": net["modules_target_critic"]}, batch["next_observations"],
                                   next_actions).min(axis=0)
        mse = jnp.square(next_actions - batch["next_actions"]).sum(axis=-1)
        next_q = next_q - cfg["alpha_critic"] * mse
        target_q = batch["rewards"] + cfg["discount"] * batch["masks"] * next_q
        q = self.critic.apply({"params": grad_params["modules_critic"]}, batch["observations"], batch["actions"])
        return jnp.square(q - target_q).mean()

    def actor_loss(self, net, batch, grad_params, rng):
        actions = self.actor.apply({"params": grad_params["modules_actor"]}, batch["observations"])
        q = jnp.min(self.critic.apply({"params": net["modules_critic"]}, batch["observations"], actions), axis=0)
        mse = jnp.square(actions - batch["actions"]).sum(axis=-1)
        lam = jax.lax.stop_gradient(1 / jnp.abs(q).mean())
        return -(lam * q).mean() + (self.cfg["alpha_actor"] * mse).mean()

    def total_loss(self, net, batch, grad_params, full_update, rng):
        rng, actor_rng, critic_rng = jax.random.split(rng, 3)
        c = self.critic_loss(net, batch, grad_params, critic_rng)
        a = self.actor_loss(net, batch, grad_params, actor_rng) if full_update else 0.0
        return c + a, (c, a)

    def grads(self, agent, batch, full_update):
        _, rng = jax.random.split(agent["rng"])
        net = agent["params"]
        return jax.grad(lambda g: self.total_loss(net, batch, g, full_update, rng), has_aux=True)(net)

    def update(self, agent, batch, full_update):
        new_rng, _ = jax.random.split(agent["rng"])
        net = agent["params"]
        grads, aux = self.grads(agent, batch, full_update)
        tx = optax.adam(self.cfg["lr"])
        updates, opt = tx.update(grads, agent["opt"], net)
        new = dict(optax.apply_updates(net, updates))
        if full_update:
            for m in ("critic", "actor"):  # from self.network.params: the parameters before the step
                new[f"modules_target_{m}"] = jax.tree_util.tree_map(
                    lambda p, tp: p * self.cfg["tau"] + tp * (1 - self.cfg["tau"]),
                    net[f"modules_{m}"], net[f"modules_target_{m}"])
        return {"params": new, "opt": opt, "rng": new_rng}, aux


# --- parameter layouts ---------------------------------------------------------------------

def actor_to_floq(p):
    return {"MLP_0": p["actor_net"], "Dense_0": p["mean_net"]}


def actor_from_floq(p):
    return {"actor_net": p["MLP_0"], "mean_net": p["Dense_0"]}


def critic_to_floq(p):
    return {"q": p["value_net"]}


def state_to_floq(algo, ref_agent, step):
    rp = ref_agent["params"]
    params = {"actor": actor_to_floq(rp["modules_actor"]), "target_actor": actor_to_floq(rp["modules_target_actor"]),
              "critic": {"online": critic_to_floq(rp["modules_critic"]),
                         "target": critic_to_floq(rp["modules_target_critic"])}}
    opt = algo.optimizer().init({"actor": params["actor"], "critic": params["critic"]["online"]})
    return {"params": params, "opt": opt, "rng": ref_agent["rng"], "step": jnp.asarray(step, jnp.int32)}


def floq_view(ref_params):
    """The reference's four modules in floq's layout."""
    return {"actor": actor_to_floq(ref_params["modules_actor"]),
            "target_actor": actor_to_floq(ref_params["modules_target_actor"]),
            "critic": {"online": critic_to_floq(ref_params["modules_critic"]),
                       "target": critic_to_floq(ref_params["modules_target_critic"])}}


def assert_trees_close(a, b, rtol=RTOL, atol=ATOL):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb, (ta, tb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def make_batch(seed, b=B):
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    return {
        "observations": jax.random.normal(k[0], (b, O)),
        "actions": jax.random.uniform(k[1], (b, A), minval=-0.95, maxval=0.95),
        "rewards": jax.random.normal(k[2], (b,)),
        "masks": (jax.random.uniform(k[3], (b,)) > 0.25).astype(jnp.float32),
        "next_observations": jax.random.normal(k[4], (b, O)),
        "next_actions": jax.random.uniform(k[5], (b, A), minval=-0.95, maxval=0.95),
    }


def small_algo(**kw):
    cfg = {**CFG, **kw}
    return ReBRAC(alpha_actor=cfg["alpha_actor"], alpha_critic=cfg["alpha_critic"],
                  actor_net=MLPNet(width=W, depth=2, layer_norm=False), lr=cfg["lr"], tau=cfg["tau"],
                  actor_freq=cfg["actor_freq"], actor_noise=cfg["actor_noise"],
                  actor_noise_clip=cfg["actor_noise_clip"])


def mono(q_agg="min", net=None):
    return MonolithicCritic(net=net or MLPNet(width=W, depth=2, layer_norm=True), num_ensembles=2,
                            q_agg=q_agg).configure(CFG["discount"], -1.0, 0.0)


# --- 1. reference equality -----------------------------------------------------------------

@pytest.mark.parametrize("full", [False, True])
def test_one_update_equals_reference_losses_and_gradients(full):
    ref, algo, critic = Ref(CFG), small_algo(), mono()
    agent = ref.create(0)
    # a trained-looking starting point: targets differ from the online networks
    agent["params"]["modules_target_critic"] = jax.tree_util.tree_map(
        lambda x: x * 0.9 + 0.01, agent["params"]["modules_critic"])
    agent["params"]["modules_target_actor"] = jax.tree_util.tree_map(
        lambda x: x * 1.1 - 0.02, agent["params"]["modules_actor"])
    batch = make_batch(1)
    step = 1 if full else 0  # floq's step 1 is the reference's i = 2: a full update
    state = state_to_floq(algo, agent, step)
    assert bool(algo.is_full_update(state["step"])) == full

    ref_grads, (ref_c, ref_a) = ref.grads(agent, batch, full)
    _, rng = jax.random.split(state["rng"])
    trainable = {"actor": state["params"]["actor"], "critic": state["params"]["critic"]["online"]}
    grads, info = jax.grad(lambda t: algo.loss(t, state["params"], critic, batch, rng, full), has_aux=True)(trainable)

    np.testing.assert_allclose(info["critic/loss"], ref_c, rtol=RTOL)
    np.testing.assert_allclose(info["actor/loss"], ref_a, rtol=RTOL)
    assert_trees_close(grads["critic"], critic_to_floq(ref_grads["modules_critic"]))
    if full:
        assert_trees_close(grads["actor"], actor_to_floq(ref_grads["modules_actor"]))
        assert float(jnp.abs(jax.tree_util.tree_leaves(grads["actor"])[0]).max()) > 0
    else:
        for g in jax.tree_util.tree_leaves(grads["actor"]):
            assert not np.any(np.asarray(g))  # exactly zero, as the reference's actor_loss = 0.0
        for g in jax.tree_util.tree_leaves(ref_grads["modules_actor"]):
            assert not np.any(np.asarray(g))

    # the full update (Adam step + targets), compiled
    new_state, _ = jax.jit(lambda s, b: algo.update(critic, s, b))(state, batch)
    new_ref, _ = ref.update(agent, batch, full)
    assert_trees_close(new_state["params"], floq_view(new_ref["params"]))
    np.testing.assert_array_equal(new_state["rng"], new_ref["rng"])


def test_update_sequence_equals_reference_targets_and_adam_on_critic_only_steps():
    """Five updates (i = 1..5: critic-only, full, critic-only, full, critic-only) with a large tau
    and learning rate, so that where the targets are averaged from (pre-step online params,
    full steps only) and the actor's Adam drift on critic-only steps are visible."""
    cfg = {**CFG, "tau": 0.5, "lr": 1e-2, "actor_freq": 2}
    ref, algo, critic = Ref(cfg), small_algo(tau=0.5, lr=1e-2), mono()
    agent = ref.create(3)
    state = state_to_floq(algo, agent, 0)
    update = jax.jit(lambda s, b: algo.update(critic, s, b))
    for i in range(1, 6):
        batch = make_batch(10 + i)
        before = state["params"]["actor"]
        state, info = update(state, batch)
        agent, _ = ref.update(agent, batch, i % cfg["actor_freq"] == 0)
        assert_trees_close(state["params"], floq_view(agent["params"]), rtol=2e-5, atol=2e-6)
        np.testing.assert_array_equal(state["rng"], agent["rng"])
        assert float(info["actor/full_update"]) == float(i % 2 == 0)
        if i == 3:  # a critic-only step after a full one: Adam's first moment still moves the actor
            moved = jax.tree_util.tree_map(lambda x, y: jnp.abs(x - y).max(), before, state["params"]["actor"])
            assert max(float(x) for x in jax.tree_util.tree_leaves(moved)) > 0
    assert int(state["step"]) == 5
    # a target averaged from the post-step parameters would differ: the test can tell
    post = jax.tree_util.tree_map(lambda p, tp: 0.5 * p + 0.5 * tp, state["params"]["critic"]["online"],
                                  state["params"]["critic"]["target"])
    assert not all(np.allclose(x, y) for x, y in zip(jax.tree_util.tree_leaves(post),
                                                      jax.tree_util.tree_leaves(state["params"]["critic"]["target"])))


def test_act_matches_reference_sample_actions():
    ref, algo = Ref(CFG), small_algo()
    agent = ref.create(0)
    actor = agent["params"]["modules_actor"]
    # scale the head up so that actions reach the clip
    actor = {**actor, "mean_net": jax.tree_util.tree_map(lambda x: x * 300.0, actor["mean_net"])}
    obs = jax.random.normal(jax.random.PRNGKey(5), (8, O))
    noise = jax.random.normal(jax.random.PRNGKey(6), (8, A)) * 3
    pp = algo.policy_params({"actor": actor_to_floq(actor), "target_actor": None, "critic": None})
    mode = ref.actor.apply({"params": actor}, obs)
    np.testing.assert_allclose(algo.act(pp, obs, noise), mode, rtol=RTOL)  # evaluation: temperature 0
    expl = jnp.clip(mode + jnp.clip(noise * 0.2, -0.5, 0.5), -1, 1)  # temperature 1
    np.testing.assert_allclose(algo.act(pp, obs, noise, explore=True), expl, rtol=RTOL)
    assert float(jnp.abs(algo.act(pp, obs, noise, explore=True)).max()) <= 1.0
    assert algo.noise_shape(A) == (A,)


def test_init_layout_matches_reference_modules():
    """floq's actor holds the reference Actor's parameters (shapes; head init scale 0.01) and
    starts with target == online."""
    algo, critic = small_algo(), mono()
    state = algo.init(jax.random.PRNGKey(0), critic, jnp.zeros((2, O)), jnp.zeros((2, A)))
    ref_actor = RefActor((W, W), A).init(jax.random.PRNGKey(0), jnp.zeros((1, O)))["params"]
    shapes = lambda t: jax.tree_util.tree_map(jnp.shape, t)  # noqa: E731
    assert shapes(actor_from_floq(state["params"]["actor"])) == shapes(ref_actor)
    assert_trees_close(state["params"]["actor"], state["params"]["target_actor"], rtol=0, atol=0)
    head = np.asarray(state["params"]["actor"]["Dense_0"]["kernel"])
    limit = np.sqrt(3 * 0.01 / ((W + A) / 2))  # variance_scaling(0.01, fan_avg, uniform)
    assert np.abs(head).max() <= limit and np.abs(head).max() > 0.5 * limit
    counts = algo.param_counts(critic, state["params"])
    assert counts["total"] == counts["actor"] + counts["critic_total"]
    assert counts["actor"] == (O * W + W) + (W * W + W) + (W * A + A)


# --- 2. known answer -----------------------------------------------------------------------

def test_large_alpha_actor_converges_to_the_dataset_action():
    """One state, one dataset action: with alpha_actor large the BC term dominates the
    normalised Q term (|dQ/da| / mean|Q| is O(1)), so mu(s) -> a_data."""
    algo = ReBRAC(alpha_actor=100.0, alpha_critic=0.0, actor_net=MLPNet(width=W, depth=2, layer_norm=False),
                  lr=3e-3, actor_freq=2)
    critic = mono()
    a_data = jnp.array([0.3, -0.5, 0.7])
    b = 8
    batch = {"observations": jnp.ones((b, O)), "actions": jnp.tile(a_data, (b, 1)), "rewards": jnp.ones((b,)),
             "masks": jnp.ones((b,)), "next_observations": jnp.ones((b, O)), "next_actions": jnp.tile(a_data, (b, 1))}
    state = algo.init(jax.random.PRNGKey(0), critic, batch["observations"], batch["actions"])

    @jax.jit
    def train(state):
        return jax.lax.scan(lambda s, _: (algo.update(critic, s, batch)[0], None), state, None, length=400)[0]

    state = train(state)
    a = algo.act(algo.policy_params(state["params"]), batch["observations"][:1], jnp.zeros((1, A)))[0]
    np.testing.assert_allclose(a, a_data, atol=0.03)


# --- 3. every critic -----------------------------------------------------------------------

CRITICS = {
    "monolithic": lambda: mono(),
    "resnet": lambda: mono(net=ResNet(width=W, block_depth=1, num_blocks=1, layer_norm=True)),
    "floq": lambda: FloqCritic(field_net=MLPNet(width=W, depth=2), distill_net=MLPNet(width=W, depth=2),
                               flow_steps=2, noise_samples=2, q_agg="min").configure(0.99, -1.0, 0.0),
    "iqn": lambda: IQNCritic(net=MLPNet(width=W, depth=2), num_quantiles=4, num_q_samples=4,
                             q_agg="min").configure(0.99, -1.0, 0.0),
}


@pytest.mark.parametrize("name", sorted(CRITICS))
def test_short_training_with_every_critic(name):
    critic, algo = CRITICS[name](), small_algo()
    batch = make_batch(0)
    # four updates in one compiled program, which also returns the targets after each step
    state = init_state(algo, critic, jax.random.PRNGKey(0), batch["observations"], batch["actions"])
    shapes = jax.tree_util.tree_map(jnp.shape, state)

    def update(s, _):
        new, metrics = algo.update(critic, s, batch)
        return new, (metrics, new["params"]["target_actor"], new["params"]["critic"]["target"])

    new, (metrics, target_actor, target_critic) = jax.jit(lambda s: jax.lax.scan(update, s, None, length=4))(state)
    assert jax.tree_util.tree_map(jnp.shape, new) == shapes
    assert int(new["step"]) == 4
    for k, v in metrics.items():
        assert np.all(np.isfinite(np.asarray(v))), k
    np.testing.assert_array_equal(metrics["actor/full_update"], [0, 1, 0, 1])
    assert float(jnp.abs(metrics["critic/loss"]).max()) > 0
    # targets move on full updates only (after steps 1 and 2: index 0 and 1)
    at = lambda tree, i: jax.tree_util.tree_map(lambda x: x[i], tree)  # noqa: E731
    changed = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(  # noqa: E731
        jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    assert not changed(at(target_actor, 0), state["params"]["target_actor"])
    assert not changed(at(target_critic, 0), state["params"]["critic"]["target"])
    assert changed(at(target_critic, 1), at(target_critic, 0))
    pp = algo.policy_params(new["params"])
    obs = jnp.zeros((3, O))
    for explore in (False, True):
        act = algo.act(pp, obs, jnp.ones((3, *algo.noise_shape(A))), explore=explore)
        assert act.shape == (3, A) and bool(jnp.all(jnp.abs(act) <= 1))
    counts = algo.param_counts(critic, new["params"])
    assert counts["total"] > counts["critic_total"] > 0


def test_describe_and_columns():
    d = small_algo().describe()
    assert d["algorithm"] == "rebrac" == ReBRAC.name
    for c in ReBRAC.columns:
        assert c in d
    assert "next_actions" in ReBRAC.batch_keys
    with pytest.raises(ValueError):
        ReBRAC(actor_freq=0)


def test_gin_overlay_builds_rebrac_with_min_aggregation():
    import gin

    from floq.train import build

    gin.clear_config()
    try:
        for critic_file in ([], ["gin/critics/floq.gin"], ["gin/critics/iqn.gin"]):
            exp = build(["gin/experiments/smoke.gin", "gin/algorithms/rebrac.gin", *critic_file],
                        ["REBRAC_ALPHA_ACTOR = 0.1", "REBRAC_ALPHA_CRITIC = 0.01"])
            algo = exp.algorithm
            assert isinstance(algo, ReBRAC) and algo.name == "rebrac"
            assert (algo.alpha_actor, algo.alpha_critic) == (0.1, 0.01)
            assert (algo.actor_net.width, algo.actor_net.depth, algo.actor_net.layer_norm) == (32, 2, False)
            assert (algo.lr, algo.tau, algo.actor_freq, algo.actor_noise, algo.actor_noise_clip,
                    algo.actor_fc_scale) == (3e-4, 0.005, 2, 0.2, 0.5, 0.01)
            assert exp.critic.q_agg == "min"  # ReBRAC's definition, whatever the recipe says
            gin.clear_config()
    finally:
        gin.clear_config()


# --- 4. end to end -------------------------------------------------------------------------

@pytest.mark.slow
# Under make test one end-to-end run, with the floq critic (the monolithic path is the reference-
# equality tests' and the golden digests'); make test-full (FLOQ_FULL_TESTS=1) adds the monolithic run.
@pytest.mark.parametrize("critic_file", ["gin/critics/floq.gin"] + ([None] if FULL else []))
def test_end_to_end(tmp_path, smoke_dataset, critic_file):
    import pandas as pd

    from floq_test_utils import floq_main

    files = ["gin/experiments/smoke.gin", "gin/algorithms/rebrac.gin"] + ([critic_file] if critic_file else [])
    res = floq_main("run", *files, "--bind", "TRAIN_STEPS=20", "--bind", "EVAL_INTERVAL=20",
                    "--bind", "REBRAC_ALPHA_ACTOR=0.1", "--bind", "REBRAC_ALPHA_CRITIC=0.01", "--out", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "smoke").iterdir() if p.is_dir()]
    ev = pd.read_csv(os.path.join(run_dir, "eval.csv"))
    assert (ev.algorithm == "rebrac").all()
    assert list(ev.step) == [0, 20]
    assert (ev.critic == ("floq" if critic_file else "monolithic")).all()
    assert (ev.rebrac_alpha_actor == 0.1).all() and (ev.rebrac_alpha_critic == 0.01).all()
