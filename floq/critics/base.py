"""The one critic interface the actor and the trainer rely on.

A critic is a frozen (hashable) dataclass of static configuration plus pure functions
over parameter pytrees:

  init(rng, obs, act) -> params            {'online': ..., 'target': ...}
  loss(params, batch, next_actions, rng)   -> (scalar, metrics); gradients flow into
                                           params['online'] only
  q(online_params, obs, act) -> (B,)       the Q the actor's loss maximises (deterministic)
  actor_q(online, obs, act, rng) (optional) the actor's estimate when it is random (FQL-IQN's
                                           released random taus); the actor uses it when present
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
