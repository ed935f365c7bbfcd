"""Checks a resolved config before anything is built: every error names the fix."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax

from gnp import models
from gnp.choices import check_choice
from gnp.configs.base import ignored_key_notices
from gnp.data import dataset_names
from gnp.gradient import ASAM_LEAVES, METHODS, PERTURBATIONS, check_coefficients
from gnp.optim import SCHEDULES, optimizer_kwargs
from gnp.train.gr_schedule import WARMUP_STRATEGIES, hybrid_probability
from gnp.train.steps import DIRECTIONS

DTYPE_NAMES = ("float32", "bfloat16")


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


def validate_config(config: Any) -> Any:
    """Returns a copy with derived defaults filled in (eval batch size); raises ValueError."""
    config = config.copy_and_resolve_references()
    check_choice(config.model.model_name, models.names(), "model.model_name")
    check_choice(config.dataset.dataset_name, dataset_names(), "dataset.dataset_name")
    optimizer_kwargs(config.opt.opt_type, config.opt.opt_params)
    check_choice(config.lr_schedule_type, SCHEDULES, "lr_schedule_type")
    check_choice(config.gr_warmup_strategy, WARMUP_STRATEGIES, "gr_warmup_strategy")
    check_choice(config.gnp.method, METHODS, "gnp.method")
    check_choice(config.gnp.perturbation, PERTURBATIONS, "gnp.perturbation")
    check_choice(config.gnp.asam_leaves, ASAM_LEAVES, "gnp.asam_leaves")
    check_coefficients(config.gnp.r, config.gnp.alpha, config.gnp.eta, prefix="gnp.")
    if config.use_hybrid_training:
        hybrid_probability(config.schedule_function, config.hybrid_config)
    _check_efficient(config)
    check_choice(config.model.dtype, DTYPE_NAMES, "model.dtype")
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
