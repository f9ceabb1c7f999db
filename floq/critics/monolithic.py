"""Scalar Q ensemble: FQL's critic (MLP) and the paper's FQL-ResNet baseline.

Q_e(s, a) for e = 1..E; TD target r + gamma * mask * agg_e Q_target_e(s', a') with a'
from the actor (Park et al. 2025, "Flow Q-Learning", github:seohongpark/fql agents/fql.py).
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp

from floq.critics.base import (Q_AGGREGATIONS, aggregate, compute_dtype_of, count_params, polyak, repeat_rows,
                               td_loss)
from floq.nets.mlp import ensemble_of
from floq.nets.specs import MLPNet


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MonolithicCritic:
    """Ensemble of scalar Q networks trained by squared TD error.

    Attributes:
      net: network spec (`@MLPNet()` for FQL, `@ResNet()` for FQL-ResNet).
      num_ensembles: ensemble size E.
      q_agg: how target Qs are aggregated over E ('mean' or 'min').
      discount: set from the task by configure().
    """

    net: object = MLPNet()
    num_ensembles: int = 2
    q_agg: str = "mean"
    discount: float = 0.99
    name: str = "monolithic"
    compute_dtype: str = "float32"

    def __post_init__(self):
        if self.num_ensembles < 1:
            raise ValueError(f"num_ensembles must be >= 1, got {self.num_ensembles}")
        if self.q_agg not in Q_AGGREGATIONS:
            raise ValueError(f"q_agg must be one of {Q_AGGREGATIONS}, got {self.q_agg!r}")

    num_next_actions = 1

    @property
    def _module(self):
        return ensemble_of(self.net, self.num_ensembles, dtype=compute_dtype_of(self.compute_dtype))

    def configure(self, discount: float, r_min: float, r_max: float):
        return dataclasses.replace(self, discount=float(discount))

    def init(self, rng, obs, act):
        online = {"q": self._module.init(rng, act_concat(obs, act))["params"]}
        return {"online": online, "target": jax.tree_util.tree_map(jnp.copy, online)}

    def qs(self, q_params, obs, act):
        """(E, B) Q values."""
        return self._module.apply({"params": q_params}, act_concat(obs, act))[..., 0]

    def q(self, online, obs, act, agg: str = "mean"):
        return aggregate(self.qs(online["q"], obs, act), agg)

    def keys(self, rng):
        return rng, rng  # the squared TD error draws nothing

    def next_values(self, target, next_obs, next_actions, rng):
        """(B, N): agg_e Q_target_e(s', a'_n)."""
        b, n, a = next_actions.shape
        obs = next_obs if n == 1 else repeat_rows(next_obs, n)
        return aggregate(self.qs(target["q"], obs, next_actions.reshape(b * n, a)), self.q_agg).reshape(b, n)

    def fit(self, params, batch, targets, rng):
        """Squared error of every member against the targets averaged over N: (B, N) -> loss."""
        target = jax.lax.stop_gradient(targets.mean(axis=1))  # (B,)
        q = self.qs(params["online"]["q"], batch["observations"], batch["actions"])  # (E, B)
        loss = jnp.mean((q - target[None]) ** 2)
        return loss, {"critic/loss": loss, "critic/q_mean": q.mean(), "critic/q_max": q.max(), "critic/q_min": q.min(),
                      "critic/target_mean": target.mean()}

    def loss(self, params, batch, next_actions, rng):
        return td_loss(self, params, batch, next_actions, rng)

    def target_update(self, params, tau: float):
        return {"online": params["online"], "target": polyak(params["online"], params["target"], tau)}

    def param_counts(self, params) -> dict:
        return {"critic/q": count_params(params["online"]["q"])}

    def describe(self) -> dict:
        d = {"critic": self.name, "critic_ensembles": self.num_ensembles, "q_agg": self.q_agg}
        d.update({f"critic_{k}": v for k, v in self.net.describe().items()})
        return d


def act_concat(obs, act):
    return jnp.concatenate([obs, act], axis=-1)
