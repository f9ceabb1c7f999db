"""FQL-IQN: the implicit-quantile critic behind the one critic interface."""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from floq.critics.base import repeat_rows
from floq.critics.iqn import IQNCritic, huber, quantile_embedding, quantile_loss
from floq.nets.specs import MLPNet
from floq.train import run_once_jit

O, A = 3, 2


def small_iqn(**kw) -> IQNCritic:
    cfg = dict(net=MLPNet(width=16, depth=2), num_ensembles=2, num_quantiles=4, num_q_samples=8,
               quantile_embed_dim=8)
    cfg.update(kw)
    return IQNCritic(**cfg).configure(0.9, -1.0, 0.0)


def make_batch(b=5, n=4, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    batch = {
        "observations": jax.random.normal(ks[0], (b, O)),
        "actions": jax.random.uniform(ks[1], (b, A), minval=-1, maxval=1),
        "rewards": -jax.random.uniform(ks[2], (b,)),
        "masks": (jax.random.uniform(ks[3], (b,)) > 0.3).astype(jnp.float32),
        "next_observations": jax.random.normal(ks[4], (b, O)),
    }
    return batch, jax.random.uniform(ks[5], (b, n, A), minval=-1, maxval=1)


# --- shapes and the loss by construction -------------------------------------------------

def test_shapes_metrics_and_interface():
    c = small_iqn(num_ensembles=3)
    b = 5
    batch, na = make_batch(b=b, n=c.num_next_actions)
    p = run_once_jit(lambda k: c.init(k, batch["observations"], batch["actions"]))(jax.random.PRNGKey(0))
    assert c.num_next_actions == 4 and c.name == "iqn"
    tau = jnp.linspace(0.05, 0.95, b)
    assert c.quantiles(p["online"]["q"], batch["observations"], batch["actions"], tau).shape == (3, b)
    qf = c.quantile_function(p["online"]["q"], batch["observations"], batch["actions"], jnp.array([0.1, 0.5, 0.9]))
    assert qf.shape == (3, b, 3)
    # Row b of the quantile function at tau_m is the network at (s_b, a_b, tau_m).
    direct = c.quantiles(p["online"]["q"], batch["observations"][2:3], batch["actions"][2:3], jnp.array([0.9]))
    np.testing.assert_allclose(np.asarray(qf[:, 2, 2]), np.asarray(direct[:, 0]), rtol=1e-6)
    q = c.q(p["online"], batch["observations"], batch["actions"])
    assert q.shape == (b,)
    np.testing.assert_allclose(np.asarray(c.q_taus()), (np.arange(8) + 0.5) / 8)
    full = c.quantile_function(p["online"]["q"], batch["observations"], batch["actions"], c.q_taus())
    np.testing.assert_allclose(np.asarray(q), np.asarray(full.mean(axis=(0, 2))), rtol=1e-6)
    # q() is deterministic (no rng).
    np.testing.assert_array_equal(np.asarray(q), np.asarray(c.q(p["online"], batch["observations"], batch["actions"])))

    loss, info = jax.jit(c.loss)(p, batch, na, jax.random.PRNGKey(1))  # one program, not op by op
    assert loss.shape == () and np.isfinite(float(loss))
    assert {"critic/loss", "critic/q_mean", "critic/q_max", "critic/q_min", "critic/target_mean"} <= set(info)
    with pytest.raises(ValueError, match=r"next_actions \(B, 4, A\)"):
        c.loss(p, batch, na[:, :1], jax.random.PRNGKey(1))

    # Gradients reach the online parameters only; target update is Polyak.
    g = jax.jit(jax.grad(lambda pp: c.loss(pp, batch, na, jax.random.PRNGKey(1))[0]))(p)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(g["target"]))
    assert all(float(jnp.abs(x).max()) > 0.0 for x in jax.tree_util.tree_leaves(g["online"]))
    new = c.target_update(p, 0.5)
    jax.tree_util.tree_map(lambda n_, o_: np.testing.assert_allclose(np.asarray(n_), np.asarray(o_), rtol=1e-6),
                           new["target"], p["online"])


def test_quantile_embedding_is_cos_k_pi_tau():
    tau = jnp.array([0.0, 0.2, 0.7])
    e = np.asarray(quantile_embedding(tau, 64))
    assert e.shape == (3, 64)
    np.testing.assert_allclose(e, np.cos(np.pi * np.arange(1, 65)[None] * np.array([0.0, 0.2, 0.7])[:, None]),
                               atol=1e-5)


def test_loss_by_hand(monkeypatch):
    """Record the quantile evaluations of one loss call and recompute the loss in numpy:
    targets r + gamma m agg_e Z_target(s', a'_j; tau'_j) with one next action per tau'
    row, residuals over all N x N' pairs, Huber quantile weights, sum over tau, mean over
    tau', batch and ensemble."""
    for q_agg in ("mean", "min"):
        c = small_iqn(q_agg=q_agg, kappa=0.3)
        b, n, e = 5, c.num_quantiles, c.num_ensembles
        batch, na = make_batch(b=b, n=n)
        p = run_once_jit(lambda k: c.init(k, batch["observations"], batch["actions"]))(jax.random.PRNGKey(0))
        # A different target network, so that using the wrong one would be visible.
        p = {"online": p["online"], "target": jax.tree_util.tree_map(lambda x: x * 1.3 + 0.05, p["target"])}
        calls = []
        orig = IQNCritic.quantiles

        def rec(self, q_params, obs, act, tau):
            out = orig(self, q_params, obs, act, tau)
            calls.append(dict(params=q_params, obs=obs, act=act, tau=tau, out=out))
            return out

        monkeypatch.setattr(IQNCritic, "quantiles", rec)
        loss, info = c.loss(p, batch, na, jax.random.PRNGKey(4))
        monkeypatch.undo()
        (tcall,) = [x for x in calls if x["params"] is p["target"]["q"]]
        (ocall,) = [x for x in calls if x["params"] is p["online"]["q"]]
        np.testing.assert_allclose(np.asarray(tcall["obs"]), np.asarray(repeat_rows(batch["next_observations"], n)))
        np.testing.assert_allclose(np.asarray(tcall["act"]), np.asarray(na.reshape(b * n, A)))
        np.testing.assert_allclose(np.asarray(ocall["obs"]), np.asarray(repeat_rows(batch["observations"], n)))
        np.testing.assert_allclose(np.asarray(ocall["act"]), np.asarray(repeat_rows(batch["actions"], n)))
        assert not np.allclose(np.asarray(tcall["tau"]), np.asarray(ocall["tau"]))  # independent draws

        zt = np.asarray(tcall["out"])  # (E, B*N')
        agg = zt.min(0) if q_agg == "min" else zt.mean(0)
        y = np.asarray(batch["rewards"])[:, None] + 0.9 * np.asarray(batch["masks"])[:, None] * agg.reshape(b, n)
        z = np.asarray(ocall["out"]).reshape(e, b, n)
        tau = np.asarray(ocall["tau"]).reshape(b, n)
        total = 0.0
        for m in range(e):
            for i in range(b):
                for j in range(n):  # over tau_j (summed)
                    for k in range(n):  # over tau'_k (averaged)
                        d = y[i, k] - z[m, i, j]
                        h = 0.5 * d * d if abs(d) <= 0.3 else 0.3 * (abs(d) - 0.15)
                        total += abs(tau[i, j] - (d < 0)) * h / 0.3 / n
        np.testing.assert_allclose(float(loss), total / (e * b), rtol=1e-5)
        np.testing.assert_allclose(float(info["critic/target_mean"]), y.mean(), rtol=1e-5)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _dloss(q, samples, tau, kappa, loss_type):
    return jax.grad(lambda q_: jnp.mean(quantile_loss(samples - q_, tau, kappa, loss_type)))(q)


def _bisect(g, lo, hi, iters=60):
    """Root of a decreasing function g on [lo, hi]."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _minimiser(samples, tau, kappa, loss_type):
    """argmin_q E[quantile_loss(y - q)] of floq's loss function (by its gradient)."""
    s = jnp.asarray(samples)
    return _bisect(lambda q: -float(_dloss(jnp.float32(q), s, jnp.float32(tau), kappa, loss_type)),
                   float(samples.min()), float(samples.max()))


def _reference(samples, tau, kind, kappa=1.0):
    """Independent numpy answers: the first-order condition E[|tau - 1{y<q}| psi(y - q)] = 0
    with psi = sign (quantile), clip(., -kappa, kappa) (Huber quantile) or identity (expectile)."""
    psi = {"quantile": np.sign, "huber": lambda u: np.clip(u, -kappa, kappa), "expectile": lambda u: u}[kind]
    return _bisect(lambda q: np.mean(np.abs(tau - (samples < q)) * psi(samples - q)),
                   float(samples.min()), float(samples.max()))


def test_quantile_losses_have_the_documented_minimisers():
    rng = np.random.default_rng(0)
    y = rng.exponential(1.0, 20_000).astype(np.float32)  # skewed: quantiles != expectiles
    for tau in (0.1, 0.5, 0.9):
        q = np.quantile(y, tau)
        assert _reference(y, tau, "quantile") == pytest.approx(q, abs=1e-3)
        assert _minimiser(y, tau, 0.0, "huber") == pytest.approx(q, abs=2e-3)
        assert _minimiser(y, tau, 0.01, "huber") == pytest.approx(q, abs=0.01)
        assert _minimiser(y, tau, 1.0, "huber") == pytest.approx(_reference(y, tau, "huber", 1.0), abs=2e-3)
        ex = _reference(y, tau, "expectile")
        assert _minimiser(y, tau, 1.0, "released") == pytest.approx(ex, abs=2e-3)
        assert _minimiser(y, tau, 5.0, "released") == pytest.approx(ex, abs=2e-3)  # kappa only scales it
        if tau != 0.5:
            assert abs(ex - q) > 0.1  # so the two losses really differ here
    np.testing.assert_allclose(np.asarray(huber(jnp.array([-3.0, -0.5, 0.2, 2.0]), 1.0)), [2.5, 0.125, 0.02, 1.5])
    np.testing.assert_allclose(np.asarray(huber(jnp.array([-3.0, 0.2]), 0.0)), [3.0, 0.2])


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_ensembles=0), r"num_ensembles must be >= 1, got 0"),
    (dict(q_agg="max"), r"q_agg must be one of \('mean', 'min'\), got 'max'"),
    (dict(num_quantiles=0), r"num_quantiles must be >= 1, got 0"),
    (dict(num_q_samples=0), r"num_q_samples must be >= 1, got 0"),
    (dict(quantile_embed_dim=0), r"quantile_embed_dim must be >= 1, got 0"),
    (dict(kappa=-1.0), r"kappa must be >= 0, got -1.0"),
    (dict(loss_type="l2"), r"loss_type must be one of \('huber', 'released'\), got 'l2'"),
    (dict(loss_type="released", kappa=0.0), r"loss_type='released' needs kappa > 0"),
])
def test_invalid_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IQNCritic(**kwargs)


def test_param_count_and_describe():
    c = IQNCritic(net=MLPNet(width=4, depth=2), num_ensembles=2, quantile_embed_dim=8)
    batch, _ = make_batch()
    p = jax.eval_shape(c.init, jax.random.PRNGKey(0), batch["observations"], batch["actions"])  # shapes only
    # Input: s (3) + a (2) + 8 cosine features = 13. Per member: Dense 13->4 (56) + LN (8)
    # + Dense 4->4 (20) + LN (8) + Dense 4->1 (5) = 97; two members: 194.
    assert c.param_counts(p) == {"critic/q": 194}
    d = c.describe()
    assert d["critic"] == "iqn" and d["iqn_quantiles"] == 8 and d["critic_width"] == 4 and d["kappa"] == 1.0


# --- learning the return distribution -------------------------------------------------------

_TRAIN = dict(steps=3000, batch_size=64, lr=1e-3, tau=0.02, final_lr_frac=0.0)
_PROBE = np.array([0.1, 0.25, 0.5, 0.75, 0.9], np.float32)
_trained: dict = {}


def _train(mdps, trainer, mdp_name, **kw):
    key = (mdp_name, tuple(sorted(kw.items())))
    if key not in _trained:
        mdp = mdps[mdp_name]
        c = IQNCritic(net=MLPNet(width=64, depth=2), num_ensembles=2, num_quantiles=8, **kw)
        c = c.configure(mdp.discount, *mdp.reward_range)
        params, _ = trainer(c, mdp, **_TRAIN)
        _trained[key] = (c, params)
    return _trained[key]


@pytest.mark.slow  # trains for seconds (test-fast: the IQN loss is checked by hand in test_loss_by_hand)
@pytest.mark.parametrize("kappa,loss_type", [(0.0, "huber"), (1.0, "huber"), (1.0, "released")])
def test_bandit_quantiles_and_mean(mdps, trainer, rel_error, kappa, loss_type):
    """Rewards r = m_a + h_a U[-1, 1]: the pinball loss (kappa = 0) learns the quantiles
    m + h (2 tau - 1); kappa = 1 learns the Huber quantiles, the released loss the
    expectiles (each the minimiser of its loss for the true reward distribution). All are
    symmetric about m, so the mean over tau is the analytic Q = m."""
    mdp = mdps["bandit"]
    c, params = _train(mdps, trainer, "bandit", kappa=kappa, loss_type=loss_type)
    obs, act, s_idx, a_idx = mdp.pairs()
    learned = np.asarray(c.quantile_function(params["online"]["q"], obs, act, jnp.asarray(_PROBE)).mean(0))  # (4, 5)
    m, h = mdp.r_mean[0], mdp.r_halfwidth[0]
    u = np.linspace(-1, 1, 20_001)
    for a in range(4):
        true_q = m[a] + h[a] * (2 * _PROBE - 1)
        samples = (m[a] + h[a] * u).astype(np.float32)
        if (kappa, loss_type) == (0.0, "huber"):
            want = true_q
        elif loss_type == "released":
            want = np.array([_reference(samples, t, "expectile") for t in _PROBE])
        else:
            want = np.array([_reference(samples, t, "huber", kappa) for t in _PROBE])
        err = np.abs(learned[a] - want).max()
        print(f"\n[iqn bandit {loss_type} kappa={kappa}] a={a} learned {np.round(learned[a], 3)} "
              f"want {np.round(want, 3)} true quantiles {np.round(true_q, 3)} max err {err:.3f}")
        assert err < 0.06 * h[a] + 0.05, (a, learned[a], want)
        assert np.all(np.diff(learned[a]) > 0)  # monotone in tau
    q = np.asarray(c.q(params["online"], obs, act))
    err = rel_error(q, mdp.analytic_q()[s_idx, a_idx])
    print(f"[iqn bandit {loss_type} kappa={kappa}] mean rel err {err:.4f}")
    assert err < 0.02


@pytest.mark.slow
@pytest.mark.parametrize("mdp_name", ["chain", "stochastic"])
def test_mean_matches_analytic_q(mdps, trainer, rel_error, mdp_name):
    mdp = mdps[mdp_name]
    c, params = _train(mdps, trainer, mdp_name)
    obs, act, s_idx, a_idx = mdp.pairs()
    err = rel_error(c.q(params["online"], obs, act), mdp.analytic_q()[s_idx, a_idx])
    print(f"\n[iqn {mdp_name}] mean rel err {err:.4f}")
    assert err < 0.02


# --- end to end -----------------------------------------------------------------------------

@pytest.mark.slow
def test_smoke_run_with_iqn(smoke_dataset, tmp_path):
    """`floq run smoke.gin iqn.gin` end to end (in this process, on the session's cached smoke
    dataset)."""
    from floq_test_utils import floq_main

    proc = floq_main("run", "gin/experiments/smoke.gin", "gin/critics/iqn.gin", "--bind", "TRAIN_STEPS=100",
                     "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = [os.path.join(r, d) for r, ds, _ in os.walk(tmp_path) for d in ds if d.startswith("iqn_")]
    with open(os.path.join(run_dir, "run.json")) as f:
        man = json.load(f)
    assert man["critic"] == "iqn" and man["describe"]["iqn_quantiles"] == 8
    assert man["params"]["critic/q"] > 0
    with open(os.path.join(run_dir, "eval.csv")) as f:
        rows = f.read().strip().splitlines()
    assert len(rows) >= 3  # header + evaluations at steps 0 and 100
    assert ",iqn," in rows[1]


# --- the actor's estimate (issue 25 item 5) ---------------------------------------------------

def test_actor_estimate_is_the_released_random_taus(monkeypatch):
    """Default: the released code's actor Q (github:CMU-AIRe/floq agents/fql_iqn.py actor_loss):
    num_tau_samples = N random taus per state (rows repeated b*N + i), Z averaged over the
    ensemble; its batch mean is the released q.mean() over the B*N rows. 'midpoints' keeps
    the fixed-midpoint mean."""
    c = small_iqn()
    assert c.actor_estimator == "random" and c.describe()["iqn_actor_estimator"] == "random"
    b, n = 5, c.num_quantiles
    batch, _ = make_batch(b=b, n=n)
    p = run_once_jit(lambda k: c.init(k, batch["observations"], batch["actions"]))(jax.random.PRNGKey(0))
    obs, act = batch["observations"], batch["actions"]
    key = jax.random.PRNGKey(7)
    q = c.actor_q(p["online"], obs, act, key)
    assert q.shape == (b,)
    # The released computation, literally: repeat_tensor, uniform taus (B*N, 1), mean over E.
    taus = jax.random.uniform(key, (b * n, 1))[:, 0]
    qs = c.quantiles(p["online"]["q"], jnp.repeat(obs, n, axis=0), jnp.repeat(act, n, axis=0), taus)
    released = qs.mean(axis=0)  # (B*N,)
    np.testing.assert_allclose(float(q.mean()), float(released.mean()), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(q), np.asarray(released.reshape(b, n).mean(1)), rtol=1e-5)
    assert not np.allclose(np.asarray(q), np.asarray(c.actor_q(p["online"], obs, act, jax.random.PRNGKey(8))))
    mid = small_iqn(actor_estimator="midpoints")
    np.testing.assert_array_equal(np.asarray(mid.actor_q(p["online"], obs, act, key)),
                                  np.asarray(mid.q(p["online"], obs, act)))
    with pytest.raises(ValueError, match="actor_estimator"):
        small_iqn(actor_estimator="fixed")

    # FQL's actor loss reads actor_q with a key of its own (floq.agents.fql.actor_q_key).
    from floq.agents.fql import FQL, _trainable, actor_q_key

    seen = []
    real = IQNCritic.actor_q

    def spy(self, online, o, a, rng, agg="mean"):
        seen.append(rng)
        return real(self, online, o, a, rng, agg)

    monkeypatch.setattr(IQNCritic, "actor_q", spy)
    algo = FQL(alpha=1.0, actor_net=MLPNet(width=8, depth=2, layer_norm=False), flow_steps=2)
    state = algo.init(jax.random.PRNGKey(1), c, obs, act)
    trainable = _trainable(state["params"])
    rng = jax.random.PRNGKey(3)
    _, info = algo.actor_loss(trainable, c, batch, rng)
    assert len(seen) == 1 and np.array_equal(np.asarray(seen[0]), np.asarray(actor_q_key(rng)))
    assert np.isfinite(float(info["actor/q"]))
