"""BatchNorm running statistics re-estimated for given weights, on a few training batches.

A network's running statistics belong to its weights: at a point between two
solutions (or any point that training never visited) the saved statistics of
either end, or a blend of them, describe other activations, and the loss
measured with them says more about that mismatch than about the weights. The
standard fix (Izmailov et al. 2018, SWA's ``bn_update``; Garipov et al. 2018)
re-estimates the statistics at the point from training batches in train mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp

from gnp.analysis.data import PyTree

# ``update(variables, batch)``: the ``batch_stats`` a train-mode pass leaves behind, e.g.
# ``model.apply(variables, batch["image"], train=True, mutable=["batch_stats"])[1]["batch_stats"]``.
BatchStatsUpdate = Callable[[PyTree, PyTree], PyTree]


def recompute_batch_stats(
    update: BatchStatsUpdate, variables: PyTree, batches: Iterable[PyTree]
) -> PyTree:
    """Each BatchNorm's mean and variance at ``variables["params"]``, averaged over ``batches``.

    Flax's BatchNorm keeps ``m·old + (1 − m)·batch`` for its momentum m. One
    pass from all-zero statistics gives ``(1 − m)·batch`` and one from all-ones
    ``m + (1 − m)·batch``; together they give the batch's own statistics
    whatever m each layer uses. The batches count equally (training batches
    are full).
    """
    stats = variables["batch_stats"]
    zeros = jax.tree.map(jnp.zeros_like, stats)
    ones = jax.tree.map(jnp.ones_like, stats)

    @jax.jit
    def batch_statistics(params: PyTree, batch: PyTree) -> PyTree:
        from_zeros = update({"params": params, "batch_stats": zeros}, batch)
        from_ones = update({"params": params, "batch_stats": ones}, batch)
        return jax.tree.map(lambda z, o: z / (1 - (o - z)), from_zeros, from_ones)

    total, count = None, 0
    for batch in batches:
        estimate = batch_statistics(variables["params"], batch)
        total = estimate if total is None else jax.tree.map(jnp.add, total, estimate)
        count += 1
    if total is None:
        raise ValueError("no batch to re-estimate the BatchNorm statistics on")
    return jax.tree.map(lambda x: x / count, total)
