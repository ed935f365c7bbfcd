"""Train and eval steps: pure functions of (state, batch), data-parallel over a device mesh.

Each step runs per device under ``shard_map`` (axis ``data``) with the pmap-like
semantics of ``check_vma=False``: every device holds its local gradient, so the
GNP perturbation is per device (m-sharpness, the released default) unless
``sync_perturbations`` averages it first. Gradients, BatchNorm statistics and
metrics are then averaged over devices, and every device applies the same update.
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
from gnp.optim import l2_penalty
from gnp.train.gr_schedule import GRSchedule

PyTree = Any
AXIS = "data"
RNG_STREAMS = ("dropout", "drop_path", "shake")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    rng: jax.Array  # raw uint32 key; each step folds in its step number

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
    normalize_reference: bool = False
    sync_perturbations: bool = False


def _supports_true_gradient(model: nn.Module) -> bool:
    return bool(getattr(model, "supports_true_gradient", False))


def make_loss_fn(
    model: nn.Module, loss_config: LossConfig, images: jax.Array, labels: jax.Array, rngs: dict
) -> Callable[..., tuple[jax.Array, tuple]]:
    """``loss(params, batch_stats, true_gradient)`` → (objective, (new_batch_stats, logits, ce))."""

    def loss_fn(params: PyTree, batch_stats: PyTree, true_gradient: bool = False):
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        kwargs = {"true_gradient": true_gradient} if _supports_true_gradient(model) else {}
        logits, updates = model.apply(
            variables, images, train=True, rngs=rngs, mutable=["batch_stats"], **kwargs
        )
        targets = labels
        if loss_config.label_smoothing > 0:
            targets = optax.smooth_labels(labels, loss_config.label_smoothing)
        cross_entropy = optax.softmax_cross_entropy(logits, targets).mean()
        objective = cross_entropy + l2_penalty(
            params,
            loss_config.l2_regularization,
            skip_vectors=loss_config.no_weight_decay_on_bn,
        )
        return objective, (updates.get("batch_stats", batch_stats), logits, cross_entropy)

    return loss_fn


def _error_rate(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, -1) != jnp.argmax(labels, -1))


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
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """One jitted step; ``penalized`` picks the GNP step or the plain one (each compiles once)."""

    def per_device(state: TrainState, images: jax.Array, labels: jax.Array):
        rng = jax.random.fold_in(
            jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(AXIS)
        )
        rngs = {name: jax.random.fold_in(rng, i) for i, name in enumerate(RNG_STREAMS)}
        loss_fn = make_loss_fn(model, loss_config, images, labels, rngs)
        true_gradient = _supports_true_gradient(model)
        if penalized:
            r, alpha = gr.values(state.step)
            grad_fn = gnp.value_and_grad(
                lambda p, s: loss_fn(p, s, true_gradient),
                perturbed_loss_fn=lambda p, s: loss_fn(p, s, False),
                r=r,
                alpha=alpha,
                has_aux=True,
                method=gnp_options.method,
                perturbation=gnp_options.perturbation,
                eta=gnp_options.eta,
                normalize_reference=gnp_options.normalize_reference,
                axis_name=AXIS if gnp_options.sync_perturbations else None,
                return_clean_grad=True,
            )
            (_, (batch_stats, logits, cross_entropy)), grads, clean_grads = grad_fn(
                state.params, state.batch_stats
            )
        else:
            r = alpha = jnp.zeros((), jnp.float32)
            (_, (batch_stats, logits, cross_entropy)), grads = jax.value_and_grad(
                loss_fn, has_aux=True
            )(state.params, state.batch_stats)
            clean_grads = grads
        grads, clean_grads, batch_stats = jax.lax.pmean((grads, clean_grads, batch_stats), AXIS)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "train_loss": cross_entropy,
            "train_error_rate": _error_rate(logits, labels),
        }
        metrics = jax.lax.pmean(metrics, AXIS)
        metrics |= {
            "gradient_norm": gnp.global_norm(clean_grads),
            "update_norm": gnp.global_norm(updates),
            "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
            "r": jnp.asarray(r, jnp.float32),
            "alpha": jnp.asarray(alpha, jnp.float32),
        }
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        return new_state, metrics

    step = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(), P(AXIS), P(AXIS)),
        out_specs=(P(), P()),
        check_vma=False,
    )
    jitted = jax.jit(step, donate_argnums=(0,))
    return lambda state, batch: jitted(state, batch["image"], batch["label"])


def make_eval_step(model: nn.Module, mesh: Mesh) -> Callable[[TrainState, dict], dict]:
    """Sums (not means) over the real samples of a padded batch, so a set's totals are exact."""

    def per_device(state: TrainState, images: jax.Array, labels: jax.Array, mask: jax.Array):
        variables = {"params": state.params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
        logits = model.apply(variables, images, train=False)
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
        in_specs=(P(), P(AXIS), P(AXIS), P(AXIS)),
        out_specs=P(),
        check_vma=False,
    )
    jitted = jax.jit(step)
    return lambda state, batch: jitted(state, batch["image"], batch["label"], batch["mask"])


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Host-local numpy rows → one global array sharded along ``data``."""
    sharding = NamedSharding(mesh, P(AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    return jax.device_put(tree, NamedSharding(mesh, P()))


def create_train_state(
    model: nn.Module,
    optimizer_fn: Callable[[PyTree], optax.GradientTransformation],
    image_shape: tuple[int, ...],
    *,
    init_seed: int,
    seed: int,
) -> tuple[TrainState, optax.GradientTransformation]:
    """Initialize params from ``init_seed``; the optimizer may depend on the params (masks)."""

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
    )
    return state, optimizer
