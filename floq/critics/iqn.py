"""FQL-IQN: an implicit-quantile distributional critic (the floq paper's baseline).

Dabney, Ostrovski, Silver & Munos (2018), "Implicit Quantile Networks for Distributional
Reinforcement Learning"; as released with floq (github:CMU-AIRe/floq agents/fql_iqn.py,
utils/networks.py ImplicitQuantileValue).

Z_e(s, a; tau) for e = 1..E is the tau-quantile of the return distribution. The quantile
fraction tau is embedded as cos(k * pi * tau), k = 1..quantile_embed_dim, and concatenated
to [s, a] (the released code's form; the original IQN instead multiplies a learned
embedding into the state features). The input [s, a, cos(k pi tau)] goes through an
ensemble of E scalar MLPs (`net`).

Loss, per transition: N quantile fractions tau_i for the online critic and N' = N
fractions tau'_j for the target, each tau'_j row with its own next action a'_j from the
actor (so num_next_actions = N); the target is
    y_j = r + gamma * mask * agg_e Z_target_e(s', a'_j; tau'_j)       (agg: mean or min)
and with delta_ij = y_j - Z_e(s, a; tau_i):
  loss_type='huber' (Dabney et al.):
    rho = |tau_i - 1{delta_ij < 0}| * L_kappa(delta_ij) / kappa,
    L_kappa(u) = u^2 / 2 if |u| <= kappa else kappa (|u| - kappa / 2);
    kappa = 0 is the pure quantile (pinball) loss |tau_i - 1{delta < 0}| |delta|.
    Minimiser: the tau-quantile (exactly for kappa -> 0; a Huber-smoothed quantile that
    lies between the tau-quantile and the tau-expectile for kappa > 0).
  loss_type='released' (the released floq code's fql_iqn):
    rho = |tau_i - 1{delta_ij < 0}| * delta_ij^2 / kappa.
    This is the asymmetric squared (expectile) loss: its minimiser is the tau-*expectile*,
    not the tau-quantile, and kappa only scales it. For symmetric return distributions
    the mean over tau of either is the mean return; otherwise they differ.
The per-pair loss is summed over tau_i and averaged over tau'_j, the batch and E
(Dabney et al.; the released code).

Shapes: B batch, N = num_quantiles, E = num_ensembles; rows b*N + i of the (B*N, .)
inputs are sample i of state b (floq.critics.base.repeat_rows).

The Q the actor maximises (`actor_q`, what FQL's actor loss reads when a critic has it):
by default (actor_estimator = 'random') the released code's estimator (github:CMU-AIRe/floq
agents/fql_iqn.py actor_loss): N = num_quantiles fractions tau ~ U[0, 1] drawn afresh per
state and per step, Z averaged over them and over the ensemble. actor_estimator =
'midpoints' instead averages the num_q_samples fixed midpoints tau_m = (m + 0.5) / M
(deterministic, lower variance; floq's earlier default). q(online, obs, act) is always the
midpoint estimate (deterministic: evaluation, tests).
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp

from floq.critics.base import (Q_AGGREGATIONS, REWARD_RANGE_RULES, aggregate, compute_dtype_of, count_params, polyak,
                               repeat_rows, td_loss, validate)
from floq.nets.mlp import ensemble_of
from floq.nets.specs import MLPNet

QUANTILE_LOSSES = ("huber", "released")
#: The Q the actor maximises: the released code's random fractions, or fixed midpoints.
ACTOR_ESTIMATORS = ("random", "midpoints")


def quantile_embedding(tau: jnp.ndarray, dim: int) -> jnp.ndarray:
    """cos(k * pi * tau), k = 1..dim: (...,) -> (..., dim)."""
    k = jnp.arange(1, dim + 1, dtype=jnp.float32)
    return jnp.cos(jnp.pi * k * tau[..., None].astype(jnp.float32))


def huber(u: jnp.ndarray, kappa: float) -> jnp.ndarray:
    """L_kappa(u); kappa = 0 gives |u|."""
    if kappa == 0:
        return jnp.abs(u)
    a = jnp.abs(u)
    return jnp.where(a <= kappa, 0.5 * u ** 2, kappa * (a - 0.5 * kappa))


def quantile_loss(delta: jnp.ndarray, tau: jnp.ndarray, kappa: float, loss_type: str = "huber") -> jnp.ndarray:
    """Element-wise quantile regression loss for residuals delta = target - prediction.

    Args:
      delta: residuals, broadcastable with tau.
      tau: the quantile fractions of the predictions.
      kappa: Huber threshold ('huber'; 0 = pinball loss) or scale ('released').
      loss_type: 'huber' (Dabney et al. 2018) or 'released' (asymmetric squared loss of
        the released floq code; an expectile loss).
    """
    weight = jnp.abs(tau - jax.lax.stop_gradient((delta < 0).astype(jnp.float32)))
    if loss_type == "huber":
        return weight * huber(delta, kappa) / (kappa if kappa > 0 else 1.0)
    if loss_type == "released":
        return weight * delta ** 2 / kappa
    raise ValueError(f"unknown quantile loss {loss_type!r}; choose one of {QUANTILE_LOSSES}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class IQNCritic:
    """Ensemble of implicit quantile networks trained by the quantile (Huber) TD loss.

    Attributes:
      net: network spec of each member (`@MLPNet()` or `@ResNet()`), input [s, a, cos(k pi tau)].
      num_ensembles: ensemble size E.
      q_agg: aggregation of the target quantiles over E ('mean' or 'min').
      num_quantiles: N = N', quantile fractions per transition for the online and the
        target critic; also the number of next actions the loss wants (one per tau').
      num_q_samples: M fixed quantile midpoints (m + 0.5) / M averaged by q().
      quantile_embed_dim: number of cosine features of tau.
      kappa: Huber threshold (0: pure quantile loss); the scale of the 'released' loss.
      loss_type: 'huber' (Dabney et al.) or 'released' (the released code's expectile loss).
      actor_estimator: the Q the actor's loss maximises: 'random' (the released code's
        num_quantiles random tau per state) or 'midpoints' (num_q_samples fixed midpoints).
      reward_range_rule: how the trainer reads (r_min, r_max) from the training rewards
        (floq.critics.base.reward_range; recorded in run.json, unused by the loss).
      discount: set from the task by configure().
    """

    net: object = MLPNet()
    num_ensembles: int = 2
    q_agg: str = "mean"
    num_quantiles: int = 8
    num_q_samples: int = 32
    quantile_embed_dim: int = 64
    kappa: float = 1.0
    loss_type: str = "huber"
    actor_estimator: str = "random"
    reward_range_rule: str = "released"
    discount: float = 0.99
    name: str = "iqn"
    compute_dtype: str = "float32"

    def __post_init__(self):
        checks = [
            (self.num_ensembles >= 1, f"num_ensembles must be >= 1, got {self.num_ensembles}"),
            (self.q_agg in Q_AGGREGATIONS, f"q_agg must be one of {Q_AGGREGATIONS}, got {self.q_agg!r}"),
            (self.num_quantiles >= 1, f"num_quantiles must be >= 1, got {self.num_quantiles}"),
            (self.num_q_samples >= 1, f"num_q_samples must be >= 1, got {self.num_q_samples}"),
            (self.quantile_embed_dim >= 1, f"quantile_embed_dim must be >= 1, got {self.quantile_embed_dim}"),
            (self.loss_type in QUANTILE_LOSSES, f"loss_type must be one of {QUANTILE_LOSSES}, got {self.loss_type!r}"),
            (self.kappa >= 0, f"kappa must be >= 0, got {self.kappa}"),
            (self.actor_estimator in ACTOR_ESTIMATORS,
             f"actor_estimator must be one of {ACTOR_ESTIMATORS}, got {self.actor_estimator!r}"),
            (self.loss_type != "released" or self.kappa > 0, f"loss_type='released' needs kappa > 0, got {self.kappa}"),
            (0.0 < self.discount < 1.0, f"discount must be in (0, 1), got {self.discount}"),
            (self.reward_range_rule in REWARD_RANGE_RULES,
             f"reward_range_rule must be one of {REWARD_RANGE_RULES}, got {self.reward_range_rule!r}"),
        ]
        validate(checks)

    #: A return distribution, not a scalar: algorithms whose targets are scalars say so.
    distributional = True

    @property
    def num_next_actions(self) -> int:
        return self.num_quantiles

    @property
    def _module(self):
        return ensemble_of(self.net, self.num_ensembles, dtype=compute_dtype_of(self.compute_dtype))

    def configure(self, discount: float, r_min: float, r_max: float):
        return dataclasses.replace(self, discount=float(discount))

    def _inputs(self, obs, act, tau):
        return jnp.concatenate([obs, act, quantile_embedding(tau, self.quantile_embed_dim)], axis=-1)

    def init(self, rng, obs, act):
        tau = jnp.full((obs.shape[0],), 0.5)
        online = {"q": self._module.init(rng, self._inputs(obs, act, tau))["params"]}
        return {"online": online, "target": jax.tree_util.tree_map(jnp.copy, online)}

    # --- pure functions -----------------------------------------------------------
    def quantiles(self, q_params, obs, act, tau):
        """(E, N) quantile values at obs (N, O), act (N, A), tau (N,)."""
        return self._module.apply({"params": q_params}, self._inputs(obs, act, tau))[..., 0]

    def quantile_function(self, q_params, obs, act, taus):
        """(E, B, M): every state-action pair of obs (B, O), act (B, A) at every tau in taus (M,)."""
        b, m = obs.shape[0], taus.shape[0]
        z = self.quantiles(q_params, repeat_rows(obs, m), repeat_rows(act, m), jnp.tile(taus, b))
        return z.reshape(self.num_ensembles, b, m)

    def q_taus(self) -> jnp.ndarray:
        """The M fixed quantile midpoints (m + 0.5) / M that q() averages."""
        return (jnp.arange(self.num_q_samples, dtype=jnp.float32) + 0.5) / self.num_q_samples

    def q(self, online, obs, act, agg: str = "mean"):
        """(B,) the mean over the M midpoints of each member's quantiles, aggregated over E."""
        return aggregate(self.quantile_function(online["q"], obs, act, self.q_taus()).mean(axis=2), agg)

    def actor_q(self, online, obs, act, rng, agg: str = "mean"):
        """(B,) the Q the actor's loss maximises (see the module docstring). 'random': Z at
        N = num_quantiles fractions tau ~ U[0, 1] per state (rows b * N + i, as the released
        repeat_tensor), averaged over the ensemble and the N fractions; its mean over the
        batch is the released code's q.mean() over B * N rows."""
        if self.actor_estimator == "midpoints":
            return self.q(online, obs, act, agg)
        b, n = obs.shape[0], self.num_quantiles
        taus = jax.random.uniform(rng, (b * n,))
        z = self.quantiles(online["q"], repeat_rows(obs, n), repeat_rows(act, n), taus)  # (E, B*N)
        if agg == "mean":
            return z.mean(axis=0).reshape(b, n).mean(axis=1)
        return aggregate(z.reshape(self.num_ensembles, b, n).mean(axis=2), agg)

    def td_targets(self, target_q, batch, next_actions, tau_next):
        """(B, N') target samples r + gamma * mask * agg_e Z_target(s', a'_j; tau'_j)."""
        b, n, _ = next_actions.shape
        next_obs = repeat_rows(batch["next_observations"], n)
        z = self.quantiles(target_q, next_obs, next_actions.reshape(b * n, -1), tau_next)  # (E, B*N')
        next_z = aggregate(z, self.q_agg).reshape(b, n)
        return batch["rewards"][:, None] + self.discount * batch["masks"][:, None] * next_z

    def keys(self, rng):
        return tuple(jax.random.split(rng))

    def next_values(self, target, next_obs, next_actions, rng):
        """(B, N'): agg_e Z_target_e(s', a'_j; tau'_j), one fraction tau'_j ~ U[0, 1] per next
        action (row b * N' + j): N' samples of the next return distribution."""
        b, n, _ = next_actions.shape
        tau_next = jax.random.uniform(rng, (b * n,))
        z = self.quantiles(target["q"], repeat_rows(next_obs, n), next_actions.reshape(b * n, -1), tau_next)
        return aggregate(z, self.q_agg).reshape(b, n)

    def fit(self, params, batch, targets, rng):
        """Quantile regression of N online fractions onto the (B, N') target samples (a scalar
        target, N' = 1, makes every quantile regress onto that one value)."""
        b = batch["observations"].shape[0]
        n = self.num_quantiles
        e = self.num_ensembles
        target = jax.lax.stop_gradient(targets)  # (B, N')
        tau = jax.random.uniform(rng, (b * n,))
        z = self.quantiles(params["online"]["q"], repeat_rows(batch["observations"], n),
                           repeat_rows(batch["actions"], n), tau).reshape(e, b, n)  # (E, B, N)
        delta = target[None, :, None, :] - z[..., None]  # (E, B, N, N')
        rho = quantile_loss(delta, tau.reshape(1, b, n, 1), self.kappa, self.loss_type)
        loss = rho.sum(axis=2).mean()  # sum over tau, mean over tau', B and E
        return loss, {"critic/loss": loss, "critic/q_mean": z.mean(), "critic/q_max": z.max(),
                      "critic/q_min": z.min(), "critic/target_mean": target.mean(),
                      "critic/target_std": target.std(axis=1).mean()}

    def loss(self, params, batch, next_actions, rng):
        if next_actions.shape[1] != self.num_quantiles:
            raise ValueError(f"IQNCritic.loss wants next_actions (B, {self.num_quantiles}, A), got {next_actions.shape}")
        return td_loss(self, params, batch, next_actions, rng)

    def target_update(self, params, tau: float):
        return {"online": params["online"], "target": polyak(params["online"], params["target"], tau)}

    def param_counts(self, params) -> dict:
        return {"critic/q": count_params(params["online"]["q"])}

    def describe(self) -> dict:
        d = {"critic": self.name, "critic_ensembles": self.num_ensembles, "q_agg": self.q_agg,
             "iqn_quantiles": self.num_quantiles, "iqn_q_samples": self.num_q_samples,
             "quantile_embed_dim": self.quantile_embed_dim, "kappa": self.kappa, "iqn_loss": self.loss_type,
             "iqn_actor_estimator": self.actor_estimator}
        d.update({f"critic_{k}": v for k, v in self.net.describe().items()})
        return d
