"""A small 1-D conv net with BatchNorm for MNIST-1D studies (label-noise memorization).

Three convolutions (kernel 5, then 3, 3; the last two stride 2) with BatchNorm and ReLU,
global average pooling, a linear head: about 20 k parameters at ``width=32``, enough to
memorize MNIST-1D's 4,000 training signals with 30 % of their labels flipped, which the
ICML 2022 noisy-label study needs (``docs/first_study.md``).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gnp.models.layers import batch_norm
from gnp.models.registry import register


def as_signal(x: jnp.ndarray) -> jnp.ndarray:
    """Signals [B, L, C] as they are; an image [B, H, W, C] read row by row as [B, H·W, C]."""
    return x.reshape((x.shape[0], -1, x.shape[-1]))


class CNN1D(nn.Module):
    """Conv-BatchNorm-ReLU ×3 (``width``, ``2·width``, ``2·width`` channels), pooling, Dense."""

    num_classes: int
    width: int = 32
    dtype: Any = jnp.float32
    batch_norm_axis_name: str | None = None  # layers.synchronized_batch_norm

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        norm = batch_norm(train, self.dtype, self.batch_norm_axis_name)
        x = as_signal(x).astype(self.dtype)
        layers = ((self.width, 5, 1), (2 * self.width, 3, 2), (2 * self.width, 3, 2))
        for features, kernel, stride in layers:
            x = nn.Conv(features, (kernel,), strides=stride, use_bias=False, dtype=self.dtype)(x)
            x = norm()(x)
            x = nn.relu(x)
        x = jnp.mean(x, axis=1)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


CNN1D_32 = register("CNN1D_32")(functools.partial(CNN1D, width=32))
CNN1D_64 = register("CNN1D_64")(functools.partial(CNN1D, width=64))
