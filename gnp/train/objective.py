"""The training objective and the gradient passes a step takes of it.

``objective`` is the loss written once: the trainer differentiates it, and the analysis of a
finished run (``gnp.train.run``) measures it, so that the function whose gradient norm or
Hessian is measured is the one that was trained. ``gradient_passes`` turns it into the clean
pass ``θ ↦ (value, ∇L)`` and the perturbed pass ``θ' ↦ (L(θ'), ∇L(θ'))`` of one step, over
micro-batches when the gradient is accumulated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gnp.optim import l2_penalty
from gnp.options import GNPOptions

PyTree = Any
RNG_STREAMS = ("dropout", "drop_path", "shake")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    label_smoothing: float = 0.0
    l2_regularization: float = 0.0
    no_weight_decay_on_bn: bool = False


def supports_true_gradient(model: nn.Module) -> bool:
    """Shake-Shake/ShakeDrop models take ``true_gradient`` (the same mix forward and backward)."""
    return bool(getattr(model, "supports_true_gradient", False))


def model_variables(params: PyTree, batch_stats: PyTree) -> dict[str, PyTree]:
    """The variables ``model.apply`` takes: ``batch_stats`` only for a model that has BatchNorm
    (an empty collection would be one the model does not declare)."""
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    return variables


def objective(
    logits: jax.Array,
    targets: jax.Array,
    params: PyTree,
    loss_config: LossConfig,
    weights: jax.Array | None = None,
) -> jax.Array:
    """The training objective: the (label-smoothed) cross-entropy against one-hot ``targets``,
    a batch mean (``weights``: a weighted one, e.g. a padded batch's mask), plus the L2 term."""
    if loss_config.label_smoothing > 0:
        targets = optax.smooth_labels(targets, loss_config.label_smoothing)
    losses = optax.softmax_cross_entropy(logits, targets)
    if weights is None:
        mean = losses.mean()
    else:
        mean = jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    return mean + l2_penalty(
        params,
        loss_config.l2_regularization,
        skip_vectors=loss_config.no_weight_decay_on_bn,
    )


def make_loss_fn(
    model: nn.Module, loss_config: LossConfig
) -> Callable[..., tuple[jax.Array, tuple[PyTree, dict]]]:
    """``loss(params, batch_stats, images, labels, rngs, true_gradient)``.

    Returns ``(objective, (new_batch_stats, metrics))``: the objective is the
    (label-smoothed) cross-entropy plus the L2 term, the metrics the plain
    cross-entropy and error rate of this batch.
    """

    def loss_fn(params, batch_stats, images, labels, rngs, true_gradient=False):
        kwargs = {"true_gradient": true_gradient} if supports_true_gradient(model) else {}
        logits, updates = model.apply(
            model_variables(params, batch_stats),
            images,
            train=True,
            rngs=rngs,
            mutable=["batch_stats"],
            **kwargs,
        )
        cross_entropy = optax.softmax_cross_entropy(logits, labels).mean()
        value = objective(logits, labels, params, loss_config)
        metrics = {
            "train_loss": cross_entropy,
            "train_error_rate": jnp.mean(jnp.argmax(logits, -1) != jnp.argmax(labels, -1)),
        }
        return value, (updates.get("batch_stats", batch_stats), metrics)

    return loss_fn


def _micro_batches(tree: PyTree, count: int) -> PyTree:
    """[B, ...] → [count, B/count, ...]."""
    return jax.tree.map(lambda x: x.reshape(count, x.shape[0] // count, *x.shape[1:]), tree)


def _tree_mean(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), tree)


def rng_streams(key: jax.Array) -> dict[str, jax.Array]:
    """One key per random stream a model may draw from (dropout, drop-path, shake noise)."""
    return {name: jax.random.fold_in(key, i) for i, name in enumerate(RNG_STREAMS)}


def step_rngs(rng: jax.Array, index: jax.Array | int) -> dict[str, jax.Array]:
    """The random streams of micro-batch ``index``: the same draws in both passes of a step."""
    return rng_streams(jax.random.fold_in(rng, index))


def _leading_rows(tree: PyTree, fraction: float, axis: int = 0) -> PyTree:
    """The first ``fraction`` of the rows along ``axis`` (at least one): a batch's rows are
    shuffled, so these are a random subset of the batch."""
    return jax.tree.map(
        lambda x: jax.lax.slice_in_dim(x, 0, max(1, round(fraction * x.shape[axis])), axis=axis),
        tree,
    )


def gradient_passes(
    loss_fn: Callable[..., Any],
    batch_stats: PyTree,
    images: jax.Array,
    labels: jax.Array,
    rng: jax.Array,
    options: GNPOptions,
    *,
    accumulation_steps: int,
    true_gradient_first: bool,
) -> tuple[Callable, Callable]:
    """The clean pass ``θ ↦ (value, ∇L)`` and the perturbed pass ``θ' ↦ (L(θ'), ∇L(θ'))``.

    With ``accumulation_steps`` > 1 each pass walks the micro-batches in a scan,
    so only one micro-batch's activations live at a time, and returns the mean
    gradient: exactly the whole batch's gradient (for models without
    BatchNorm; with it, each micro-batch normalizes by its own statistics and
    updates the running statistics in turn, as PyTorch accumulation does).
    Micro-batch i uses the same random draws in both passes. The perturbed pass sees the
    first ``options.perturbed_fraction`` of each (micro-)batch's rows; its loss (the
    objective, a mean over the micro-batches as the clean value's) is for the sharpness
    diagnostics.
    """
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    fraction = options.perturbed_fraction
    if accumulation_steps == 1:
        rngs = step_rngs(rng, 0)
        subset = _leading_rows((images, labels), fraction)

        def clean(params):
            return value_and_grad(params, batch_stats, images, labels, rngs, true_gradient_first)

        def perturbed(params):
            (objective, _), grads = value_and_grad(params, batch_stats, *subset, rngs, False)
            return objective, grads

        return clean, perturbed

    micro = _micro_batches((images, labels), accumulation_steps)
    indices = jnp.arange(accumulation_steps)

    def clean(params):
        def body(stats, xs):
            index, (x, y) = xs
            (objective, (stats, metrics)), grads = value_and_grad(
                params, stats, x, y, step_rngs(rng, index), true_gradient_first
            )
            return stats, (objective, metrics, grads)

        stats, (objectives, metrics, grads) = jax.lax.scan(body, batch_stats, (indices, micro))
        return (jnp.mean(objectives), (stats, _tree_mean(metrics))), _tree_mean(grads)

    def perturbed(params):
        def body(total, xs):
            index, rows = xs
            (objective, _), grads = value_and_grad(
                params, batch_stats, *rows, step_rngs(rng, index), False
            )
            return jax.tree.map(jnp.add, total, grads), objective

        zeros = jax.tree.map(jnp.zeros_like, params)
        subsets = _leading_rows(micro, fraction, axis=1)
        total, objectives = jax.lax.scan(body, zeros, (indices, subsets))
        return jnp.mean(objectives), jax.tree.map(lambda g: g / accumulation_steps, total)

    return clean, perturbed
