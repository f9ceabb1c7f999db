"""The one critic interface the actor and the trainer rely on.

A critic is a frozen (hashable) dataclass of static configuration plus pure functions
over parameter pytrees:

  init(rng, obs, act) -> params            {'online': ..., 'target': ...}
  keys(rng) -> (next_key, fit_key)         the PRNG keys of next_values and fit, split as the
                                           critic's loss always split them (fit_key may be a
                                           tuple: pass it to fit unchanged)
  next_values(target, next_obs, next_actions, rng) -> (B, N)
                                           the value of each next state-action (next_actions
                                           (B, N, A)) under the target parameters, aggregated
                                           over the ensemble by q_agg (floq: the target field
                                           integrated from noise; IQN: one target quantile
                                           sample per next action; monolithic: target Q), or a
                                           `CategoricalValues` (atoms (B, N, M) with their
                                           probabilities): a categorical critic's whole next
                                           return distribution (C51). `td_targets` maps the
                                           Bellman operator over its atoms and keeps the
                                           probabilities; `expected_values` gives its (B, N)
                                           means
  fit(params, batch, targets, rng) -> (scalar, metrics)
                                           regress the online parameters onto given (B, N)
                                           targets (stop-gradient inside); gradients flow into
                                           params['online'] only. A critic whose next_values
                                           is a CategoricalValues also takes one (the weighted
                                           targets); every critic takes plain (B, N) arrays
                                           (IQL's r + gamma * V(s') is one)
  loss(params, batch, next_actions, rng)   the TD loss with targets r + gamma * mask *
                                           next_values: `td_loss` below, the same key splits
                                           and operations as before the interface was split
  q(online_params, obs, act, agg='mean') -> (B,)
                                           the Q an actor maximises (deterministic), its
                                           ensemble aggregated by agg ('mean' | 'min')
  actor_q(online, obs, act, rng, agg='mean') (optional)
                                           the actor's estimate when it is random (FQL-IQN's
                                           released random taus); actors use it when present
                                           (`actor_value` below)
  target_update(params, tau) -> params     Polyak averaging of the target part
  num_next_actions                         how many next actions per state loss() wants
  configure(discount, r_min, r_max)        bind task facts known only after loading data
  describe() -> dict                       knobs recorded as result columns
  reward_range_rule (optional attribute)   how the trainer turns the training rewards into
                                           (r_min, r_max): see `reward_range`; critics
                                           without it get 'released'

`batch` holds observations (B, O), actions (B, A), rewards (B,), masks (B,),
next_observations (B, O); `next_actions` is (B, N, A) with N = num_next_actions, sampled by
the actor from the next observations.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

Q_AGGREGATIONS = ("mean", "min")
#: Rules of `reward_range`.
REWARD_RANGE_RULES = ("released", "data")


def compute_dtype_of(name: str):
    """Matmul input dtype of a critic's `compute_dtype` ('float32' -> default, 'bfloat16')."""
    return jnp.bfloat16 if name == "bfloat16" else None


def validate(checks) -> None:
    """Raise ValueError with the message of the first failed (ok, message) pair."""
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)


def polyak(online, target, tau: float):
    """target <- tau * online + (1 - tau) * target, leaf by leaf."""
    return jax.tree_util.tree_map(lambda p, tp: tau * p + (1.0 - tau) * tp, online, target)


def aggregate(x: jnp.ndarray, how: str, axis: int = 0) -> jnp.ndarray:
    if how == "min":
        return x.min(axis=axis)
    return x.mean(axis=axis)


def count_params(tree) -> int:
    return int(sum(int(x.size) for x in jax.tree_util.tree_leaves(tree)))


def repeat_rows(x: jnp.ndarray, n: int) -> jnp.ndarray:
    """(B, ...) -> (B*n, ...): row b is repeated n times consecutively."""
    return jnp.repeat(x, n, axis=0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CategoricalValues:
    """Per-sample return distributions on atoms: what a categorical critic's next_values
    returns instead of (B, N) values (the contract's "values with per-sample weights").

    Attributes:
      atoms: (B, N, M) return values: sample n of state b is the distribution
        sum_j probs[b, n, j] * delta(atoms[b, n, j]).
      probs: (B, N, M) non-negative weights summing to 1 over M.
    """

    atoms: jnp.ndarray
    probs: jnp.ndarray

    def expected(self) -> jnp.ndarray:
        """(B, N) the mean of each distribution."""
        return (self.atoms * self.probs).sum(axis=-1)


def expected_values(next_values) -> jnp.ndarray:
    """(B, N) the value of next_values: itself, or a CategoricalValues' means."""
    return next_values.expected() if isinstance(next_values, CategoricalValues) else next_values


def td_targets(batch, discount: float, next_values, bonus=None):
    """(B, N) TD targets r + gamma * mask * (next_values + bonus); bonus (B, N) or None.

    next_values may be a CategoricalValues: the same affine map is applied to every atom of
    sample n (its bonus added to each) and the probabilities are kept: the distributional
    Bellman operator (Bellemare et al. 2017, eq. 7 before the projection)."""
    if isinstance(next_values, CategoricalValues):
        atoms = next_values.atoms if bonus is None else next_values.atoms + bonus[..., None]
        atoms = (batch["rewards"][:, None, None] + discount * batch["masks"][:, None, None] * atoms)
        return CategoricalValues(atoms, next_values.probs)
    nv = next_values if bonus is None else next_values + bonus
    return batch["rewards"][:, None] + discount * batch["masks"][:, None] * nv


def td_loss(critic, params, batch, next_actions, rng):
    """A critic's TD loss through its split interface: targets from next_values under the
    target parameters, then fit. Every critic's `loss` is this."""
    k_next, k_fit = critic.keys(rng)
    next_values = critic.next_values(params["target"], batch["next_observations"], next_actions, k_next)
    targets = td_targets(batch, critic.discount, next_values)
    return critic.fit(params, batch, targets, k_fit)


def value_of_actions(critic, target, obs, actions, rng):
    """(B,) the target critic's value of given actions (B, A) at obs (B, O): next_values with
    each action repeated num_next_actions times (floq: as many noise draws as a TD target
    averages), averaged over them. IQL's and IFQL's V regress onto it."""
    n = critic.num_next_actions
    reps = jnp.broadcast_to(actions[:, None, :], (actions.shape[0], n, actions.shape[-1]))
    return expected_values(critic.next_values(target, obs, reps, rng)).mean(axis=1)


def actor_value(critic, online, obs, actions, rng, agg: str = "mean"):
    """(B,) the Q an actor maximises: the critic's random estimate (`actor_q`) when it has
    one, else q; ensemble aggregated by agg."""
    if hasattr(critic, "actor_q"):
        return critic.actor_q(online, obs, actions, rng, agg=agg)
    return critic.q(online, obs, actions, agg=agg)


def reward_range(rewards, rule: str = "released") -> tuple[float, float]:
    """(r_min, r_max) of a training set's rewards under a rule.

    Args:
      rewards: (N,) rewards of the training transitions (any array-like).
      rule: 'released': the released floq code's range (github:CMU-AIRe/floq main.py reads
        r_min/r_max from its replay buffer, which holds the dataset plus at least one
        zero-filled row), so the range always includes 0: r_min = min(data, 0),
        r_max = max(data, 0). 'data': the raw range min(data), max(data).

    Returns:
      (r_min, r_max) as Python floats.
    """
    if rule not in REWARD_RANGE_RULES:
        raise ValueError(f"reward range rule must be one of {REWARD_RANGE_RULES}, got {rule!r}")
    r = np.asarray(rewards, dtype=np.float64)
    if r.size == 0:
        raise ValueError("reward_range needs at least one reward")
    lo, hi = float(r.min()), float(r.max())
    if rule == "released":
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    return lo, hi


def value_range(r_min: float, r_max: float, discount: float, reward_offset: float) -> tuple[float, float]:
    """[v_min, v_max] of returns under rewards in [r_min, r_max] (widened by reward_offset per
    step): the floq critic's HL-Gauss support and the categorical critics' atoms."""
    scale = 1.0 / (1.0 - discount)
    return (r_min - reward_offset) * scale, (r_max + reward_offset) * scale


def bind_reward_range(critic, discount: float, r_min: float, r_max: float):
    """`critic` with gamma and the task's reward range bound; r_min/r_max pinned in gin take
    precedence (the `configure` of the critics whose support depends on the range)."""
    return dataclasses.replace(
        critic,
        discount=float(discount),
        r_min=float(r_min) if critic.r_min is None else critic.r_min,
        r_max=float(r_max) if critic.r_max is None else critic.r_max,
    )
