"""A small conv net with BatchNorm for the embedded 8×8 digits set and quick tests."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gnp.models.layers import batch_norm
from gnp.models.registry import register


@register("SmallCNN")
class SmallCNN(nn.Module):
    """Two 3×3 conv + BatchNorm + ReLU blocks, global average pooling, a linear head."""

    num_classes: int
    width: int = 32
    dtype: Any = jnp.float32
    batch_norm_axis_name: str | None = None  # layers.synchronized_batch_norm

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        norm = batch_norm(train, self.dtype, self.batch_norm_axis_name)
        x = x.astype(self.dtype)
        for features, stride in ((self.width, 1), (2 * self.width, 2)):
            x = nn.Conv(features, (3, 3), strides=stride, use_bias=False, dtype=self.dtype)(x)
            x = nn.relu(norm()(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
