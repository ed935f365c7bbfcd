"""Swin Transformer (Liu et al. 2021): shifted windows, relative position bias, attention mask.

Named sizes follow the released code: ``Swin_Tiny`` etc. use 2×2 patches and 4×4 windows
(a 32px CIFAR image becomes 16×16 tokens), ``_Patch4`` 4×4 patches and 4×4 windows, ``_224``
the paper's 4×4 patches and 7×7 windows at 224px. A window never exceeds the feature map: when
the map is no larger than the window, the window shrinks to it and is not shifted (as in the
paper's code).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from gnp.models.layers import DropPath, MlpBlock
from gnp.models.registry import register

# Added to attention logits between tokens that a cyclic shift made neighbours.
_MASKED = -100.0
# jax_models' Swin, behind the released one, normalizes with ε = 1e-5 (flax's default 1e-6).
LAYER_NORM_EPSILON = 1e-5


def window_partition(x: jnp.ndarray, window: int) -> jnp.ndarray:
    """[B, H, W, C] -> [B·windows, window², C]."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_merge(windows: jnp.ndarray, window: int, h: int, w: int) -> jnp.ndarray:
    """Inverse of :func:`window_partition`."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def relative_position_index(window: int) -> np.ndarray:
    """[window², window²] index into the (2·window − 1)² table of relative offsets."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    coords = coords.reshape(2, -1)
    offsets = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return offsets[..., 0] * (2 * window - 1) + offsets[..., 1]


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> np.ndarray:
    """[windows, window², window²]: 0 within a region, ``_MASKED`` across regions that the cyclic
    shift brought into one window."""
    regions = np.zeros((1, h, w, 1))
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for label, (rows, cols) in enumerate((r, c) for r in bands for c in bands):
        regions[:, rows, cols, :] = label
    labels = window_partition(regions, window)[..., 0]  # works on NumPy arrays too
    return np.where(labels[:, None, :] != labels[:, :, None], _MASKED, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias."""

    num_heads: int
    window: int
    attention_dropout_rate: float
    dropout_rate: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: np.ndarray | None, train: bool) -> jnp.ndarray:
        batch, tokens, features = x.shape
        head_dim = features // self.num_heads
        qkv = nn.Dense(3 * features, dtype=self.dtype)(x)
        q, k, v = qkv.reshape(batch, tokens, 3, self.num_heads, head_dim).transpose(2, 0, 3, 1, 4)
        logits = jnp.einsum("bhqd,bhkd->bhqk", q * head_dim**-0.5, k)
        table = self.param(
            "relative_position_bias_table",
            nn.initializers.truncated_normal(0.02),
            ((2 * self.window - 1) ** 2, self.num_heads),
        )
        bias = table[relative_position_index(self.window)].transpose(2, 0, 1)
        logits = logits + bias.astype(logits.dtype)
        if mask is not None:
            windows = mask.shape[0]
            logits = logits.reshape(-1, windows, self.num_heads, tokens, tokens)
            logits = (logits + mask[None, :, None].astype(logits.dtype)).reshape(batch, *bias.shape)
        weights = nn.softmax(logits.astype(jnp.float32)).astype(self.dtype)
        weights = nn.Dropout(self.attention_dropout_rate, deterministic=not train)(weights)
        y = jnp.einsum("bhqk,bhkd->bqhd", weights, v).reshape(batch, tokens, features)
        y = nn.Dense(features, dtype=self.dtype)(y)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP on a [B, H, W, C] feature map."""

    num_heads: int
    window: int
    shift: int
    mlp_ratio: float
    dropout_rate: float
    attention_dropout_rate: float
    drop_path_rate: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        _, h, w, features = x.shape
        y = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype)(x)
        mask = None
        if self.shift:
            y = jnp.roll(y, (-self.shift, -self.shift), axis=(1, 2))
            mask = shifted_window_mask(h, w, self.window, self.shift)
        y = WindowAttention(
            self.num_heads,
            self.window,
            self.attention_dropout_rate,
            self.dropout_rate,
            self.dtype,
        )(window_partition(y, self.window), mask, train)
        y = window_merge(y, self.window, h, w)
        if self.shift:
            y = jnp.roll(y, (self.shift, self.shift), axis=(1, 2))
        x = x + DropPath(self.drop_path_rate)(y, deterministic=not train)
        y = MlpBlock(int(self.mlp_ratio * features), self.dropout_rate, self.dtype)(
            nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype)(x), train
        )
        return x + DropPath(self.drop_path_rate)(y, deterministic=not train)


class PatchMerging(nn.Module):
    """Concatenates each 2×2 neighbourhood (4C) and projects it to 2C: halves the resolution."""

    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = jnp.concatenate(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1
        )
        x = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype)(x)
        return nn.Dense(x.shape[-1] // 2, use_bias=False, dtype=self.dtype)(x)


class Swin(nn.Module):
    """Swin with stages of ``depths`` blocks; widths ``embed_dim·2^stage``."""

    num_classes: int
    embed_dim: int
    depths: Sequence[int]
    num_heads: Sequence[int]
    patch_size: int = 2
    window_size: int = 4
    mlp_ratio: float = 4.0
    dropout_rate: float = 0.0
    # The released code trains Swin with attention dropout 0.1.
    attention_dropout_rate: float = 0.1
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        patch = (self.patch_size, self.patch_size)
        x = nn.Conv(self.embed_dim, patch, strides=patch, dtype=self.dtype)(x.astype(self.dtype))
        x = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype)(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        drop_path_rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
        block_index = 0
        for stage, (depth, heads) in enumerate(zip(self.depths, self.num_heads, strict=True)):
            if stage > 0:
                x = PatchMerging(self.dtype)(x)
            window = min(self.window_size, *x.shape[1:3])
            if x.shape[1] % window or x.shape[2] % window:
                raise ValueError(
                    f"Swin stage {stage} sees a {x.shape[1]}x{x.shape[2]} feature map, which "
                    f"does not divide into {window}x{window} windows; use an image size whose "
                    f"maps divide (32 px for the plain and _Patch4 names, 224 px for _224) or "
                    "set model.model_params.window_size"
                )
            for block in range(depth):
                shifted = block % 2 == 1 and window < min(x.shape[1:3])
                x = SwinBlock(
                    heads,
                    window,
                    window // 2 if shifted else 0,
                    self.mlp_ratio,
                    self.dropout_rate,
                    self.attention_dropout_rate,
                    float(drop_path_rates[block_index]),
                    self.dtype,
                )(x, train)
                block_index += 1
        x = jnp.mean(nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype)(x), axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


_TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SMALL = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_PATCH4 = dict(patch_size=4, window_size=4)
_224 = dict(patch_size=4, window_size=7)

Swin_Tiny = register("Swin_Tiny")(functools.partial(Swin, **_TINY))
Swin_Small = register("Swin_Small")(functools.partial(Swin, **_SMALL))
Swin_Base = register("Swin_Base")(functools.partial(Swin, **_BASE))
Swin_Tiny_Patch4 = register("Swin_Tiny_Patch4")(functools.partial(Swin, **_TINY, **_PATCH4))
Swin_Small_Patch4 = register("Swin_Small_Patch4")(functools.partial(Swin, **_SMALL, **_PATCH4))
Swin_Base_Patch4 = register("Swin_Base_Patch4")(functools.partial(Swin, **_BASE, **_PATCH4))
Swin_Tiny_224 = register("Swin_Tiny_224")(functools.partial(Swin, **_TINY, **_224))
Swin_Small_224 = register("Swin_Small_224")(functools.partial(Swin, **_SMALL, **_224))
Swin_Base_224 = register("Swin_Base_224")(functools.partial(Swin, **_BASE, **_224))
