"""ResNet (He et al. 2016), after flax's examples/imagenet.

``stem="auto"`` picks the CIFAR stem (one 3×3 stride-1 convolution, no max pooling) for inputs
up to 64px, where the ImageNet stem (7×7 stride 2 + max pooling) would discard most of the
image, and the ImageNet stem otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax.numpy as jnp

from gnp.models.layers import conv_init, is_small_image
from gnp.models.registry import register

ModuleDef = Callable[..., nn.Module]


class BasicBlock(nn.Module):
    """Two 3×3 convolutions (ResNet-18/34)."""

    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        residual = x
        y = nn.relu(self.norm()(self.conv(self.features, (3, 3), self.strides)(x)))
        # Zero-initialized last scale: each block starts as the identity (Goyal et al. 2017).
        y = self.norm(scale_init=nn.initializers.zeros)(self.conv(self.features, (3, 3))(y))
        if residual.shape != y.shape:
            residual = self.norm()(self.conv(self.features, (1, 1), self.strides)(residual))
        return nn.relu(residual + y)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3, 1×1 expand by 4 (ResNet-50 and deeper); stride on the 3×3 (v1.5)."""

    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        residual = x
        y = nn.relu(self.norm()(self.conv(self.features, (1, 1))(x)))
        y = nn.relu(self.norm()(self.conv(self.features, (3, 3), self.strides)(y)))
        y = self.norm(scale_init=nn.initializers.zeros)(self.conv(4 * self.features, (1, 1))(y))
        if residual.shape != y.shape:
            residual = self.norm()(self.conv(4 * self.features, (1, 1), self.strides)(residual))
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """Four stages of residual blocks, widths ``width·(1, 2, 4, 8)``."""

    num_classes: int
    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    width: int = 64
    stem: Literal["auto", "imagenet", "cifar"] = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype)
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=0.9, dtype=self.dtype
        )
        if self.stem not in ("auto", "imagenet", "cifar"):
            raise ValueError(f"stem must be 'auto', 'imagenet' or 'cifar', not {self.stem!r}")
        cifar_stem = self.stem == "cifar" or (self.stem == "auto" and is_small_image(x))
        x = x.astype(self.dtype)
        if cifar_stem:
            x = nn.relu(norm()(conv(self.width, (3, 3))(x)))
        else:
            x = nn.relu(norm()(conv(self.width, (7, 7), 2, padding=((3, 3), (3, 3)))(x)))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, num_blocks in enumerate(self.stage_sizes):
            for block in range(num_blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = self.block_cls(self.width * 2**stage, strides, conv=conv, norm=norm)(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


ResNet18 = register("ResNet18")(
    functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
)
ResNet34 = register("ResNet34")(
    functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
)
ResNet50 = register("ResNet50")(
    functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
)
ResNet101 = register("ResNet101")(
    functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
)
ResNet152 = register("ResNet152")(
    functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck)
)
ResNet200 = register("ResNet200")(
    functools.partial(ResNet, stage_sizes=(3, 24, 36, 3), block_cls=Bottleneck)
)
