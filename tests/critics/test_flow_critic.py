"""floq's flow critic, tested by construction: Euler integration of known fields, memory
flat in K, the K = 1 / t = 0 reduction to regression, shapes and sampling semantics
(ensemble axis first, B*R rows, R next actions averaged in the target, one set of noise
draws for the current returns and the flow-matching start), validation, parameter counts."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from floq.critics.base import repeat_rows, td_loss
from floq.critics.flow import FloqCritic, integrate
from floq.critics.monolithic import MonolithicCritic
from floq.nets.specs import MLPNet, ResNet
from floq.train import run_once_jit

O, A = 3, 2  # observation and action sizes of the synthetic batches


def small_floq(**kw) -> FloqCritic:
    cfg = dict(field_net=MLPNet(width=16, depth=2), distill_net=MLPNet(width=16, depth=2), flow_steps=4,
               noise_samples=3, num_ensembles=2, distill_ensembles=2, num_bins=11)
    cfg.update(kw)
    return FloqCritic(**cfg).configure(0.9, -1.0, 0.0)


def make_batch(b=5, n=3, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    batch = {
        "observations": jax.random.normal(ks[0], (b, O)),
        "actions": jax.random.uniform(ks[1], (b, A), minval=-1, maxval=1),
        "rewards": -jax.random.uniform(ks[2], (b,)),
        "masks": (jax.random.uniform(ks[3], (b,)) > 0.3).astype(jnp.float32),
        "next_observations": jax.random.normal(ks[4], (b, O)),
    }
    # Next actions differ for every r (so averaging over R is observable).
    next_actions = jax.random.uniform(ks[5], (b, n, A), minval=-1, maxval=1)
    return batch, next_actions


def init(critic, batch, seed=1):
    # one program compiled as the trainer compiles initialisation (floq.train.run_once_jit)
    return run_once_jit(lambda k: critic.init(k, batch["observations"], batch["actions"]))(jax.random.PRNGKey(seed))


def perturbed_target(params, seed=7, scale=0.3):
    """Target field != online field, so that using the wrong one would be visible."""
    leaves, tree = jax.tree_util.tree_flatten(params["target"]["field"])
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    leaves = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return {"online": params["online"], "target": {"field": jax.tree_util.tree_unflatten(tree, leaves)}}


# --- Euler integration ------------------------------------------------------------------

Z0 = jnp.array([[0.5, -1.0, 2.0, 0.0, 3.0], [1.5, 0.25, -2.0, 4.0, -3.0]])  # (E=2, N=5)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_integrate_constant_field(k):
    out = integrate(lambda z, t: jnp.full_like(z, 3.7), Z0, k)
    np.testing.assert_allclose(np.asarray(out), np.asarray(Z0) + 3.7, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [1, 4, 16])
@pytest.mark.parametrize("a", [-0.7, 1.3])
def test_integrate_linear_field_is_exact_euler(k, a):
    # dz/dt = a z: Euler gives z0 (1 + a/K)^K exactly (not z0 e^a).
    out = integrate(lambda z, t: a * z, Z0, k)
    np.testing.assert_allclose(np.asarray(out), np.asarray(Z0) * (1 + a / k) ** k, rtol=1e-5, atol=1e-6)
    if k == 16:
        assert not np.allclose(np.asarray(out), np.asarray(Z0) * np.exp(a), rtol=1e-3)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_integrate_time_dependent_field_is_the_left_euler_sum(k):
    row = jnp.arange(1, 6, dtype=jnp.float32)  # per-row coefficient
    seen = []

    def field(z, t):
        assert t.shape == (5, 1) and z.shape == (2, 5)
        seen.append(t)
        return jnp.broadcast_to((row * (t[:, 0] ** 2 + jnp.sin(3 * t[:, 0])))[None], z.shape)

    out = integrate(field, Z0, k)
    ts = np.arange(k) / k  # left end points 0, 1/K, ..., (K-1)/K
    increment = sum(np.arange(1, 6) * (ti ** 2 + np.sin(3 * ti)) for ti in ts) / k
    np.testing.assert_allclose(np.asarray(out), np.asarray(Z0) + increment[None], rtol=1e-5, atol=1e-5)


def test_integrate_passes_no_gradient():
    g = jax.grad(lambda z0: integrate(lambda z, t: z * z, z0, 4).sum())(Z0)
    np.testing.assert_array_equal(np.asarray(g), 0.0)


def _grad_temp_bytes(critic, batch, next_actions, params):
    def loss(online):
        return critic.loss({"online": online, "target": params["target"]}, batch, next_actions,
                           jax.random.PRNGKey(0))[0]

    compiled = jax.jit(jax.grad(loss)).lower(params["online"]).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def _unstopped_grad_temp_bytes(critic, batch, params, k):
    """Control: the same field integrated with gradients flowing through all K steps."""
    obs = repeat_rows(batch["observations"], critic.noise_samples)
    act = repeat_rows(batch["actions"], critic.noise_samples)
    n = obs.shape[0]

    def loss(field):
        z = jnp.zeros((critic.num_ensembles, n))
        for i in range(k):
            z = z + critic.velocity(field, obs, act, z, jnp.full((n, 1), i / k)) / k
        return jnp.sum(z ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(params["online"]["field"]).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_integration_memory_is_flat_in_k():
    batch, _ = make_batch(b=64, n=8)
    mem = {}
    for k in (1, 16):
        critic = small_floq(flow_steps=k, noise_samples=8, field_net=MLPNet(width=128, depth=2))
        _, next_actions = make_batch(b=64, n=critic.num_next_actions)
        params = init(critic, batch)
        mem[k] = _grad_temp_bytes(critic, batch, next_actions, params)
    # One activation set of the field here: E * B * R * width * 4 bytes = 2*512*128*4 = 0.5 MiB.
    layer = 2 * 64 * 8 * 128 * 4
    assert mem[1] > 0
    assert abs(mem[16] - mem[1]) <= max(0.05 * mem[1], layer), mem
    # Control: the measure does see activations kept for backprop through K steps.
    ctrl = {k: _unstopped_grad_temp_bytes(critic, batch, params, k) for k in (1, 16)}
    assert ctrl[16] > ctrl[1] + 10 * layer, ctrl


# --- K = 1, t = 0: a one-step regression on the TD target ---------------------------------

class Recorder:
    """Wraps FloqCritic.returns / velocity / fit and records concrete calls (`targets`: the TD
    target y (B,) that fit regresses onto, the mean of its (B, N) targets). It observes the
    two-loop form of the loss (`td_loss`: one `returns` call per integration); `loss` (one
    loop, `returns_stacked`) gives its numbers (test_one_loop_for_online_and_target_...)."""

    def __init__(self, monkeypatch):
        self.returns, self.velocity, self.targets = [], [], []
        orig_returns, orig_velocity, orig_fit = FloqCritic.returns, FloqCritic.velocity, FloqCritic.fit
        concrete = lambda *xs: not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))  # noqa

        def returns(critic, field_params, obs, act, u):
            out = orig_returns(critic, field_params, obs, act, u)
            if concrete(obs, u, out):
                self.returns.append(dict(field=field_params, obs=obs, act=act, u=u, out=out))
            return out

        def velocity(critic, field_params, obs, act, z, t):
            out = orig_velocity(critic, field_params, obs, act, z, t)
            if concrete(obs, z, t, out):
                self.velocity.append(dict(field=field_params, obs=obs, act=act, z=z, t=t, out=out))
            return out

        def fit(critic, params, batch, targets, rng, **kw):
            if concrete(targets):
                self.targets.append(dict(out=targets.mean(axis=1)))
            return orig_fit(critic, params, batch, targets, rng, **kw)

        monkeypatch.setattr(FloqCritic, "returns", returns)
        monkeypatch.setattr(FloqCritic, "velocity", velocity)
        monkeypatch.setattr(FloqCritic, "fit", fit)

    def current_returns_call(self, batch, r):
        obs = repeat_rows(batch["observations"], r)
        calls = [c for c in self.returns if c["obs"].shape == obs.shape and np.allclose(c["obs"], obs)]
        assert len(calls) == 1, len(calls)
        return calls[0]


def test_k1_at_zero_is_regression_of_one_step_output_on_td_target(monkeypatch):
    critic = small_floq(flow_steps=1, train_at_zero_only=True, noise_samples=4)
    b, r, e = 6, critic.noise_samples, critic.num_ensembles
    batch, next_actions = make_batch(b=b, n=r)
    params = perturbed_target(init(critic, batch))
    rng = jax.random.PRNGKey(3)
    rec = Recorder(monkeypatch)
    _, info = td_loss(critic, params, batch, next_actions, rng)
    monkeypatch.undo()

    y = rec.targets[0]["out"]  # (B,)
    u = rec.current_returns_call(batch, r)["u"]  # (B*R,)
    obs, act = repeat_rows(batch["observations"], r), repeat_rows(batch["actions"], r)
    z0 = critic.noise(u)
    field = params["online"]["field"]

    def one_step_q(field_params):  # Q = z0 + v(s, a, z0, 0), (E, B*R)
        z = jnp.broadcast_to(z0[None], (e, b * r))
        return z + critic.velocity(field_params, obs, act, z, jnp.zeros((b * r, 1)))

    # The critic's own K = 1 integration is exactly that one step.
    np.testing.assert_allclose(np.asarray(critic.returns(field, obs, act, u)), np.asarray(one_step_q(field)),
                               rtol=1e-6, atol=1e-6)

    def regression(field_params):  # (Q - y)^2, summed over R, mean over B and E
        err = one_step_q(field_params) - repeat_rows(y, r)[None]
        return jnp.sum(err.reshape(e, b, r) ** 2, axis=-1).mean()

    np.testing.assert_allclose(float(info["critic/flow_loss"]), float(regression(field)), rtol=1e-5)

    g_critic = jax.jit(jax.grad(lambda on: critic.loss({"online": on, "target": params["target"]}, batch,
                                                       next_actions, rng)[0]))(params["online"])["field"]
    g_hand = jax.jit(jax.grad(regression))(field)
    jax.tree_util.tree_map(lambda a_, b_: np.testing.assert_allclose(np.asarray(a_), np.asarray(b_), rtol=1e-4,
                                                                     atol=1e-6), g_critic, g_hand)


# --- shapes and sampling semantics --------------------------------------------------------

def test_shapes_and_ensemble_axis_first():
    critic = small_floq(num_ensembles=3, distill_ensembles=2)
    b, r = 5, critic.noise_samples
    batch, next_actions = make_batch(b=b, n=r)
    params = init(critic, batch)
    field = params["online"]["field"]
    n = b * r
    obs, act = repeat_rows(batch["observations"], r), repeat_rows(batch["actions"], r)
    z = jnp.tile(jnp.linspace(-1.0, 0.0, n)[None], (3, 1))
    t = jnp.full((n, 1), 0.3)
    v = critic.velocity(field, obs, act, z, t)
    assert v.shape == (3, n)
    # Members are different networks (same inputs, different outputs) ...
    assert not np.allclose(v[0], v[1]) and not np.allclose(v[1], v[2])
    # ... and member e reads only its own z[e].
    v2 = critic.velocity(field, obs, act, z.at[1].add(5.0), t)
    np.testing.assert_allclose(np.asarray(v2[0]), np.asarray(v[0]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(v2[2]), np.asarray(v[2]), atol=1e-6)
    assert not np.allclose(v2[1], v[1])

    u = jnp.linspace(0.0, 1.0, n)
    assert critic.returns(field, obs, act, u).shape == (3, n)
    assert critic.distilled(params["online"]["distill"], batch["observations"], batch["actions"]).shape == (2, b)
    assert critic.q(params["online"], batch["observations"], batch["actions"]).shape == (b,)
    assert critic.flow_q(params["online"], batch["observations"], batch["actions"], jax.random.PRNGKey(0),
                         num_samples=7).shape == (b,)
    assert critic.num_next_actions == r
    loss, info = jax.jit(critic.loss)(params, batch, next_actions, jax.random.PRNGKey(0))  # one program
    assert loss.shape == () and np.isfinite(float(loss))
    for key in ("critic/loss", "critic/flow_loss", "critic/distill_loss", "critic/q_mean", "critic/target_mean"):
        assert info[key].shape == ()
    np.testing.assert_allclose(float(info["critic/loss"]),
                               float(info["critic/flow_loss"] + info["critic/distill_loss"]), rtol=1e-6)


def test_noise_maps_uniforms_onto_the_noise_interval():
    critic = small_floq(noise_coverage=0.25)  # r in [-1, 0], gamma 0.9
    lo, hi = critic.noise_range
    assert (lo, hi) == pytest.approx((-2.5, 0.0))
    np.testing.assert_allclose(np.asarray(critic.noise(jnp.array([0.0, 0.5, 1.0]))), [-2.5, -1.25, 0.0], atol=1e-6)
    assert critic.q_range == pytest.approx((-10.1, 0.1))


@pytest.mark.parametrize("q_agg", ["mean", "min"])
def test_td_target_averages_per_action_targets_over_r(q_agg):
    critic = small_floq(q_agg=q_agg, noise_samples=4)
    b, r = 5, critic.noise_samples
    batch, next_actions = make_batch(b=b, n=r)
    params = perturbed_target(init(critic, batch))
    target = params["target"]["field"]
    u_next = jax.random.uniform(jax.random.PRNGKey(5), (b * r,))
    y = critic.td_targets(target, batch, next_actions, u_next)
    assert y.shape == (b,)

    # Computed separately for each r: row b*R + r holds state b with next action r.
    per_r = []
    for j in range(r):
        z = critic.returns(target, batch["next_observations"], next_actions[:, j], u_next[j::r])  # (E, B)
        agg = z.min(0) if q_agg == "min" else z.mean(0)
        per_r.append(batch["rewards"] + critic.discount * batch["masks"] * agg)
    per_r = np.stack(per_r, 1)  # (B, R)
    np.testing.assert_allclose(np.asarray(y), per_r.mean(1), rtol=1e-5, atol=1e-5)
    # The per-r targets really differ (different next actions and noise), so the mean matters.
    assert np.ptp(per_r[np.asarray(batch["masks"]) > 0], axis=1).min() > 1e-4


def test_q_agg_min_is_below_mean():
    b = 6
    mean_c, min_c = small_floq(q_agg="mean"), small_floq(q_agg="min")
    batch, next_actions = make_batch(b=b, n=mean_c.noise_samples)
    batch["masks"] = jnp.ones((b,))
    params = perturbed_target(init(mean_c, batch))
    u_next = jax.random.uniform(jax.random.PRNGKey(5), (b * mean_c.noise_samples,))
    y_mean = mean_c.td_targets(params["target"]["field"], batch, next_actions, u_next)
    y_min = min_c.td_targets(params["target"]["field"], batch, next_actions, u_next)
    assert np.all(np.asarray(y_min) < np.asarray(y_mean))


@pytest.mark.parametrize("zero_only", [True, False])
def test_one_set_of_noise_draws_feeds_current_returns_and_flow_matching(monkeypatch, zero_only):
    critic = small_floq(train_at_zero_only=zero_only, noise_samples=4, num_ensembles=2)
    b, r, e = 5, critic.noise_samples, critic.num_ensembles
    batch, next_actions = make_batch(b=b, n=r)
    params = perturbed_target(init(critic, batch))
    rec = Recorder(monkeypatch)
    _, info = td_loss(critic, params, batch, next_actions, jax.random.PRNGKey(11))
    monkeypatch.undo()

    obs, act = repeat_rows(batch["observations"], r), repeat_rows(batch["actions"], r)
    cur = rec.current_returns_call(batch, r)
    # Target integration: next observations, R next actions per state, the *target* field.
    nxt = [c for c in rec.returns if c is not cur]
    assert len(nxt) == 1
    np.testing.assert_allclose(np.asarray(nxt[0]["obs"]), np.asarray(repeat_rows(batch["next_observations"], r)))
    np.testing.assert_allclose(np.asarray(nxt[0]["act"]), np.asarray(next_actions.reshape(b * r, A)))
    assert nxt[0]["field"] is params["target"]["field"]
    assert cur["field"] is params["online"]["field"]
    # The TD target fit regressed onto is r + gamma * mask * agg_e(target returns), averaged over R.
    z_next = np.asarray(nxt[0]["out"])  # (E, B*R)
    agg = z_next.mean(0).reshape(b, r)
    y_hand = (np.asarray(batch["rewards"])[:, None] + critic.discount * np.asarray(batch["masks"])[:, None] * agg)
    np.testing.assert_allclose(np.asarray(rec.targets[0]["out"]), y_hand.mean(1), rtol=1e-5, atol=1e-5)

    # The flow-matching forward pass: B*R rows, rows b*R + r are state b.
    (fm,) = rec.velocity
    assert fm["field"] is params["online"]["field"]
    assert fm["z"].shape == (e, b * r) and fm["t"].shape == (b * r, 1)
    np.testing.assert_allclose(np.asarray(fm["obs"]), np.asarray(obs))
    np.testing.assert_allclose(np.asarray(fm["act"]), np.asarray(act))
    z0 = critic.noise(cur["u"])  # the start values of the current-return integration
    y = rec.targets[0]["out"]
    t = np.asarray(fm["t"][:, 0])
    if zero_only:
        np.testing.assert_array_equal(t, 0.0)
        for m in range(e):
            np.testing.assert_allclose(np.asarray(fm["z"][m]), np.asarray(z0), rtol=1e-6, atol=1e-6)
    else:
        assert 0.0 <= t.min() and t.max() <= 1.0 and np.ptp(t) > 0.1
        zt = (1 - t) * np.asarray(z0) + t * np.asarray(repeat_rows(y, r))
        for m in range(e):
            np.testing.assert_allclose(np.asarray(fm["z"][m]), zt, rtol=1e-5, atol=1e-5)
    # The flow-matching loss: (v - (y - z0))^2 summed over R, averaged over B and E.
    vel_target = np.asarray(repeat_rows(y, r) - z0)
    fm_hand = (((np.asarray(fm["out"]) - vel_target[None]) ** 2).reshape(e, b, r).sum(-1)).mean()
    np.testing.assert_allclose(float(info["critic/flow_loss"]), fm_hand, rtol=1e-5)
    # The distillation target is the current integrated return averaged over R and E.
    cur_mean = np.asarray(cur["out"]).reshape(e, b, r).mean(axis=(0, 2))
    qd = np.asarray(critic.distilled(params["online"]["distill"], batch["observations"], batch["actions"]))
    np.testing.assert_allclose(float(info["critic/distill_loss"]), ((qd - cur_mean[None]) ** 2).mean(), rtol=1e-5)


def test_flow_q_averages_integrated_returns_over_noise_and_members():
    critic = small_floq(num_ensembles=2)
    batch, _ = make_batch(b=4)
    params = init(critic, batch)
    obs, act = batch["observations"], batch["actions"]
    rng = jax.random.PRNGKey(2)
    q = critic.flow_q(params["online"], obs, act, rng, num_samples=6)
    u = jax.random.uniform(rng, (4 * 6,))
    z = critic.returns(params["online"]["field"], repeat_rows(obs, 6), repeat_rows(act, 6), u)
    np.testing.assert_allclose(np.asarray(q), np.asarray(z).reshape(2, 4, 6).mean(axis=(0, 2)), rtol=1e-6)


def test_gradients_reach_online_only_and_target_update_is_polyak():
    critic = small_floq()
    batch, next_actions = make_batch(n=critic.noise_samples)
    params = perturbed_target(init(critic, batch))
    g = jax.jit(jax.grad(lambda p: critic.loss(p, batch, next_actions, jax.random.PRNGKey(0))[0]))(params)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(g["target"]))
    assert all(float(jnp.abs(x).max()) > 0.0 for x in jax.tree_util.tree_leaves(g["online"]["distill"]))
    assert sum(float(jnp.abs(x).max()) > 0.0 for x in jax.tree_util.tree_leaves(g["online"]["field"])) > 0
    assert set(params["target"]) == {"field"}
    new = critic.target_update(params, 0.25)
    jax.tree_util.tree_map(
        lambda n_, o_, t_: np.testing.assert_allclose(np.asarray(n_), 0.25 * np.asarray(o_) + 0.75 * np.asarray(t_),
                                                      rtol=1e-6, atol=1e-7),
        new["target"]["field"], params["online"]["field"], params["target"]["field"])
    assert new["online"] is params["online"]


# --- validation -------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(flow_steps=0), r"flow_steps \(K\) must be >= 1, got 0"),
    (dict(flow_steps=-2), r"flow_steps \(K\) must be >= 1, got -2"),
    (dict(noise_coverage=0.0), r"noise_coverage must be > 0, got 0.0"),
    (dict(noise_coverage=-0.1), r"noise_coverage must be > 0, got -0.1"),
    (dict(num_ensembles=0), r"num_ensembles must be >= 1, got 0"),
    (dict(distill_ensembles=0), r"distill_ensembles must be >= 1, got 0"),
    (dict(noise_samples=0), r"noise_samples must be >= 1, got 0"),
    (dict(r_min=1.0, r_max=0.0), r"r_min \(1.0\) must be <= r_max \(0.0\)"),
    (dict(time_embed="sin"), r"time_embed must be one of \('cos', 'fourier', 'none'\), got 'sin'"),
    (dict(q_agg="max"), r"q_agg must be one of \('mean', 'min'\), got 'max'"),
    (dict(discount=1.0), r"discount must be in \(0, 1\), got 1.0"),
])
def test_invalid_floq_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FloqCritic(**kwargs)


def test_invalid_reward_range_from_configure_raises_and_unconfigured_use_raises():
    with pytest.raises(ValueError, match=r"r_min \(1.0\) must be <= r_max \(0.0\)"):
        FloqCritic().configure(0.9, 1.0, 0.0)
    batch, _ = make_batch()
    with pytest.raises(ValueError, match=r"configure\(discount, r_min, r_max\) must be called"):
        FloqCritic().init(jax.random.PRNGKey(0), batch["observations"], batch["actions"])
    # Pinned reward ranges win over the data's.
    c = FloqCritic(r_min=-2.0, r_max=1.0).configure(0.95, -1.0, 0.0)
    assert (c.r_min, c.r_max, c.discount) == (-2.0, 1.0, 0.95)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_ensembles=0), r"num_ensembles must be >= 1, got 0"),
    (dict(q_agg="max"), r"q_agg must be one of \('mean', 'min'\), got 'max'"),
])
def test_invalid_monolithic_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MonolithicCritic(**kwargs)


# --- exact parameter counts ---------------------------------------------------------------

def test_param_counts_monolithic_mlp_and_resnet():
    batch, _ = make_batch()  # O = 3, A = 2: input 5
    c = MonolithicCritic(net=MLPNet(width=4, depth=2, layer_norm=True), num_ensembles=2)
    p = jax.eval_shape(c.init, jax.random.PRNGKey(0), batch["observations"], batch["actions"])  # shapes only
    # Per member: Dense 5->4 (5*4+4 = 24) + LN (4+4 = 8) + Dense 4->4 (16+4 = 20) + LN (8)
    #             + Dense 4->1 (4+1 = 5) = 65; two members: 130.
    assert c.param_counts(p) == {"critic/q": 130}

    c = MonolithicCritic(net=MLPNet(width=4, depth=2, layer_norm=False), num_ensembles=3)
    p = jax.eval_shape(c.init, jax.random.PRNGKey(0), batch["observations"], batch["actions"])  # shapes only
    # Per member without LayerNorm: 24 + 20 + 5 = 49; three members: 147.
    assert c.param_counts(p) == {"critic/q": 147}

    c = MonolithicCritic(net=ResNet(width=4, block_depth=2, num_blocks=1), num_ensembles=2)
    p = jax.eval_shape(c.init, jax.random.PRNGKey(0), batch["observations"], batch["actions"])  # shapes only
    # Per member: projection 5->4 (24) + LN (8); one block of two [Dense 4->4 (20) + LN (8)] = 56;
    #             output 4->1 (5) = 93; two members: 186.
    assert c.param_counts(p) == {"critic/q": 186}


def test_param_counts_floq():
    batch, _ = make_batch()  # O = 3, A = 2
    c = FloqCritic(field_net=MLPNet(width=4, depth=2), distill_net=MLPNet(width=4, depth=2), num_bins=11,
                   num_ensembles=2, distill_ensembles=2, time_embed="cos").configure(0.9, -1.0, 0.0)
    p = jax.eval_shape(c.init, jax.random.PRNGKey(0), batch["observations"], batch["actions"])  # shapes only
    # Field input: s (3) + a (2) + HL-Gauss (11 - 1 = 10 bins) + cos(t) (1) = 16.
    # Per member: Dense 16->4 (68) + LN (8) + Dense 4->4 (20) + LN (8) + Dense 4->1 (5) = 109; x2 = 218.
    # Distilled critic: input 5, as the monolithic MLP above: 65 per member; x2 = 130.
    assert c.param_counts(p) == {"critic/field": 218, "critic/distill": 130}

    c = dataclasses.replace(c, time_embed="fourier", time_embed_dim=8, prob_embed=False, distill_ensembles=1)
    p = jax.eval_shape(c.init, jax.random.PRNGKey(0), batch["observations"], batch["actions"])  # shapes only
    # Field input: 3 + 2 + z rescaled (1) + 8 Fourier features = 14.
    # Per member: Dense 14->4 (60) + 8 + 20 + 8 + 5 = 101; x2 = 202. Distilled: one member, 65.
    assert c.param_counts(p) == {"critic/field": 202, "critic/distill": 65}
    # Targets hold the field only (the distilled critic has no target).
    assert sum(int(x.size) for x in jax.tree_util.tree_leaves(p["target"])) == 202


# --- one integration loop for the online and target fields ---------------------------------

class _TwoLoops(FloqCritic):
    """The critic with the two-loop loss (`td_loss`: the target integration, then the online
    one inside fit), the form `FloqCritic.loss` replaces."""

    def loss(self, params, batch, next_actions, rng):
        return td_loss(self, params, batch, next_actions, rng)


def _tree_max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("q_agg", ["mean", "min"])
def test_one_loop_for_online_and_target_gives_the_two_loop_numbers(q_agg):
    """`loss` integrates the target field (next returns) and the online field (current returns)
    in one Euler loop over stacked parameters; its metrics and gradients are those of the
    two-loop `td_loss` (equal to the bit on x86-64 CPUs; asserted within 1e-6 relative)."""
    one = small_floq(q_agg=q_agg, noise_samples=4)
    two = _TwoLoops(**{f.name: getattr(one, f.name) for f in dataclasses.fields(one)})
    batch, next_actions = make_batch(b=5, n=4)
    params = perturbed_target(init(one, batch))

    def value_grad(critic):
        f = lambda on: critic.loss({"online": on, "target": params["target"]}, batch, next_actions,  # noqa: E731
                                   jax.random.PRNGKey(3))
        return jax.jit(jax.value_and_grad(f, has_aux=True))(params["online"])

    ((l1, m1), g1), ((l2, m2), g2) = value_grad(one), value_grad(two)
    assert set(m1) == set(m2)
    for k in m1:
        np.testing.assert_allclose(float(m1[k]), float(m2[k]), rtol=1e-6, atol=1e-7, err_msg=k)
    assert _tree_max_diff(g1, g2) <= 1e-6 * max(1.0, max(float(np.max(np.abs(x))) for x in jax.tree_util.tree_leaves(g2)))
    # The online part of the stacked loop is the online field's own integration.
    obs, act = repeat_rows(batch["observations"], 4), repeat_rows(batch["actions"], 4)
    u = jax.random.uniform(jax.random.PRNGKey(9), (2, 20))
    fields = jax.tree_util.tree_map(lambda x, y: jnp.stack([x, y]), params["target"]["field"], params["online"]["field"])
    z = one.returns_stacked(fields, jnp.stack([obs, obs]), jnp.stack([act, act]), u)
    for p, part in enumerate(("target", "online")):
        np.testing.assert_allclose(np.asarray(z[p]), np.asarray(one.returns(params[part]["field"], obs, act, u[p])),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # compiles trainer steps: seconds of CPU each
def test_one_loop_fql_updates_equal_the_two_loop_updates():
    """Three FQL updates (the trainer's step) with the one-loop and the two-loop floq critic
    from one state: the same metrics and parameters (max |diff| printed; 0 on this machine)."""
    from floq.agents.fql import FQL
    from floq.train import init_states, make_step

    one = small_floq(noise_samples=3)
    two = _TwoLoops(**{f.name: getattr(one, f.name) for f in dataclasses.fields(one)})
    algo = FQL(alpha=10.0, actor_net=MLPNet(16, 2, layer_norm=False), flow_steps=3)
    rng = np.random.default_rng(0)
    data = {"observations": jnp.asarray(rng.standard_normal((64, O)), jnp.float32),
            "actions": jnp.asarray(rng.uniform(-1, 1, (64, A)), jnp.float32),
            "rewards": -jnp.asarray(rng.random(64) > 0.3, jnp.float32),
            "masks": jnp.asarray(rng.random(64) > 0.1, jnp.float32),
            "next_observations": jnp.asarray(rng.standard_normal((64, O)), jnp.float32)}
    state0 = jax.tree_util.tree_map(lambda x: x[0], init_states(algo, one, [0], data["observations"][:2],
                                                                data["actions"][:2]))

    def run(critic):
        step = make_step(algo, critic, 8)
        return jax.jit(lambda s: jax.lax.scan(lambda c, _: step(c, data), s, None, length=3))(state0)

    (s1, m1), (s2, m2) = run(one), run(two)
    for k in m1:
        np.testing.assert_allclose(np.asarray(m1[k]), np.asarray(m2[k]), rtol=1e-5, atol=1e-6, err_msg=k)
    diff = _tree_max_diff(s1["params"], s2["params"])
    print(f"max |params one loop - two loops| after 3 updates: {diff:.3g}")
    assert diff <= 1e-5
