"""CaiT (Touvron et al. 2021): LayerScale, talking-heads attention, class-attention layers.

Patch tokens go through ``depth`` self-attention blocks; the class token joins only in the two
final class-attention blocks, which update it alone. ``patch_size=None`` picks 4×4 patches on
inputs up to 64px (as the released code uses CaiT on CIFAR) and 16×16 otherwise.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gnp.models.layers import DropPath, MlpBlock, is_small_image, patchify
from gnp.models.registry import register


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch, initialized small so deep nets train."""

    init_scale: float

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        gamma = self.param("gamma", nn.initializers.constant(self.init_scale), (x.shape[-1],))
        return x * gamma.astype(x.dtype)


def _split_heads(x: jnp.ndarray, num_heads: int) -> jnp.ndarray:
    batch, tokens, features = x.shape
    return x.reshape(batch, tokens, num_heads, features // num_heads).transpose(0, 2, 1, 3)


def _merge_heads(x: jnp.ndarray) -> jnp.ndarray:
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, tokens, heads * head_dim)


class TalkingHeadsAttention(nn.Module):
    """Self-attention whose heads are mixed by learned linear maps before and after softmax."""

    num_heads: int
    attention_dropout_rate: float
    dropout_rate: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        features = x.shape[-1]
        q, k, v = jnp.split(nn.Dense(3 * features, dtype=self.dtype)(x), 3, axis=-1)
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
        scale = (features // self.num_heads) ** -0.5
        logits = jnp.einsum("bhqd,bhkd->bqkh", q * scale, k)
        logits = nn.Dense(self.num_heads, dtype=self.dtype, name="pre_softmax_mix")(logits)
        weights = nn.softmax(logits.astype(jnp.float32), axis=2).astype(self.dtype)
        weights = nn.Dense(self.num_heads, dtype=self.dtype, name="post_softmax_mix")(weights)
        weights = nn.Dropout(self.attention_dropout_rate, deterministic=not train)(weights)
        y = _merge_heads(jnp.einsum("bqkh,bhkd->bhqd", weights, v))
        y = nn.Dense(features, dtype=self.dtype)(y)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class ClassAttention(nn.Module):
    """Attention from the class token (first token) to all tokens; returns the new class token."""

    num_heads: int
    attention_dropout_rate: float
    dropout_rate: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        features = x.shape[-1]
        q = _split_heads(nn.Dense(features, dtype=self.dtype)(x[:, :1]), self.num_heads)
        k = _split_heads(nn.Dense(features, dtype=self.dtype)(x), self.num_heads)
        v = _split_heads(nn.Dense(features, dtype=self.dtype)(x), self.num_heads)
        logits = jnp.einsum("bhqd,bhkd->bhqk", q * (features // self.num_heads) ** -0.5, k)
        weights = nn.softmax(logits.astype(jnp.float32)).astype(self.dtype)
        weights = nn.Dropout(self.attention_dropout_rate, deterministic=not train)(weights)
        y = _merge_heads(jnp.einsum("bhqk,bhkd->bhqd", weights, v))
        y = nn.Dense(features, dtype=self.dtype)(y)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class CaiTBlock(nn.Module):
    """LayerScale'd residual block: self-attention over patches, or class attention."""

    num_heads: int
    mlp_ratio: float
    init_scale: float
    dropout_rate: float
    attention_dropout_rate: float
    drop_path_rate: float
    class_attention: bool
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool, cls: jnp.ndarray | None = None) -> jnp.ndarray:
        """Updates the patch tokens ``x``, or with ``class_attention`` the class token ``cls``."""
        drop_path = lambda y: DropPath(self.drop_path_rate)(y, deterministic=not train)
        attention_cls = ClassAttention if self.class_attention else TalkingHeadsAttention
        attention = attention_cls(
            self.num_heads, self.attention_dropout_rate, self.dropout_rate, self.dtype
        )
        if self.class_attention:
            tokens = jnp.concatenate([cls, x], axis=1)
            x = cls
        else:
            tokens = x
        y = attention(nn.LayerNorm(dtype=self.dtype)(tokens), train)
        x = x + drop_path(LayerScale(self.init_scale)(y))
        y = MlpBlock(int(self.mlp_ratio * x.shape[-1]), self.dropout_rate, self.dtype)(
            nn.LayerNorm(dtype=self.dtype)(x), train
        )
        return x + drop_path(LayerScale(self.init_scale)(y))


class CaiT(nn.Module):
    """CaiT with ``depth`` self-attention blocks and ``class_depth`` class-attention blocks."""

    num_classes: int
    embed_dim: int
    depth: int
    num_heads: int
    init_scale: float = 1e-5
    class_depth: int = 2
    mlp_ratio: float = 4.0
    patch_size: int | None = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    # The same rate in every self-attention block and none in the class-attention blocks, as in
    # the paper's code.
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        patch_size = self.patch_size or (4 if is_small_image(x) else 16)
        x = patchify(x.astype(self.dtype), self.embed_dim, patch_size, self.dtype)
        # Class token and position embedding start at zero, as in jax_models' CaiT (released).
        position = self.param("position_embedding", nn.initializers.zeros, (1, *x.shape[1:]))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x + position.astype(x.dtype))
        block = functools.partial(
            CaiTBlock,
            self.num_heads,
            self.mlp_ratio,
            self.init_scale,
            self.dropout_rate,
            self.attention_dropout_rate,
            dtype=self.dtype,
        )
        for _ in range(self.depth):
            x = block(drop_path_rate=self.drop_path_rate, class_attention=False)(x, train)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, self.embed_dim))
        cls = jnp.broadcast_to(cls, (x.shape[0], 1, self.embed_dim)).astype(x.dtype)
        for _ in range(self.class_depth):
            cls = block(drop_path_rate=0.0, class_attention=True)(x, train, cls)
        x = nn.LayerNorm(dtype=self.dtype)(jnp.concatenate([cls, x], axis=1))[:, 0]
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


_XXS = dict(embed_dim=192, num_heads=4)
_XS = dict(embed_dim=288, num_heads=6)
_S = dict(embed_dim=384, num_heads=8)
# The released code initializes LayerScale at 1e-6 for the M sizes, 1e-5 for the others.
_M = dict(embed_dim=768, num_heads=16, init_scale=1e-6)

CaiT_XXS12 = register("CaiT_XXS12")(functools.partial(CaiT, depth=12, **_XXS))
CaiT_XXS24 = register("CaiT_XXS24")(functools.partial(CaiT, depth=24, **_XXS))
CaiT_XXS36 = register("CaiT_XXS36")(functools.partial(CaiT, depth=36, **_XXS))
CaiT_XS12 = register("CaiT_XS12")(functools.partial(CaiT, depth=12, **_XS))
CaiT_XS24 = register("CaiT_XS24")(functools.partial(CaiT, depth=24, **_XS))
CaiT_S12 = register("CaiT_S12")(functools.partial(CaiT, depth=12, **_S))
CaiT_S24 = register("CaiT_S24")(functools.partial(CaiT, depth=24, **_S))
CaiT_S36 = register("CaiT_S36")(functools.partial(CaiT, depth=36, **_S))
CaiT_M24 = register("CaiT_M24")(functools.partial(CaiT, depth=24, **_M))
CaiT_M36 = register("CaiT_M36")(functools.partial(CaiT, depth=36, **_M))
CaiT_M48 = register("CaiT_M48")(functools.partial(CaiT, depth=48, **_M))
