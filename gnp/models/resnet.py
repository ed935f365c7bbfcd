"""ResNet (He et al. 2016) as the released code builds it, after flax's examples/imagenet.

Released details kept: BatchNorm without a ReLU after the stem, BatchNorm scales starting at 1,
biases on the basic block's convolutions (not the bottleneck's), the classifier initialized
U[±1/√classes], and the CIFAR stem's 16 channels feeding the first 64-wide stage through a
projection shortcut.

``stem="auto"`` picks, as the release does, the CIFAR stem (3×3 stride 1, ``cifar_stem_width``
channels, no max pooling) for 10 or 100 classes and the ImageNet stem (7×7 stride 2 + 3×3 max
pooling) for 1000; other class counts go by input size (see ``layers.uses_cifar_variant``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax.numpy as jnp

from gnp.models.layers import batch_norm, classifier_init, conv_init, uses_cifar_variant
from gnp.models.registry import register

ModuleDef = Callable[..., nn.Module]


class BasicBlock(nn.Module):
    """Two 3×3 convolutions (ResNet-18/34); its convolutions carry biases, as released."""

    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = functools.partial(self.conv, use_bias=True)
        residual = x
        y = nn.relu(self.norm()(conv(self.features, (3, 3), self.strides)(x)))
        y = self.norm()(conv(self.features, (3, 3))(y))
        if residual.shape != y.shape:
            residual = self.norm()(conv(self.features, (1, 1), self.strides)(residual))
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
        y = self.norm()(self.conv(4 * self.features, (1, 1))(y))
        if residual.shape != y.shape:
            residual = self.norm()(self.conv(4 * self.features, (1, 1), self.strides)(residual))
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """A stem, then four stages of residual blocks, widths ``width·(1, 2, 4, 8)``."""

    num_classes: int
    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    width: int = 64
    stem: Literal["auto", "imagenet", "cifar"] = "auto"
    # The released CIFAR stem is 16 channels wide whatever the stages' width.
    cifar_stem_width: int = 16
    dtype: Any = jnp.float32
    batch_norm_axis_name: str | None = None  # layers.synchronized_batch_norm

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype)
        norm = batch_norm(train, self.dtype, self.batch_norm_axis_name)
        if self.stem not in ("auto", "imagenet", "cifar"):
            raise ValueError(f"stem must be 'auto', 'imagenet' or 'cifar', not {self.stem!r}")
        cifar_stem = self.stem == "cifar" or (
            self.stem == "auto" and uses_cifar_variant(self.num_classes, x)
        )
        x = x.astype(self.dtype)
        # No ReLU after either stem's BatchNorm: the released network is built so.
        if cifar_stem:
            x = norm()(conv(self.cifar_stem_width, (3, 3))(x))
        else:
            x = norm()(conv(self.width, (7, 7), 2)(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for stage, num_blocks in enumerate(self.stage_sizes):
            for block in range(num_blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = self.block_cls(self.width * 2**stage, strides, conv=conv, norm=norm)(x)
        x = jnp.mean(x, axis=(1, 2))
        head = nn.Dense(self.num_classes, kernel_init=classifier_init, dtype=self.dtype)
        return head(x).astype(jnp.float32)


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
