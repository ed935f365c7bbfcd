"""Train and eval steps: pure functions of (state, batch), data-parallel over a device mesh.

Each step runs per device under ``shard_map`` (axis ``data``) with the pmap-like
semantics of ``check_vma=False``: every device holds its local gradient, so the
GNP perturbation is per device (m-sharpness, the released default) unless
``sync_perturbations`` averages it first. Gradients, BatchNorm statistics and
metrics are then averaged over devices, and every device applies the same update.
BatchNorm normalizes by each device's own batch statistics (as the released code did) unless
``sync_batch_norm`` takes them over the whole global batch (``models.synchronized_batch_norm``).

A run compiles one step per kind (``STEP_KINDS``), each on first use: ``plain`` (one pass),
``gnp`` (the configured GNP variant; with reuse, its full step) and ``gnp_reuse`` (a reuse
step: the clean pass only, ``gnp.reuse_period`` > 1).

Sharded parameters (``shard_params``): each device gathers the parameters, computes its
gradient as it would replicated, and keeps its shard of the device mean; the optimizer updates
the shards. Per-device perturbations are unchanged; synced ones are computed on the shards.

The norms logged have one meaning on every kind of step and any number of devices
(``docs/training.md``): ``gradient_norm`` is ‖ḡ‖ of the gradient handed to the optimizer
(averaged over devices, clipped), ``clean_gradient_norm`` is ‖∇L(θ)‖ of the whole global batch
at the clean point (equal to the unclipped ‖ḡ‖ on a plain step), ``update_norm`` the update
applied (the optimizer's; with decoupled GR, plus the penalty part), ``param_norm`` θ after the
update. A GNP step also logs the sharpness diagnostics of its two passes
(``sharpness_metrics``), of the whole global batch too.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import gnp
from gnp import efficient, models
from gnp.choices import check_choice
from gnp.gr_schedule import GRSchedule
from gnp.gradient import Norm
from gnp.optim import momentum_of
from gnp.train.distributed import AXIS, ParamLayout
from gnp.train.objective import (
    LossConfig,
    gradient_passes,
    make_loss_fn,
    model_variables,
    supports_true_gradient,
)
from gnp.train.state import TrainState

PyTree = Any
STEP_KINDS = ("plain", "gnp", "gnp_reuse")


def step_kind(gnp_step: bool, reuse_full: bool) -> str:
    """The compiled step a step takes: plain, or GNP (its full step, or a reuse step)."""
    if not gnp_step:
        return "plain"
    return "gnp" if reuse_full else "gnp_reuse"


def clean_gradient_mean(
    reference: PyTree, layout: ParamLayout, *, averaged: bool, synced: bool
) -> tuple[PyTree, Norm]:
    """∇L(θ) of the whole global batch and the norm that measures it, from the clean gradient
    the step computed: the device mean already (``averaged``), the global one whole on every
    device (``synced``), or each device's own (then its mean costs one more gradient
    reduction)."""
    if averaged:
        return reference, layout.norm
    if synced:
        return reference, gnp.global_norm
    return layout.device_mean(reference), layout.norm


def sharpness_metrics(
    result: efficient.StepGradient,
    clean_mean: PyTree,
    norm: Norm,
    layout: ParamLayout,
    *,
    averaged: bool,
) -> dict[str, jax.Array]:
    """``gnp.diagnostics`` of the whole global batch: both losses and g2 averaged over devices
    as the gradient is (g2 is one more gradient reduction unless ``averaged`` already), so that
    with per-device perturbations they are the m-sharpness step's means (docs/training.md)."""
    perturbed_loss, g2 = result.perturbed
    losses = jax.lax.pmean((result.value[0], perturbed_loss), AXIS)
    g2 = g2 if averaged else layout.device_mean(g2)
    found = gnp.diagnostics(*losses, clean_mean, g2, norm)
    return {key: jnp.asarray(value, jnp.float32) for key, value in found._asdict().items()}


def device_means(
    result: efficient.StepGradient,
    layout: ParamLayout,
    *,
    averaged: bool,
    penalized: bool,
    synced: bool,
    shard: bool,
) -> tuple[PyTree, PyTree | None, PyTree, dict[str, jax.Array]]:
    """``(grads, clean_mean, batch_stats, metrics)`` of the whole global batch: the gradient, the
    clean one g1 (None on a one-pass MSAM step, which has none), the BatchNorm statistics and the
    metrics averaged over devices, with the clean gradient's own metrics. ``shard``: g1 as the
    optimizer takes it (decoupled GR), each device's shard of sharded parameters, never whole."""
    _, (batch_stats, metrics) = result.value
    grads = result.grads
    if layout.sharded:
        grads = grads if averaged else layout.device_mean(grads)
        batch_stats, metrics = jax.lax.pmean((batch_stats, metrics), AXIS)
    else:  # one all-reduce for all three
        grads, batch_stats, metrics = jax.lax.pmean((grads, batch_stats, metrics), AXIS)
    if not penalized:  # the plain step's clean gradient is the averaged one
        result, averaged = result._replace(reference=grads), True
    if result.reference is None:
        return grads, None, batch_stats, metrics
    clean_mean, norm = clean_gradient_mean(
        result.reference, layout, averaged=averaged, synced=synced
    )
    metrics["clean_gradient_norm"] = norm(clean_mean)
    if result.perturbed is not None:
        metrics |= sharpness_metrics(result, clean_mean, norm, layout, averaged=averaged)
    if shard and layout.sharded and synced and not averaged:
        clean_mean = layout.device_mean(clean_mean)  # whole on every device: its shard
    return grads, clean_mean, batch_stats, metrics


def clip_by_norm(grads: PyTree, norm: jax.Array, limit: float, sharded: bool) -> tuple:
    """``(grads, ‖grads‖)`` after clipping the global norm at ``limit`` (0: none).

    optax.clip_by_global_norm in the optimizer does the clipping of replicated gradients (so its
    state stays the released one); of sharded ones it would see one shard: clipped here."""
    if limit <= 0:
        return grads, norm
    if sharded:
        factor = jnp.minimum(1.0, limit / norm)
        grads = jax.tree.map(lambda g: g * factor.astype(g.dtype), grads)
    return grads, jnp.minimum(norm, limit)  # ‖clip(g)‖ = min(‖g‖, c)


def optimizer_step(
    optimizer: optax.GradientTransformation,
    state: TrainState,
    grads: PyTree,
    clean_mean: PyTree | None,
    *,
    learning_rate: jax.Array,
    gradient_clipping: float,
    layout: ParamLayout,
    decoupled: bool,
) -> tuple[PyTree, Any, jax.Array]:
    """``(updates, opt_state, gradient_norm)``: the optimizer's step on the step's gradient, or
    (``decoupled``) on the clean one with the penalty part added outside it
    (``decoupled_updates``). ``gradient_norm`` is of what the optimizer received, clipped."""
    if decoupled and clean_mean is None:
        raise ValueError("gnp.decoupled needs the step's clean gradient; this step has none")
    given = clean_mean if decoupled else grads
    given, gradient_norm = clip_by_norm(
        given, layout.norm(given), gradient_clipping, layout.sharded
    )
    updates, opt_state = optimizer.update(given, state.opt_state, state.params)
    if decoupled:
        updates = decoupled_updates(updates, grads, clean_mean, learning_rate)
    return updates, opt_state, gradient_norm


def decoupled_updates(
    updates: PyTree, grads: PyTree, clean_mean: PyTree, learning_rate: jax.Array
) -> PyTree:
    """Decoupled GR (WSAM's ``decouple``): ``updates − lr·(g − g1)``.

    The optimizer stepped on the clean gradient g1 alone, so its state (Adam's moments, the
    momentum) never sees the penalty; the penalty part of the step's gradient g (α·(g2 − g1) in
    the paper's mix) joins here, at this step's learning rate, as plain gradient descent would
    take it. Not clipped: clipping applies to what the optimizer receives. α = 0: g = g1, the
    optimizer's step exactly."""
    return jax.tree.map(
        lambda u, g, g1: u - (learning_rate * (g - g1)).astype(u.dtype), updates, grads, clean_mean
    )


def on_shards(options: gnp.GNPOptions, layout: ParamLayout) -> bool:
    """Synced perturbations of sharded parameters: both passes return their shard of the device-
    mean gradient, and the GNP math runs on the shards (the cheaper variants take the whole)."""
    return layout.sharded and options.axis_name is not None and not options.cheaper


def step_gradient(
    state: TrainState,
    clean: Any,
    perturbed: Any,
    params: PyTree,
    *,
    kind: str,
    gr: GRSchedule,
    options: gnp.GNPOptions,
    layout: ParamLayout,
) -> tuple[efficient.StepGradient, bool]:
    """The gradient of a step of ``kind`` from its two passes, and whether its gradients are
    the device mean already (computed on the shards, ``on_shards``). A GNP step whose options
    ``measures_sharpness`` also returns its second pass, for ``sharpness_metrics``."""
    if kind == "plain":
        value, grads = clean(params)
        return efficient.StepGradient(value, grads, grads, state.reuse), False
    r, alpha = gr.values(state.step)
    diagnose = options.measures_sharpness
    if on_shards(options, layout):
        options = options.replace(axis_name=None)  # the passes average already

        def clean_shards(shards: PyTree) -> tuple[Any, PyTree]:
            value, grads = clean(layout.gather(shards))
            return value, layout.device_mean(grads)

        def perturbed_shards(shards: PyTree) -> tuple[jax.Array, PyTree]:
            loss, grads = perturbed(layout.gather(shards))
            return loss, layout.device_mean(grads)

        result = efficient.step_gradient(
            clean_shards,
            _gradient_at(perturbed_shards, diagnose),
            state.params,
            options,
            r=r,
            alpha=alpha,
            norm=layout.norm,
            diagnose=diagnose,
        )
        return result._replace(state=state.reuse), True
    direction = (  # MSAM perturbs towards the next update: minus the momentum
        jax.tree.map(jnp.negative, layout.gather(momentum_of(state.opt_state)))
        if options.direction == "momentum"
        else None
    )
    result = efficient.step_gradient(
        clean,
        _gradient_at(perturbed, diagnose),
        params,
        options,
        r=r,
        alpha=alpha,
        state=state.reuse,
        direction=direction,
        state_axis_name=AXIS,
        full=kind == "gnp",
        diagnose=diagnose,
    )
    return result, False


def _gradient_at(perturbed: Any, diagnose: bool) -> Any:
    """The perturbed pass ``θ' ↦ (L(θ'), ∇L(θ'))`` as ``efficient.step_gradient`` takes it:
    whole for the diagnostics, else the gradient alone."""
    return perturbed if diagnose else lambda point: perturbed(point)[1]


def make_train_step(
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    loss_config: LossConfig,
    gr: GRSchedule,
    gnp_options: gnp.GNPOptions,
    kind: str = "gnp",
    accumulation_steps: int = 1,
    gradient_clipping: float = 0.0,
    sync_batch_norm: bool = False,
    state_specs: TrainState | None = None,
    decoupled: bool = False,
) -> Any:
    """``step(state, images, labels) → (state, metrics)``, jitted, the state donated.

    ``kind`` is one of ``STEP_KINDS``; the caller makes every ``reuse_period``-th GNP step a
    full one (``efficient.is_full_step``). ``gnp_options`` come from ``build.gnp_options``
    (``axis_name`` set: synced perturbations); r and α of each step from ``gr``.
    ``gradient_clipping`` is the optimizer's global-norm clip (0: none), which the
    logged ``gradient_norm`` reports after clipping.
    ``sync_batch_norm``: in train mode every BatchNorm layer normalizes by the mean and
    variance of the global batch (all devices and hosts), at both GNP points, and the running
    statistics follow them; a model without BatchNorm is unchanged.
    ``state_specs``: the state's ``PartitionSpec`` tree when its parameters and optimizer
    state are sharded over ``data`` (``gnp.train.distributed.state_specs``); None: replicated.
    ``decoupled``: decoupled GR on a GNP step (``decoupled_updates``). The metrics are the
    module docstring's.
    """
    penalized = check_choice(kind, STEP_KINDS, "kind") != "plain"
    if sync_batch_norm:
        model = models.synchronized_batch_norm(model, AXIS)
    loss_fn = make_loss_fn(model, loss_config)
    layout = ParamLayout(None if state_specs is None else state_specs.params)
    synced = gnp_options.axis_name is not None
    decoupled = decoupled and penalized  # a plain step has no penalty part

    def per_device(state: TrainState, images: jax.Array, labels: jax.Array):
        rng = jax.random.fold_in(
            jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(AXIS)
        )
        params = layout.gather(state.params)
        clean, perturbed = gradient_passes(
            loss_fn,
            state.batch_stats,
            images,
            labels,
            rng,
            gnp_options,
            accumulation_steps=accumulation_steps,
            true_gradient_first=penalized and supports_true_gradient(model),
        )
        result, averaged = step_gradient(
            state, clean, perturbed, params, kind=kind, gr=gr, options=gnp_options, layout=layout
        )
        grads, clean_mean, batch_stats, metrics = device_means(
            result, layout, averaged=averaged, penalized=penalized, synced=synced, shard=decoupled
        )
        learning_rate = schedule(state.step)
        updates, opt_state, gradient_norm = optimizer_step(
            optimizer,
            state,
            grads,
            clean_mean,
            learning_rate=learning_rate,
            gradient_clipping=gradient_clipping,
            layout=layout,
            decoupled=decoupled,
        )
        params = optax.apply_updates(state.params, updates)
        r, alpha = gr.values(state.step) if penalized else (0.0, 0.0)
        metrics |= {
            "gradient_norm": gradient_norm,
            "update_norm": layout.norm(updates),
            "param_norm": layout.norm(params),
            "learning_rate": jnp.asarray(learning_rate, jnp.float32),
            "r": jnp.asarray(r, jnp.float32),
            "alpha": jnp.asarray(alpha, jnp.float32),
        }
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            reuse=result.state,
        )
        return new_state, metrics

    specs = P() if state_specs is None else state_specs
    step = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(specs, P(AXIS), P(AXIS)),
        out_specs=(specs, P()),
        check_vma=False,
    )
    return jax.jit(step, donate_argnums=(0,))


def make_eval_step(model: nn.Module, mesh: Mesh, state_specs: TrainState | None = None) -> Any:
    """``step(state, images, labels, mask) → sums``, jitted; ``state_specs`` as for the train step.

    Sums (not means) over the real samples of a padded batch, so a set's totals are exact.
    """
    layout = ParamLayout(None if state_specs is None else state_specs.params)

    def per_device(state: TrainState, images: jax.Array, labels: jax.Array, mask: jax.Array):
        params = layout.gather(state.params)
        logits = model.apply(model_variables(params, state.batch_stats), images, train=False)
        weights = mask.astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        top5 = jnp.any(jax.lax.top_k(logits, min(5, logits.shape[-1]))[1] == labels[:, None], -1)
        sums = {
            "loss": jnp.sum(losses * weights),
            "errors": jnp.sum((jnp.argmax(logits, -1) != labels) * weights),
            "top5_errors": jnp.sum((~top5) * weights),
            "count": jnp.sum(weights),
        }
        return jax.lax.psum(sums, AXIS)

    step = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P() if state_specs is None else state_specs, P(AXIS), P(AXIS), P(AXIS)),
        out_specs=P(),
        check_vma=False,
    )
    return jax.jit(step)
