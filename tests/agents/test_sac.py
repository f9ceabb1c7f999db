"""SAC (floq/agents/sac.py): reference equality, a known answer, every critic, end to end.

The reference (github:seohongpark/fql agents/sac.py with utils/networks.py Actor, Value,
LogParam and distrax's Transformed(MultivariateNormalDiag, Block(Tanh))) is re-implemented
below in its own layer layout (ModuleDict names, `value_net`, `actor_net`/`mean_net`/
`log_std_net`, LogParam's `log_value`) with its key splits and its distrax operations
(standard normal draw of shape (1, B, A), DiagLinear then Shift, Tanh's log-det-Jacobian
2 (log 2 - x - softplus(-2x))); floq's parameters are mapped into that layout.
"""

from __future__ import annotations

import json
import math
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from floq.agents.sac import SAC  # noqa: E402
from floq.critics.flow import FloqCritic  # noqa: E402
from floq.critics.iqn import IQNCritic  # noqa: E402
from floq.critics.monolithic import MonolithicCritic  # noqa: E402
from floq.nets.specs import MLPNet, ResNet  # noqa: E402

OBS, ACT, B = 5, 3, 16
NET = MLPNet(width=32, depth=2, layer_norm=True)
ACTOR_NET = MLPNet(width=32, depth=2, layer_norm=False)


def make_batch(seed=0, b=B, masks=None):
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    return {
        "observations": jax.random.normal(k[0], (b, OBS)),
        "actions": jnp.tanh(jax.random.normal(k[1], (b, ACT))),
        "rewards": jax.random.normal(k[2], (b,)),
        "masks": (jax.random.uniform(k[3], (b,)) > 0.3).astype(jnp.float32) if masks is None else masks,
        "next_observations": jax.random.normal(k[4], (b, OBS)),
    }


# --- the reference, re-implemented in its layout ---------------------------------------------

def ref_init(scale=1.0):
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


class RefMLP(nn.Module):
    hidden_dims: Sequence[int]
    activations: Any = nn.gelu
    activate_final: bool = False
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x):
        for i, size in enumerate(self.hidden_dims):
            x = nn.Dense(size, kernel_init=ref_init())(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                x = self.activations(x)
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
        return x


class RefValue(nn.Module):
    hidden_dims: Sequence[int]
    layer_norm: bool = True
    num_ensembles: int = 2

    def setup(self):
        cls = nn.vmap(RefMLP, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, out_axes=0,
                      axis_size=self.num_ensembles)
        self.value_net = cls((*self.hidden_dims, 1), activate_final=False, layer_norm=self.layer_norm)

    def __call__(self, observations, actions):
        return self.value_net(jnp.concatenate([observations, actions], axis=-1)).squeeze(-1)


class RefActor(nn.Module):
    """utils/networks.py Actor(tanh_squash=True, state_dependent_std=True): (means, log_stds)."""

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -5
    log_std_max: float = 2
    final_fc_init_scale: float = 1e-2

    def setup(self):
        self.actor_net = RefMLP(self.hidden_dims, activate_final=True, layer_norm=False)
        self.mean_net = nn.Dense(self.action_dim, kernel_init=ref_init(self.final_fc_init_scale))
        self.log_std_net = nn.Dense(self.action_dim, kernel_init=ref_init(self.final_fc_init_scale))

    def __call__(self, observations):
        h = self.actor_net(observations)
        return self.mean_net(h), jnp.clip(self.log_std_net(h), self.log_std_min, self.log_std_max)


def distrax_sample_and_log_prob(means, log_stds, seed, temperature=1.0):
    """distrax: Transformed(MultivariateNormalDiag(means, exp(log_stds) * T), Block(Tanh(), 1))
    .sample_and_log_prob(seed=seed), operation by operation."""
    scale_diag = jnp.exp(log_stds) * temperature
    # Independent(Normal(zeros(B, A), 1), 1): _sample_n(key, 1) draws (1, B, A), squeezed
    rnd = jax.random.normal(seed, (1,) + means.shape)[0]
    z = (rnd - 0.0) / 1.0
    lp = jnp.sum(-0.5 * jnp.square(z) - (0.5 * math.log(2 * math.pi) + jnp.log(1.0)), axis=-1)
    # Chain([Block(Shift(loc), 1), DiagLinear(scale_diag)]): DiagLinear first, then Shift
    x = scale_diag * rnd
    lp = lp - jnp.sum(jnp.log(jnp.abs(scale_diag)), axis=-1)
    x = x + means
    # Block(Tanh, 1)
    y = jnp.tanh(x)
    lp = lp - jnp.sum(2.0 * (jnp.log(2.0) - x - jax.nn.softplus(-2.0 * x)), axis=-1)
    return y, lp


class Reference:
    """agents/sac.py: total_loss and update over a ModuleDict-layout parameter dict."""

    def __init__(self, cfg, hidden=(32, 32)):
        self.cfg = cfg
        self.critic = RefValue(hidden, layer_norm=True, num_ensembles=2)
        self.actor = RefActor(hidden, ACT)
        self.tx = optax.adam(cfg["lr"])

    def _alpha(self, p):
        return jnp.exp(p["modules_alpha"]["log_value"])

    def critic_loss(self, net, batch, grad, rng):
        cfg = self.cfg
        rng, sample_rng = jax.random.split(rng)
        m, ls = self.actor.apply({"params": net["modules_actor"]}, batch["next_observations"])
        next_actions, next_log_probs = distrax_sample_and_log_prob(m, ls, sample_rng)
        next_qs = self.critic.apply({"params": net["modules_target_critic"]}, batch["next_observations"],
                                    next_actions)
        next_q = next_qs.min(axis=0) if cfg["q_agg"] == "min" else next_qs.mean(axis=0)
        target_q = batch["rewards"] + cfg["discount"] * batch["masks"] * next_q
        if cfg["backup_entropy"]:
            target_q = target_q - cfg["discount"] * batch["masks"] * next_log_probs * self._alpha(net)
        q = self.critic.apply({"params": grad["modules_critic"]}, batch["observations"], batch["actions"])
        return jnp.square(q - target_q).mean(), target_q

    def actor_loss(self, net, batch, grad, rng):
        m, ls = self.actor.apply({"params": grad["modules_actor"]}, batch["observations"])
        actions, log_probs = distrax_sample_and_log_prob(m, ls, rng)
        qs = self.critic.apply({"params": net["modules_critic"]}, batch["observations"], actions)
        q = jnp.mean(qs, axis=0)
        actor_loss = (log_probs * self._alpha(net) - q).mean()
        alpha = self._alpha(grad)
        entropy = -jax.lax.stop_gradient(log_probs).mean()
        alpha_loss = (alpha * (entropy - self.cfg["target_entropy"])).mean()
        return actor_loss + alpha_loss, (actor_loss, alpha_loss)

    def total_loss(self, net, batch, grad, rng):
        rng, actor_rng, critic_rng = jax.random.split(rng, 3)
        net = jax.lax.stop_gradient(net)
        c, target_q = self.critic_loss(net, batch, grad, critic_rng)
        a, (al, alph) = self.actor_loss(net, batch, grad, actor_rng)
        return c + a, {"critic": c, "actor": al, "alpha": alph, "target_q": target_q}

    def update(self, net, opt, rng, batch):
        new_rng, key = jax.random.split(rng)
        grads, info = jax.grad(lambda g: self.total_loss(net, batch, g, key), has_aux=True)(net)
        updates, opt = self.tx.update(grads, opt, net)
        new = optax.apply_updates(net, updates)
        tau = self.cfg["tau"]
        new = dict(new)
        new["modules_target_critic"] = jax.tree_util.tree_map(lambda p, tp: p * tau + tp * (1 - tau),
                                                              net["modules_critic"], net["modules_target_critic"])
        return new, opt, new_rng, grads, info


def to_ref(params):
    """floq's SAC parameters -> the reference's ModuleDict layout."""
    a = params["actor"]
    return {
        "modules_actor": {"actor_net": a["trunk"], "mean_net": a["mean"], "log_std_net": a["log_std"]},
        "modules_critic": {"value_net": params["critic"]["online"]["q"]},
        "modules_target_critic": {"value_net": params["critic"]["target"]["q"]},
        "modules_alpha": {"log_value": params["log_alpha"]},
    }


@jax.jit  # one program, not an eager draw per leaf shape
def _perturb(tree, key):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [x + 0.2 * jax.random.normal(k, x.shape)
                                                  for x, k in zip(leaves, keys)])


def perturbed_state(algo, critic, seed=0):
    """An initial state with every parameter perturbed (target != online, alpha != 1, heads
    not near zero) so that no term of the loss is trivially small."""
    batch = make_batch(seed)
    state = init_state(algo, critic, jax.random.PRNGKey(seed), batch["observations"], batch["actions"])
    params = _perturb(state["params"], jax.random.PRNGKey(seed + 100))
    return {**state, "params": params, "opt": algo.optimizer().init(
        {"actor": params["actor"], "log_alpha": params["log_alpha"], "critic": params["critic"]["online"]})}


def assert_tree_close(a, b, rtol=1e-5, atol=1e-6):
    """Leafwise allclose; the absolute tolerance also scales with the leaf's largest entry
    (float32 sums in a different order differ by ~1e-7 of a leaf's scale)."""
    ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    assert ta == tb, (ta, tb)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=max(atol, rtol * float(np.abs(y).max(initial=0.0))))


# --- 1. reference equality ----------------------------------------------------------------------

@pytest.mark.parametrize("q_agg,backup", [("min", False), ("mean", True)])
def test_reference_equality_one_update(q_agg, backup):
    algo = SAC(actor_net=ACTOR_NET, backup_entropy=backup)
    critic = MonolithicCritic(net=NET, num_ensembles=2, q_agg=q_agg).configure(0.99, -1, 0)
    state = perturbed_state(algo, critic)
    batch = make_batch(1)
    ref = Reference({"lr": 3e-4, "tau": 0.005, "discount": 0.99, "q_agg": q_agg, "backup_entropy": backup,
                     "target_entropy": -0.5 * ACT})

    net = to_ref(state["params"])
    # the reference's Adam covers the whole ModuleDict (target critic included, zero gradients)
    ref_opt = ref.tx.init(net)
    ref_new, _, ref_rng, ref_grads, ref_info = jax.jit(ref.update)(net, ref_opt, state["rng"], batch)

    # the same losses and gradients through floq's interface
    new_state, info = jax.jit(lambda s, b: algo.update(critic, s, b))(state, batch)
    np.testing.assert_allclose(info["critic/loss"], ref_info["critic"], rtol=1e-5)
    np.testing.assert_allclose(info["actor/actor_loss"], ref_info["actor"], rtol=1e-5)
    np.testing.assert_allclose(info["actor/alpha_loss"], ref_info["alpha"], rtol=1e-5)
    np.testing.assert_allclose(info["critic/target_mean"], ref_info["target_q"].mean(), rtol=1e-5, atol=1e-6)

    params = state["params"]

    @jax.jit  # the targets and the gradients as one program, not an eager compile per operation
    def targets_and_grads(params, batch, rng):
        _, key = jax.random.split(rng)
        _, k_actor, k_critic = jax.random.split(key, 3)
        targets, k_fit = algo.critic_targets(critic, params, batch, k_critic, jnp.exp(params["log_alpha"]))

        def loss_fn(tr):
            c, _ = critic.fit({"online": tr["critic"], "target": params["critic"]["target"]}, batch, targets, k_fit)
            a, _ = algo.actor_loss(tr, critic, batch, k_actor, jnp.exp(params["log_alpha"]))
            return c + a

        trainable = {"actor": params["actor"], "log_alpha": params["log_alpha"], "critic": params["critic"]["online"]}
        return targets, jax.grad(loss_fn)(trainable)

    targets, grads = targets_and_grads(params, batch, state["rng"])
    np.testing.assert_allclose(targets[:, 0], ref_info["target_q"], rtol=1e-5, atol=1e-6)
    mapped = to_ref({"actor": grads["actor"], "log_alpha": grads["log_alpha"],
                     "critic": {"online": grads["critic"], "target": params["critic"]["target"]}})
    for part in ("modules_actor", "modules_critic", "modules_alpha"):
        assert_tree_close(mapped[part], ref_grads[part], rtol=1e-5, atol=1e-7)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(ref_grads["modules_target_critic"]))
    assert float(jnp.abs(grads["log_alpha"])) > 0 and float(optax.tree.norm(grads["actor"])) > 0

    # the parameters after the step (Adam + Polyak towards the pre-step online critic), and the key
    assert_tree_close(to_ref(new_state["params"]), ref_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(jax.random.key_data(new_state["rng"]) if jnp.issubdtype(
        new_state["rng"].dtype, jax.dtypes.prng_key) else new_state["rng"], ref_rng)


def test_log_prob_matches_density_and_distrax_form():
    """The tanh-Gaussian log-density: the stable form equals log N(u) - sum log(1 - tanh(u)^2),
    and the action density integrates to one in 1-D."""
    from floq.agents.sac import tanh_gaussian_sample

    mean, log_std = jnp.array([[0.3]]), jnp.array([[-0.4]])
    eps = jnp.linspace(-4, 4, 4001)[:, None]
    a, lp = tanh_gaussian_sample(jnp.broadcast_to(mean, eps.shape), jnp.broadcast_to(log_std, eps.shape), eps)
    u = mean + jnp.exp(log_std) * eps
    naive = (-0.5 * eps ** 2 - 0.5 * math.log(2 * math.pi) - log_std - jnp.log(1 - jnp.tanh(u) ** 2)).sum(-1)
    np.testing.assert_allclose(lp, naive, rtol=1e-4, atol=1e-4)
    dens = np.exp(np.asarray(lp))
    np.testing.assert_allclose(np.trapezoid(dens, np.asarray(a[:, 0])), 1.0, atol=1e-3)
    m, ls = mean, log_std
    y, lp2 = distrax_sample_and_log_prob(m, ls, jax.random.PRNGKey(3))
    e = jax.random.normal(jax.random.PRNGKey(3), (1, 1, 1))[0]
    y1, lp1 = tanh_gaussian_sample(m, ls, e)
    np.testing.assert_allclose(y1, y, rtol=1e-6)
    np.testing.assert_allclose(lp1, lp2, rtol=1e-6)


# --- 2. known answer ----------------------------------------------------------------------------

def test_known_answer_terminal_bandit():
    """One-step (terminal, mask 0) bandit with r(a) = -||a - c||^2 and the temperature frozen
    near zero: the critic target is exactly r on every transition (mask 0: no bootstrap, no
    entropy term even with backup_entropy), and the policy's mean action tanh(mu) converges to c."""
    c = jnp.array([0.5, -0.3, 0.1])
    # alpha starts tiny and, with a target entropy far below any entropy, only shrinks
    algo = SAC(actor_net=ACTOR_NET, lr=3e-3, init_alpha=1e-4, target_entropy=-1e3, backup_entropy=True)
    critic = MonolithicCritic(net=NET, num_ensembles=2, q_agg="min").configure(0.99, -1, 0)
    b = 32
    obs = jnp.ones((b, OBS))

    def batch_at(k):
        act = jax.random.uniform(k, (b, ACT), minval=-1, maxval=1)
        return {"observations": obs, "actions": act, "rewards": -jnp.sum((act - c) ** 2, -1),
                "masks": jnp.zeros((b,)), "next_observations": obs}

    state = init_state(algo, critic, jax.random.PRNGKey(0), obs, obs[:, :ACT])
    # the critic target on terminal transitions is the reward, exactly
    bt = batch_at(jax.random.PRNGKey(1))
    _, kc = jax.random.split(jax.random.split(state["rng"])[1])
    targets, _ = jax.jit(lambda p, b, k: algo.critic_targets(critic, p, b, k, jnp.float32(0.7)))(state["params"], bt, kc)
    np.testing.assert_array_equal(np.asarray(targets[:, 0]), np.asarray(bt["rewards"]))

    @jax.jit
    def run(state, key):
        def body(s, k):
            s, info = algo.update(critic, s, batch_at(k))
            return s, info["actor/alpha"]
        return jax.lax.scan(body, state, jax.random.split(key, 600))

    state, alphas = run(state, jax.random.PRNGKey(2))
    assert float(alphas.max()) < 1e-3
    a = jax.jit(algo.act)(algo.policy_params(state["params"]), obs[:1], jnp.zeros((1, ACT)))[0]
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=0.08)


# --- 3. every critic ----------------------------------------------------------------------------

def critics():
    return {
        "monolithic": MonolithicCritic(net=NET, num_ensembles=2, q_agg="min"),
        "floq": FloqCritic(field_net=NET, distill_net=NET, flow_steps=2, noise_samples=2, num_ensembles=2,
                           distill_ensembles=2, q_agg="min"),
        "iqn": IQNCritic(net=NET, num_ensembles=2, q_agg="min"),
        "resnet": MonolithicCritic(net=ResNet(width=32, block_depth=1, num_blocks=1), num_ensembles=2, q_agg="min"),
    }


@pytest.mark.parametrize("kind", ["monolithic", "floq", "iqn", "resnet"])
def test_every_critic_short_update(kind):
    algo = SAC(actor_net=ACTOR_NET, backup_entropy=True)
    critic = critics()[kind].configure(0.99, -1, 0)
    batch = make_batch(2)
    state = init_state(algo, critic, jax.random.PRNGKey(0), batch["observations"], batch["actions"])

    @jax.jit
    def steps(state):
        def body(s, _):
            return algo.update(critic, s, batch)
        return jax.lax.scan(body, state, None, length=3)

    new, infos = steps(state)
    for k in ("critic/loss", "actor/loss", "actor/alpha_loss", "actor/entropy", "grad/norm"):
        assert np.isfinite(np.asarray(infos[k])).all(), (kind, k)
        assert infos[k].shape == (3,)
    assert int(new["step"]) == 3
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state)
    pp = algo.policy_params(new["params"])
    for explore in (False, True):
        a = algo.act(pp, batch["observations"][:4], jax.random.normal(jax.random.PRNGKey(5), (4, ACT)), explore)
        assert a.shape == (4, ACT) and bool(jnp.all(jnp.abs(a) <= 1))
    counts = algo.param_counts(critic, new["params"])
    assert counts["total"] == counts["actor"] + counts["alpha"] + counts["critic_total"] and counts["alpha"] == 1


def test_act_evaluation_ignores_noise_exploration_uses_it():
    algo = SAC(actor_net=ACTOR_NET)
    critic = MonolithicCritic(net=NET).configure(0.99, -1, 0)
    batch = make_batch(3)
    state = perturbed_state(algo, critic)
    pp = algo.policy_params(state["params"])
    obs = batch["observations"][:4]
    z1, z2 = jax.random.normal(jax.random.PRNGKey(1), (2, 4, ACT))
    np.testing.assert_array_equal(algo.act(pp, obs, z1), algo.act(pp, obs, z2))
    mean, log_std = algo.dist(pp["actor"], obs, ACT)
    np.testing.assert_allclose(algo.act(pp, obs, z1), jnp.tanh(mean), rtol=1e-6)
    np.testing.assert_allclose(algo.act(pp, obs, z1, explore=True), jnp.tanh(mean + jnp.exp(log_std) * z1), rtol=1e-6)
    assert float(log_std.min()) >= -5 and float(log_std.max()) <= 2
    # the evaluation workers' serialized policy is the same function
    from floq.evaluate import eval_key, export_policy

    call = jax.export.deserialize(bytearray(export_policy(algo, pp, OBS, ACT, 4))).call
    got = call(pp, obs, jnp.arange(4, dtype=jnp.int32), jnp.zeros(4, jnp.int32), jnp.asarray(eval_key(0, 0)))
    np.testing.assert_allclose(got, jnp.tanh(mean), rtol=1e-6)


def test_describe_and_validation():
    algo = SAC(actor_net=ACTOR_NET)
    d = algo.describe()
    assert d["algorithm"] == "sac" and all(k in d for k in algo.columns)
    assert algo.target_entropy_for(6) == -3.0 and SAC(target_entropy=-1.5).target_entropy_for(6) == -1.5
    with pytest.raises(ValueError):
        SAC(actor_net=ResNet(width=8))
    with pytest.raises(ValueError):
        SAC(init_alpha=0.0)


# --- 4. end to end ----------------------------------------------------------------------------

def _run(tmp_path, *extra):
    import pandas as pd
    from floq_test_utils import floq_main

    out = tmp_path / "runs"
    res = floq_main("run", "gin/experiments/smoke.gin", *extra, "--bind", "TRAIN_STEPS=20", "--bind",
                    "EVAL_INTERVAL=20", "--bind", "CHECKPOINT_INTERVAL=20", "--bind", "LOG_INTERVAL=10",
                    "--bind", "CHUNK_SIZE=10", "--out", str(out))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    evals = list(out.rglob("eval.csv"))
    assert len(evals) == 1
    ev = pd.read_csv(evals[0])
    assert (ev.algorithm == "sac").all()
    return ev


@pytest.mark.slow
def test_end_to_end_monolithic_offline_to_online(tmp_path):
    ev = _run(tmp_path, "gin/algorithms/sac.gin", "--bind", "ONLINE_STEPS=40", "--bind", "BALANCED_SAMPLING=True")
    assert (ev.critic == "monolithic").all()
    assert int(ev.env_steps.max()) == 40 and "online" in set(ev.phase)
    assert (ev.sac_target_entropy_multiplier == 0.5).all() and (ev.sac_target_entropy == "auto").all()


@pytest.mark.slow
def test_end_to_end_floq(tmp_path):
    ev = _run(tmp_path, "gin/critics/floq.gin", "gin/algorithms/sac.gin")
    assert (ev.critic == "floq").all()


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="make test-full: RLPD is SAC with balanced batches and one offline step, which the offline-to-online run above covers")
def test_end_to_end_rlpd(tmp_path):
    import pandas as pd
    from floq_test_utils import floq_main

    out = tmp_path / "runs"
    res = floq_main("run", "gin/experiments/smoke.gin", "gin/algorithms/rlpd.gin", "--bind", "ONLINE_STEPS=30",
                    "--bind", "EVAL_INTERVAL=10", "--bind", "CHUNK_SIZE=10", "--bind", "LOG_INTERVAL=10",
                    "--out", str(out))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    ev = pd.read_csv(next(out.rglob("eval.csv")))
    assert (ev.algorithm == "sac").all() and (ev.train_steps == 1).all() and int(ev.env_steps.max()) == 30
    manifest = json.loads(next(out.rglob("run.json")).read_text())
    text = json.dumps(manifest)
    assert '"q_agg": "min"' in text and '"balanced_sampling": true' in text and '"utd_ratio": 1' in text


def test_gin_overlays_build():
    """sac.gin swaps the algorithm after any experiment's files (reference defaults, q_agg
    'min'); rlpd.gin adds the RLPD protocol (1 offline step, balanced sampling, UTD 1)."""
    from floq.train import build

    base = ["gin/defaults.gin", "gin/critics/monolithic.gin", "gin/tasks/cube-single-play.gin",
            "gin/recipes/fql_paper.gin"]
    exp = build(base + ["gin/algorithms/sac.gin"])
    algo = exp.algorithm
    assert isinstance(algo, SAC) and algo.name == "sac"
    assert (algo.actor_net.width, algo.actor_net.depth, algo.actor_net.layer_norm) == (512, 4, False)
    assert (algo.lr, algo.tau, algo.target_entropy, algo.target_entropy_multiplier, algo.backup_entropy,
            algo.init_alpha, algo.actor_fc_scale, algo.log_std_min, algo.log_std_max) == (
        3e-4, 0.005, None, 0.5, False, 1.0, 0.01, -5.0, 2.0)
    assert exp.critic.q_agg == "min" and exp.trainer.online_steps == 0
    exp = build(["gin/experiments/smoke.gin", "gin/critics/floq.gin", "gin/algorithms/rlpd.gin"],
                ["ONLINE_STEPS = 100"])
    assert isinstance(exp.algorithm, SAC) and exp.critic.q_agg == "min"
    tr = exp.trainer
    assert (tr.train_steps, tr.online_steps, tr.balanced_sampling, tr.utd_ratio) == (1, 100, True, 1)
