"""The gradient norm of the whole data set's loss, ‖∇L(θ)‖, and its per-batch spread.

This is the quantity the GNP papers plot. It is *not* the mean of the per-batch
gradient norms: by the triangle inequality that mean is larger, and it grows
as batches shrink because each batch gradient carries sampling noise. The
per-batch norms are returned too, because their spread is that noise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import jax
import numpy as np

from gnp.analysis.data import LossFn, PyTree, Weights, weighted_batches
from gnp.gradient import global_norm


@dataclasses.dataclass(frozen=True)
class GradientNormResult:
    """``norm`` = ‖∇L(θ)‖ of the data-set loss ``loss``; ``gradient`` is ∇L(θ) itself.

    ``batch_norms[i]`` is ‖∇L_b(θ)‖ of the i-th non-empty batch, whose weight
    (real examples) is ``batch_weights[i]``.
    """

    norm: float
    loss: float
    gradient: PyTree
    batch_norms: np.ndarray
    batch_weights: np.ndarray

    def summary(self) -> dict[str, float]:
        """Plain floats for a metrics line (the gradient itself is left out)."""
        return {
            "gradient_norm": self.norm,
            "loss": self.loss,
            "batch_gradient_norm_mean": float(np.mean(self.batch_norms)),
            "batch_gradient_norm_std": float(np.std(self.batch_norms)),
            "batch_gradient_norm_min": float(np.min(self.batch_norms)),
            "batch_gradient_norm_max": float(np.max(self.batch_norms)),
        }


def full_gradient_norm(
    loss_fn: LossFn,
    params: PyTree,
    batches: Iterable[PyTree],
    *,
    weights: Weights = None,
) -> GradientNormResult:
    """‖∇L(θ)‖ of the loss over all ``batches``, with the per-batch gradient norms.

    Args:
      loss_fn: ``loss_fn(params, batch)``, the mean loss over the batch's real
        examples (a masked mean for a padded batch). Evaluate it the way you
        want it measured, e.g. BatchNorm in inference mode and no dropout.
      params: any pytree of arrays.
      batches: any iterable of batch pytrees; passed over once.
      weights: real examples per batch: a sequence with one number per batch,
        a function of the batch, or None for ``batch["mask"].sum()`` when the
        batch has a mask and its leading size otherwise.
    """
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    loss_sum, grad_sum, weight_sum = 0.0, None, 0.0
    batch_norms, batch_weights = [], []
    for batch, weight in weighted_batches(batches, weights):
        loss, grads = value_and_grad(params, batch)
        batch_norms.append(float(global_norm(grads)))
        batch_weights.append(weight)
        loss_sum += weight * float(loss)
        scaled = jax.tree.map(lambda g, w=weight: w * g, grads)
        grad_sum = (
            scaled if grad_sum is None else jax.tree.map(lambda a, b: a + b, grad_sum, scaled)
        )
        weight_sum += weight
    if grad_sum is None:
        raise ValueError("no batch with a positive weight: the data set is empty")
    gradient = jax.tree.map(lambda g: g / weight_sum, grad_sum)
    return GradientNormResult(
        norm=float(global_norm(gradient)),
        loss=loss_sum / weight_sum,
        gradient=gradient,
        batch_norms=np.asarray(batch_norms),
        batch_weights=np.asarray(batch_weights),
    )
