"""Train and eval steps: pure functions of (state, batch), data-parallel over a device mesh.

Each step runs per device under ``shard_map`` (axis ``data``) with the pmap-like
semantics of ``check_vma=False``: every device holds its local gradient, so the
GNP perturbation is per device (m-sharpness, the released default) unless
``sync_perturbations`` averages it first. Gradients, BatchNorm statistics and
metrics are then averaged over devices, and every device applies the same update.
BatchNorm normalizes by each device's own batch statistics (as the released code did) unless
``sync_batch_norm`` takes them over the whole global batch (``models.synchronized_batch_norm``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gnp
from gnp import efficient, models
from gnp.optim import l2_penalty
from gnp.train.gr_schedule import GRSchedule
from gnp.train.sharding import AXIS, ParamLayout

PyTree = Any
RNG_STREAMS = ("dropout", "drop_path", "shake")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    rng: jax.Array  # raw uint32 key; each step folds in its step number
    # gnp.efficient's reuse state as a dict (checkpointed with the rest); {} when unused.
    reuse: PyTree = flax.struct.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    label_smoothing: float = 0.0
    l2_regularization: float = 0.0
    no_weight_decay_on_bn: bool = False


@dataclasses.dataclass(frozen=True)
class GNPOptions:
    """How a GNP step computes its gradient (see ``gnp.value_and_grad``)."""

    method: str = "finite_difference"
    perturbation: str = "sam"
    eta: float = 0.01
    asam_leaves: str = "weights"
    normalize_reference: bool = False
    sync_perturbations: bool = False
    reuse_period: int = 1  # > 1: the perturbed gradient every k GNP steps (gnp.efficient)
    orthogonal_scale: float | None = None  # LookSAM's fixed ratio; None: measured
    direction: str = "gradient"  # or "momentum": perturb along −momentum (MSAM)


DIRECTIONS = ("gradient", "momentum")
MOMENTUM_NAMES = ("trace", "mu")  # optax's SGD momentum and Adam's first moment


def momentum_of(opt_state: PyTree) -> PyTree:
    """The optimizer's momentum (SGD's ``trace`` or Adam's ``mu``) inside ``opt_state``."""
    for name in MOMENTUM_NAMES:
        found = optax.tree_utils.tree_get(opt_state, name)
        if found is not None:
            return found
    raise ValueError(
        "gnp.perturbation_direction='momentum' needs an optimizer with momentum "
        "(opt.opt_type Momentum, SGD with momentum, or Adam)"
    )


def _supports_true_gradient(model: nn.Module) -> bool:
    return bool(getattr(model, "supports_true_gradient", False))


def model_variables(params: PyTree, batch_stats: PyTree) -> dict[str, PyTree]:
    """The variables ``model.apply`` takes: ``batch_stats`` only for a model that has BatchNorm
    (an empty collection would be one the model does not declare)."""
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    return variables


def objective(
    logits: jax.Array,
    targets: jax.Array,
    params: PyTree,
    loss_config: LossConfig,
    weights: jax.Array | None = None,
) -> jax.Array:
    """The training objective: the (label-smoothed) cross-entropy against one-hot ``targets``,
    a batch mean (``weights``: a weighted one, e.g. a padded batch's mask), plus the L2 term.

    The trainer's loss and the analysis of a finished run both call it, so that the function
    whose gradient norm or Hessian is measured is the one that was trained.
    """
    if loss_config.label_smoothing > 0:
        targets = optax.smooth_labels(targets, loss_config.label_smoothing)
    losses = optax.softmax_cross_entropy(logits, targets)
    if weights is None:
        mean = losses.mean()
    else:
        mean = jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    return mean + l2_penalty(
        params,
        loss_config.l2_regularization,
        skip_vectors=loss_config.no_weight_decay_on_bn,
    )


def make_loss_fn(
    model: nn.Module, loss_config: LossConfig
) -> Callable[..., tuple[jax.Array, tuple[PyTree, dict]]]:
    """``loss(params, batch_stats, images, labels, rngs, true_gradient)``.

    Returns ``(objective, (new_batch_stats, metrics))``: the objective is the
    (label-smoothed) cross-entropy plus the L2 term, the metrics the plain
    cross-entropy and error rate of this batch.
    """

    def loss_fn(params, batch_stats, images, labels, rngs, true_gradient=False):
        kwargs = {"true_gradient": true_gradient} if _supports_true_gradient(model) else {}
        logits, updates = model.apply(
            model_variables(params, batch_stats),
            images,
            train=True,
            rngs=rngs,
            mutable=["batch_stats"],
            **kwargs,
        )
        cross_entropy = optax.softmax_cross_entropy(logits, labels).mean()
        value = objective(logits, labels, params, loss_config)
        metrics = {
            "train_loss": cross_entropy,
            "train_error_rate": jnp.mean(jnp.argmax(logits, -1) != jnp.argmax(labels, -1)),
        }
        return value, (updates.get("batch_stats", batch_stats), metrics)

    return loss_fn


def _micro_batches(tree: PyTree, count: int) -> PyTree:
    """[B, ...] → [count, B/count, ...]."""
    return jax.tree.map(lambda x: x.reshape(count, x.shape[0] // count, *x.shape[1:]), tree)


def _tree_mean(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), tree)


def make_gradient_passes(
    loss_fn: Callable[..., Any],
    batch_stats: PyTree,
    images: jax.Array,
    labels: jax.Array,
    rng: jax.Array,
    *,
    accumulation_steps: int,
    true_gradient_first: bool,
) -> tuple[Callable, Callable]:
    """The clean pass ``θ ↦ (value, ∇L)`` and the perturbed pass ``θ' ↦ ∇L(θ')``.

    With ``accumulation_steps`` > 1 each pass walks the micro-batches in a scan,
    so only one micro-batch's activations live at a time, and returns the mean
    gradient: exactly the whole batch's gradient (for models without
    BatchNorm; with it, each micro-batch normalizes by its own statistics and
    updates the running statistics in turn, as PyTorch accumulation does).
    Micro-batch i uses the same random draws in both passes.
    """

    def rngs_for(index: jax.Array | int) -> dict[str, jax.Array]:
        key = jax.random.fold_in(rng, index)
        return {name: jax.random.fold_in(key, i) for i, name in enumerate(RNG_STREAMS)}

    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    if accumulation_steps == 1:
        rngs = rngs_for(0)

        def clean(params):
            return value_and_grad(params, batch_stats, images, labels, rngs, true_gradient_first)

        def perturbed(params):
            return value_and_grad(params, batch_stats, images, labels, rngs, False)[1]

        return clean, perturbed

    micro = _micro_batches((images, labels), accumulation_steps)
    indices = jnp.arange(accumulation_steps)

    def clean(params):
        def body(stats, xs):
            index, (x, y) = xs
            (objective, (stats, metrics)), grads = value_and_grad(
                params, stats, x, y, rngs_for(index), true_gradient_first
            )
            return stats, (objective, metrics, grads)

        stats, (objectives, metrics, grads) = jax.lax.scan(body, batch_stats, (indices, micro))
        return (jnp.mean(objectives), (stats, _tree_mean(metrics))), _tree_mean(grads)

    def perturbed(params):
        def body(total, xs):
            index, (x, y) = xs
            grads = value_and_grad(params, batch_stats, x, y, rngs_for(index), False)[1]
            return jax.tree.map(jnp.add, total, grads), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        total, _ = jax.lax.scan(body, zeros, (indices, micro))
        return jax.tree.map(lambda g: g / accumulation_steps, total)

    return clean, perturbed


def make_train_step(
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    loss_config: LossConfig,
    gr: GRSchedule,
    gnp_options: GNPOptions,
    penalized: bool,
    accumulation_steps: int = 1,
    gradient_clipping: float = 0.0,
    full: bool = True,
    sync_batch_norm: bool = False,
    state_specs: TrainState | None = None,
) -> Any:
    """``step(state, images, labels) → (state, metrics)``, jitted, the state donated.

    ``penalized`` picks the GNP step or the plain one (each compiles once). With
    ``gnp_options.reuse_period`` > 1, ``full`` picks a GNP step's two kinds: the full
    step (two passes, refreshes the reuse state) or the reuse step (one pass); the
    caller makes every ``reuse_period``-th GNP step a full one.
    ``gradient_clipping`` is the optimizer's global-norm clip (0: none), which the
    logged ``gradient_norm`` reports after clipping.
    ``sync_batch_norm``: in train mode every BatchNorm layer normalizes by the mean and
    variance of the global batch (all devices and hosts), at both GNP points, and the running
    statistics follow them; a model without BatchNorm is unchanged.
    ``state_specs``: the state's ``PartitionSpec`` tree when its parameters and optimizer
    state are sharded over ``data`` (``gnp.train.sharding.state_specs``); None: replicated.
    Sharded, each device gathers the parameters, computes its gradient as it would
    replicated, and keeps its shard of the device mean; the optimizer updates the shards.
    Per-device perturbations are unchanged; synced ones are computed on the shards.

    The norms logged have one meaning on every kind of step and any number of devices
    (``docs/training.md``): ``gradient_norm`` is ‖ḡ‖ of the gradient handed to the
    optimizer (averaged over devices, clipped), ``clean_gradient_norm`` is ‖∇L(θ)‖ of
    the whole global batch at the clean point (equal to the unclipped ‖ḡ‖ on a plain
    step), ``update_norm`` the optimizer's update, ``param_norm`` θ after the update.
    """
    if sync_batch_norm:
        model = models.synchronized_batch_norm(model, AXIS)
    loss_fn = make_loss_fn(model, loss_config)
    perturbation = dict(
        perturbation=gnp_options.perturbation,
        eta=gnp_options.eta,
        asam_leaves=gnp_options.asam_leaves,
    )
    # α = 1 along the momentum needs no clean gradient (α fixed: not the lambda warmup).
    one_pass = (
        gnp_options.direction == "momentum"
        and gr.alpha == 1
        and gr.strategy != "lambda"
        and not gnp_options.normalize_reference
        and gnp_options.reuse_period == 1
    )

    layout = ParamLayout(None if state_specs is None else state_specs.params)
    # Synced perturbations of sharded parameters: both passes return their shard of the
    # device-mean gradient, and the GNP math runs on the shards (the variants that perturb
    # along another direction or reuse a gradient take the whole-tree path below).
    on_shards = (
        layout.sharded
        and gnp_options.sync_perturbations
        and gnp_options.reuse_period == 1
        and gnp_options.direction == "gradient"
    )

    def per_device(state: TrainState, images: jax.Array, labels: jax.Array):
        rng = jax.random.fold_in(
            jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(AXIS)
        )
        params = layout.gather(state.params)
        clean, perturbed = make_gradient_passes(
            loss_fn,
            state.batch_stats,
            images,
            labels,
            rng,
            accumulation_steps=accumulation_steps,
            true_gradient_first=penalized and _supports_true_gradient(model),
        )
        reuse = state.reuse
        direction = (  # MSAM perturbs towards the next update: minus the momentum
            jax.tree.map(jnp.negative, layout.gather(momentum_of(state.opt_state)))
            if penalized and gnp_options.direction == "momentum"
            else None
        )
        averaged = False  # whether grads is the device mean already
        reference_norm = layout.norm  # the norm of the reference in the layout it ends in
        if penalized and one_pass:
            # MSAM: only the perturbed point's pass; its loss and statistics are logged.
            r, alpha = gr.values(state.step)
            point = gnp.perturb(params, direction, r, **perturbation)
            (_, (batch_stats, metrics)), grads = clean(point)
            reference = None
        elif penalized and on_shards:
            r, alpha = gr.values(state.step)

            def clean_shards(shards):
                value, grads = clean(layout.gather(shards))
                return value, layout.device_mean(grads)

            (_, (batch_stats, metrics)), grads, reference = gnp.penalized_gradient(
                clean_shards,
                lambda shards: layout.device_mean(perturbed(layout.gather(shards))),
                state.params,
                r=r,
                alpha=alpha,
                method=gnp_options.method,
                normalize_reference=gnp_options.normalize_reference,
                norm=layout.norm,
                **perturbation,
            )
            averaged = True
        elif penalized:
            r, alpha = gr.values(state.step)
            options = dict(
                r=r,
                alpha=alpha,
                **perturbation,
                normalize_reference=gnp_options.normalize_reference,
                axis_name=AXIS if gnp_options.sync_perturbations else None,
            )
            if gnp_options.reuse_period > 1:
                (_, (batch_stats, metrics)), grads, reference, reuse = (
                    efficient.reuse_penalized_gradient(
                        clean,
                        perturbed,
                        params,
                        efficient.ReuseState(**state.reuse),
                        period=gnp_options.reuse_period,
                        orthogonal_scale=gnp_options.orthogonal_scale,
                        state_axis_name=AXIS,
                        full=full,
                        **options,
                    )
                )
                reuse = reuse._asdict()
            else:
                (_, (batch_stats, metrics)), grads, reference = gnp.penalized_gradient(
                    clean,
                    perturbed,
                    params,
                    method=gnp_options.method,
                    direction=direction,
                    **options,
                )
            # Synced, the reference is already the global batch's ∇L(θ), whole on every
            # device; per device it is the local one, and its global norm costs one more
            # gradient reduction.
            if gnp_options.sync_perturbations:
                reference_norm = gnp.global_norm
            else:
                reference = layout.device_mean(reference)
        else:
            r = alpha = jnp.zeros((), jnp.float32)
            (_, (batch_stats, metrics)), grads = clean(params)
        if layout.sharded:
            grads = grads if averaged else layout.device_mean(grads)
            batch_stats, metrics = jax.lax.pmean((batch_stats, metrics), AXIS)
        else:  # one all-reduce for all three
            grads, batch_stats, metrics = jax.lax.pmean((grads, batch_stats, metrics), AXIS)
        gradient_norm = layout.norm(grads)
        if not penalized:
            reference = grads
        if reference is not None:  # no clean pass in a one-pass (MSAM) step: not logged
            metrics["clean_gradient_norm"] = reference_norm(reference)
        if gradient_clipping > 0:  # optax.clip_by_global_norm: ‖clip(g)‖ = min(‖g‖, c)
            if layout.sharded:  # the optimizer's clip sees one shard: clip the whole here
                factor = jnp.minimum(1.0, gradient_clipping / gradient_norm)
                grads = jax.tree.map(lambda g: g * factor.astype(g.dtype), grads)
            gradient_norm = jnp.minimum(gradient_norm, gradient_clipping)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics |= {
            "gradient_norm": gradient_norm,
            "update_norm": layout.norm(updates),
            "param_norm": layout.norm(params),
            "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
            "r": jnp.asarray(r, jnp.float32),
            "alpha": jnp.asarray(alpha, jnp.float32),
        }
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            reuse=reuse,
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


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Host-local numpy rows → one global array sharded along ``data``."""
    sharding = NamedSharding(mesh, P(AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def create_train_state(
    model: nn.Module,
    optimizer_fn: Callable[[PyTree], optax.GradientTransformation],
    image_shape: tuple[int, ...],
    *,
    init_seed: int,
    seed: int,
    reuse: bool = False,
) -> tuple[TrainState, optax.GradientTransformation]:
    """Initialize params from ``init_seed``; the optimizer may depend on the params (masks).

    ``reuse``: hold ``gnp.efficient``'s reuse state (``GNPOptions.reuse_period`` > 1).
    """

    @jax.jit
    def init(key: jax.Array) -> PyTree:
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        return model.init({"params": key}, dummy, train=False)

    variables = init(jax.random.PRNGKey(init_seed))
    params = variables["params"]
    optimizer = optimizer_fn(params)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=optimizer.init(params),
        rng=jax.random.PRNGKey(seed),
        reuse=efficient.reuse_init(params)._asdict() if reuse else {},
    )
    return state, optimizer
