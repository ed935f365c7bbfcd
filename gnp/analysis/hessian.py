"""The Hessian spectrum of the data-set loss through Hessian-vector products only.

The Hessian of a network has as many rows as parameters, so it is never formed:
every tool here needs only ``v ↦ H v``, one forward-over-reverse pass
(``jax.jvp`` of ``jax.grad``) per batch, summed over the data set with the same
weights as the loss. Vectors are flat (``jax.flatten_util.ravel_pytree``) so
that Lanczos can keep a basis as one matrix.

- ``top_eigenvalues``: Lanczos with full reorthogonalization; the k largest
  (algebraic) eigenvalues, i.e. the sharpest curvature directions.
- ``power_iteration``: the eigenvalue of largest magnitude, the cheap check.
- ``hessian_trace``: Hutchinson's estimator ``tr H = E[zᵀHz]`` with Rademacher z,
  the total curvature (the sum of all eigenvalues).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gnp.analysis.data import LossFn, PyTree, Weights, data_mean, require_reiterable

Matvec = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class HessianOperator:
    """A symmetric linear map on flat vectors of length ``size``.

    Built by ``hessian_operator`` from a loss; wrap any other symmetric matvec
    (a Gauss-Newton product, a test matrix) in it to reuse the solvers.
    ``unravel`` turns a flat vector back into a parameter pytree.
    """

    matvec: Matvec
    size: int
    dtype: jnp.dtype
    unravel: Callable[[jax.Array], PyTree] = lambda flat: flat


@dataclasses.dataclass(frozen=True)
class Eigenpairs:
    """``eigenvalues`` (descending) and the matching unit ``eigenvectors`` as rows (flat)."""

    eigenvalues: np.ndarray
    eigenvectors: jax.Array
    num_iterations: int


@dataclasses.dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate ``mean`` of tr H, its ``standard_error``, and the per-probe values."""

    mean: float
    standard_error: float
    samples: np.ndarray


def hessian_operator(
    loss_fn: LossFn,
    params: PyTree,
    batches: Iterable[PyTree],
    *,
    weights: Weights = None,
) -> HessianOperator:
    """``v ↦ ∇²L(θ) v`` for the loss over all ``batches`` (weighted as in ``gnp.analysis.data``).

    Args:
      loss_fn: ``loss_fn(params, batch)``, the mean loss over the batch's real
        examples, in the mode you want measured (BatchNorm in inference mode
        gives the Hessian of a fixed function; batch statistics add their own
        curvature).
      params: the point θ, any pytree.
      batches: re-iterable (a list, or a loader whose ``__iter__`` starts over):
        every product passes over all of it.
      weights: as in ``full_gradient_norm``.
    """
    require_reiterable(batches)
    flat_params, unravel = ravel_pytree(params)
    # Lanczos in bfloat16 loses orthogonality at once: the solvers work in float32 or wider.
    dtype = jnp.promote_types(flat_params.dtype, jnp.float32)

    # θ is an argument, not a closed-over constant, which a network's size makes slow to compile.
    @jax.jit
    def batch_hvp(point: jax.Array, vector: jax.Array, batch: PyTree) -> jax.Array:
        gradient = jax.grad(lambda flat: loss_fn(unravel(flat), batch))
        tangent = vector.astype(point.dtype)
        return jax.jvp(gradient, (point,), (tangent,))[1].astype(dtype)

    def matvec(vector: jax.Array) -> jax.Array:
        return data_mean(functools.partial(batch_hvp, flat_params, vector), batches, weights)

    return HessianOperator(matvec, flat_params.size, dtype, unravel)


def _unit_vector(key: jax.Array, operator: HessianOperator) -> jax.Array:
    vector = jax.random.normal(key, (operator.size,), operator.dtype)
    return vector / jnp.linalg.norm(vector)


# Compiled once per shape: eager sampling costs milliseconds a probe, more than a small HVP.
_rademacher = jax.jit(jax.random.rademacher, static_argnums=(1, 2))


@jax.jit
def _orthogonal_part(
    basis: jax.Array, vector: jax.Array, index: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``vector`` minus its projection on ``basis[0..index]``, and the norm of what is left.

    Classical Gram-Schmidt done twice ("twice is enough") against the whole
    basis, not only the last two vectors: without it rounding reintroduces
    converged directions and the top eigenvalues come back as spurious copies.
    """
    previous = jnp.arange(basis.shape[0]) <= index
    for _ in range(2):
        vector = vector - basis.T @ jnp.where(previous, basis @ vector, 0)
    return vector, jnp.linalg.norm(vector)


@functools.partial(jax.jit, donate_argnums=0)
def _store(basis: jax.Array, vector: jax.Array, norm: jax.Array, index: jax.Array) -> jax.Array:
    return basis.at[index].set(vector / norm)


def top_eigenvalues(
    operator: HessianOperator,
    k: int = 1,
    *,
    key: jax.Array,
    num_iterations: int | None = None,
) -> Eigenpairs:
    """The k largest eigenvalues and eigenvectors by Lanczos with full reorthogonalization.

    The basis holds ``num_iterations`` vectors of the parameter count (memory:
    ``num_iterations × size`` numbers) and costs ``num_iterations`` products.
    The default ``3k + 20`` converges the top k of a typical network Hessian,
    whose top eigenvalues stand apart from a bulk near zero; raise it when the
    top ones are close together. Deterministic for a given ``key``.

    When the Krylov space closes (an invariant subspace: its Ritz values are
    exact), Lanczos restarts from a random vector orthogonal to it, so small or
    degenerate operators still give k values; an eigenvalue repeated exactly is
    otherwise found once, as with any single-vector Krylov method.
    """
    if not 1 <= k <= operator.size:
        raise ValueError(f"k must be in [1, {operator.size}], got {k}")
    steps = min(operator.size, 3 * k + 20 if num_iterations is None else num_iterations)
    if steps < k:
        raise ValueError(f"num_iterations ({steps}) must be at least k ({k})")
    start_key, restart_key = jax.random.split(key)
    # One spare row: the step after the last writes a vector that is never used.
    basis = jnp.zeros((steps + 1, operator.size), operator.dtype)
    basis = basis.at[0].set(_unit_vector(start_key, operator))
    breakdown = 1e3 * np.finfo(operator.dtype).eps
    alphas, betas, scale = [], [], 0.0
    for index in range(steps):
        position = jnp.asarray(index)
        product = operator.matvec(basis[index])
        alphas.append(float(jnp.vdot(basis[index], product)))
        residual, beta = _orthogonal_part(basis, product, position)
        scale = max(scale, abs(alphas[-1]), float(beta))
        if float(beta) <= breakdown * scale and index + 1 < steps:
            start = _unit_vector(jax.random.fold_in(restart_key, index), operator)
            residual, norm = _orthogonal_part(basis, start, position)
            basis = _store(basis, residual, norm, position + 1)
            betas.append(0.0)
        else:
            basis = _store(basis, residual, beta, position + 1)
            betas.append(float(beta))
    tridiagonal = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
    ritz_values, ritz_vectors = np.linalg.eigh(tridiagonal)
    order = np.argsort(ritz_values)[::-1][:k]
    coefficients = jnp.asarray(ritz_vectors[:, order].T, operator.dtype)
    return Eigenpairs(ritz_values[order], coefficients @ basis[:steps], steps)


def power_iteration(
    operator: HessianOperator,
    *,
    key: jax.Array,
    num_iterations: int = 100,
    tolerance: float = 1e-6,
) -> Eigenpairs:
    """The eigenvalue of largest magnitude; stops once its relative change is below ``tolerance``.

    Near a minimum this is the top eigenvalue; where negative curvature is
    larger in magnitude it is that one, with its sign (Lanczos gives both).
    Each iteration costs one product; the error shrinks like ``(λ₂/λ₁)^(2i)``.
    """
    vector = _unit_vector(key, operator)
    eigenvalue, iterations, converged = np.inf, 0, False
    while iterations < num_iterations and not converged:
        product = operator.matvec(vector)
        iterations += 1
        previous, eigenvalue = eigenvalue, float(jnp.vdot(vector, product))
        norm = float(jnp.linalg.norm(product))
        if norm == 0.0:  # H v = 0: v is an eigenvector of eigenvalue 0.
            break
        vector = product / norm
        converged = abs(eigenvalue - previous) <= tolerance * abs(eigenvalue)
    return Eigenpairs(np.asarray([eigenvalue]), vector[None], iterations)


def hessian_trace(
    operator: HessianOperator,
    *,
    key: jax.Array,
    num_probes: int = 100,
) -> TraceEstimate:
    """Hutchinson's estimate of tr H from ``num_probes`` Rademacher probes z (``E[zzᵀ] = I``).

    Rademacher probes have the least variance of the unbiased choices:
    ``Var[zᵀHz] = 2 Σ_{i≠j} H_ij²``. The standard error is the sample standard
    deviation over ``√num_probes``.
    """
    if num_probes < 2:
        raise ValueError(f"num_probes must be at least 2 for a standard error, got {num_probes}")
    samples = []
    for probe_key in jax.random.split(key, num_probes):
        probe = _rademacher(probe_key, (operator.size,), operator.dtype)
        samples.append(float(jnp.vdot(probe, operator.matvec(probe))))
    values = np.asarray(samples)
    return TraceEstimate(
        mean=float(values.mean()),
        standard_error=float(values.std(ddof=1) / np.sqrt(num_probes)),
        samples=values,
    )
