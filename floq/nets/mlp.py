"""Multi-layer perceptrons, residual MLPs and explicit-axis ensembles.

Initialisation and activation follow FQL (github:seohongpark/fql, utils/networks.py):
GELU activations, variance-scaling(fan_avg, uniform) kernels, LayerNorm after the
activation of every hidden layer when enabled.

Precision: `dtype=None` is float32 throughout (flax's Dense, GELU and LayerNorm as they are).
`dtype=jnp.bfloat16` keeps a hidden layer's activations in bfloat16 from one matmul to the
next: the Dense layers take and give bf16 (f32 parameters cast at use), GELU runs on bf16,
and LayerNorm (floq.nets.mlp.LayerNorm) takes its row statistics (mean, E[x^2]) in float32 but
normalises, scales and shifts in bf16, so no layer converts its activations to f32 and back
(flax's LayerNorm returns float32). Parameters, and the network's output, stay float32.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def default_init(scale: float = 1.0):
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


class MLP(nn.Module):
    """Dense stack: hidden layers with GELU (+ LayerNorm), then a linear output layer.

    Attributes:
      hidden_dims: widths of the hidden layers.
      output_dim: width of the final linear layer (None: no output layer).
      layer_norm: LayerNorm after each hidden activation.
      activate_before_layernorm: order of activation and LayerNorm in a hidden layer.
    """

    hidden_dims: Sequence[int]
    output_dim: int | None = 1
    layer_norm: bool = False
    activate_before_layernorm: bool = True
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x):
        for width in self.hidden_dims:
            x = nn.Dense(width, kernel_init=default_init(), dtype=self.dtype)(x)
            x = _act_norm(x, self.layer_norm, self.activate_before_layernorm, self.dtype)
        if self.output_dim is not None:
            x = nn.Dense(self.output_dim, kernel_init=default_init(), dtype=self.dtype)(x)
        return x.astype(jnp.float32)


class LayerNorm(nn.Module):
    """LayerNorm for low-precision activations: the parameters (`scale`, `bias`, float32) and
    the statistics of flax's nn.LayerNorm (float32 mean and E[x^2] - mean^2, clipped at 0,
    epsilon 1e-6), the normalisation in the input's dtype: y = (x - mean) * (rsqrt(var + eps)
    * scale) + bias with mean, rsqrt and scale, bias cast to x.dtype. Its class name and
    parameters are nn.LayerNorm's, so the parameter tree (LayerNorm_0: scale, bias) is the
    same in either precision and a checkpoint serves both."""

    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        x32 = x.astype(jnp.float32)  # read once by the two row reductions (fused into them by XLA)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.maximum(jnp.mean(jax.lax.square(x32), axis=-1, keepdims=True) - jax.lax.square(mean), 0.0)
        inv = jax.lax.rsqrt(var + self.epsilon).astype(x.dtype)
        return (x - mean.astype(x.dtype)) * inv * scale.astype(x.dtype) + bias.astype(x.dtype)


def _layer_norm(dtype):
    # float32: flax's own LayerNorm (its numbers exactly); bf16: statistics in f32, the rest bf16.
    return nn.LayerNorm() if dtype is None else LayerNorm()


def _act_norm(x, layer_norm: bool, activate_first: bool, dtype=None):
    if activate_first:
        x = nn.gelu(x)
        if layer_norm:
            x = _layer_norm(dtype)(x)
    else:
        if layer_norm:
            x = _layer_norm(dtype)(x)
        x = nn.gelu(x)
    return x


class ResMLP(nn.Module):
    """Residual MLP as in the floq paper's ResNet critics.

    input -> Dense(width) -> act/LN -> num_blocks x [x + Block(x)] -> Dense(output_dim),
    where each Block is `block_depth` Dense(width) layers, each followed by act/LN.
    """

    width: int
    block_depth: int = 2
    num_blocks: int = 2
    output_dim: int = 1
    layer_norm: bool = True
    activate_before_layernorm: bool = True
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.width, kernel_init=default_init(), dtype=self.dtype)(x)
        x = _act_norm(x, self.layer_norm, self.activate_before_layernorm, self.dtype)
        for _ in range(self.num_blocks):
            h = x
            for _ in range(self.block_depth):
                h = nn.Dense(self.width, kernel_init=default_init(), dtype=self.dtype)(h)
                h = _act_norm(h, self.layer_norm, self.activate_before_layernorm, self.dtype)
            x = x + h
        x = nn.Dense(self.output_dim, kernel_init=default_init(), dtype=self.dtype)(x)
        return x.astype(jnp.float32)


def ensemble_of(net, num: int, in_axes=None, dtype=None):
    """An ensemble of `num` copies of a network spec (floq.nets.specs) with a scalar output:
    (..., D) -> (num, ..., 1), or with in_axes=0 (num, N, D) -> (num, N, 1)."""
    proto = net.module(output_dim=1, dtype=dtype)
    fields = {f.name: getattr(proto, f.name) for f in dataclasses.fields(proto) if f.name not in ("parent", "name")}
    return ensemble(type(proto), num, in_axes=in_axes)(**fields)


def ensemble(module_cls, num: int, in_axes=None):
    """Vectorise a module over a leading ensemble axis of its parameters.

    in_axes=None shares the input across members; in_axes=0 gives each member its own
    slice of an input whose leading axis is the ensemble axis (E, ...).
    """
    return nn.vmap(
        module_cls,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=in_axes,
        out_axes=0,
        axis_size=num,
    )
