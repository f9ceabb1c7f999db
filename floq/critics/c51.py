"""C51: a categorical distributional critic (Bellemare, Dabney & Munos 2017, "A Distributional
Perspective on Reinforcement Learning", ICML). Reference consulted: Dopamine's
`project_distribution` (github:google/dopamine, dopamine/jax/agents/rainbow/rainbow_agent.py),
which implements the paper's eq. 7.

Each ensemble member outputs M logits over M evenly spaced atoms z_1..z_M on the task's
value range [v_min, v_max] (floq.critics.categorical: the floq critic's range; the paper's
51 atoms by default). next_values returns the target distribution at each next action as a
floq.critics.base.CategoricalValues (atoms z_j, probabilities p_j(s', a')); the algorithm's
td_targets maps every atom to r + gamma * mask * (z_j + bonus) and keeps p_j; fit projects
that distribution back onto the support (eq. 7: each atom clipped to [v_min, v_max], its
mass split between its two neighbouring atoms in proportion to closeness) and minimises the
cross-entropy to the online softmax. Q(s, a) = sum_j softmax_j z_j.

The ensemble (not in the paper: the suite's critics all have one) aggregates the target
distribution by q_agg: 'mean' averages the members' probabilities (their mixture; its mean
is the mean of the members' Q), 'min' takes, per next action, the member whose expected
value is lowest (the distributional counterpart of clipped double Q).

Targets an algorithm gives as plain (B, N) values (IQL/IFQL: r + gamma * V(s')) project as
two-hot histograms (eq. 7 for a one-atom distribution): the critic then learns the mean
only, not a return distribution (IQL/IFQL warn at configuration).
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp

from floq.critics.base import CategoricalValues, repeat_rows, validate
from floq.critics.categorical import CategoricalCritic, two_hot


def project_distribution(atoms: jnp.ndarray, probs: jnp.ndarray, support: jnp.ndarray) -> jnp.ndarray:
    """Bellemare et al.'s eq. 7: (..., K) atoms with probabilities -> (..., M) probabilities
    on the evenly spaced support (M,)."""
    return (probs[..., None] * two_hot(atoms, support)).sum(axis=-2)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class C51Critic(CategoricalCritic):
    """Ensemble of categorical distributional critics (C51); see the module docstring.

    Attributes: floq.critics.categorical.CategoricalCritic's (num_bins = the atoms M).
    """

    name: str = "c51"

    #: A return distribution: algorithms whose targets are scalars say so.
    distributional = True

    def __post_init__(self):
        validate(self._checks())

    def support(self) -> jnp.ndarray:
        """(M,) the atoms z_j."""
        lo, hi = self.v_range
        return jnp.linspace(lo, hi, self.num_bins, dtype=jnp.float32)

    def project_one(self, y):
        return two_hot(y, self.support())

    def next_values(self, target, next_obs, next_actions, rng):
        """CategoricalValues with atoms (B, N, M) = the support and probabilities (B, N, M) =
        the target distribution at (s', a'_n), aggregated over the ensemble by q_agg."""
        b, n, a = next_actions.shape
        obs = next_obs if n == 1 else repeat_rows(next_obs, n)
        z = self.support()
        probs = jax.nn.softmax(self.logits(target["q"], obs, next_actions.reshape(b * n, a)), axis=-1)  # (E, BN, M)
        if self.q_agg == "min":
            best = jnp.argmin((probs * z).sum(axis=-1), axis=0)  # (BN,)
            probs = jnp.take_along_axis(probs, best[None, :, None], axis=0)[0]
        else:
            probs = probs.mean(axis=0)
        probs = probs.reshape(b, n, self.num_bins)
        return CategoricalValues(jnp.broadcast_to(z, probs.shape), probs)
