"""What the categorical critics share (floq.critics.hlgauss, floq.critics.c51): a fixed
support over the task's value range, the projections of targets onto it, and an ensemble of
networks with one logit per support point.

Support. The value range is the floq critic's (floq.critics.flow.FloqCritic.q_range):
[v_min, v_max] = [(r_min - reward_offset) / (1 - gamma), (r_max + reward_offset) / (1 - gamma)],
with (r_min, r_max) read from the training rewards by the trainer (`reward_range_rule`) and
bound by configure(). So on a sparse OGBench task (rewards -1 / 0, gamma 0.99) it is
[-101, 1].

Projections (all linear in the target distribution, so a distribution of targets projects
as the probability-weighted sum of its atoms' projections):
  two_hot(y, atoms)   y clipped to [atoms[0], atoms[-1]], then the triangular kernel
                      p_j = max(0, 1 - |y - atoms_j| / spacing): the two neighbouring atoms
                      share the mass in proportion to closeness, and sum_j p_j atoms_j = y.
                      This is C51's projection of one atom (Bellemare et al. 2017, eq. 7;
                      Rowland et al. 2018, "An Analysis of Categorical Distributional RL",
                      write it as this kernel).
  hl_gauss(y, edges, sigma)
                      the mass that N(y, sigma^2) puts in each bin [edges_i, edges_i+1],
                      normalised by the mass inside [edges_0, edges_M]: the CDF differences
                      of Farebrother et al. 2024 ("Stop Regressing", Appendix A's listing),
                      computed by floq.nets.embeddings.hl_gauss_probs. y is clipped to the
                      support first (the listing does not clip; a target far outside would
                      leave ~0 mass to normalise).

Shapes: B batch, N targets (or next actions) per transition, M support points, E ensemble.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from floq.critics.base import (bind_reward_range, value_range, Q_AGGREGATIONS, REWARD_RANGE_RULES, CategoricalValues, aggregate, compute_dtype_of,
                               count_params, polyak, td_loss, validate)
from floq.critics.monolithic import act_concat
from floq.nets.embeddings import hl_gauss_probs
from floq.nets.mlp import ensemble


def two_hot(y: jnp.ndarray, atoms: jnp.ndarray) -> jnp.ndarray:
    """(...,) targets -> (..., M) two-hot probabilities on evenly spaced atoms (M,)."""
    spacing = atoms[1] - atoms[0]
    y = jnp.clip(y, atoms[0], atoms[-1])
    return jnp.clip(1.0 - jnp.abs(y[..., None] - atoms) / spacing, 0.0, 1.0)


def hl_gauss(y: jnp.ndarray, v_min: float, v_max: float, num_bins: int, sigma_ratio: float) -> jnp.ndarray:
    """(...,) targets -> (..., M) HL-Gauss probabilities of M bins on [v_min, v_max], the
    Gaussian's standard deviation sigma_ratio bin widths."""
    y = jnp.clip(y, v_min, v_max)
    return hl_gauss_probs(y, v_min, v_max, num_bins + 1, sigma_ratio)


def project(targets, project_one) -> jnp.ndarray:
    """(B, M) the mean over N of the projected targets: targets (B, N) values, or a
    CategoricalValues (each sample's atoms projected and weighted by their probabilities)."""
    if isinstance(targets, CategoricalValues):
        p = (targets.probs[..., None] * project_one(targets.atoms)).sum(axis=-2)  # (B, N, M)
    else:
        p = project_one(targets)  # (B, N, M)
    return p.mean(axis=1)


def cross_entropy(logits: jnp.ndarray, target_probs: jnp.ndarray) -> jnp.ndarray:
    """-sum_j p_j log softmax(logits)_j over the last axis."""
    return -(target_probs * jax.nn.log_softmax(logits, axis=-1)).sum(axis=-1)


def logit_ensemble(net, num: int, num_outputs: int, dtype=None):
    """An ensemble of `num` copies of a network spec with `num_outputs` outputs:
    (..., D) -> (num, ..., num_outputs) (floq.nets.mlp.ensemble_of with a wider head)."""
    proto = net.module(output_dim=num_outputs, dtype=dtype)
    fields = {f.name: getattr(proto, f.name) for f in dataclasses.fields(proto) if f.name not in ("parent", "name")}
    return ensemble(type(proto), num)(**fields)


@dataclasses.dataclass(frozen=True)
class CategoricalCritic:
    """An ensemble of networks with one logit per support point, trained by cross-entropy
    onto projected TD targets; Q is the expectation over the support. Subclasses say what
    the support is (`support`), how a target projects (`project_one`) and what next_values
    returns.

    Attributes:
      net: network spec of each member (`@MLPNet()`, `@ResNet()`, `@BroNet()`).
      num_ensembles: ensemble size E.
      q_agg: aggregation over E ('mean' or 'min').
      num_bins: M, the support's size.
      reward_offset: widening of the value range (see `value_range`); the floq critic's 0.01.
      r_min, r_max: reward range; None = read from the training data by configure().
      reward_range_rule: how the trainer reads that range from the training rewards
        (floq.critics.base.reward_range).
      discount: set from the task by configure().
    """

    net: object = None
    num_ensembles: int = 2
    q_agg: str = "mean"
    num_bins: int = 51
    reward_offset: float = 0.01
    r_min: float | None = None
    r_max: float | None = None
    reward_range_rule: str = "released"
    discount: float = 0.99
    name: str = "categorical"
    compute_dtype: str = "float32"

    num_next_actions = 1

    def _checks(self) -> list:
        checks = [
            (self.net is not None, f"{type(self).__name__}.net must be a network spec (e.g. @MLPNet())"),
            (self.num_ensembles >= 1, f"num_ensembles must be >= 1, got {self.num_ensembles}"),
            (self.q_agg in Q_AGGREGATIONS, f"q_agg must be one of {Q_AGGREGATIONS}, got {self.q_agg!r}"),
            (self.num_bins >= 2, f"num_bins must be >= 2, got {self.num_bins}"),
            (self.reward_offset >= 0, f"reward_offset must be >= 0, got {self.reward_offset}"),
            (0.0 < self.discount < 1.0, f"discount must be in (0, 1), got {self.discount}"),
            (self.reward_range_rule in REWARD_RANGE_RULES,
             f"reward_range_rule must be one of {REWARD_RANGE_RULES}, got {self.reward_range_rule!r}"),
        ]
        if self.r_min is not None and self.r_max is not None:
            checks.append((self.r_min <= self.r_max, f"r_min ({self.r_min}) must be <= r_max ({self.r_max})"))
        return checks

    def __post_init__(self):
        validate(self._checks())

    # --- task binding -------------------------------------------------------------
    def configure(self, discount: float, r_min: float, r_max: float):
        """Bind gamma and the reward range; pinned r_min/r_max (gin) take precedence."""
        return bind_reward_range(self, discount, r_min, r_max)

    @property
    def v_range(self) -> tuple[float, float]:
        if self.r_min is None or self.r_max is None:
            raise ValueError(f"{type(self).__name__}: configure(discount, r_min, r_max) first (the value range)")
        lo, hi = value_range(self.r_min, self.r_max, self.discount, self.reward_offset)
        if hi <= lo:  # a constant reward (e.g. all 0) with no offset: give the support a width
            lo, hi = lo - 1.0, hi + 1.0
        return lo, hi

    # --- networks -----------------------------------------------------------------
    @property
    def _module(self):
        return logit_ensemble(self.net, self.num_ensembles, self.num_bins, dtype=compute_dtype_of(self.compute_dtype))

    def init(self, rng, obs, act):
        online = {"q": self._module.init(rng, act_concat(obs, act))["params"]}
        return {"online": online, "target": jax.tree_util.tree_map(jnp.copy, online)}

    def logits(self, q_params, obs, act):
        """(E, B, M) logits."""
        return self._module.apply({"params": q_params}, act_concat(obs, act))

    def qs(self, q_params, obs, act):
        """(E, B) each member's expectation over the support."""
        return (jax.nn.softmax(self.logits(q_params, obs, act), axis=-1) * self.support()).sum(axis=-1)

    def q(self, online, obs, act, agg: str = "mean"):
        return aggregate(self.qs(online["q"], obs, act), agg)

    def keys(self, rng):
        return rng, rng  # nothing is drawn

    def fit(self, params, batch, targets, rng):
        """Cross-entropy of every member's softmax against the projected targets, averaged
        over E and B; targets (B, N) values or a CategoricalValues."""
        targets = jax.lax.stop_gradient(targets)
        p = project(targets, self.project_one)  # (B, M)
        logits = self.logits(params["online"]["q"], batch["observations"], batch["actions"])  # (E, B, M)
        loss = cross_entropy(logits, p[None]).mean()
        q = (jax.nn.softmax(logits, axis=-1) * self.support()).sum(axis=-1)  # (E, B)
        target_mean = (p * self.support()).sum(axis=-1)
        return loss, {"critic/loss": loss, "critic/q_mean": q.mean(), "critic/q_max": q.max(),
                      "critic/q_min": q.min(), "critic/target_mean": target_mean.mean()}

    def loss(self, params, batch, next_actions, rng):
        return td_loss(self, params, batch, next_actions, rng)

    def target_update(self, params, tau: float):
        return {"online": params["online"], "target": polyak(params["online"], params["target"], tau)}

    def param_counts(self, params) -> dict:
        return {"critic/q": count_params(params["online"]["q"])}

    def describe(self) -> dict:
        d = {"critic": self.name, "critic_ensembles": self.num_ensembles, "q_agg": self.q_agg,
             "critic_bins": self.num_bins}
        d.update({f"critic_{k}": v for k, v in self.net.describe().items()})
        return d
