"""Averages over a whole data set given as batches, the common ground of every analysis tool.

The tools measure the loss of the *data set*, ``L(θ) = Σ_b w_b L_b(θ) / Σ_b w_b``,
where ``L_b`` is the user's loss on batch ``b`` (a mean over that batch's real
examples) and ``w_b`` is how many real examples the batch holds. Weighting by
``w_b`` makes unequal batches and a padded last batch give exactly the loss of
the concatenated data set, which a plain mean over batches does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]
Weights = Sequence[float] | Callable[[PyTree], float] | None


def default_weight(batch: PyTree) -> float:
    """Real examples in a batch: the sum of ``batch["mask"]`` if present, else the leading size.

    The mask is the evaluation pipeline's convention for a padded last batch.
    """
    if isinstance(batch, Mapping) and "mask" in batch:
        return float(np.sum(np.asarray(batch["mask"])))
    leaves = jax.tree.leaves(batch)
    if not leaves or np.ndim(leaves[0]) == 0:
        raise ValueError("cannot infer a batch size from a batch without arrays; pass weights=")
    return float(np.shape(leaves[0])[0])


def weighted_batches(
    batches: Iterable[PyTree], weights: Weights = None
) -> Iterator[tuple[Any, float]]:
    """Yields ``(batch, w_b)``, skipping empty batches (their masked mean is 0/0)."""
    if weights is None or callable(weights):
        weight_of = default_weight if weights is None else weights
        pairs: Iterable[tuple[Any, float]] = ((b, weight_of(b)) for b in batches)
    else:
        pairs = zip(batches, weights, strict=True)
    for batch, weight in pairs:
        if weight < 0:
            raise ValueError(f"batch weights must be non-negative, got {weight}")
        if weight > 0:
            yield batch, float(weight)


def require_reiterable(batches: Iterable[PyTree]) -> None:
    """The Hessian and landscape tools pass over the data many times; a generator runs dry."""
    if iter(batches) is batches:
        raise TypeError(
            "batches must be re-iterable (a list, a tuple, or an object whose __iter__ starts "
            "over), not a one-shot iterator: this tool passes over the data many times"
        )


def data_mean(
    fn: Callable[[PyTree], PyTree], batches: Iterable[PyTree], weights: Weights = None
) -> PyTree:
    """``Σ_b w_b fn(b) / Σ_b w_b``: ``fn`` of the whole data set when it is linear in the data."""
    total, weight_sum = None, 0.0
    for batch, weight in weighted_batches(batches, weights):
        term = jax.tree.map(lambda x, w=weight: w * x, fn(batch))
        total = term if total is None else jax.tree.map(lambda a, b: a + b, total, term)
        weight_sum += weight
    if total is None:
        raise ValueError("no batch with a positive weight: the data set is empty")
    return jax.tree.map(lambda x: x / weight_sum, total)


def mean_loss(
    loss_fn: LossFn, params: PyTree, batches: Iterable[PyTree], weights: Weights = None
) -> float:
    """The data-set loss ``L(θ)`` (see the module docstring)."""
    loss = jax.jit(loss_fn)
    return float(data_mean(lambda batch: loss(params, batch), batches, weights))
