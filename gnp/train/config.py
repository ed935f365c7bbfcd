"""A config from its file and ``--config.KEY`` overrides, checked before anything is built.

Reading: a config file is plain Python whose ``get_config()`` returns an
``ml_collections.ConfigDict`` (as in the released code and big_vision). Loading it here, once,
before absl parses the flags turns each way a file can be broken, and each unknown override
key, into one ValueError naming the file or key and the fix; absl alone would print a
traceback or silently ignore some of them.

Checking: ``validate_config`` checks names and ranges and fills derived defaults; every error
names the key and the fix.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import math
import os
from typing import Any

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from gnp import models
from gnp.choices import check_choice, did_you_mean
from gnp.config_keys import get_base_config, ignored_key_notices
from gnp.data import dataset_names
from gnp.errors import one_line
from gnp.models.layers import BATCH_NORM_AXIS_FIELD
from gnp.optim import has_momentum, learning_rate_schedule, optimizer_kwargs
from gnp.train import build
from gnp.train.workdir import flatten, plain

# Reading a config file.


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Runs the config file's ``get_config()``; whatever goes wrong is a ValueError naming the
    file (absl would show a traceback, or ignore a ``get_config`` that returns a dict)."""
    if not os.path.isfile(path):
        raise ValueError(
            f"config file {path!r} does not exist (a path with a space must be quoted)"
        )
    spec = importlib.util.spec_from_file_location("gnp_user_config", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"config file {path!r} is not a Python file; give a .py file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ValueError(
            f"config file {path!r} has a syntax error at line {error.lineno}: {error.msg}"
        ) from error
    except ImportError as error:
        raise ValueError(
            f"config file {path!r} imports {error.name!r}, which cannot be imported ({error})"
        ) from error
    except Exception as error:
        raise ValueError(f"config file {path!r} fails when run: {one_line(error)}") from error
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ValueError(
            f"config file {path!r} has no get_config() function; define one that returns an "
            "ml_collections.ConfigDict (see gnp/configs/default.py)"
        )
    try:
        config = get_config()
    except Exception as error:
        raise ValueError(f"get_config() in {path!r} fails: {one_line(error)}") from error
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(
            f"get_config() in {path!r} returned {type(config).__name__}, not an "
            "ml_collections.ConfigDict; return one (e.g. start from "
            "gnp.config_keys.get_base_config())"
        )
    return config


def config_path(argv: list[str]) -> str | None:
    """The ``--config`` path, given as ``--config=PATH`` or ``--config PATH``."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check_override_keys(argv: list[str]) -> None:
    """Loads the config file once up front, so that a broken file or an unknown
    ``--config.KEY`` is a clear error (the latter listing the valid keys at that level)."""
    path = config_path(argv)
    if path is None:
        return
    config = load_config_file(path)
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        keys = arg[len("--config.") :].split("=", 1)[0].split(".")
        node = config
        for depth, key in enumerate(keys):
            if not hasattr(node, "keys") or key not in node:
                valid = sorted(node.keys()) if hasattr(node, "keys") else []
                where = ".".join(keys[:depth]) or "the config"
                raise ValueError(
                    f"unknown config key {'.'.join(keys)!r}{did_you_mean(key, valid)}"
                    f"; valid keys of {where}: {', '.join(valid)}"
                )
            node = node[key]


MODEL_FIELD_FLAG = "--config.model.model_params."


def split_model_fields(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``argv`` without its ``--config.model.model_params.FIELD=V`` flags, and those as
    ``FIELD: V``: absl can only override keys the config file has, and a model's fields are
    the model's to name (``set_model_fields`` parses and checks them once the model is known)."""
    rest, fields = [], {}
    for arg in argv:
        if arg.startswith(MODEL_FIELD_FLAG) and "=" in arg:
            name, text = arg[len(MODEL_FIELD_FLAG) :].split("=", 1)
            fields[name] = text
        else:
            rest.append(arg)
    return rest, fields


def _parse_field(name: str, text: str, default: Any) -> Any:
    """``text`` as the type of the field's default (a bool from true/false, a tuple from its
    Python form); the error names the flag and the type it needs."""
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if isinstance(default, int | float):
            return type(default)(text)
        if isinstance(default, str):
            return text
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        kinds = {bool: "True or False", int: "an integer", float: "a number"}
        kind = kinds.get(type(default), f"a Python literal like {default!r}")
        raise ValueError(
            f"{MODEL_FIELD_FLAG}{name}={text}: the field needs {kind} (its default is {default!r})"
        ) from None


def set_model_fields(config: Any, fields: dict[str, str]) -> None:
    """Sets ``model.model_params`` from the command line's ``FIELD: text``, each parsed as the
    chosen model's field of that name (an unknown one refused by ``build.model_defaults``)."""
    if not fields:
        return
    defaults = build.model_defaults(config, list(fields))
    with config.model.model_params.unlocked():
        for name, text in fields.items():
            config.model.model_params[name] = _parse_field(name, text, defaults[name])


def normalize_argv(argv: list[str]) -> list[str]:
    """Joins ``--config.a.b = 0.3`` (the released scripts' spaced form) into ``--config.a.b=0.3``.

    The shell splits the spaced form into three words that absl cannot parse.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" not in arg and i + 2 < len(argv) and argv[i + 1] == "=":
            out.append(f"{arg}={argv[i + 2]}")
            i += 3
        elif arg.startswith("--") and arg.endswith("=") and i + 1 < len(argv):
            out.append(arg + argv[i + 1])
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def read_config(argv: list[str]) -> ml_collections.ConfigDict:
    """The config file of ``argv`` with its ``--config.KEY=VALUE`` overrides, as ``gnp-train``
    reads it, for a command line that trains without owning absl's global flags."""
    argv, fields = split_model_fields(argv)
    check_override_keys(argv)
    flag_values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file(
        "config", None, "config file", flag_values=flag_values, sys_argv=argv
    )
    flag_values(argv)
    config = holder.value
    set_model_fields(config, fields)
    return config


# Checking a config.

INF = math.inf

# key: (low, high, high included); the values a key can mean something with. (gnp.r, gnp.alpha
# and gnp.eta are checked with every other GNP option, by gnp.GNPOptions.)
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


# Keys whose children are the user's own: a model's fields (checked against the model by
# build.model_defaults), and the keyword arguments of schedule_function.
OPEN_SECTIONS = ("model.model_params.", "hybrid_config.")


def check_known_keys(config: Any) -> None:
    """Every key of ``config`` is one the trainer reads (``gnp.config_keys``): a typo in a
    config file (``c.gnp.alfa = 0.5``) would otherwise train at the default, silently."""
    known = flatten(get_base_config().to_dict())
    for key in flatten(config.to_dict()):
        if key in known or key.startswith(OPEN_SECTIONS):
            continue
        parent, _, leaf = key.rpartition(".")
        siblings = sorted(k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent)
        raise ValueError(
            f"unknown config key {key!r} in the config{did_you_mean(leaf, siblings)}"
            f"; valid keys of {parent or 'the config'}: {', '.join(siblings)}"
        )


def config_from_saved(saved: dict[str, Any]) -> ml_collections.ConfigDict:
    """A run's config.json as this version reads it: keys added since at their default (the
    run was trained with it), keys this version no longer has left out, as resuming does
    (``workdir.check_resume`` reports them)."""
    tree = plain(get_base_config().to_dict())
    known = flatten(tree)
    for key, value in flatten(saved).items():
        if key in known or key.startswith(OPEN_SECTIONS):
            *parents, leaf = key.split(".")
            node = tree
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = value
    return ml_collections.ConfigDict(tree)


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


def _check_gnp(config: Any) -> None:
    """The ``gnp`` block, every option checked once where it is defined (``gnp.GNPOptions``),
    and what it needs of the optimizer."""
    options = build.gnp_options(config)
    _check_switch(config.gnp, "decoupled", "gnp.decoupled")
    build.decoupled_gr(config)
    if options.direction == "momentum" and not has_momentum(
        config.opt.opt_type, config.opt.opt_params
    ):
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
    check_known_keys(config)
    check_ranges(config)
    check_choice(config.model.model_name, models.names(), "model.model_name")
    check_choice(config.dataset.dataset_name, dataset_names(), "dataset.dataset_name")
    optimizer_kwargs(config.opt.opt_type, config.opt.opt_params)
    learning_rate_schedule(config, steps_per_epoch=1)  # lr_schedule_type: checked where it is used
    _check_gnp(config)
    # gr_warmup_strategy, gnp.r_schedule, gnp.r_min and the hybrid probability: checked where
    # they are used.
    build.gr_schedule(config, steps_per_epoch=1)
    check_choice(config.model.dtype, models.DTYPES, "model.dtype")
    _check_sync_batch_norm(config.model)
    _check_switch(config, "shard_params", "shard_params")
    _check_switch(config.dataset, "flip_validation_labels", "dataset.flip_validation_labels")
    for notice in ignored_key_notices(config):
        logging.getLogger("gnp").warning(notice)
    build.build_model(config, num_classes=2)  # its fields (the released WideResNet option)
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
