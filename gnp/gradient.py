"""The gradient norm penalty (GNP) gradient, and SAM/ASAM as its special cases.

The penalized loss is ``L(θ) + λ‖∇L(θ)‖``. Its gradient is ``g + λ·H g/‖g‖``;
the Hessian-vector product is approximated by a finite difference of radius r
(the papers' symbols r, α, λ are kept because they are the clearest names):

    g1 = ∇L(θ)
    g2 = ∇L(θ + r·g1/‖g1‖)
    g  = (1 − α)·g1 + α·g2,        α = λ / r

α = 1 is SAM; α > 1 extrapolates past the SAM gradient (λ = α·r > r, a larger
penalty measured with the same radius). ``method="exact"`` computes
``g1 + λ·H g1/‖g1‖`` with a forward-over-reverse Hessian-vector product instead,
which is what the finite difference converges to as r → 0.

The two building blocks, ``perturb`` (θ + r·direction) and ``mix`` (the line
above), are shared with the cheaper variants in ``gnp.efficient``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gnp.choices import check_choice
from gnp.options import (
    ASAM_LEAVES,
    METHODS,
    PERTURBATIONS,
    AsamLeaves,
    GNPOptions,
    Method,
    Perturbation,
)

PyTree = Any
Norm = Callable[[PyTree], jax.Array]
__all__ = ["ASAM_LEAVES", "METHODS", "PERTURBATIONS", "Method"]  # re-exported for callers
# The flax names of the parameters PyTorch calls ``weight`` (Linear/Conv kernels, BatchNorm
# and LayerNorm scales, embeddings): the ones the original ASAM scales by |θ| + η.
WEIGHT_NAMES = ("kernel", "scale", "embedding")


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


def _leaf_name(path: tuple[Any, ...]) -> str | None:
    last = path[-1] if path else None
    name = getattr(last, "key", getattr(last, "name", None))
    return name if isinstance(name, str) else None


def _asam_factors(params: PyTree, eta: float, asam_leaves: AsamLeaves) -> PyTree:
    """``T = |θ| + η`` on the scaled leaves, 1 on the others (the original ASAM's biases)."""
    check_choice(asam_leaves, ASAM_LEAVES, "asam_leaves")

    def factor(path: tuple[Any, ...], p: jax.Array) -> jax.Array:
        if asam_leaves == "all" or _leaf_name(path) in WEIGHT_NAMES:
            return jnp.abs(p.astype(_norm_dtype(p.dtype))) + eta
        return jnp.ones((), _norm_dtype(p.dtype))

    factors = jax.tree_util.tree_map_with_path(factor, params)
    if asam_leaves == "weights" and not any(
        _leaf_name(path) in WEIGHT_NAMES for path, _ in jax.tree_util.tree_leaves_with_path(params)
    ):
        raise ValueError(
            f"perturbation='asam' scales the leaves named {list(WEIGHT_NAMES)} (PyTorch's "
            "weights, as the original ASAM does) and these params have none; pass "
            "asam_leaves='all' to scale every leaf"
        )
    return factors


def ascent_direction(
    params: PyTree,
    grads: PyTree,
    perturbation: Perturbation = "sam",
    eta: float = 0.01,
    asam_leaves: AsamLeaves = "weights",
    norm: Norm = global_norm,
) -> PyTree:
    """The unit-radius perturbation: ``g/‖g‖`` (SAM) or ``T²g/‖Tg‖`` (ASAM).

    ASAM's ``T`` is ``|θ| + η`` on the weights (leaves named kernel, scale or
    embedding) and 1 on biases and other leaves, as in the original ASAM code
    (Kwon et al. 2021, which tests ``'weight' in name``); ``asam_leaves="all"``
    scales every leaf. ``norm`` is the norm of a whole tree: ``global_norm``, or for a tree
    whose leaves are sharded over devices inside ``shard_map``, one that adds the shards'
    squares over the axis (the trainer's sharded parameters).
    """
    if check_choice(perturbation, PERTURBATIONS, "perturbation") == "sam":
        return _scale(grads, _safe_inverse(norm(grads)))
    factors = _asam_factors(params, eta, asam_leaves)
    scaled = jax.tree.map(lambda t, g: t * g.astype(t.dtype), factors, grads)
    inverse = _safe_inverse(norm(scaled))
    return jax.tree.map(lambda t, s, g: (t * s * inverse).astype(g.dtype), factors, scaled, grads)


def perturb(
    params: PyTree,
    direction: PyTree,
    r: float | jax.Array,
    perturbation: Perturbation = "sam",
    eta: float = 0.01,
    asam_leaves: AsamLeaves = "weights",
    norm: Norm = global_norm,
) -> PyTree:
    """``θ + r·ascent_direction(direction)``: the point of the second gradient pass."""
    step = ascent_direction(params, direction, perturbation, eta, asam_leaves, norm)
    return jax.tree.map(
        lambda p, d: (p.astype(_norm_dtype(p.dtype)) + r * d).astype(p.dtype), params, step
    )


def mix(
    g1: PyTree,
    g2: PyTree,
    alpha: float | jax.Array,
    reference: PyTree,
    normalize_reference: bool = False,
    norm: Norm = global_norm,
) -> PyTree:
    """``(1 − α)·g1 + α·g2``, or ``(1 − α)·g1/‖reference‖ + α·g2`` (the released variant)."""
    if normalize_reference:
        g1 = _scale(g1, _safe_inverse(norm(reference)))
    return jax.tree.map(
        lambda a, b: ((1 - alpha) * a.astype(_norm_dtype(a.dtype)) + alpha * b).astype(a.dtype),
        g1,
        g2,
    )


class Diagnostics(NamedTuple):
    """What a GNP step's second pass knows beside its gradient (``docs/library.md``).

    sharpness: ``L(θ + ε) − L(θ)``, the perturbed minus the clean loss (≈ r·‖g1‖ for a small
      radius on a smooth loss; more means a sharper neighbourhood, less a flatter one).
    gradient_cosine: ``cos(g1, g2)``; 1 where the gradient does not turn within the radius.
    perturbed_gradient_norm: ``‖g2‖``.
    """

    sharpness: jax.Array
    gradient_cosine: jax.Array
    perturbed_gradient_norm: jax.Array


def diagnostics(
    clean_loss: jax.Array,
    perturbed_loss: jax.Array,
    g1: PyTree,
    g2: PyTree,
    norm: Norm = global_norm,
) -> Diagnostics:
    """The sharpness diagnostics from the two passes' losses and gradients, the one place the
    library and the trainer compute them. The cosine takes norms only (``‖g1 − g2‖``, the
    law of cosines), so a ``norm`` over sharded trees gives it without a dot product of its
    own; it is 0 where either gradient is 0."""
    clean_norm, perturbed_norm = norm(g1), norm(g2)
    gap = norm(jax.tree.map(lambda a, b: b.astype(_norm_dtype(b.dtype)) - a, g1, g2))
    cosine = (clean_norm**2 + perturbed_norm**2 - gap**2) / 2
    cosine = cosine * _safe_inverse(clean_norm) * _safe_inverse(perturbed_norm)
    return Diagnostics(perturbed_loss - clean_loss, cosine, perturbed_norm)


def mean_over_axis(tree: PyTree, axis_name: str | None) -> PyTree:
    """The mean over a ``shard_map`` axis, or ``tree`` itself without one."""
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def with_fields(options: GNPOptions | None, fields: dict[str, Any]) -> GNPOptions:
    """``options`` with ``fields`` replaced (checked), or the options ``fields`` name."""
    if options is None:
        return GNPOptions(**fields)
    return options.replace(**fields) if fields else options


def penalized_gradient(
    clean_value_and_grad: Callable[[PyTree], tuple[Any, PyTree]],
    gradient_at: Callable[[PyTree], PyTree],
    params: PyTree,
    options: GNPOptions | None = None,
    *,
    direction: PyTree | None = None,
    norm: Norm = global_norm,
    diagnose: bool = False,
    **fields: Any,
) -> tuple[Any, ...]:
    """The GNP math on two gradient passes given as functions: ``(value, grads, reference)``.

    ``reference`` is the gradient the perturbation was computed from: ``∇L(θ)``
    of the clean pass, averaged over ``options.axis_name`` when one is given (so a
    trainer can log its norm without another all-reduce).

    ``value_and_grad`` is this with both passes taken from one loss. Use it
    directly when a pass is not one call of a loss, e.g. a gradient accumulated
    over micro-batches: then the perturbation comes from the gradient of the
    whole accumulated batch, as if it had been one batch.

    Args:
      clean_value_and_grad: ``θ ↦ (value, ∇L(θ))``; ``value`` is passed through.
      gradient_at: ``θ' ↦ ∇L(θ')``, the gradient at the perturbed point (``(loss, ∇L(θ'))`` with
        ``diagnose``).
      options: the step (``gnp.GNPOptions``); ``fields`` (``r=``, ``alpha=``, ``method=``, ...,
        as in ``value_and_grad``) replace some of its fields, or give them all without it. A
        trainer passes its options whole and this step's (traced) ``r`` and ``alpha``.
      direction: perturb along this instead of the reference gradient (see
        ``gnp.efficient.direction_value_and_grad``); ``None`` is GNP.
      norm: the norm of a whole gradient tree (see ``ascent_direction``): with passes that
        return the device-mean gradient sharded over an axis, the perturbation and its norm
        are computed on the shards, and no device holds the whole gradient.
      diagnose: also return the second pass, ``(L(θ + ε), g2)``, fourth, for ``diagnostics``:
        then the clean value is ``(loss, aux)`` and ``gradient_at`` returns ``(loss, ∇L(θ'))``.
        A step without a second pass (r or α zero) returns ``(L(θ), g1)``, the values at r = 0.
    """
    options = with_fields(options, fields)
    r, alpha, axis_name = options.r, options.alpha, options.axis_name
    perturbation = (options.perturbation, options.eta, options.asam_leaves, norm)
    if options.method == "exact" and direction is not None:
        raise ValueError("method='exact' perturbs along the gradient; pass direction=None")
    if options.method == "exact" and diagnose:
        raise ValueError(
            "the sharpness diagnostics come from the perturbed point, which method='exact' does "
            "not visit; use method='finite_difference'"
        )

    def result(value: Any, grads: PyTree, reference: PyTree, second: tuple) -> tuple[Any, ...]:
        return (value, grads, reference, second) if diagnose else (value, grads, reference)

    def clean_pass() -> tuple[Any, PyTree, PyTree]:
        value, g1 = clean_value_and_grad(params)
        return value, g1, mean_over_axis(g1, axis_name)

    def without_second_pass() -> tuple[Any, PyTree, PyTree]:
        """r = 0 or α = 0: the paper's mix is g1 itself; the released one, the formula's value
        with g2 = g1 (at r = 0, ∇L(θ + 0) = g1; at α = 0 g2 has weight 0), one pass."""
        value, g1, reference = clean_pass()
        second = (value[0], g1) if diagnose else ()
        if not options.normalize_reference:
            return result(value, g1, reference, second)
        return result(value, mix(g1, g1, alpha, reference, True, norm), reference, second)

    def finite_difference() -> tuple[Any, PyTree, PyTree]:
        value, g1, reference = clean_pass()
        source = reference if direction is None else direction
        second = gradient_at(perturb(params, source, r, *perturbation))
        g2 = second[1] if diagnose else second
        grads = mix(g1, g2, alpha, reference, options.normalize_reference, norm)
        return result(value, grads, reference, second)

    def exact() -> tuple[Any, PyTree, PyTree]:
        value, g1, reference = clean_pass()
        unit = ascent_direction(params, reference, "sam", norm=norm)
        _, hvp = jax.jvp(gradient_at, (params,), (unit,))
        grads = jax.tree.map(lambda g, h: (g + alpha * r * h).astype(g.dtype), g1, hvp)
        return value, grads, reference

    penalized = finite_difference if options.method == "finite_difference" else exact
    if options.penalized is not None:
        return penalized() if options.penalized else without_second_pass()
    # Traced r or α: both branches are compiled once, and the zero case stays exact.
    is_zero = jnp.logical_or(jnp.asarray(r) == 0, jnp.asarray(alpha) == 0)
    return jax.lax.cond(is_zero, without_second_pass, penalized)


def value_and_grad(
    loss_fn: Callable[..., Any],
    *,
    r: float | jax.Array,
    alpha: float | jax.Array,
    has_aux: bool = False,
    method: Method = "finite_difference",
    perturbation: Perturbation = "sam",
    eta: float = 0.01,
    asam_leaves: AsamLeaves = "weights",
    normalize_reference: bool = False,
    axis_name: str | None = None,
    perturbed_loss_fn: Callable[..., Any] | None = None,
    return_clean_grad: bool = False,
    with_diagnostics: bool = False,
) -> Callable[..., tuple[Any, ...]]:
    """Like ``jax.value_and_grad(loss_fn)``, but returns the GNP gradient.

    Args:
      loss_fn: ``loss_fn(params, *args, **kwargs)`` returning a scalar loss, or
        ``(loss, aux)`` when ``has_aux``. Argument 0 is differentiated.
      r: perturbation radius, ≥ 0. May be a traced array (GR warmup changes it
        every step without recompiling); a concrete negative one is a ValueError.
      alpha: mixing weight α = λ/r, ≥ 0; 1 is SAM, and α > 1 is allowed: it
        extrapolates past the SAM gradient, ``g2 + (α − 1)·(g2 − g1)``, a penalty
        λ = α·r larger than the radius it is measured with. May be traced.
      has_aux: as in ``jax.value_and_grad``. The loss and aux returned are those
        of the clean pass, so BatchNorm statistics never see the perturbed point.
      method: ``"finite_difference"`` (two gradient passes) or ``"exact"``
        (gradient of ``L + α·r·‖∇L‖`` through a Hessian-vector product).
      perturbation: ``"sam"`` (``r·g/‖g‖``) or ``"asam"`` (``r·T²g/‖Tg‖``).
      eta: ASAM's η in ``T = |θ| + η``, ≥ 0.
      asam_leaves: which leaves ASAM scales by ``T``: ``"weights"`` (leaves named
        kernel, scale or embedding; biases and the rest get ``T = 1``, as the
        original ASAM code) or ``"all"``.
      normalize_reference: the released code's variant
        ``(1 − α)·g1/‖g1‖ + α·g2``, at every r and α as the released step takes it: at
        r = 0 it is ``(1 − α)·g1/‖g1‖ + α·g1``, at α = 0 the unit vector ``g1/‖g1‖``.
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
      with_diagnostics: also return ``gnp.Diagnostics`` (sharpness ``L(θ+ε) − L(θ)``,
        ``cos(g1, g2)``, ``‖g2‖``) of the passes the gradient took anyway, last; the value and
        gradient are the same, bit for bit. With ``axis_name`` they are of the axis's
        whole batch (the losses and g2 averaged over it, one more all-reduce of g2), else of
        this call's. Takes ``method="finite_difference"``; where r or α is 0 (no second pass)
        they are the values at r = 0: sharpness 0, cosine 1, ``‖g2‖ = ‖g1‖``.

    Returns:
      A function with ``loss_fn``'s signature returning ``(value, grads)``, then
      ``clean_grads`` with ``return_clean_grad``, then the diagnostics with
      ``with_diagnostics``.
      With ``r == 0`` or ``alpha == 0`` (and the paper's mix) it is exactly
      ``jax.value_and_grad``.
    """
    options = GNPOptions(
        r=r,
        alpha=alpha,
        method=method,
        perturbation=perturbation,
        eta=eta,
        asam_leaves=asam_leaves,
        normalize_reference=normalize_reference,
        axis_name=axis_name,
    )
    second_loss_fn = loss_fn if perturbed_loss_fn is None else perturbed_loss_fn
    plain = jax.value_and_grad(loss_fn, has_aux=has_aux)
    with_aux = loss_fn if has_aux else lambda *a, **k: (loss_fn(*a, **k), None)
    clean = jax.value_and_grad(with_aux, has_aux=True)
    exactly_plain = options.penalized is False and not (
        normalize_reference or return_clean_grad or with_diagnostics
    )
    perturbed = jax.value_and_grad(second_loss_fn, has_aux=has_aux)

    def value_and_gnp_grad(params: PyTree, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        if exactly_plain:
            return plain(params, *args, **kwargs)

        def gradient_at(point: PyTree) -> PyTree:
            if with_diagnostics:
                loss, grads = perturbed(point, *args, **kwargs)
                return (loss[0] if has_aux else loss), grads
            grads = jax.grad(second_loss_fn, has_aux=has_aux)(point, *args, **kwargs)
            return grads[0] if has_aux else grads

        value, grads, clean_grads, *second = penalized_gradient(
            lambda p: clean(p, *args, **kwargs),
            gradient_at,
            params,
            options,
            diagnose=with_diagnostics,
        )
        outputs = (value if has_aux else value[0], grads)
        outputs += (clean_grads,) if return_clean_grad else ()
        if with_diagnostics:  # of the axis's whole batch, as the perturbation is
            clean_loss, (perturbed_loss, g2) = mean_over_axis((value[0], second[0]), axis_name)
            outputs += (diagnostics(clean_loss, perturbed_loss, clean_grads, g2),)
        return outputs

    return value_and_gnp_grad
