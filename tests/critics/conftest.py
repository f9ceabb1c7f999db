"""Shared pieces of the critic tests: small MDPs with analytic Q values and a compiled
training loop that trains any critic through its own `loss` (the one critic interface).

The MDPs are tabular: states and actions are one-hot vectors; the offline "dataset" is
infinite (every step samples fresh (s, a) pairs uniformly, then s' ~ P, r ~ R(s, a),
and the fixed policy's next actions a' ~ pi(.|s')). The analytic value of the policy is
Q = (I - gamma * P_pi)^-1 r_bar with P_pi[(s, a), (s', a')] = P(s'|s, a) mask(s, a, s') pi(a'|s').
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

GAMMA = 0.9


@dataclasses.dataclass(frozen=True, eq=False)
class TabularMDP:
    """A finite MDP plus the fixed policy whose Q we learn.

    Attributes:
      P: (S, A, S) transition probabilities.
      r_mean: (S, A) mean rewards; rewards are r_mean + r_halfwidth * U[-1, 1].
      r_halfwidth: (S, A) half width of the uniform reward noise.
      mask: (S, A, S) bootstrap mask of the transition s -a-> s' (0: terminal).
      pi: (S, A) the policy that picks the next actions.
      data_states: states that (s, a) pairs are drawn from (absorbing goals excluded).
      reward_range: (r_min, r_max) handed to `critic.configure`, i.e. what the trainer
        reads from a dataset's rewards.
    """

    name: str
    P: np.ndarray
    r_mean: np.ndarray
    r_halfwidth: np.ndarray
    mask: np.ndarray
    pi: np.ndarray
    data_states: tuple
    reward_range: tuple
    discount: float = GAMMA

    @property
    def num_states(self):
        return self.P.shape[0]

    @property
    def num_actions(self):
        return self.P.shape[1]

    def analytic_q(self) -> np.ndarray:
        """(S, A) exact Q^pi by one linear solve."""
        s, a = self.num_states, self.num_actions
        p_pi = np.einsum("xay,yb->xayb", self.P * self.mask, self.pi).reshape(s * a, s * a)
        q = np.linalg.solve(np.eye(s * a) - self.discount * p_pi, self.r_mean.reshape(-1))
        return q.reshape(s, a)

    def pairs(self):
        """All data (s, a) pairs as (obs (M, S), act (M, A)) and their indices."""
        idx = [(s, a) for s in self.data_states for a in range(self.num_actions)]
        s_idx = np.array([i[0] for i in idx])
        a_idx = np.array([i[1] for i in idx])
        obs = np.eye(self.num_states, dtype=np.float32)[s_idx]
        act = np.eye(self.num_actions, dtype=np.float32)[a_idx]
        return jnp.asarray(obs), jnp.asarray(act), s_idx, a_idx

    def sample(self, rng, batch_size: int, num_next: int):
        """A batch in the critic interface's layout and next actions (B, N, A) from pi."""
        k_s, k_a, k_next, k_r, k_pi = jax.random.split(rng, 5)
        S, A = self.num_states, self.num_actions
        states = jnp.asarray(self.data_states)[jax.random.randint(k_s, (batch_size,), 0, len(self.data_states))]
        actions = jax.random.randint(k_a, (batch_size,), 0, A)
        logp = jnp.log(jnp.asarray(self.P, jnp.float32) + 1e-30)[states, actions]  # (B, S)
        next_states = jax.random.categorical(k_next, logp)
        noise = jax.random.uniform(k_r, (batch_size,), minval=-1.0, maxval=1.0)
        rewards = (jnp.asarray(self.r_mean, jnp.float32)[states, actions]
                   + jnp.asarray(self.r_halfwidth, jnp.float32)[states, actions] * noise)
        masks = jnp.asarray(self.mask, jnp.float32)[states, actions, next_states]
        logpi = jnp.log(jnp.asarray(self.pi, jnp.float32) + 1e-30)[next_states]  # (B, A)
        next_a = jax.random.categorical(k_pi, logpi[:, None, :], shape=(batch_size, num_next))  # (B, N)
        eye_s, eye_a = jnp.eye(S, dtype=jnp.float32), jnp.eye(A, dtype=jnp.float32)
        batch = {
            "observations": eye_s[states],
            "actions": eye_a[actions],
            "rewards": rewards,
            "masks": masks,
            "next_observations": eye_s[next_states],
        }
        return batch, eye_a[next_a]


def chain_mdp(n: int = 8) -> TabularMDP:
    """Deterministic chain 0..n-1 with the goal n (absorbing): action 0 moves right,
    action 1 moves left (stays at 0). Reward -1 on every step taken; entering the goal
    ends the episode (mask 0). Policy: always right. Q(s, right) = -(1 - g^d)/(1 - g),
    d = n - s steps to go. The reward range is OGBench's (-1 per step, 0 on success)."""
    S, A = n + 1, 2
    P = np.zeros((S, A, S))
    mask = np.ones((S, A, S))
    for s in range(n):
        P[s, 0, s + 1] = 1.0
        P[s, 1, max(s - 1, 0)] = 1.0
    P[n, :, n] = 1.0  # absorbing goal (never in the data)
    mask[:, :, n] = 0.0
    r = -np.ones((S, A))
    r[n] = 0.0
    pi = np.tile([1.0, 0.0], (S, 1))
    return TabularMDP("chain", P, r, np.zeros((S, A)), mask, pi, tuple(range(n)), (-1.0, 0.0))


def bandit_mdp() -> TabularMDP:
    """One state, four actions, every episode ends after one step (mask 0); rewards are
    uniform on r_mean +- halfwidth. Q(s, a) = r_mean[a]. Signs mixed so that the
    floq support [r_min, r_max] / (1 - g) holds the values (it assumes that)."""
    means = np.array([[-6.0, -3.0, 3.0, 6.0]])
    half = np.array([[1.0, 2.0, 1.5, 2.0]])
    P = np.ones((1, 4, 1))
    mask = np.zeros((1, 4, 1))
    pi = np.full((1, 4), 0.25)
    lo, hi = float((means - half).min()), float((means + half).max())
    return TabularMDP("bandit", P, means, half, mask, pi, (0,), (lo, hi))


def stochastic_mdp() -> TabularMDP:
    """Three states, two actions, no terminals; stochastic transitions and a stochastic
    policy (so the sampled next actions differ). Values ~ r / (1 - g) ~ O(10)."""
    P = np.array([
        [[0.7, 0.3, 0.0], [0.1, 0.2, 0.7]],
        [[0.0, 0.6, 0.4], [0.5, 0.0, 0.5]],
        [[0.3, 0.0, 0.7], [0.2, 0.8, 0.0]],
    ])
    r = np.array([[1.0, 0.5], [0.2, 1.2], [0.8, 0.4]])
    pi = np.array([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])
    mask = np.ones((3, 2, 3))
    return TabularMDP("stochastic", P, r, np.zeros((3, 2)), mask, pi, (0, 1, 2), (float(r.min()), float(r.max())))


MDPS = {"chain": chain_mdp, "bandit": bandit_mdp, "stochastic": stochastic_mdp}


def train_critic(critic, mdp: TabularMDP, *, steps: int, batch_size: int, lr: float, tau: float, seed: int = 0,
                 final_lr_frac: float = 0.0):
    """Train `critic` (already configured) on `mdp` with its own loss and Adam, in one
    compiled lax.scan. The learning rate decays (cosine) to final_lr_frac * lr: Adam's
    steps do not shrink with the gradient noise at the fixed point (m / sqrt(v) stays
    O(1)), so only a decaying rate stills the last iterates. Returns (params, losses)."""
    key = jax.random.PRNGKey(seed)
    k_init, k_train = jax.random.split(key)
    obs, act, _, _ = mdp.pairs()
    params = critic.init(k_init, obs, act)
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=final_lr_frac))
    opt = tx.init(params["online"])
    n_next = critic.num_next_actions

    def step(carry, k):
        params, opt = carry
        k_batch, k_loss = jax.random.split(k)
        batch, next_actions = mdp.sample(k_batch, batch_size, n_next)

        def f(online):
            return critic.loss({"online": online, "target": params["target"]}, batch, next_actions, k_loss)

        (loss, _), grads = jax.value_and_grad(f, has_aux=True)(params["online"])
        updates, opt = tx.update(grads, opt, params["online"])
        online = optax.apply_updates(params["online"], updates)
        params = critic.target_update({"online": online, "target": params["target"]}, tau)
        return (params, opt), loss

    @jax.jit
    def run(params, opt, k):
        return jax.lax.scan(step, (params, opt), jax.random.split(k, steps))

    (params, _), losses = run(params, opt, k_train)
    return params, losses


def max_rel_error(pred, exact) -> float:
    pred, exact = np.asarray(pred, np.float64), np.asarray(exact, np.float64)
    return float(np.max(np.abs(pred - exact) / np.abs(exact)))


@pytest.fixture(scope="session")
def mdps():
    return {k: f() for k, f in MDPS.items()}


@pytest.fixture(scope="session")
def trainer():
    return train_critic


@pytest.fixture(scope="session")
def rel_error():
    return max_rel_error
