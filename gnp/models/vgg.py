"""VGG (Simonyan & Zisserman 2015), with optional BatchNorm, as the released code builds it.

The classifier is the paper's 4096-4096 with dropout on the flattened features at any input
size, as the released code does: at 224px that is the 138M-parameter VGG-16; on 32px CIFAR the
features flatten to 512 and the network is much smaller. Its three Dense layers start
U[±1/√outputs], as released.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gnp.models.layers import batch_norm, classifier_init, conv_init
from gnp.models.registry import register


class VGG(nn.Module):
    """Five blocks of 3×3 convs (64, 128, 256, 512, 512 wide), each ending in 2×2 max pooling."""

    num_classes: int
    stage_sizes: Sequence[int]
    batch_norm: bool = False
    width: int = 64
    hidden_size: int = 4096
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    batch_norm_axis_name: str | None = None  # layers.synchronized_batch_norm

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        norm = batch_norm(train, self.dtype, self.batch_norm_axis_name)
        x = x.astype(self.dtype)
        for stage, num_convs in enumerate(self.stage_sizes):
            features = min(self.width * 2**stage, 8 * self.width)
            for _ in range(num_convs):
                x = nn.Conv(features, (3, 3), kernel_init=conv_init, dtype=self.dtype)(x)
                if self.batch_norm:
                    x = norm()(x)
                x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        dense = functools.partial(nn.Dense, kernel_init=classifier_init, dtype=self.dtype)
        for _ in range(2):
            x = nn.relu(dense(self.hidden_size)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return dense(self.num_classes)(x).astype(jnp.float32)


VGG16 = register("VGG16")(functools.partial(VGG, stage_sizes=(2, 2, 3, 3, 3)))
VGG19 = register("VGG19")(functools.partial(VGG, stage_sizes=(2, 2, 4, 4, 4)))
VGG16BN = register("VGG16BN")(functools.partial(VGG, stage_sizes=(2, 2, 3, 3, 3), batch_norm=True))
VGG19BN = register("VGG19BN")(functools.partial(VGG, stage_sizes=(2, 2, 4, 4, 4), batch_norm=True))
