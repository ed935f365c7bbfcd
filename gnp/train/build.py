"""From a validated config to code: the model, the optimizer and state, the train steps.

The one place where config names become the library's names (``gnp.norm_perturbations``
is ``GNPOptions.normalize_reference``, ``gr_warmup_strategy`` is ``GRSchedule.strategy``,
...). The trainer, ``gnp-train --dry_run``, the analysis of a finished run and the tests
all build from here, so a config means one set of objects wherever it is read.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import optax
from jax.sharding import Mesh

from gnp import models
from gnp.choices import did_you_mean
from gnp.gr_schedule import GRSchedule, hybrid_probability
from gnp.models.layers import BATCH_NORM_AXIS_FIELD
from gnp.optim import build_optimizer, learning_rate_schedule
from gnp.options import GNPOptions, OptionError
from gnp.train import distributed
from gnp.train.distributed import AXIS
from gnp.train.objective import LossConfig
from gnp.train.state import TrainState, create_train_state
from gnp.train.steps import STEP_KINDS, make_train_step

# The config key of each GNPOptions field whose name differs (the released names); every other
# field is read from the key gnp.<field>. axis_name is set from gnp.sync_perturbations.
GNP_KEYS = {
    "normalize_reference": "norm_perturbations",
    "direction": "perturbation_direction",
    "axis_name": "sync_perturbations",
}
WRN_SKIP_KEY = "use_additional_skip_connections_in_wrn"  # released top-level WideResNet option
WRN_SKIP_FIELD = "use_additional_skip_connections"


def model_defaults(config: Any, names: list[str]) -> dict[str, Any]:
    """The chosen model's default value of each field in ``names``; a name that is not one of
    its fields is refused with the fields it has and the closest one."""
    model = models.get_model(
        config.model.model_name, num_classes=2, dtype=models.DTYPES[config.model.dtype]
    )
    # num_classes and dtype come from the data set and model.dtype, not model_params.
    fields = {k: v for k, v in model_fields(model).items() if k not in ("num_classes", "dtype")}
    for name in names:
        if name not in fields:
            raise ValueError(
                f"model.model_params.{name} is not a field of {config.model.model_name}"
                f"{did_you_mean(name, list(fields))}; its fields: {', '.join(sorted(fields))}"
            )
    return {name: fields[name] for name in names}


def model_fields(model: nn.Module) -> dict[str, Any]:
    """The flax module's dataclass fields in force (defaults and overrides alike). Not the
    BatchNorm axis: the train step sets it (``model.sync_batch_norm``)."""
    return {
        f.name: getattr(model, f.name)
        for f in dataclasses.fields(model)
        if f.name not in ("parent", "name", BATCH_NORM_AXIS_FIELD)
    }


def build_model(config: Any, num_classes: int) -> nn.Module:
    """The configured model; ``model.model_params`` override its fields (e.g. a smaller ViT),
    and the released top-level ``use_additional_skip_connections_in_wrn`` sets the WideResNet
    field of that name."""
    model_defaults(config, list(config.model.get("model_params", {})))
    model = models.get_model(
        config.model.model_name,
        num_classes=num_classes,
        dtype=models.DTYPES[config.model.dtype],
        **config.model.get("model_params", {}),
    )
    if not config.get(WRN_SKIP_KEY, False):
        return model
    if not hasattr(model, WRN_SKIP_FIELD):
        raise ValueError(
            f"{WRN_SKIP_KEY} applies to WideResNet models only (the released option), not "
            f"{config.model.model_name}; set it to False"
        )
    return model.clone(**{WRN_SKIP_FIELD: True})


def loss_config(config: Any) -> LossConfig:
    """The training objective's terms besides the cross-entropy."""
    return LossConfig(
        label_smoothing=config.label_smoothing,
        l2_regularization=config.l2_regularization,
        no_weight_decay_on_bn=config.no_weight_decay_on_bn,
    )


def gnp_options(config: Any) -> GNPOptions:
    """How a GNP step computes its gradient, from the ``gnp`` block; an option out of range is
    a ValueError naming its config key."""
    block = config.gnp
    values = {
        field: block[GNP_KEYS.get(field, field)]
        for field in GNPOptions.__dataclass_fields__
        if field != "axis_name"
    }
    try:
        return GNPOptions(**values, axis_name=AXIS if block.sync_perturbations else None)
    except OptionError as error:
        keys = {
            field: f"gnp.{GNP_KEYS.get(field, field)}" for field in GNPOptions.__dataclass_fields__
        }
        raise ValueError(error.named(keys)) from None


def decoupled_gr(config: Any) -> bool:
    """``gnp.decoupled``: decoupled GR (``steps.decoupled_updates``), the optimizer on the clean
    gradient g1 and the penalty part outside it; refused where a GNP step computes no g1."""
    if not config.gnp.decoupled:
        return False
    if gnp_options(config).one_pass:
        raise ValueError(
            "gnp.decoupled needs the clean gradient g1, which MSAM's one-pass step "
            "(gnp.perturbation_direction='momentum' at gnp.alpha=1) does not compute; set "
            "gnp.decoupled=False or gnp.perturbation_direction='gradient'"
        )
    return True


def gr_schedule(config: Any, steps_per_epoch: int) -> GRSchedule:
    """Which steps are GNP steps, and their r and α at each step (``gnp.r_schedule``
    ``lr_proportional``: r follows the learning-rate schedule of the optimizer)."""
    proportional = config.gnp.r_schedule == "lr_proportional"
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
        r_schedule=config.gnp.r_schedule,
        r_min=config.gnp.r_min,
        learning_rate=learning_rate_schedule(config, steps_per_epoch) if proportional else None,
        total_steps=config.total_epochs * steps_per_epoch if proportional else 0,
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
    return distributed.state_specs(state, jax.device_count()) if config.shard_params else None


def train_steps(
    config: Any,
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    gr: GRSchedule,
    state_specs: TrainState | None = None,
) -> dict[str, Any]:
    """The run's train steps by kind (``steps.STEP_KINDS``: ``plain``, ``gnp``, ``gnp_reuse``);
    each compiles once, on first use. ``state_specs``: the sharded state's layout."""
    options = gnp_options(config)
    return {
        kind: make_train_step(
            model=model,
            optimizer=optimizer,
            schedule=schedule,
            mesh=mesh,
            loss_config=loss_config(config),
            gr=gr,
            gnp_options=options,
            kind=kind,
            accumulation_steps=config.grad_accum_steps,
            gradient_clipping=config.gradient_clipping,
            sync_batch_norm=config.model.sync_batch_norm,
            state_specs=state_specs,
            decoupled=decoupled_gr(config),
        )
        for kind in STEP_KINDS
    }
