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
- ``trace_difference``: tr H_a − tr H_b of two estimates that used the same
  probes, with the standard error of the paired differences.

Every eigenpair comes with its residual ``‖H v − λ v‖``: for a symmetric H some
eigenvalue lies within that distance of λ, so it says how far to trust each
number, and ``converged`` flags the pairs whose residual is small.
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
# A residual below this fraction of ‖H‖ puts λ within 0.1 % of ‖H‖ of an eigenvalue, far closer
# once it is isolated; float32 products reach about 1e-6 of ‖H‖.
DEFAULT_TOLERANCE = 1e-3


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
    """``eigenvalues`` (descending) and the matching unit ``eigenvectors`` as rows (flat).

    ``residual_norms[i]`` is ``‖H v_i − λ_i v_i‖``, measured with one more product
    per pair: an eigenvalue of H lies within it of ``λ_i`` (and within
    ``residual²/gap`` once the pair is isolated by ``gap`` from the rest of the
    spectrum). ``converged[i]`` is ``residual_norms[i] ≤ tolerance · scale``,
    where ``scale`` is the largest magnitude the solver saw (an estimate of ‖H‖).
    """

    eigenvalues: np.ndarray
    eigenvectors: jax.Array
    num_iterations: int
    residual_norms: np.ndarray
    converged: np.ndarray
    tolerance: float


@dataclasses.dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate ``mean`` of tr H, its ``standard_error``, and the per-probe values.

    ``probes`` names the probes (the key's data, the size and the dtype, since
    the draws depend on it): two estimates with equal ``probes`` used the same
    vectors, so their samples pair up.
    """

    mean: float
    standard_error: float
    samples: np.ndarray
    probes: tuple[int | str, ...]


@dataclasses.dataclass(frozen=True)
class TraceDifference:
    """``mean`` = tr H_a − tr H_b and its paired ``standard_error``; ``unpaired`` for contrast.

    The paired error is the spread of the per-probe differences ``zᵀH_a z − zᵀH_b z``:
    what the two traces have in common cancels probe by probe, so it is usually far
    smaller than ``unpaired = √(se_a² + se_b²)``, which treats them as independent.
    """

    mean: float
    standard_error: float
    unpaired_standard_error: float


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
    tolerance: float = DEFAULT_TOLERANCE,
) -> Eigenpairs:
    """The k largest eigenvalues and eigenvectors by Lanczos with full reorthogonalization.

    The basis holds ``num_iterations`` vectors of the parameter count (memory:
    ``num_iterations × size`` numbers) and costs ``num_iterations`` products,
    plus k to measure the residuals (see ``Eigenpairs``).
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
    eigenvectors = coefficients @ basis[:steps]
    eigenvalues = ritz_values[order]
    residuals = np.asarray(
        [
            float(jnp.linalg.norm(operator.matvec(vector) - value * vector))
            for value, vector in zip(eigenvalues, eigenvectors, strict=True)
        ]
    )
    scale = max(float(np.max(np.abs(ritz_values))), scale)
    return Eigenpairs(
        eigenvalues, eigenvectors, steps, residuals, residuals <= tolerance * scale, tolerance
    )


def power_iteration(
    operator: HessianOperator,
    *,
    key: jax.Array,
    num_iterations: int = 100,
    tolerance: float = 1e-6,
    residual_tolerance: float = DEFAULT_TOLERANCE,
) -> Eigenpairs:
    """The eigenvalue of largest magnitude; stops once its relative change is below ``tolerance``.

    Near a minimum this is the top eigenvalue; where negative curvature is
    larger in magnitude it is that one, with its sign (Lanczos gives both).
    Each iteration costs one product; the error shrinks like ``(λ₂/λ₁)^(2i)``.
    The vector returned is the one whose Rayleigh quotient is the eigenvalue,
    so its residual comes with the last product, free; ``converged`` compares
    it with ``residual_tolerance · |λ|``.
    """
    vector = _unit_vector(key, operator)
    eigenvalue, residual, iterations, settled = np.inf, np.inf, 0, False
    while iterations < num_iterations and not settled:
        product = operator.matvec(vector)
        iterations += 1
        previous, eigenvalue = eigenvalue, float(jnp.vdot(vector, product))
        residual = float(jnp.linalg.norm(product - eigenvalue * vector))
        norm = float(jnp.linalg.norm(product))
        if norm == 0.0:  # H v = 0: v is an eigenvector of eigenvalue 0.
            break
        settled = abs(eigenvalue - previous) <= tolerance * abs(eigenvalue)
        if not settled and iterations < num_iterations:
            vector = product / norm
    return Eigenpairs(
        np.asarray([eigenvalue]),
        vector[None],
        iterations,
        np.asarray([residual]),
        np.asarray([residual <= residual_tolerance * abs(eigenvalue)]),
        residual_tolerance,
    )


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
        standard_error=_standard_error(values),
        samples=values,
        probes=(*_key_bits(key), operator.size, jnp.dtype(operator.dtype).name),
    )


def _key_bits(key: jax.Array) -> list[int]:
    """A typed key's bits, or a raw ``PRNGKey``'s, as plain ints."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.ravel(np.asarray(key)).tolist()


def _standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(values.size))


def trace_difference(a: TraceEstimate, b: TraceEstimate) -> TraceDifference:
    """tr H_a − tr H_b from two estimates made with the same probes (same key and size).

    Use it to compare variants (two runs, two checkpoints, α against α = 0) at
    one cost: estimate each with the same ``key``, and the paired standard error
    says how sure the difference is.
    """
    if a.probes != b.probes or a.samples.size != b.samples.size:
        raise ValueError(
            "the two trace estimates used different probes (another key, parameter count, "
            "dtype or num_probes); estimate both with the same key and num_probes to pair them"
        )
    return TraceDifference(
        mean=a.mean - b.mean,
        standard_error=_standard_error(a.samples - b.samples),
        unpaired_standard_error=float(np.hypot(a.standard_error, b.standard_error)),
    )
