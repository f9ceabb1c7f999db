"""HL-Gauss: a value function trained by classification (Farebrother et al. 2024, "Stop
Regressing: Training Value Functions via Classification for Scalable Deep RL", ICML; the
HL-Gauss loss of Imani & White 2018, "Improving Regression Performance with Distributional
Losses"). Reference consulted: the paper's Appendix A listing (`HLGaussLoss`:
transform_to_probs by erf differences over num_bins + 1 edges, transform_from_probs by the
bin centres).

Each ensemble member outputs M logits over M bins that split the task's value range
[v_min, v_max] evenly (floq.critics.categorical: the floq critic's range). The scalar TD
target y = r + gamma * mask * agg_e Q_target_e(s', a') (any algorithm's target; one per
next action) becomes the histogram that N(y, sigma^2) puts on the bins, with
sigma = sigma_ratio * bin width (the paper's 0.75 by default), or with projection='two_hot'
the two-hot histogram on the bin centres; the loss is the cross-entropy to the softmax of
the logits, and Q(s, a) = sum_i softmax_i * centre_i. With N > 1 targets per transition the
histogram is their mean.

Deviations from the listing: targets are clipped to [v_min, v_max] before the projection
(the listing divides by the mass inside the support, ~0 for a target far outside); the
support comes from the reward range and discount (the paper sets v_min/v_max per domain).
Next values are scalars (the expectation), so the critic fits any algorithm's scalar target
(IQL's r + gamma * V(s') included) and is not distributional.
"""

from __future__ import annotations

import dataclasses

import gin
import jax.numpy as jnp

from floq.critics.base import aggregate, repeat_rows, validate
from floq.critics.categorical import CategoricalCritic, hl_gauss, two_hot

PROJECTIONS = ("hl_gauss", "two_hot")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class HLGaussCritic(CategoricalCritic):
    """Ensemble of classification critics trained by HL-Gauss (or two-hot) cross-entropy.

    Attributes (besides floq.critics.categorical.CategoricalCritic's):
      sigma_ratio: the Gaussian's standard deviation in bin widths (the paper's 0.75).
      projection: 'hl_gauss' (default) or 'two_hot' (onto the bin centres).
    """

    sigma_ratio: float = 0.75
    projection: str = "hl_gauss"
    name: str = "hlgauss"

    def __post_init__(self):
        validate(self._checks() + [
            (self.sigma_ratio > 0, f"sigma_ratio must be > 0, got {self.sigma_ratio}"),
            (self.projection in PROJECTIONS, f"projection must be one of {PROJECTIONS}, got {self.projection!r}"),
        ])

    def edges(self) -> jnp.ndarray:
        """(M + 1,) bin edges on [v_min, v_max]."""
        lo, hi = self.v_range
        return jnp.linspace(lo, hi, self.num_bins + 1, dtype=jnp.float32)

    def support(self) -> jnp.ndarray:
        """(M,) the bin centres."""
        e = self.edges()
        return 0.5 * (e[1:] + e[:-1])

    def project_one(self, y):
        """(...,) -> (..., M) the histogram of a target."""
        if self.projection == "two_hot":
            return two_hot(y, self.support())
        lo, hi = self.v_range
        return hl_gauss(y, lo, hi, self.num_bins, self.sigma_ratio)

    def next_values(self, target, next_obs, next_actions, rng):
        """(B, N): agg_e of each member's expected value at (s', a'_n)."""
        b, n, a = next_actions.shape
        obs = next_obs if n == 1 else repeat_rows(next_obs, n)
        return aggregate(self.qs(target["q"], obs, next_actions.reshape(b * n, a)), self.q_agg).reshape(b, n)

    def describe(self) -> dict:
        return {**super().describe(), "hl_sigma_ratio": self.sigma_ratio, "hl_projection": self.projection}
