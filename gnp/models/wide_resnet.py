"""Wide ResNets (Zagoruyko & Komodakis 2016) and Shake-Shake (Gastaldi 2017) for CIFAR.

Both follow google-research/sam (and the released code): WRN-d-k has (d−4)/6 pre-activation
blocks per group at widths 16k, 32k, 64k, with parameter-free shortcuts (average pooling and
zero channels); Shake-Shake 26 2×96d has (26−2)/6 = 4 two-branch blocks per group at widths 96,
192, 384. Classifiers start U[±1/√classes], as released.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from gnp.models.layers import (
    batch_norm,
    classifier_init,
    conv_init,
    padded_shortcut,
    shake_shake,
)
from gnp.models.registry import register


def _conv(features: int, kernel: int, strides: int, dtype: Any) -> nn.Conv:
    return nn.Conv(
        features, (kernel, kernel), strides, use_bias=False, kernel_init=conv_init, dtype=dtype
    )


def _head(num_classes: int, dtype: Any) -> nn.Dense:
    return nn.Dense(num_classes, kernel_init=classifier_init, dtype=dtype)


def _add_shortcut(y: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """``y + x``, with x pooled and zero-padded to y's shape where the width changes."""
    if x.shape[-1] == y.shape[-1]:
        return y + x
    return y + padded_shortcut(x, y.shape[-1], x.shape[-2] // y.shape[-2])


class WideResNetBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3×3-BN-ReLU-(dropout)-conv3×3, parameter-free shortcut."""

    features: int
    strides: int
    # The first block shares its BN-ReLU with the shortcut, as in the reference implementation.
    activate_before_residual: bool
    dropout_rate: float
    dtype: Any
    norm: Callable[[], nn.BatchNorm]  # layers.batch_norm

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        if self.activate_before_residual:
            x = nn.relu(self.norm()(x))
            residual = y = x
        else:
            residual = x
            y = nn.relu(self.norm()(x))
        y = _conv(self.features, 3, self.strides, self.dtype)(y)
        y = nn.relu(self.norm()(y))
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = _conv(self.features, 3, 1, self.dtype)(y)
        return _add_shortcut(y, residual)


class WideResNet(nn.Module):
    """WRN-depth-widen_factor.

    ``use_additional_skip_connections`` adds AutoAugment's shortcuts around each group and
    around all three (the released config key ``use_additional_skip_connections_in_wrn``, off
    there as here).
    ``dropout_rate`` (between a block's convolutions, as in the WRN paper) is ours; the release
    has none.
    """

    num_classes: int
    depth: int
    widen_factor: int
    use_additional_skip_connections: bool = False
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    batch_norm_axis_name: str | None = None  # layers.synchronized_batch_norm

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        norm = batch_norm(train, self.dtype, self.batch_norm_axis_name)
        blocks_per_group = (self.depth - 4) // 6
        inputs = x = x.astype(self.dtype)
        x = _conv(16, 3, 1, self.dtype)(x)
        for group, base in enumerate((16, 32, 64)):
            group_input = x
            for block in range(blocks_per_group):
                x = WideResNetBlock(
                    base * self.widen_factor,
                    strides=2 if group > 0 and block == 0 else 1,
                    activate_before_residual=group == 0 and block == 0,
                    dropout_rate=self.dropout_rate,
                    dtype=self.dtype,
                    norm=norm,
                )(x, train)
            if self.use_additional_skip_connections:
                x = _add_shortcut(x, group_input)
        if self.use_additional_skip_connections:
            x = _add_shortcut(x, inputs)
        x = nn.relu(norm()(x))
        x = jnp.mean(x, axis=(1, 2))
        return _head(self.num_classes, self.dtype)(x).astype(jnp.float32)


class ShakeShakeShortcut(nn.Module):
    """Shake-Shake's shortcut when the width changes: two strided 1×1 convs, one offset a pixel."""

    features: int
    strides: int
    dtype: Any
    norm: Callable[[], nn.BatchNorm]  # layers.batch_norm

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.shape[-1] == self.features:
            return x
        shifted = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1:, 1:, :]
        paths = [
            _conv(self.features // 2, 1, 1, self.dtype)(v[:, :: self.strides, :: self.strides])
            for v in (x, shifted)
        ]
        return self.norm()(jnp.concatenate(paths, axis=-1))


class ShakeShakeBlock(nn.Module):
    """Two ReLU-conv-BN-ReLU-conv-BN branches mixed by Shake-Shake."""

    features: int
    strides: int
    dtype: Any
    norm: Callable[[], nn.BatchNorm]  # layers.batch_norm

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool, true_gradient: bool) -> jnp.ndarray:
        branches = []
        for _ in range(2):
            y = _conv(self.features, 3, self.strides, self.dtype)(nn.relu(x))
            y = nn.relu(self.norm()(y))
            y = self.norm()(_conv(self.features, 3, 1, self.dtype)(y))
            branches.append(y)
        key = self.make_rng("shake") if train else None
        mixed = shake_shake(*branches, key=key, train=train, true_gradient=true_gradient)
        shortcut = ShakeShakeShortcut(self.features, self.strides, self.dtype, self.norm)(x)
        return shortcut + mixed


class WideResNetShakeShake(nn.Module):
    """Shake-Shake-depth 2×(16·widen_factor)d."""

    num_classes: int
    depth: int
    widen_factor: int
    dtype: Any = jnp.float32
    batch_norm_axis_name: str | None = None  # layers.synchronized_batch_norm
    supports_true_gradient: ClassVar[bool] = True

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, train: bool = True, true_gradient: bool = False
    ) -> jnp.ndarray:
        norm = batch_norm(train, self.dtype, self.batch_norm_axis_name)
        blocks_per_group = (self.depth - 2) // 6
        x = _conv(16, 3, 1, self.dtype)(x.astype(self.dtype))
        x = norm()(x)
        for group, base in enumerate((16, 32, 64)):
            for block in range(blocks_per_group):
                strides = 2 if group > 0 and block == 0 else 1
                x = ShakeShakeBlock(base * self.widen_factor, strides, self.dtype, norm)(
                    x, train, true_gradient
                )
        x = jnp.mean(nn.relu(x), axis=(1, 2))
        return _head(self.num_classes, self.dtype)(x).astype(jnp.float32)


WideResNet_16_4 = register("WideResNet_16_4")(
    functools.partial(WideResNet, depth=16, widen_factor=4)
)
WideResNet_28_10 = register("WideResNet_28_10")(
    functools.partial(WideResNet, depth=28, widen_factor=10)
)
WideResNet_40_10 = register("WideResNet_40_10")(
    functools.partial(WideResNet, depth=40, widen_factor=10)
)
WideResNet_2_96_ShakeShake = register("WideResNet_2_96_ShakeShake")(
    functools.partial(WideResNetShakeShake, depth=26, widen_factor=6)
)
