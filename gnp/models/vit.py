"""Vision Transformer (Dosovitskiy et al. 2021): class token, learned position embedding.

As released (after google-research/vision_transformer): dropout 0.1 and attention dropout 0.1,
Xavier-uniform kernels in attention and MLP, MLP biases N(0, σ = 10⁻⁶), tanh-approximate GELU
and a zero-initialized head. Stochastic depth (``drop_path_rate``) is ours and off by default.

``patch_size=None`` picks, as the release does, 4×4 patches for 10 or 100 classes (16×16
patches would leave a 32 px CIFAR image four tokens) and 16×16 for 1000; other class counts go
by input size (see ``layers.uses_cifar_variant``).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gnp.models.layers import DropPath, MlpBlock, patchify, uses_cifar_variant
from gnp.models.registry import register


class EncoderBlock(nn.Module):
    """Pre-norm self-attention and MLP, each residual with dropout and stochastic depth."""

    num_heads: int
    mlp_dim: int
    dropout_rate: float
    attention_dropout_rate: float
    drop_path_rate: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            kernel_init=nn.initializers.xavier_uniform(),
            # One dropout mask per head and query, as released (not one broadcast over heads).
            broadcast_dropout=False,
            dropout_rate=self.attention_dropout_rate,
            deterministic=not train,
            dtype=self.dtype,
        )(y, y)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        x = x + DropPath(self.drop_path_rate)(y, deterministic=not train)
        y = MlpBlock(
            self.mlp_dim,
            self.dropout_rate,
            self.dtype,
            bias_init=nn.initializers.normal(stddev=1e-6),
        )(nn.LayerNorm(dtype=self.dtype)(x), train)
        return x + DropPath(self.drop_path_rate)(y, deterministic=not train)


class ViT(nn.Module):
    """ViT with ``depth`` encoder blocks; stochastic depth grows linearly to ``drop_path_rate``."""

    num_classes: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int | None = None
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        patch_size = self.patch_size or (4 if uses_cifar_variant(self.num_classes, x) else 16)
        x = patchify(x.astype(self.dtype), self.hidden_size, patch_size, self.dtype)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, self.hidden_size))
        x = jnp.concatenate(
            [jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[-1])).astype(x.dtype), x], axis=1
        )
        position = self.param("position_embedding", nn.initializers.normal(0.02), (1, *x.shape[1:]))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x + position.astype(x.dtype))
        for layer in range(self.depth):
            x = EncoderBlock(
                self.num_heads,
                self.mlp_dim,
                self.dropout_rate,
                self.attention_dropout_rate,
                self.drop_path_rate * layer / max(self.depth - 1, 1),
                self.dtype,
            )(x, train)
        x = nn.LayerNorm(dtype=self.dtype)(x)[:, 0]
        head = nn.Dense(
            self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype, name="head"
        )
        return head(x).astype(jnp.float32)


ViT_TI16 = register("ViT_TI16")(
    functools.partial(ViT, hidden_size=192, depth=12, num_heads=3, mlp_dim=768)
)
ViT_S16 = register("ViT_S16")(
    functools.partial(ViT, hidden_size=384, depth=12, num_heads=6, mlp_dim=1536)
)
ViT_B16 = register("ViT_B16")(
    functools.partial(ViT, hidden_size=768, depth=12, num_heads=12, mlp_dim=3072)
)
ViT_L16 = register("ViT_L16")(
    functools.partial(ViT, hidden_size=1024, depth=24, num_heads=16, mlp_dim=4096)
)
# The release also registers its general class (its sizes in ``transformer``/``patches``
# ConfigDicts there; plain fields here: hidden_size, depth, num_heads, mlp_dim, patch_size).
register("ViTBase")(ViT)
