"""The gradient norm penalty (GNP) gradient, and SAM/ASAM as its special cases.

The penalized loss is ``L(θ) + λ‖∇L(θ)‖``. Its gradient is ``g + λ·H g/‖g‖``;
the Hessian-vector product is approximated by a finite difference of radius r
(the papers' symbols r, α, λ are kept because they are the clearest names):

    g1 = ∇L(θ)
    g2 = ∇L(θ + r·g1/‖g1‖)
    g  = (1 − α)·g1 + α·g2,        α = λ / r

α = 1 is SAM. ``method="exact"`` computes ``g1 + λ·H g1/‖g1‖`` with a
forward-over-reverse Hessian-vector product instead, which is what the finite
difference converges to as r → 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from gnp.choices import check_choice

PyTree = Any
Method = Literal["finite_difference", "exact"]
Perturbation = Literal["sam", "asam"]

METHODS = ("finite_difference", "exact")
PERTURBATIONS = ("sam", "asam")


def _norm_dtype(dtype: Any) -> Any:
    """float32 or wider: a bfloat16 sum of squares overflows or loses the norm."""
    return jnp.promote_types(dtype, jnp.float32)


def global_norm(tree: PyTree) -> jax.Array:
    """L2 norm over every leaf of a pytree, accumulated in float32 or wider."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    squares = [jnp.sum(jnp.square(x.astype(_norm_dtype(x.dtype)))) for x in leaves]
    return jnp.sqrt(sum(squares))


def _safe_inverse(norm: jax.Array) -> jax.Array:
    """1/norm, and 0 where the norm is 0: a zero gradient gives a zero step, not NaN."""
    positive = norm > 0
    return jnp.where(positive, 1.0 / jnp.where(positive, norm, 1.0), 0.0)


def _scale(tree: PyTree, factor: jax.Array) -> PyTree:
    return jax.tree.map(lambda x: (x.astype(_norm_dtype(x.dtype)) * factor).astype(x.dtype), tree)


def ascent_direction(
    params: PyTree,
    grads: PyTree,
    perturbation: Perturbation = "sam",
    eta: float = 0.01,
) -> PyTree:
    """The unit-radius perturbation: ``g/‖g‖`` (SAM) or ``T²g/‖Tg‖``, ``T = |θ| + η`` (ASAM)."""
    if check_choice(perturbation, PERTURBATIONS, "perturbation") == "sam":
        return _scale(grads, _safe_inverse(global_norm(grads)))
    weights = jax.tree.map(lambda p: jnp.abs(p.astype(_norm_dtype(p.dtype))) + eta, params)
    scaled = jax.tree.map(lambda t, g: t * g.astype(t.dtype), weights, grads)
    inverse = _safe_inverse(global_norm(scaled))
    return jax.tree.map(lambda t, s, g: (t * s * inverse).astype(g.dtype), weights, scaled, grads)


def _is_concrete_zero(value: Any) -> bool | None:
    """True/False when ``value`` is known at trace time, None when it is traced."""
    try:
        return bool(np.asarray(value) == 0)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _mean_over_axis(tree: PyTree, axis_name: str | None) -> PyTree:
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def _check_options(method: str, perturbation: str, normalize_reference: bool) -> None:
    check_choice(method, METHODS, "method")
    check_choice(perturbation, PERTURBATIONS, "perturbation")
    if method == "exact" and (perturbation != "sam" or normalize_reference):
        raise ValueError(
            "method='exact' is the gradient of L + λ‖∇L‖ and takes perturbation='sam' "
            "with normalize_reference=False; use method='finite_difference' for the others"
        )


def penalized_gradient(
    clean_value_and_grad: Callable[[PyTree], tuple[Any, PyTree]],
    gradient_at: Callable[[PyTree], PyTree],
    params: PyTree,
    *,
    r: float | jax.Array,
    alpha: float | jax.Array,
    method: Method = "finite_difference",
    perturbation: Perturbation = "sam",
    eta: float = 0.01,
    normalize_reference: bool = False,
    axis_name: str | None = None,
) -> tuple[Any, PyTree, PyTree]:
    """The GNP math on two gradient passes given as functions: ``(value, grads, reference)``.

    ``reference`` is the gradient the perturbation was computed from: ``∇L(θ)``
    of the clean pass, averaged over ``axis_name`` when one is given (so a
    trainer can log its norm without another all-reduce).

    ``value_and_grad`` is this with both passes taken from one loss. Use it
    directly when a pass is not one call of a loss, e.g. a gradient accumulated
    over micro-batches: then the perturbation comes from the gradient of the
    whole accumulated batch, as if it had been one batch.

    Args:
      clean_value_and_grad: ``θ ↦ (value, ∇L(θ))``; ``value`` is passed through.
      gradient_at: ``θ' ↦ ∇L(θ')``, the gradient at the perturbed point.
      Other arguments as in ``value_and_grad``.
    """
    _check_options(method, perturbation, normalize_reference)

    def without_penalty() -> tuple[Any, PyTree, PyTree]:
        value, grads = clean_value_and_grad(params)
        return value, grads, grads

    def finite_difference() -> tuple[Any, PyTree, PyTree]:
        value, g1 = clean_value_and_grad(params)
        reference = _mean_over_axis(g1, axis_name)
        step = ascent_direction(params, reference, perturbation, eta)
        perturbed = jax.tree.map(
            lambda p, d: (p.astype(_norm_dtype(p.dtype)) + r * d).astype(p.dtype), params, step
        )
        g2 = gradient_at(perturbed)
        mixed = _scale(g1, _safe_inverse(global_norm(reference))) if normalize_reference else g1
        grads = jax.tree.map(
            lambda a, b: ((1 - alpha) * a.astype(_norm_dtype(a.dtype)) + alpha * b).astype(a.dtype),
            mixed,
            g2,
        )
        return value, grads, reference

    def exact() -> tuple[Any, PyTree, PyTree]:
        value, g1 = clean_value_and_grad(params)
        reference = _mean_over_axis(g1, axis_name)
        direction = ascent_direction(params, reference, "sam", eta)
        _, hvp = jax.jvp(gradient_at, (params,), (direction,))
        grads = jax.tree.map(lambda g, h: (g + alpha * r * h).astype(g.dtype), g1, hvp)
        return value, grads, reference

    penalized = finite_difference if method == "finite_difference" else exact
    r_zero, alpha_zero = _is_concrete_zero(r), _is_concrete_zero(alpha)
    if r_zero or alpha_zero:
        return without_penalty()
    if r_zero is False and alpha_zero is False:
        return penalized()
    # Traced r or α: both branches are compiled once, and the zero case stays exact.
    is_plain = jnp.logical_or(jnp.asarray(r) == 0, jnp.asarray(alpha) == 0)
    return jax.lax.cond(is_plain, without_penalty, penalized)


def value_and_grad(
    loss_fn: Callable[..., Any],
    *,
    r: float | jax.Array,
    alpha: float | jax.Array,
    has_aux: bool = False,
    method: Method = "finite_difference",
    perturbation: Perturbation = "sam",
    eta: float = 0.01,
    normalize_reference: bool = False,
    axis_name: str | None = None,
    perturbed_loss_fn: Callable[..., Any] | None = None,
    return_clean_grad: bool = False,
) -> Callable[..., tuple[Any, ...]]:
    """Like ``jax.value_and_grad(loss_fn)``, but returns the GNP gradient.

    Args:
      loss_fn: ``loss_fn(params, *args, **kwargs)`` returning a scalar loss, or
        ``(loss, aux)`` when ``has_aux``. Argument 0 is differentiated.
      r: perturbation radius. May be a traced array (GR warmup changes it
        every step without recompiling).
      alpha: mixing weight α = λ/r; 1 is SAM. May be traced.
      has_aux: as in ``jax.value_and_grad``. The loss and aux returned are those
        of the clean pass, so BatchNorm statistics never see the perturbed point.
      method: ``"finite_difference"`` (two gradient passes) or ``"exact"``
        (gradient of ``L + α·r·‖∇L‖`` through a Hessian-vector product).
      perturbation: ``"sam"`` (``r·g/‖g‖``) or ``"asam"`` (``r·T²g/‖Tg‖``).
      eta: ASAM's η in ``T = |θ| + η``.
      normalize_reference: the released code's variant
        ``(1 − α)·g1/‖g1‖ + α·g2``.
      axis_name: inside ``shard_map``/``pmap``, the perturbation (and its norm)
        use the gradient averaged over this axis, so that the whole global batch
        sees one perturbation. Without it each device perturbs with its own
        local gradient (m-sharpness). The returned gradient is always the local
        one: average it over the axis as for a plain step. Note that under
        ``shard_map`` with ``check_vma=True``, JAX already sums the gradient of
        a replicated (axis-invariant) parameter over the axis; pass the params
        through ``jax.lax.pcast(params, axis, to="varying")`` (or use
        ``check_vma=False``) to get per-device gradients.
      perturbed_loss_fn: the loss evaluated at the perturbed point, when it must
        differ from the clean one (Shake-Shake's true-gradient mode is used in
        the clean pass only). Defaults to ``loss_fn``.
      return_clean_grad: also return ``∇L(θ)`` of the clean pass (averaged over
        ``axis_name`` if given), which is computed anyway: a trainer logs its
        norm without a third pass.

    Returns:
      A function with ``loss_fn``'s signature returning ``(value, grads)``, or
      ``(value, grads, clean_grads)`` with ``return_clean_grad``.
      With ``r == 0`` or ``alpha == 0`` it is exactly ``jax.value_and_grad``.
    """
    _check_options(method, perturbation, normalize_reference)
    second_loss_fn = loss_fn if perturbed_loss_fn is None else perturbed_loss_fn
    plain = jax.value_and_grad(loss_fn, has_aux=has_aux)
    with_aux = loss_fn if has_aux else lambda *a, **k: (loss_fn(*a, **k), None)
    clean = jax.value_and_grad(with_aux, has_aux=True)

    def value_and_gnp_grad(params: PyTree, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        if not return_clean_grad and (_is_concrete_zero(r) or _is_concrete_zero(alpha)):
            return plain(params, *args, **kwargs)

        def gradient_at(point: PyTree) -> PyTree:
            grads = jax.grad(second_loss_fn, has_aux=has_aux)(point, *args, **kwargs)
            return grads[0] if has_aux else grads

        value, grads, clean_grads = penalized_gradient(
            lambda p: clean(p, *args, **kwargs),
            gradient_at,
            params,
            r=r,
            alpha=alpha,
            method=method,
            perturbation=perturbation,
            eta=eta,
            normalize_reference=normalize_reference,
            axis_name=axis_name,
        )
        value = value if has_aux else value[0]
        return (value, grads, clean_grads) if return_clean_grad else (value, grads)

    return value_and_gnp_grad
