"""Slices of the data-set loss along directions (see ``directions``) and between solutions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gnp.analysis.data import LossFn, PyTree, Weights, data_mean, require_reiterable


def _combine(params: PyTree, directions: Sequence[PyTree], coefficients: jax.Array) -> PyTree:
    """θ + Σ_i c_i d_i, computed in float32 or wider and cast back to θ's dtypes."""

    def leaf(p: jax.Array, *ds: jax.Array) -> jax.Array:
        dtype = jnp.promote_types(p.dtype, jnp.float32)
        moved = p.astype(dtype) + sum(
            c * d.astype(dtype) for c, d in zip(coefficients, ds, strict=True)
        )
        return moved.astype(p.dtype)

    return jax.tree.map(leaf, params, *directions)


def _loss_on_grid(
    loss_fn: LossFn,
    params: PyTree,
    directions: Sequence[PyTree],
    grid: np.ndarray,
    batches: Iterable[PyTree],
    weights: Weights,
) -> np.ndarray:
    """The data-set loss at ``θ + Σ_i grid[n, i]·d_i`` for each row n of ``grid``.

    θ and the directions are arguments of the compiled function, not closed-over
    constants, which a network's size would make slow to compile.
    """
    require_reiterable(batches)

    @jax.jit
    def loss_at(
        params: PyTree, directions: Sequence[PyTree], coefficients: jax.Array, batch: PyTree
    ) -> jax.Array:
        return loss_fn(_combine(params, directions, coefficients), batch)

    return np.asarray(
        [
            float(data_mean(lambda b, c=row: loss_at(params, directions, c, b), batches, weights))
            for row in grid
        ]
    )


def loss_slice_1d(
    loss_fn: LossFn,
    params: PyTree,
    direction: PyTree,
    batches: Iterable[PyTree],
    *,
    coordinates: Sequence[float],
    weights: Weights = None,
) -> np.ndarray:
    """``L(θ + t·d)`` for each ``t`` in ``coordinates``, over the whole data set.

    ``loss_fn``, ``batches`` (re-iterable) and ``weights`` are as in
    ``hessian_operator``; ``direction`` has θ's structure.
    """
    grid = np.asarray(coordinates, np.float64)[:, None]
    return _loss_on_grid(loss_fn, params, [direction], grid, batches, weights)


def loss_slice_2d(
    loss_fn: LossFn,
    params: PyTree,
    directions: tuple[PyTree, PyTree],
    batches: Iterable[PyTree],
    *,
    coordinates_x: Sequence[float],
    coordinates_y: Sequence[float],
    weights: Weights = None,
) -> np.ndarray:
    """``values[i, j] = L(θ + x_i·d₁ + y_j·d₂)``, shape ``(len(x), len(y))``.

    Two independent filter-normalized directions are nearly orthogonal in high
    dimension, so the plane is an undistorted view.
    """
    xs, ys = np.meshgrid(np.asarray(coordinates_x), np.asarray(coordinates_y), indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    values = _loss_on_grid(loss_fn, params, list(directions), grid, batches, weights)
    return values.reshape(xs.shape)


def linear_interpolation(
    loss_fn: LossFn,
    params_a: PyTree,
    params_b: PyTree,
    batches: Iterable[PyTree],
    *,
    coordinates: Sequence[float],
    weights: Weights = None,
    at_point: Callable[[PyTree], PyTree] | None = None,
) -> np.ndarray:
    """``L((1 − t)·θa + t·θb)`` for each ``t``: 0 is θa, 1 is θb, outside [0, 1] extrapolates.

    The 1-D view of Goodfellow et al. 2015, used to compare the solutions of
    two runs (e.g. SGD and GNP) and the barrier between them. ``at_point``, if
    given, maps each point before its loss is measured: e.g. to re-estimate the
    BatchNorm statistics of interpolated variables (``recompute_batch_stats``).
    """
    difference = jax.tree.map(lambda a, b: jnp.asarray(b) - jnp.asarray(a), params_a, params_b)
    if at_point is None:
        return loss_slice_1d(
            loss_fn, params_a, difference, batches, coordinates=coordinates, weights=weights
        )
    require_reiterable(batches)
    loss, combine = jax.jit(loss_fn), jax.jit(_combine)
    values = []
    for t in coordinates:
        point = at_point(combine(params_a, [difference], jnp.asarray([t])))
        values.append(float(data_mean(lambda b, p=point: loss(p, b), batches, weights)))
    return np.asarray(values)
