"""Input embeddings of the flow critic: time t and return z.

HL-Gauss probability embedding after the released floq code (github:CMU-AIRe/floq,
utils/networks.py `to_probs`), itself from Imani & White (2018) / Farebrother et al.
(2024) "Stop regressing": the scalar z becomes the probabilities that a Gaussian
N(z, (sigma * bin_width)^2) assigns to the num_bins - 1 intervals of an evenly spaced
support on [q_min, q_max], normalised by the mass inside the support.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

TIME_EMBEDDINGS = ("cos", "fourier", "none")


def hl_gauss_support(q_min: float, q_max: float, num_bins: int) -> jnp.ndarray:
    """(num_bins,) evenly spaced support points on [q_min, q_max]."""
    return jnp.linspace(q_min, q_max, num_bins, dtype=jnp.float32)


def hl_gauss_probs(z: jnp.ndarray, q_min: float, q_max: float, num_bins: int, sigma: float) -> jnp.ndarray:
    """HL-Gauss embedding of a scalar.

    Args:
      z: (...,) returns.
      sigma: standard deviation in units of the bin width.

    Returns:
      (..., num_bins - 1) non-negative probabilities summing to 1.
    """
    support = hl_gauss_support(q_min, q_max, num_bins)
    bin_width = (q_max - q_min) / (num_bins - 1)
    scale = sigma * bin_width
    cdf = jax.scipy.special.erf((support - z[..., None]) / (jnp.sqrt(2.0) * scale))
    mass = cdf[..., -1:] - cdf[..., :1]
    # Guard against a return far outside the support (all mass outside): fall back to
    # the nearest edge bin instead of dividing by ~0.
    probs = (cdf[..., 1:] - cdf[..., :-1]) / jnp.maximum(mass, 1e-12)
    edge = jax.nn.one_hot(jnp.where(z > 0.5 * (q_min + q_max), num_bins - 2, 0), num_bins - 1)
    return jnp.where(mass > 1e-6, probs, edge)


def time_embedding(t: jnp.ndarray, kind: str, dim: int) -> jnp.ndarray:
    """Embed flow time t in [0, 1].

    Args:
      t: (..., 1) times.
      kind: 'cos' -> cos(t) (1 feature; the released floq code's final version),
        'fourier' -> cos(k*pi*t), k = 1..dim (the paper text's Fourier embedding),
        'none' -> t itself.

    Returns:
      (..., F) features.
    """
    if kind == "cos":
        return jnp.cos(t)
    if kind == "fourier":
        k = jnp.arange(1, dim + 1, dtype=jnp.float32)
        return jnp.cos(k * jnp.pi * t)
    if kind == "none":
        return t
    raise ValueError(f"unknown time embedding {kind!r}; choose one of {TIME_EMBEDDINGS}")


def time_embedding_dim(kind: str, dim: int) -> int:
    return {"cos": 1, "fourier": dim, "none": 1}[kind]


def hl_gauss_probs_numpy_reference(z: float, q_min: float, q_max: float, num_bins: int, sigma: float, n: int = 200_001):
    """Direct numerical integration of the Gaussian density over each bin (tests only)."""
    support = np.linspace(q_min, q_max, num_bins)
    scale = sigma * (q_max - q_min) / (num_bins - 1)
    xs = np.linspace(q_min, q_max, n)
    dens = np.exp(-0.5 * ((xs - z) / scale) ** 2)
    out = np.empty(num_bins - 1)
    for i in range(num_bins - 1):
        m = (xs >= support[i]) & (xs <= support[i + 1])
        out[i] = np.trapezoid(dens[m], xs[m])
    return out / out.sum()
