"""The Vision Transformer on 1-D signals (MNIST-1D): patches of 4 samples, depth 4.

The ICML 2024 study (GR with adaptive optimizers and learning-rate warmup) asks whether a
wider transformer is hurt more; width 32 and 64 are the first study's two sizes, and the
confirmatory study adds 128. The model is the image
ViT of ``gnp.models.vit``, whose patch embedding takes signals [B, L, C] as well as
images; a width-``w`` model has ``w/8`` heads of 8 and an MLP of ``4·w``.
"""

from __future__ import annotations

import functools

from gnp.models.registry import register
from gnp.models.vit import ViT

# No dropout by default (the image ViT's released default is 0.1): the study compares gradient
# regularization with and without warmups, and dropout would be a second regularizer in every
# arm. ``dropout_rate=`` / ``attention_dropout_rate=`` turn it on.
ViT1D = functools.partial(ViT, depth=4, patch_size=4, dropout_rate=0.0, attention_dropout_rate=0.0)
ViT1D_32 = register("ViT1D_32")(functools.partial(ViT1D, hidden_size=32, num_heads=4, mlp_dim=128))
ViT1D_64 = register("ViT1D_64")(functools.partial(ViT1D, hidden_size=64, num_heads=8, mlp_dim=256))
ViT1D_128 = register("ViT1D_128")(
    functools.partial(ViT1D, hidden_size=128, num_heads=16, mlp_dim=512)
)
