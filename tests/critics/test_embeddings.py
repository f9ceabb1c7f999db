"""The flow critic's input embeddings: HL-Gauss probabilities of the return z and the
time embeddings ('cos', 'fourier', 'none')."""

import jax.numpy as jnp
import numpy as np
import pytest

from floq.nets.embeddings import (TIME_EMBEDDINGS, hl_gauss_probs, hl_gauss_probs_numpy_reference,
                                  hl_gauss_support, time_embedding, time_embedding_dim)

# (q_min, q_max, num_bins, sigma): the paper's default (51 bins, sigma 16 bin widths) on an
# OGBench-like support (r in [-1, 0], gamma 0.99) and a narrow Gaussian (sigma 0.75, as in
# "Stop regressing") on a small support.
CONFIGS = [(-101.0, 1.0, 51, 16.0), (-2.0, 3.0, 21, 0.75), (0.0, 10.0, 11, 2.0)]


def _bin_of(z, q_min, q_max, num_bins):
    support = np.linspace(q_min, q_max, num_bins)
    return int(np.searchsorted(support, z, side="right") - 1)


@pytest.mark.parametrize("q_min,q_max,num_bins,sigma", CONFIGS)
def test_hl_gauss_is_a_distribution_peaked_at_z(q_min, q_max, num_bins, sigma):
    width = (q_max - q_min) / (num_bins - 1)
    # Points a quarter bin off a bin centre (never on an edge, where two bins tie),
    # across the whole support including the first and last bins.
    zs = q_min + width * (np.arange(num_bins - 1) + 0.25)
    probs = np.asarray(hl_gauss_probs(jnp.asarray(zs, jnp.float32), q_min, q_max, num_bins, sigma))
    assert probs.shape == (num_bins - 1, num_bins - 1)
    assert probs.dtype == np.float32
    assert np.all(probs >= 0.0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    expected = [_bin_of(z, q_min, q_max, num_bins) for z in zs]
    assert probs.argmax(-1).tolist() == expected


@pytest.mark.parametrize("q_min,q_max,num_bins,sigma", CONFIGS)
def test_hl_gauss_matches_numerical_integration(q_min, q_max, num_bins, sigma):
    span = q_max - q_min
    for frac in (0.0, 0.13, 0.5, 0.77, 1.0):
        z = q_min + frac * span
        got = np.asarray(hl_gauss_probs(jnp.float32(z), q_min, q_max, num_bins, sigma))
        want = hl_gauss_probs_numpy_reference(z, q_min, q_max, num_bins, sigma)
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"z={z}")


def test_hl_gauss_shapes_and_batch_axes():
    z = jnp.linspace(-5.0, 5.0, 2 * 3 * 4).reshape(2, 3, 4)
    p = hl_gauss_probs(z, -5.0, 5.0, 51, 16.0)
    assert p.shape == (2, 3, 4, 50)
    # Elementwise in z: the batched result equals per-element calls.
    np.testing.assert_allclose(np.asarray(p[1, 2, 3]), np.asarray(hl_gauss_probs(z[1, 2, 3], -5.0, 5.0, 51, 16.0)),
                               atol=1e-7)
    support = np.asarray(hl_gauss_support(-5.0, 5.0, 51))
    np.testing.assert_allclose(support, np.linspace(-5.0, 5.0, 51), atol=1e-6)


def test_hl_gauss_far_outside_support_falls_back_to_edge_bin():
    # Narrow Gaussian far outside: no mass inside; the embedding is the nearest edge bin.
    p = np.asarray(hl_gauss_probs(jnp.array([-1e4, 1e4]), 0.0, 1.0, 11, 0.75))
    assert np.isfinite(p).all()
    np.testing.assert_array_equal(p[0], np.eye(10)[0])
    np.testing.assert_array_equal(p[1], np.eye(10)[-1])
    # Just outside the support (still mass inside): a proper distribution leaning to the edge.
    p = np.asarray(hl_gauss_probs(jnp.array([-0.2, 1.2]), 0.0, 1.0, 11, 0.75))
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    assert p[0].argmax() == 0 and p[1].argmax() == 9


def test_time_embedding_values_and_shapes():
    t = jnp.array([[0.0], [0.25], [0.5], [1.0]])
    cos = np.asarray(time_embedding(t, "cos", 64))
    assert cos.shape == (4, 1)
    np.testing.assert_allclose(cos[:, 0], np.cos([0.0, 0.25, 0.5, 1.0]), atol=1e-6)

    four = np.asarray(time_embedding(t, "fourier", 8))
    assert four.shape == (4, 8)
    k = np.arange(1, 9)
    for i, ti in enumerate([0.0, 0.25, 0.5, 1.0]):
        np.testing.assert_allclose(four[i], np.cos(k * np.pi * ti), atol=1e-5)

    none = np.asarray(time_embedding(t, "none", 64))
    np.testing.assert_array_equal(none, np.asarray(t))

    for kind in TIME_EMBEDDINGS:
        assert time_embedding(t, kind, 16).shape[-1] == time_embedding_dim(kind, 16)
    # Leading batch axes pass through.
    assert time_embedding(jnp.zeros((2, 3, 1)), "fourier", 5).shape == (2, 3, 5)


def test_time_embedding_unknown_name_raises():
    with pytest.raises(ValueError, match="unknown time embedding 'sin'"):
        time_embedding(jnp.zeros((1, 1)), "sin", 8)
