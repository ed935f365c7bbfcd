"""Pieces several families share: the CNNs' BatchNorm, Shake-Shake and ShakeDrop mixing,
stochastic depth, and the transformers' patch embedding and MLP.

The shake functions draw one coefficient per example. Unless ``true_gradient`` is set, the
backward pass sees an independent coefficient (the "shake" trick of Gastaldi 2017 and
Yamada et al. 2018, written with ``jax.lax.stop_gradient``); GNP's clean pass sets it so the
gradient it perturbs along is the true gradient of the function evaluated forward.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Inputs up to this size are treated as CIFAR-like (small patches, no ImageNet stem).
SMALL_IMAGE_MAX_SIZE = 64

# He initialization over fan-out, as the reference ResNet, WRN and PyramidNet code uses.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(train: bool, dtype: Any, axis_name: str | None = None) -> Callable[[], nn.BatchNorm]:
    """The CNN families' BatchNorm (momentum 0.9, as released): batch statistics when ``train``,
    the running ones otherwise.

    ``axis_name`` (a model's ``batch_norm_axis_name``, see ``synchronized_batch_norm``): the
    batch statistics are averaged over that mapped axis, i.e. taken over the whole global batch
    across devices and hosts (synchronized BatchNorm); ``None``: over this device's batch.
    """
    return functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=0.9,
        dtype=dtype,
        axis_name=axis_name,
    )


BATCH_NORM_AXIS_FIELD = "batch_norm_axis_name"


def synchronized_batch_norm(module: nn.Module, axis_name: str) -> nn.Module:
    """``module`` with every BatchNorm's batch statistics taken over the mapped axis
    ``axis_name`` (the trainer's ``model.sync_batch_norm``: inside ``shard_map`` over ``data``).

    A family with BatchNorm has the field ``batch_norm_axis_name`` and builds its layers with
    ``batch_norm``; a module without the field has no BatchNorm and comes back unchanged.
    Applied in train mode, the result needs ``axis_name`` bound (``shard_map``, ``vmap``).
    """
    if BATCH_NORM_AXIS_FIELD not in {field.name for field in dataclasses.fields(module)}:
        return module
    return module.clone(**{BATCH_NORM_AXIS_FIELD: axis_name})


def classifier_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """U[−1/√n, 1/√n] with n the layer's *output* width, the released CNNs' Dense initializer.

    The released ``dense_layer_init_fn`` (from google-research/sam, after AutoAugment) scales by
    the number of outputs, not the fan-in; SAM's authors report about 0.5 % lower CIFAR-100
    error than with the default initializer, so the CNN families keep it.
    """
    scale = 1.0 / shape[-1] ** 0.5
    return jax.random.uniform(key, shape, dtype, minval=-scale, maxval=scale)


def padded_shortcut(x: jnp.ndarray, features: int, strides: int) -> jnp.ndarray:
    """Parameter-free shortcut: ``strides``×``strides`` average pooling, then zero channels.

    The released WRN and PyramidNet shortcut: it adds no parameters where the width changes.
    """
    if strides > 1:
        x = nn.avg_pool(x, (strides, strides), strides=(strides, strides))
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))


def is_small_image(images: jnp.ndarray) -> bool:
    """True for CIFAR-sized inputs (height <= 64), which get the small-image variant."""
    return images.shape[1] <= SMALL_IMAGE_MAX_SIZE


def uses_cifar_variant(num_classes: int, images: jnp.ndarray) -> bool:
    """CIFAR variant (ResNet's small stem, ViT's 4×4 patches) or ImageNet's, as released.

    The release decides by the number of classes: 10 or 100 means CIFAR, 1000 ImageNet. For any
    other count it builds a ResNet with no stem at all and refuses a ViT; here the input size
    decides those (CIFAR's up to 64 px).
    """
    if num_classes in (10, 100):
        return True
    if num_classes == 1000:
        return False
    return is_small_image(images)


def _mix_with_shaken_gradient(
    forward: jnp.ndarray, backward: jnp.ndarray, true_gradient: bool
) -> jnp.ndarray:
    """Value of ``forward``; gradient of ``backward`` unless ``true_gradient``."""
    if true_gradient:
        return forward
    # forward + (an exact zero), not backward + (forward − backward), which would round.
    return jax.lax.stop_gradient(forward) + (backward - jax.lax.stop_gradient(backward))


def _per_example_uniform(key: jax.Array, x: jnp.ndarray, low: float, high: float) -> jnp.ndarray:
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return jax.random.uniform(key, shape, minval=low, maxval=high).astype(x.dtype)


def shake_shake(
    a: jnp.ndarray, b: jnp.ndarray, *, key: jax.Array | None, train: bool, true_gradient: bool
) -> jnp.ndarray:
    """Shake-Shake mixing of two branches: ``g·a + (1−g)·b``, g ~ U[0, 1]; ``(a+b)/2`` in eval."""
    if not train:
        return 0.5 * (a + b)
    forward_key, backward_key = jax.random.split(key)
    gate_forward = _per_example_uniform(forward_key, a, 0.0, 1.0)
    gate_backward = _per_example_uniform(backward_key, a, 0.0, 1.0)
    forward = gate_forward * a + (1 - gate_forward) * b
    backward = gate_backward * a + (1 - gate_backward) * b
    return _mix_with_shaken_gradient(forward, backward, true_gradient)


def shake_drop(
    x: jnp.ndarray,
    *,
    survival: float,
    key: jax.Array | None,
    train: bool,
    true_gradient: bool,
    alpha_range: tuple[float, float] = (-1.0, 1.0),
    beta_range: tuple[float, float] = (0.0, 1.0),
) -> jnp.ndarray:
    """ShakeDrop: ``(b + α − bα)·x`` with b ~ Bernoulli(survival); its expectation in eval.

    The backward pass uses β in place of α (unless ``true_gradient``).
    """
    expected_alpha = 0.5 * (alpha_range[0] + alpha_range[1])
    if not train:
        return (survival + expected_alpha - survival * expected_alpha) * x
    bernoulli_key, alpha_key, beta_key = jax.random.split(key, 3)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    gate = jax.random.bernoulli(bernoulli_key, survival, shape).astype(x.dtype)
    alpha = _per_example_uniform(alpha_key, x, *alpha_range)
    beta = _per_example_uniform(beta_key, x, *beta_range)
    forward = (gate + alpha - gate * alpha) * x
    backward = (gate + beta - gate * beta) * x
    return _mix_with_shaken_gradient(forward, backward, true_gradient)


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per example, rescaling the survivors."""

    rate: float

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool) -> jnp.ndarray:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("drop_path"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class MlpBlock(nn.Module):
    """The transformers' feed-forward block: Dense-GELU-dropout-Dense-dropout.

    Tanh-approximate GELU and Xavier-uniform kernels, as every released transformer's MLP (the
    ViT's own, and jax_models' ``TransformerMLP`` behind the released Swin and CaiT); the ViT
    starts its biases N(0, σ = 1e-6), the others at zero.
    """

    hidden_size: int
    dropout_rate: float
    dtype: Any
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        dense = functools.partial(
            nn.Dense,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=self.bias_init,
            dtype=self.dtype,
        )
        features = x.shape[-1]
        x = nn.gelu(dense(self.hidden_size)(x), approximate=True)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = dense(features)(x)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(x)


def patchify(x: jnp.ndarray, features: int, patch_size: int, dtype: Any) -> jnp.ndarray:
    """Non-overlapping patches of images [B, H, W, C] or signals [B, L, C] embedded by a
    strided convolution, as tokens [B, N, features]."""
    kernel = (patch_size,) * (x.ndim - 2)
    x = nn.Conv(features, kernel, strides=patch_size, dtype=dtype)(x)
    return x.reshape((x.shape[0], -1, features))
