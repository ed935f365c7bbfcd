"""From a validated config to code: the model, the optimizer and state, the train steps.

The one place where config names become the library's names (``gnp.norm_perturbations``
is ``GNPOptions.normalize_reference``, ``gr_warmup_strategy`` is ``GRSchedule.strategy``,
...). The trainer, ``gnp-train --dry_run``, the analysis of a finished run and the tests
all build from here, so a config means one set of objects wherever it is read.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from gnp import models
from gnp.models.layers import BATCH_NORM_AXIS_FIELD
from gnp.optim import build_optimizer, learning_rate_schedule
from gnp.train import sharding
from gnp.train.gr_schedule import GRSchedule, hybrid_probability
from gnp.train.steps import (
    GNPOptions,
    LossConfig,
    TrainState,
    create_train_state,
    make_train_step,
)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# The train steps a run compiles, keyed by (GNP step?, full step?): with gnp.reuse_period > 1
# a GNP step is either a full one (every reuse_period-th) or a reuse one.
STEP_KINDS = ((False, True), (True, True), (True, False))


def build_model(config: Any, num_classes: int) -> nn.Module:
    """The configured model; ``model.model_params`` override its fields (e.g. a smaller ViT),
    and the released top-level ``use_additional_skip_connections_in_wrn`` sets the WideResNet
    field of that name."""
    fields = dict(config.model.get("model_params", {}))
    if config.get("use_additional_skip_connections_in_wrn", False):
        fields["use_additional_skip_connections"] = True
    return models.get_model(
        config.model.model_name,
        num_classes=num_classes,
        dtype=DTYPES[config.model.dtype],
        **fields,
    )


def loss_config(config: Any) -> LossConfig:
    """The training objective's terms besides the cross-entropy."""
    return LossConfig(
        label_smoothing=config.label_smoothing,
        l2_regularization=config.l2_regularization,
        no_weight_decay_on_bn=config.no_weight_decay_on_bn,
    )


def gnp_options(config: Any) -> GNPOptions:
    """How a GNP step computes its gradient, from the ``gnp`` block."""
    return GNPOptions(
        method=config.gnp.method,
        perturbation=config.gnp.perturbation,
        eta=config.gnp.eta,
        asam_leaves=config.gnp.asam_leaves,
        normalize_reference=config.gnp.norm_perturbations,
        sync_perturbations=config.gnp.sync_perturbations,
        reuse_period=config.gnp.reuse_period,
        orthogonal_scale=config.gnp.orthogonal_scale,
        direction=config.gnp.perturbation_direction,
    )


def gr_schedule(config: Any, steps_per_epoch: int) -> GRSchedule:
    """Which steps are GNP steps, and their r and α at each step."""
    return GRSchedule(
        r=config.gnp.r,
        alpha=config.gnp.alpha,
        strategy=config.gr_warmup_strategy,
        warmup_steps=int(config.warmup_epochs * steps_per_epoch),
        hybrid_p=(
            hybrid_probability(config.schedule_function, config.hybrid_config)
            if config.use_hybrid_training
            else None
        ),
        seed=config.seeds,
    )


def train_state(
    config: Any, model: nn.Module, image_shape: tuple[int, ...], steps_per_epoch: int
) -> tuple[TrainState, optax.GradientTransformation, optax.Schedule]:
    """The initial state (params from ``init_seeds``), its optimizer and learning-rate schedule."""
    schedule = learning_rate_schedule(config, steps_per_epoch)
    state, optimizer = create_train_state(
        model,
        lambda params: build_optimizer(config, schedule, params),
        image_shape,
        init_seed=config.init_seeds,
        seed=config.seeds,
        reuse=config.gnp.reuse_period > 1,
    )
    if (
        config.model.sync_batch_norm
        and state.batch_stats
        and not hasattr(model, BATCH_NORM_AXIS_FIELD)
    ):
        raise ValueError(
            f"model.sync_batch_norm: {config.model.model_name} has BatchNorm layers but no field "
            f"{BATCH_NORM_AXIS_FIELD}, so they cannot be synchronized; build them with "
            "gnp.models.layers.batch_norm (docs/models.md)"
        )
    return state, optimizer, schedule


def state_specs(config: Any, state: TrainState) -> TrainState | None:
    """The state's layout on the mesh: parameters and optimizer state sharded over every device
    (``shard_params``), or None: replicated."""
    return sharding.state_specs(state, jax.device_count()) if config.shard_params else None


def train_steps(
    config: Any,
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    gr: GRSchedule,
    state_specs: TrainState | None = None,
) -> dict[tuple[bool, bool], Any]:
    """The run's train steps keyed by (GNP step?, full step?) (``STEP_KINDS``); each compiles
    once, on first use. ``state_specs``: the sharded state's layout (``shard_params``)."""
    return {
        (penalized, full): make_train_step(
            model=model,
            optimizer=optimizer,
            schedule=schedule,
            mesh=mesh,
            loss_config=loss_config(config),
            gr=gr,
            accumulation_steps=config.grad_accum_steps,
            gradient_clipping=config.gradient_clipping,
            gnp_options=gnp_options(config),
            penalized=penalized,
            full=full,
            sync_batch_norm=config.model.sync_batch_norm,
            state_specs=state_specs,
        )
        for penalized, full in STEP_KINDS
    }
