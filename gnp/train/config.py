"""Checks a resolved config before anything is built: every error names the fix."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import jax

from gnp import models
from gnp.choices import check_choice
from gnp.configs.base import ignored_key_notices
from gnp.data import dataset_names
from gnp.gradient import ASAM_LEAVES, METHODS, PERTURBATIONS, check_coefficients
from gnp.models.layers import BATCH_NORM_AXIS_FIELD
from gnp.optim import learning_rate_schedule, optimizer_kwargs
from gnp.train.gr_schedule import WARMUP_STRATEGIES, hybrid_probability
from gnp.train.run_config import flatten
from gnp.train.steps import DIRECTIONS

DTYPE_NAMES = ("float32", "bfloat16")
INF = math.inf

# key: (low, high, high included); the values a key can mean something with. (gnp.r, gnp.alpha
# and gnp.eta are checked by gnp.gradient.check_coefficients, the library's own check.)
RANGES: dict[str, tuple[float, float, bool]] = {
    "batch_size": (1, INF, True),
    "eval_batch_size": (0, INF, True),  # 0: same as batch_size
    "base_lr": (0, INF, True),
    "l2_regularization": (0, INF, True),
    "gradient_clipping": (0, INF, True),  # 0: off
    "label_smoothing": (0, 1, False),
    "exponential_decay_rate": (0, 1, True),
    "hybrid_config.p": (0, 1, True),
    "dataset.image_size": (0, INF, True),  # 0: the source's own size
    "dataset.cutout_size": (0, INF, True),  # 0: a size that suits the image size
    "dataset.num_workers": (-1, INF, True),  # -1: from the CPU count
    "dataset.mixup_alpha": (0, INF, True),
    "dataset.label_noise": (0, 1, True),
}


def check_ranges(config: Any) -> None:
    """Every number finite, and every key of ``RANGES`` inside its range; the error names
    the key and the range."""
    values = flatten(config.to_dict())
    for key, value in values.items():
        for number in value if isinstance(value, tuple | list) else (value,):
            if isinstance(number, float) and not math.isfinite(number):
                raise ValueError(f"{key} is {value}; it must be a finite number")
    for key, (low, high, high_included) in RANGES.items():
        value = values.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        inside = low <= value <= high if high_included else low <= value < high
        if not inside:
            upper = "" if high == INF else f", {high}{']' if high_included else ')'}"
            where = f"[{low}{upper}" if upper else f"at least {low}"
            raise ValueError(f"{key} must be {'in ' if upper else ''}{where}, got {value}")


def _check_efficient(config: Any) -> None:
    """The cheaper GNP options (gnp.efficient) and what they combine with."""
    gnp_config = config.gnp
    check_choice(gnp_config.perturbation_direction, DIRECTIONS, "gnp.perturbation_direction")
    period = gnp_config.reuse_period
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"gnp.reuse_period must be an integer ≥ 1 (1: plain GNP), got {period}")
    scale = gnp_config.orthogonal_scale
    if scale is not None and not scale >= 0:
        raise ValueError(f"gnp.orthogonal_scale must be ≥ 0 (LookSAM's α, e.g. 0.7), got {scale}")
    cheaper = period > 1 or gnp_config.perturbation_direction != "gradient"
    if cheaper and gnp_config.method != "finite_difference":
        raise ValueError(
            "gnp.reuse_period > 1 and gnp.perturbation_direction take "
            "gnp.method='finite_difference'"
        )
    if period > 1 and gnp_config.perturbation_direction != "gradient":
        raise ValueError("choose one of gnp.reuse_period > 1 and gnp.perturbation_direction")
    if gnp_config.perturbation_direction == "momentum":
        has_momentum = config.opt.opt_type in ("Momentum", "Adam") or (
            config.opt.opt_type == "SGD" and config.opt.opt_params.get("momentum")
        )
        if not has_momentum:
            raise ValueError(
                "gnp.perturbation_direction='momentum' needs an optimizer with momentum: "
                "opt.opt_type Momentum or Adam, or SGD with opt.opt_params.momentum"
            )


def _check_switch(section: Any, key: str, name: str) -> None:
    """``section[key]`` a bool, False where a config.json from before the key lacks it."""
    if key not in section:
        section[key] = False
    if not isinstance(section[key], bool):
        raise ValueError(f"{name} must be True or False, got {section[key]!r}")


def _check_sync_batch_norm(model_config: Any) -> None:
    """``model.sync_batch_norm`` a switch; the BatchNorm axis is the trainer's to set, not a
    ``model_params`` field."""
    _check_switch(model_config, "sync_batch_norm", "model.sync_batch_norm")
    if BATCH_NORM_AXIS_FIELD in model_config.get("model_params", {}):
        raise ValueError(
            f"model.model_params.{BATCH_NORM_AXIS_FIELD} is the train step's to set: use "
            "model.sync_batch_norm=True for BatchNorm statistics over all devices"
        )


def validate_config(config: Any) -> Any:
    """Returns a copy with derived defaults filled in (eval batch size); raises ValueError."""
    config = config.copy_and_resolve_references()
    check_ranges(config)
    check_choice(config.model.model_name, models.names(), "model.model_name")
    check_choice(config.dataset.dataset_name, dataset_names(), "dataset.dataset_name")
    optimizer_kwargs(config.opt.opt_type, config.opt.opt_params)
    learning_rate_schedule(config, steps_per_epoch=1)  # lr_schedule_type: checked where it is used
    check_choice(config.gr_warmup_strategy, WARMUP_STRATEGIES, "gr_warmup_strategy")
    check_choice(config.gnp.method, METHODS, "gnp.method")
    check_choice(config.gnp.perturbation, PERTURBATIONS, "gnp.perturbation")
    check_choice(config.gnp.asam_leaves, ASAM_LEAVES, "gnp.asam_leaves")
    check_coefficients(config.gnp.r, config.gnp.alpha, config.gnp.eta, prefix="gnp.")
    if config.use_hybrid_training:
        hybrid_probability(config.schedule_function, config.hybrid_config)
    _check_efficient(config)
    check_choice(config.model.dtype, DTYPE_NAMES, "model.dtype")
    _check_sync_batch_norm(config.model)
    _check_switch(config, "shard_params", "shard_params")
    for notice in ignored_key_notices(config):
        logging.getLogger("gnp").warning(notice)
    if config.get("use_additional_skip_connections_in_wrn", False):
        module = models.get_model(config.model.model_name, num_classes=2)
        if "use_additional_skip_connections" not in {f.name for f in dataclasses.fields(module)}:
            raise ValueError(
                "use_additional_skip_connections_in_wrn applies to WideResNet models only (the "
                f"released option), not {config.model.model_name}; set it to False"
            )
    if config.total_epochs < 1:
        raise ValueError(f"total_epochs must be at least 1, got {config.total_epochs}")
    if not 0 <= config.warmup_epochs <= config.total_epochs:
        raise ValueError(
            f"warmup_epochs {config.warmup_epochs} must lie in [0, total_epochs="
            f"{config.total_epochs}]"
        )
    for key in (
        "evaluate_every_n_epochs",
        "save_ckpt_every_n_epochs",
        "log_every_n_steps",
        "keep_checkpoints",
    ):
        if config[key] < 1:
            raise ValueError(f"{key} must be at least 1, got {config[key]}")
    devices = jax.device_count()
    if config.batch_size % devices:
        raise ValueError(
            f"batch_size {config.batch_size} must divide by the {devices} devices; "
            f"use a multiple of {devices}"
        )
    if config.grad_accum_steps < 1 or config.batch_size % (devices * config.grad_accum_steps):
        raise ValueError(
            f"grad_accum_steps {config.grad_accum_steps} must be at least 1 and divide each "
            f"device's batch ({config.batch_size} / {devices} devices)"
        )
    eval_batch = config.eval_batch_size or config.batch_size
    config.eval_batch_size = -(-eval_batch // devices) * devices  # round up: padding is masked
    return config
