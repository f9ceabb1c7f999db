"""Frozen, hashable network specifications selected from gin (`@MLPNet()`, `@ResNet()`).

A spec is static configuration: it builds a flax module on demand and never holds
parameters, so it can be a static argument of a compiled function.
"""

from __future__ import annotations

import dataclasses

import gin

from floq.nets.mlp import MLP, ResMLP


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MLPNet:
    """`depth` hidden layers of `width` units (GELU, optional LayerNorm), linear output."""

    width: int = 512
    depth: int = 4
    layer_norm: bool = True
    activate_before_layernorm: bool = True

    def __post_init__(self):
        if self.width < 1 or self.depth < 0:
            raise ValueError(f"MLPNet needs width >= 1 and depth >= 0, got width={self.width}, depth={self.depth}")

    def module(self, output_dim: int = 1, dtype=None):
        return MLP(
            hidden_dims=(self.width,) * self.depth,
            output_dim=output_dim,
            layer_norm=self.layer_norm,
            activate_before_layernorm=self.activate_before_layernorm,
            dtype=dtype,
        )

    def describe(self) -> dict:
        return {"arch": "mlp", "width": self.width, "depth": self.depth}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ResNet:
    """Input projection, `num_blocks` residual blocks of `block_depth` layers, linear output."""

    width: int = 512
    block_depth: int = 2
    num_blocks: int = 2
    layer_norm: bool = True
    activate_before_layernorm: bool = True

    def __post_init__(self):
        if self.width < 1 or self.block_depth < 1 or self.num_blocks < 0:
            raise ValueError(
                f"ResNet needs width >= 1, block_depth >= 1, num_blocks >= 0; got {self.width}, "
                f"{self.block_depth}, {self.num_blocks}"
            )

    def module(self, output_dim: int = 1, dtype=None):
        return ResMLP(
            width=self.width,
            block_depth=self.block_depth,
            num_blocks=self.num_blocks,
            output_dim=output_dim,
            layer_norm=self.layer_norm,
            activate_before_layernorm=self.activate_before_layernorm,
            dtype=dtype,
        )

    def describe(self) -> dict:
        # Depth counts the hidden layers: projection + blocks * block_depth.
        return {
            "arch": "resnet",
            "width": self.width,
            "depth": 1 + self.num_blocks * self.block_depth,
            "num_blocks": self.num_blocks,
            "block_depth": self.block_depth,
        }
