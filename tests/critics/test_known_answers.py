"""Known answers: every critic, trained by its own loss on small MDPs, reaches the exact
Q^pi of a fixed policy (Q = (I - gamma P_pi)^-1 r, see conftest.py) to within 2% relative
error on every state-action pair.

MDPs (gamma = 0.9): a deterministic chain (reward -1 per step, terminal goal), a
stochastic-reward bandit (one step, mask 0) and a three-state two-action MDP with
stochastic transitions and a stochastic policy (next actions sampled).

For floq both the integrated flow Q (`flow_q`, averaged over many noise draws) and the
distilled critic (`q`) are checked.

K = 1 with flow matching at random t is a strict xfail: its single Euler step reads the
field only at t = 0, the edge of the training distribution of t, where the `cos(t)` time
embedding (released code) is flat (d cos t / dt = 0 at t = 0): no function of cos(t)
follows the true field's first-order change in t there, so v(s, a, z0, 0) is biased and
Q is off by 9-15% (measured here: chain 15%, bandit 14%, stochastic 9%; 16% on the chain
after 10k steps with a 128-wide field, so not a matter of training longer). With the raw
time ('none') the error drops to ~3%. The same bias, damped by the later Euler steps,
is probably most of the ~1% that K = 4 and K = 8 keep. K = 1 trained at t = 0 only
(`train_at_zero_only`, the released code's flag for one-step flows) is a plain
regression and does reach the answer (see also test_flow_critic.py::
test_k1_at_zero_is_regression_of_one_step_output_on_td_target).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
import pytest

from floq_test_utils import FULL

from floq.critics.flow import FloqCritic
from floq.critics.monolithic import MonolithicCritic
from floq.nets.specs import MLPNet

TOL = 0.02  # relative error on every (s, a)
# bf16 activations (Trainer.precision='bfloat16': 8 significant bits, 0.4% per rounding) keep the
# f32 budget. Measured (x86-64 CPU): monolithic q 0.0035 / 0.0078 / 0.0051 (chain / bandit /
# stochastic), floq K8 q 0.0083 / 0.0052 / 0.0076 and flow_q 0.0042 / 0.0048 / 0.0068.
TOL_BF16 = 0.02
NET = MLPNet(width=64, depth=2, layer_norm=True)

# Training per MDP: steps, batch, peak lr (cosine decay to 0), Polyak tau. floq uses
# R = 4 noise draws per transition.
TRAINING = {
    "chain": dict(steps=3000, batch_size=32, lr=2e-3, tau=0.02),
    "bandit": dict(steps=3000, batch_size=64, lr=2e-3, tau=0.02),
    "stochastic": dict(steps=3000, batch_size=32, lr=2e-3, tau=0.02),
}
# Noise draws averaged by flow_q. The bandit's flow maps the noise onto the reward
# distribution (spread ~1 per pair), so its Monte Carlo mean needs many draws
# (std ~ 0.8 / sqrt(32768) = 0.005) to not eat into the 2% budget.
FLOW_Q_SAMPLES = {"chain": 4096, "bandit": 32768, "stochastic": 4096}


def make_critic(kind: str):
    if kind.endswith("-bf16"):  # Trainer.precision = 'bfloat16': the critic's networks in bf16
        return dataclasses.replace(make_critic(kind[:-len("-bf16")]), compute_dtype="bfloat16")
    if kind == "monolithic":
        return MonolithicCritic(net=NET, num_ensembles=2, q_agg="mean")
    k, zero_only = {"floq-K1": (1, False), "floq-K4": (4, False), "floq-K8": (8, False),
                    "floq-K1-t0": (1, True)}[kind]
    return FloqCritic(field_net=NET, distill_net=NET, flow_steps=k, noise_samples=4, num_ensembles=2,
                      distill_ensembles=2, train_at_zero_only=zero_only)


_CACHE: dict = {}  # per process: each test trains its own (MDP, critic), so the tests spread over workers


def trained(mdps, trainer, mdp_name: str, kind: str):
    """Train once per (MDP, critic); returns the exact and learned Q on all data pairs."""
    key = (mdp_name, kind)
    if key not in _CACHE:
        mdp = mdps[mdp_name]
        critic = make_critic(kind).configure(mdp.discount, *mdp.reward_range)
        t0 = time.time()
        params, losses = trainer(critic, mdp, **TRAINING[mdp_name])
        obs, act, s_idx, a_idx = mdp.pairs()
        out = {"exact": mdp.analytic_q()[s_idx, a_idx], "q": np.asarray(critic.q(params["online"], obs, act)),
               "losses": np.asarray(losses)}
        if isinstance(critic, FloqCritic):
            out["flow_q"] = np.asarray(critic.flow_q(params["online"], obs, act, jax.random.PRNGKey(123),
                                                     num_samples=FLOW_Q_SAMPLES[mdp_name]))
        out["seconds"] = time.time() - t0
        _CACHE[key] = out
    return _CACHE[key]


# The flow critics train for seconds each: `slow` (make test-fast keeps the monolithic cases;
# the floq critic's math is checked there by tests/critics/test_flow_critic.py's unit tests)
# floq K8 in bf16 trains on the stochastic MDP in make test, on all three in make test-full
# (FLOQ_FULL_TESTS=1): the bf16 path is one dtype through the same code as the f32 cases.
CASES = [pytest.param(m, k, marks=[] if k == "monolithic" else [pytest.mark.slow])
         for m in TRAINING for k in ("monolithic", "floq-K1-t0", "floq-K4", "floq-K8", "monolithic-bf16", "floq-K8-bf16")
         if FULL or k != "floq-K8-bf16" or m == "stochastic"]
K1_XFAIL = pytest.mark.xfail(strict=True, reason=(
    "K=1 with flow matching at random t: the one Euler step evaluates v at t=0 where cos(t) has zero slope; "
    "v(s,a,z0,0) is biased and Q misses by 9-15% (see the module docstring)"))


@pytest.mark.parametrize("mdp_name,kind", CASES + [pytest.param(m, "floq-K1", marks=[K1_XFAIL, pytest.mark.slow])
                                                     for m in TRAINING])
def test_critic_reaches_analytic_q(mdps, trainer, rel_error, mdp_name, kind):
    res = trained(mdps, trainer, mdp_name, kind)
    assert np.all(np.isfinite(res["losses"]))
    errs = {"q": rel_error(res["q"], res["exact"])}
    if "flow_q" in res:
        errs["flow_q"] = rel_error(res["flow_q"], res["exact"])
    print(f"\n[known-answer] {mdp_name:10s} {kind:11s} " + " ".join(f"{k}={v:.4f}" for k, v in errs.items())
          + f" ({res['seconds']:.1f}s)")
    tol = TOL_BF16 if kind.endswith("-bf16") else TOL
    for name, err in errs.items():
        pred = res[name]
        assert err < tol, (f"{kind} on {mdp_name}: {name} max relative error {err:.4f} >= {tol}\n"
                           f"pred  {np.round(pred, 3)}\nexact {np.round(res['exact'], 3)}")


def test_analytic_values_are_what_the_mdps_say(mdps):
    """The linear-algebra answers themselves, against closed forms."""
    g = 0.9
    q = mdps["chain"].analytic_q()
    for s in range(8):  # right: d = 8 - s steps of -1
        assert q[s, 0] == pytest.approx(-(1 - g ** (8 - s)) / (1 - g))
        assert q[s, 1] == pytest.approx(-1 + g * q[max(s - 1, 0), 0])
    np.testing.assert_allclose(mdps["bandit"].analytic_q()[0], [-6.0, -3.0, 3.0, 6.0])
    st = mdps["stochastic"]
    q = st.analytic_q()
    v = (st.pi * q).sum(1)  # Bellman equation of the fixed policy, in another form
    np.testing.assert_allclose(q, st.r_mean + g * np.einsum("xay,y->xa", st.P, v), rtol=1e-10)
    assert 5.0 < np.abs(q).min() and np.abs(q).max() < 10.0


def test_sampled_transitions_follow_the_mdp(mdps):
    """The generator draws s' ~ P, r ~ R, a' ~ pi with the right frequencies."""
    st = mdps["stochastic"]
    batch, na = jax.jit(st.sample, static_argnums=(1, 2))(jax.random.PRNGKey(0), 40_000, 4)  # as trained: compiled
    s = np.asarray(batch["observations"]).argmax(1)
    a = np.asarray(batch["actions"]).argmax(1)
    s2 = np.asarray(batch["next_observations"]).argmax(1)
    a2 = np.asarray(na).argmax(-1)
    assert na.shape == (40_000, 4, 2)
    for x in range(3):
        for u in range(2):
            sel = (s == x) & (a == u)
            freq = np.bincount(s2[sel], minlength=3) / sel.sum()
            np.testing.assert_allclose(freq, st.P[x, u], atol=0.03)
    for y in range(3):
        np.testing.assert_allclose((a2[s2 == y] == 1).mean(), st.pi[y, 1], atol=0.02)
    assert np.ptp(a2, axis=1).max() == 1  # next actions differ within a row (stochastic policy)
    bd = mdps["bandit"]
    batch, _ = jax.jit(bd.sample, static_argnums=(1, 2))(jax.random.PRNGKey(1), 40_000, 1)
    a = np.asarray(batch["actions"]).argmax(1)
    r = np.asarray(batch["rewards"])
    for u in range(4):
        assert r[a == u].mean() == pytest.approx(bd.r_mean[0, u], abs=0.05)
        assert r[a == u].min() >= bd.r_mean[0, u] - bd.r_halfwidth[0, u] - 1e-5
    assert np.all(np.asarray(batch["masks"]) == 0.0)
