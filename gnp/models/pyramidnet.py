"""Bottleneck PyramidNet (Han et al. 2017), optionally with ShakeDrop (Yamada et al. 2018).

Widths grow additively by α/(number of blocks) per block, rounded, as in the paper's code; the
shortcut is average pooling plus zero-padded channels, so it has no parameters. With ShakeDrop
the survival probability falls linearly from 1 to ``final_survival`` (0.5) at the last block.
As released: the classifier starts U[±1/√classes], and only the ShakeDrop variant puts a
BatchNorm after the stem convolution (the two released files differ there).
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
    shake_drop,
)
from gnp.models.registry import register


class PyramidBottleneck(nn.Module):
    """BN-conv1×1-BN-ReLU-conv3×3-BN-ReLU-conv1×1(×4)-BN, optionally ShakeDrop'd."""

    features: int
    strides: int
    survival: float | None
    dtype: Any
    norm: Callable[[], nn.BatchNorm]  # layers.batch_norm

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool, true_gradient: bool) -> jnp.ndarray:
        conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype)
        y = conv(self.features, (1, 1))(self.norm()(x))
        y = conv(self.features, (3, 3), self.strides)(nn.relu(self.norm()(y)))
        y = conv(4 * self.features, (1, 1))(nn.relu(self.norm()(y)))
        y = self.norm()(y)
        if self.survival is not None:
            key = self.make_rng("shake") if train else None
            y = shake_drop(
                y, survival=self.survival, key=key, train=train, true_gradient=true_gradient
            )
        return padded_shortcut(x, 4 * self.features, self.strides) + y


class PyramidNet(nn.Module):
    """PyramidNet-depth, widening factor ``alpha``; (depth − 2)/9 bottleneck blocks per group."""

    num_classes: int
    depth: int
    alpha: int
    # None: no ShakeDrop; else the survival probability p_L of the last block.
    final_survival: float | None = None
    stem_batch_norm: bool = False
    dtype: Any = jnp.float32
    batch_norm_axis_name: str | None = None  # layers.synchronized_batch_norm

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, train: bool = True, true_gradient: bool = False
    ) -> jnp.ndarray:
        norm = batch_norm(train, self.dtype, self.batch_norm_axis_name)
        blocks_per_group = (self.depth - 2) // 9
        num_blocks = 3 * blocks_per_group
        x = nn.Conv(16, (3, 3), use_bias=False, kernel_init=conv_init, dtype=self.dtype)(
            x.astype(self.dtype)
        )
        if self.stem_batch_norm:
            x = norm()(x)
        width = 16.0
        for index in range(num_blocks):
            width += self.alpha / num_blocks
            survival = None
            if self.final_survival is not None:
                survival = 1.0 - (index + 1) / num_blocks * (1.0 - self.final_survival)
            first_of_group = index % blocks_per_group == 0
            strides = 2 if index > 0 and first_of_group else 1
            x = PyramidBottleneck(round(width), strides, survival, self.dtype, norm)(
                x, train, true_gradient
            )
        x = nn.relu(norm()(x))
        x = jnp.mean(x, axis=(1, 2))
        head = nn.Dense(self.num_classes, kernel_init=classifier_init, dtype=self.dtype)
        return head(x).astype(jnp.float32)


class PyramidNetShakeDrop(PyramidNet):
    """PyramidNet with ShakeDrop on every residual branch."""

    final_survival: float | None = 0.5
    stem_batch_norm: bool = True
    supports_true_gradient: ClassVar[bool] = True


PyramidNet_164_48 = register("PyramidNet_164_48")(
    functools.partial(PyramidNet, depth=164, alpha=48)
)
PyramidNet_164_270 = register("PyramidNet_164_270")(
    functools.partial(PyramidNet, depth=164, alpha=270)
)
PyramidNet_200_240 = register("PyramidNet_200_240")(
    functools.partial(PyramidNet, depth=200, alpha=240)
)
PyramidNet_272_200 = register("PyramidNet_272_200")(
    functools.partial(PyramidNet, depth=272, alpha=200)
)
PyramidNet_164_48_ShakeDrop = register("PyramidNet_164_48_ShakeDrop")(
    functools.partial(PyramidNetShakeDrop, depth=164, alpha=48)
)
PyramidNet_272_200_ShakeDrop = register("PyramidNet_272_200_ShakeDrop")(
    functools.partial(PyramidNetShakeDrop, depth=272, alpha=200)
)
# The release also registers its general class; here its fields are ``depth`` and ``alpha``
# (released ``pyramid_depth`` and ``pyramid_alpha``).
register("PyramidNetBase")(PyramidNet)
