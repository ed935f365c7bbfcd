"""Checks a resolved config before anything is built: every error names the fix."""

from __future__ import annotations

import math
from typing import Any

import jax

from gnp import models
from gnp.choices import check_choice
from gnp.data import dataset_names
from gnp.gradient import METHODS, PERTURBATIONS
from gnp.optim import SCHEDULES, optimizer_kwargs
from gnp.train.gr_schedule import WARMUP_STRATEGIES
from gnp.train.run_config import flatten

DTYPE_NAMES = ("float32", "bfloat16")
INF = math.inf

# key: (low, high, high included); the values a key can mean something with.
RANGES: dict[str, tuple[float, float, bool]] = {
    "batch_size": (1, INF, True),
    "eval_batch_size": (0, INF, True),  # 0: same as batch_size
    "base_lr": (0, INF, True),
    "l2_regularization": (0, INF, True),
    "gradient_clipping": (0, INF, True),  # 0: off
    "label_smoothing": (0, 1, False),
    "exponential_decay_rate": (0, 1, True),
    "gnp.r": (0, INF, True),
    "gnp.alpha": (0, INF, True),  # α > 1 extrapolates past the perturbed gradient
    "gnp.eta": (0, INF, True),
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


def validate_config(config: Any) -> Any:
    """Returns a copy with derived defaults filled in (eval batch size); raises ValueError."""
    config = config.copy_and_resolve_references()
    check_ranges(config)
    check_choice(config.model.model_name, models.names(), "model.model_name")
    check_choice(config.dataset.dataset_name, dataset_names(), "dataset.dataset_name")
    optimizer_kwargs(config.opt.opt_type, config.opt.opt_params)
    check_choice(config.lr_schedule_type, SCHEDULES, "lr_schedule_type")
    check_choice(config.gr_warmup_strategy, WARMUP_STRATEGIES, "gr_warmup_strategy")
    check_choice(config.gnp.method, METHODS, "gnp.method")
    check_choice(config.gnp.perturbation, PERTURBATIONS, "gnp.perturbation")
    check_choice(config.model.dtype, DTYPE_NAMES, "model.dtype")
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
