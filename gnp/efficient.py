"""Cheaper GNP steps: fewer gradient passes per step, built on ``gnp.gradient``'s core.

Reuse (after LookSAM, Liu et al., CVPR 2022). Every ``period`` steps a full GNP
step takes both passes and stores the part of ``g2 − g1`` orthogonal to ``g1``
as a unit vector ``v`` and its size relative to ``‖g1‖``, ``s``; the steps in
between take the clean pass only and stand in for the perturbed gradient with

    g2 ≈ g1 + s·‖g1‖·v,        g = (1 − α)·g1 + α·g2,

so ``g = g1 + α·s·‖g1‖·v``. ``period=1`` is exactly GNP. LookSAM (α = 1) uses
a fixed ratio instead of the measured ``s``: pass ``orthogonal_scale``.

Direction (after MSAM, Becker et al. 2024). The perturbation follows a direction
the caller passes (e.g. minus the optimizer's momentum, MSAM's choice) instead of
``g1``: ``g2 = ∇L(θ + r·d/‖d‖)``. At α = 1 that is one gradient pass per step;
any other α also needs ``g1``, two passes. ``d = g1`` is exactly GNP.

Both keep their state explicit, in the style of optax: the caller threads it
through (``jit``, ``shard_map`` and checkpoints see a plain pytree).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gnp.gradient import (
    Norm,
    _safe_inverse,
    _scale,
    global_norm,
    mean_over_axis,
    mix,
    penalized_gradient,
    perturb,
    with_fields,
)
from gnp.options import AsamLeaves, GNPOptions, Perturbation

PyTree = Any


class ReuseState(NamedTuple):
    """What a reuse step needs from the last full GNP step.

    count: steps taken so far; step ``count`` is a full step when ``count % period == 0``.
    orthogonal: the unit vector ``v`` along the part of ``g2 − g1`` orthogonal to ``g1``
      (zeros before the first full step).
    scale: ``s = ‖(g2 − g1)⊥‖ / ‖g1‖`` at the last full step.
    """

    count: jax.Array
    orthogonal: PyTree
    scale: jax.Array


def _wide(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def reuse_init(params: PyTree) -> ReuseState:
    """The state before the first step: the first step is a full one."""
    zeros = jax.tree.map(lambda p: jnp.zeros_like(_wide(p)), params)
    return ReuseState(jnp.zeros((), jnp.int32), zeros, jnp.zeros((), jnp.float32))


def orthogonal_part(g1: PyTree, g2: PyTree) -> tuple[PyTree, jax.Array]:
    """``(v, s)``: the unit vector along ``(g2 − g1)⊥g1`` and its norm over ``‖g1‖``."""
    g1_norm = global_norm(g1)
    unit_g1 = jax.tree.map(lambda g: _wide(g) * _safe_inverse(g1_norm), g1)
    difference = jax.tree.map(lambda a, b: _wide(b) - _wide(a), g1, g2)
    leaves = zip(jax.tree.leaves(difference), jax.tree.leaves(unit_g1), strict=True)
    along = sum(jnp.sum(d * u) for d, u in leaves)
    orthogonal = jax.tree.map(lambda d, u: d - along * u, difference, unit_g1)
    size = global_norm(orthogonal)
    return _scale(orthogonal, _safe_inverse(size)), size * _safe_inverse(g1_norm)


def is_full_step(count: int | jax.Array, period: int) -> bool | jax.Array:
    """Whether step ``count`` of a reuse run takes both passes: every ``period``-th, from 0."""
    return count % period == 0


def reuse_penalized_gradient(
    clean_value_and_grad: Callable[[PyTree], tuple[Any, PyTree]],
    gradient_at: Callable[[PyTree], PyTree],
    params: PyTree,
    state: ReuseState,
    options: GNPOptions | None = None,
    *,
    state_axis_name: str | None = None,
    full: bool | None = None,
    **fields: Any,
) -> tuple[Any, PyTree, PyTree, ReuseState]:
    """``penalized_gradient`` with reuse: ``(value, grads, reference, new_state)``.

    ``options`` (or ``fields``, as in ``gnp.penalized_gradient``) give the step, its
    ``reuse_period`` the period. With ``full=None`` a ``lax.cond`` on ``state.count % period``
    picks the full step (two passes) or the reuse step (one pass): one program, both branches
    compiled, one runs. ``full=True``/``False`` builds that step alone, for a
    caller that chooses on the host between two compiled programs (as the trainer
    does: on CPU, XLA runs the convolutions inside a conditional about 20× slower,
    ``docs/library.md``); the caller then keeps ``is_full_step(count, period)`` for the
    full steps itself. The state is built
    from ``g1`` and ``g2`` averaged over ``state_axis_name`` (default: ``axis_name``;
    an all-reduce of each per full step), so that it is the same on every device
    and can be kept replicated even when each device perturbs with its own
    gradient (``axis_name=None``); with neither, each device keeps its own state.
    """
    options = with_fields(options, fields)
    r, alpha, axis_name = options.r, options.alpha, options.axis_name
    perturbation = (options.perturbation, options.eta, options.asam_leaves)
    mixed = dict(alpha=alpha, normalize_reference=options.normalize_reference)

    def full_step() -> tuple[Any, PyTree, PyTree, ReuseState]:
        value, g1 = clean_value_and_grad(params)
        reference = mean_over_axis(g1, axis_name)
        g2 = gradient_at(perturb(params, reference, r, *perturbation))
        grads = mix(g1, g2, reference=reference, **mixed)
        state_axis = axis_name if state_axis_name is None else state_axis_name
        orthogonal, scale = orthogonal_part(
            mean_over_axis(reference, state_axis if axis_name is None else None),
            mean_over_axis(g2, state_axis),
        )
        orthogonal = jax.tree.map(lambda o, old: o.astype(old.dtype), orthogonal, state.orthogonal)
        new_state = ReuseState(state.count + 1, orthogonal, scale.astype(state.scale.dtype))
        return value, grads, reference, new_state

    def reuse_step() -> tuple[Any, PyTree, PyTree, ReuseState]:
        value, g1 = clean_value_and_grad(params)
        reference = mean_over_axis(g1, axis_name)
        s = state.scale if options.orthogonal_scale is None else options.orthogonal_scale
        length = s * global_norm(reference)
        g2 = jax.tree.map(
            lambda g, v: (g.astype(v.dtype) + length * v).astype(g.dtype), g1, state.orthogonal
        )
        grads = mix(g1, g2, reference=reference, **mixed)
        return value, grads, reference, state._replace(count=state.count + 1)

    if options.reuse_period == 1 or full is True:
        return full_step()
    if full is False:
        return reuse_step()
    return jax.lax.cond(is_full_step(state.count, options.reuse_period), full_step, reuse_step)


def reuse_value_and_grad(
    loss_fn: Callable[..., Any],
    *,
    r: float | jax.Array,
    alpha: float | jax.Array,
    period: int,
    orthogonal_scale: float | None = None,
    has_aux: bool = False,
    perturbation: Perturbation = "sam",
    eta: float = 0.01,
    asam_leaves: AsamLeaves = "weights",
    normalize_reference: bool = False,
    axis_name: str | None = None,
) -> Callable[..., tuple[Any, PyTree, ReuseState]]:
    """GNP with the perturbed gradient taken every ``period`` steps and reused between.

    Returns ``f(params, state, *args, **kwargs) → (value, grads, new_state)``;
    start from ``reuse_init(params)``. On average ``1 + 1/period`` gradient passes
    per step. ``orthogonal_scale`` fixes ``s`` (LookSAM's α, e.g. 0.7) instead of
    measuring it at the full step. Other arguments as in ``gnp.value_and_grad``.
    """
    options = GNPOptions(
        r=r,
        alpha=alpha,
        perturbation=perturbation,
        eta=eta,
        asam_leaves=asam_leaves,
        normalize_reference=normalize_reference,
        axis_name=axis_name,
        reuse_period=period,
        orthogonal_scale=orthogonal_scale,
    )
    with_aux = loss_fn if has_aux else lambda *a, **k: (loss_fn(*a, **k), None)
    clean = jax.value_and_grad(with_aux, has_aux=True)

    def value_and_reused_grad(
        params: PyTree, state: ReuseState, *args: Any, **kwargs: Any
    ) -> tuple[Any, PyTree, ReuseState]:
        value, grads, _, state = reuse_penalized_gradient(
            lambda p: clean(p, *args, **kwargs),
            lambda p: jax.grad(with_aux, has_aux=True)(p, *args, **kwargs)[0],
            params,
            state,
            options,
        )
        return (value if has_aux else value[0]), grads, state

    return value_and_reused_grad


def direction_value_and_grad(
    loss_fn: Callable[..., Any],
    *,
    r: float | jax.Array,
    alpha: float | jax.Array,
    has_aux: bool = False,
    perturbation: Perturbation = "sam",
    eta: float = 0.01,
    asam_leaves: AsamLeaves = "weights",
    normalize_reference: bool = False,
    axis_name: str | None = None,
) -> Callable[..., tuple[Any, PyTree]]:
    """GNP perturbed along a given direction: ``f(params, direction, *args) → (value, grads)``.

    ``g2 = ∇L(θ + r·d/‖d‖)`` (ASAM's ``T²d/‖Td‖`` with ``perturbation="asam"``).
    MSAM passes ``d = −momentum`` (the optimizer's trace, e.g. ``opt_state[0].trace``
    of ``optax.sgd(lr, momentum)``, negated: the direction of the next update).
    With a concrete α = 1 (and no ``normalize_reference``) only ``g2`` is needed:
    one gradient pass, and the value (and aux) returned are those of the
    perturbed point. Otherwise ``g1`` is needed too (two passes) and the value is
    the clean one. A zero direction (e.g. the first step's momentum) gives no
    perturbation. Other arguments as in ``gnp.value_and_grad``.
    """
    options = GNPOptions(
        r=r,
        alpha=alpha,
        perturbation=perturbation,
        eta=eta,
        asam_leaves=asam_leaves,
        normalize_reference=normalize_reference,
        axis_name=axis_name,
        direction="momentum",
    )
    with_aux = loss_fn if has_aux else lambda *a, **k: (loss_fn(*a, **k), None)
    clean = jax.value_and_grad(with_aux, has_aux=True)

    def value_and_direction_grad(
        params: PyTree, direction: PyTree, *args: Any, **kwargs: Any
    ) -> tuple[Any, PyTree]:
        result = step_gradient(
            lambda p: clean(p, *args, **kwargs),
            lambda p: clean(p, *args, **kwargs)[1],
            params,
            options,
            direction=direction,
        )
        return (result.value if has_aux else result.value[0]), result.grads

    return value_and_direction_grad


class StepGradient(NamedTuple):
    """What a GNP step of any variant returns.

    value: the clean pass's value (a one-pass step's: the perturbed point's).
    grads: the gradient for the optimizer, this device's (average it over devices).
    reference: ∇L(θ) the perturbation came from (averaged over ``axis_name`` if one is
      set); None on a one-pass step, which has no clean gradient.
    state: the variant's state, as the dict it came in (``{}`` for a variant without one).
    perturbed: the second pass ``(L(θ + ε), g2)``, this device's, when asked for (``diagnose``).
    """

    value: Any
    grads: PyTree
    reference: PyTree | None
    state: Mapping[str, Any]
    perturbed: tuple[Any, PyTree] | None = None


def step_gradient(
    clean_value_and_grad: Callable[[PyTree], tuple[Any, PyTree]],
    gradient_at: Callable[[PyTree], PyTree],
    params: PyTree,
    options: GNPOptions,
    *,
    state: Mapping[str, Any] | None = None,
    direction: PyTree | None = None,
    norm: Norm = global_norm,
    state_axis_name: str | None = None,
    full: bool | None = None,
    diagnose: bool = False,
    **fields: Any,
) -> StepGradient:
    """The GNP gradient of whichever variant ``options`` names: one call for a trainer.

    GNP (``penalized_gradient``), reuse (``reuse_penalized_gradient``, its ``ReuseState`` as a
    dict in ``state``; ``state_axis_name`` and ``full`` as there), or along ``direction``
    (one pass where ``options.one_pass``). ``fields`` (this step's r and α) replace the
    options' own, as in ``penalized_gradient``; ``norm`` and ``diagnose`` as there (where
    ``options.measures_sharpness``; the other variants ignore it).
    """
    options = with_fields(options, fields)
    state = {} if state is None else state
    if options.reuse_period > 1:
        value, grads, reference, reused = reuse_penalized_gradient(
            clean_value_and_grad,
            gradient_at,
            params,
            ReuseState(**state),
            options,
            state_axis_name=state_axis_name,
            full=full,
        )
        return StepGradient(value, grads, reference, reused._asdict())
    if options.one_pass:
        point = perturb(
            params, direction, options.r, options.perturbation, options.eta, options.asam_leaves
        )
        value, grads = clean_value_and_grad(point)
        return StepGradient(value, grads, None, state)
    value, grads, reference, *second = penalized_gradient(
        clean_value_and_grad,
        gradient_at,
        params,
        options,
        direction=direction,
        norm=norm,
        diagnose=diagnose,
    )
    return StepGradient(value, grads, reference, state, *second)
