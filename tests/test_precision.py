"""Trainer.precision = 'bfloat16' is bf16 where the work is: the networks' activations stay bf16
from one matmul to the next (Dense, GELU, LayerNorm's normalisation), with f32 row statistics,
f32 parameters and f32 z / HL-Gauss embedding / Euler updates; 'float32' keeps its numbers.

The guard reads the pre-optimisation HLO of one trainer step (FQL + floq, tiny sizes) through
benchmarks/hlo_counts.py. The known-answer MDP tests in bf16 are in
tests/critics/test_known_answers.py (the '-bf16' cases)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.hlo_counts import computations, converts, f32_activations, step_lowered, tiny_setup, while_loops
from floq.nets import mlp
from floq.nets.specs import MLPNet

WIDTH = 24  # a width no other dimension of the tiny step has


def test_bf16_layer_norm_has_flax_parameters_f32_statistics_and_bf16_output():
    x = (3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(0), (64, 40))).astype(jnp.bfloat16)
    ref = nn.LayerNorm()
    params = ref.init(jax.random.PRNGKey(1), x)
    # non-trivial scale and bias
    params = jax.tree_util.tree_map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    ours = mlp.LayerNorm()
    assert jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(1), x)) == jax.tree_util.tree_structure(params)
    y = ours.apply(params, x)
    assert y.dtype == jnp.bfloat16
    want = np.asarray(ref.apply(params, x.astype(jnp.float32)))  # flax in f32 on the same (bf16) input
    err = np.abs(np.asarray(y, np.float32) - want)
    # bf16 normalisation: a few roundings of 2^-8 relative each
    assert np.max(err / (np.abs(want) + 1.0)) < 0.03, np.max(err)
    assert np.mean(err) < 0.01


def test_mlp_float32_path_is_flax_layer_norm_and_bf16_keeps_the_parameter_tree():
    net = MLPNet(WIDTH, 2, layer_norm=True)
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 7))
    m32, m16 = net.module(1), net.module(1, dtype=jnp.bfloat16)
    p = m32.init(jax.random.PRNGKey(1), x)
    assert jax.tree_util.tree_structure(m16.init(jax.random.PRNGKey(1), x)) == jax.tree_util.tree_structure(p)

    class FlaxOnly(nn.Module):  # the f32 MLP as flax's layers compose it, no floq code
        @nn.compact
        def __call__(self, h):
            for _ in range(2):
                h = nn.LayerNorm()(nn.gelu(nn.Dense(WIDTH, kernel_init=mlp.default_init())(h)))
            return nn.Dense(1, kernel_init=mlp.default_init())(h)

    np.testing.assert_array_equal(np.asarray(jax.jit(m32.apply)(p, x)), np.asarray(jax.jit(FlaxOnly().apply)(p, x)))
    y16 = m16.apply(p, x)
    assert y16.dtype == jnp.float32  # the output is f32 whatever the compute dtype
    np.testing.assert_allclose(np.asarray(y16), np.asarray(m32.apply(p, x)), atol=0.1, rtol=0.05)


def test_with_precision_sets_the_critic_and_the_actor_networks():
    from floq.train import with_precision

    algo, critic = tiny_setup("float32", WIDTH)[:2]
    assert with_precision(algo, critic, "float32") == (algo, critic)
    a16, c16 = with_precision(algo, critic, "bfloat16")
    assert (a16.compute_dtype, c16.compute_dtype) == ("bfloat16", "bfloat16")
    assert dataclasses.replace(a16, compute_dtype="float32") == algo


@pytest.fixture(scope="module")
def step_hlo():
    out = {}
    for precision in ("float32", "bfloat16"):
        algo, critic, state, data, size, _ = tiny_setup(precision, WIDTH)
        assert size.width == WIDTH
        out[precision] = (step_lowered(algo, critic, state, data, size.batch).as_text(dialect="hlo"), size)
    return out


def test_bf16_step_has_no_f32_activation_inside_the_loops(step_hlo):
    """Inside the K-step critic integration and the actor's flow loop, the only f32 tensors of
    activation size (rows x width) the bf16 step computes are each LayerNorm's statistics inputs:
    x as f32 and its square, which feed the two row reductions (XLA fuses them into those)."""
    text, size = step_hlo["bfloat16"]
    found = f32_activations(text, WIDTH, size.batch)
    layer_norms_in_field = size.depth  # the field's hidden layers; the actor nets have no LayerNorm
    assert sorted(op for _, _, op, _ in found) == sorted(["convert", "multiply"] * layer_norms_in_field), found
    f32_text, _ = step_hlo["float32"]
    assert len(f32_activations(f32_text, WIDTH, size.batch)) > 5 * len(found)  # what f32 computes there
    # ...and outside the loops, far fewer than in f32 (the backward passes' LN statistics remain)
    assert len(f32_activations(text, WIDTH, size.batch, loops_only=False)) < 0.5 * len(
        f32_activations(f32_text, WIDTH, size.batch, loops_only=False))


def test_bf16_step_multiplies_in_bf16_in_both_flow_loops(step_hlo):
    text, _ = step_hlo["bfloat16"]
    comps, _ = computations(text)
    from benchmarks.hlo_counts import instruction, reachable

    flow_loops = [w for w in while_loops(comps) if not w["computation"].startswith("threefry")]
    assert len(flow_loops) == 2  # the critic's K steps (online and target in one loop) and the actor's flow
    for w in flow_loops:
        dots = [instruction(line)[1] for c in reachable(comps, [w["body"]]) for line in comps[c]
                if instruction(line) and instruction(line)[2] == "dot"]
        assert dots and all(t.startswith("bf16") for t in dots), dots
    assert converts(text).get("f32->bf16", 0) > 0
    assert converts(step_hlo["float32"][0]).get("f32->bf16", 0) == 0


@pytest.mark.slow  # compiles trainer steps: seconds of CPU each
def test_bf16_update_is_finite_and_near_the_f32_update():
    from floq.train import make_step

    losses = {}
    for precision in ("float32", "bfloat16"):
        algo, critic, state, data, size, _ = tiny_setup(precision, WIDTH)
        _, m = jax.jit(make_step(algo, critic, size.batch))(state, data)
        losses[precision] = {k: float(v) for k, v in m.items()}
    for k, v in losses["bfloat16"].items():
        assert np.isfinite(v), k
    for k in ("critic/flow_loss", "critic/distill_loss", "actor/bc_flow_loss"):
        np.testing.assert_allclose(losses["bfloat16"][k], losses["float32"][k], rtol=0.05, err_msg=k)
