"""The command line: ``python -m gnp.main --config=PATH --working_dir=DIR [--config.K=V ...]``.

Also installed as ``gnp-train``. ``--dry_run`` resolves the config, builds the
model with ``jax.eval_shape`` and the data source, prints both and exits.

A user's mistake or a fault ends in one line, ``error: ...``, naming the
problem and the fix, and a non-zero exit code; ``--debug`` or ``GNP_DEBUG=1``
shows the traceback instead.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
import threading
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from gnp.errors import one_line
from gnp.train.config import (
    check_override_keys,
    normalize_argv,
    set_model_fields,
    split_model_fields,
)
from gnp.train.stops import describe_stop, exit_at_once_on_interrupt

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Path to a config file whose get_config() returns the config (gnp/configs/default.py, or a "
    "recipe in gnp/configs/). Override any key with --config.KEY=VALUE: every key, its default "
    "and meaning are in gnp/config_keys.py and docs/training.md; --dry_run prints the result.",
)
_WORKING_DIR = flags.DEFINE_string("working_dir", None, "The run's own output directory.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the resolved config and model; no training.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-host runs (else auto-detected)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
# The released code's own absl flags (ds_pipeline/), mapped onto config keys by
# apply_released_flags; unset, they leave the config as it is.
_IMAGENET_MIXUP_ALPHA = flags.DEFINE_float(
    "imagenet_mixup_alpha", None, "If > 0, mixup on ImageNet with this alpha (released flag)."
)
_CUTOUT_LENGTH = flags.DEFINE_integer(
    "cutout_length", None, "Cutout square side in px (released flag): dataset.cutout_size."
)
_RANDAUG_NUM_LAYERS = flags.DEFINE_integer(
    "randaug_num_layers", None, "RandAugment ops per ImageNet image: dataset.randaug_num_layers."
)
_RANDAUG_MAGNITUDE = flags.DEFINE_integer(
    "randaug_magnitude", None, "RandAugment magnitude, 0..10: dataset.randaug_magnitude."
)
# What a positive --imagenet_mixup_alpha turns the batch-level augmentation into.
_WITH_MIXUP = {"none": "mixup", "cutout": "mixcut"}
_ALLOW_CONFIG_CHANGE = flags.DEFINE_list(
    "allow_config_change",
    [],
    "Config keys a resume may change (only total_epochs: extends a run; see docs/training.md).",
)
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of an error (also GNP_DEBUG=1).")


def apply_released_flags(config: Any) -> None:
    """The released scripts' absl flags, with the released meaning, onto the config."""
    if _CUTOUT_LENGTH.value is not None:
        config.dataset.cutout_size = _CUTOUT_LENGTH.value
    if _RANDAUG_NUM_LAYERS.value is not None:
        config.dataset.randaug_num_layers = _RANDAUG_NUM_LAYERS.value
    if _RANDAUG_MAGNITUDE.value is not None:
        config.dataset.randaug_magnitude = _RANDAUG_MAGNITUDE.value
    alpha = _IMAGENET_MIXUP_ALPHA.value
    if alpha is None or alpha <= 0:  # the released default 0 means no mixup
        return
    name = config.dataset.dataset_name
    if name != "imagenet":
        logging.warning(
            "notice: --imagenet_mixup_alpha has no effect on %s, as in the released code; use "
            "--config.dataset.batch_level_augmentations=mixup --config.dataset.mixup_alpha=A",
            name,
        )
        return
    config.dataset.mixup_alpha = alpha
    level = config.dataset.batch_level_augmentations
    config.dataset.batch_level_augmentations = _WITH_MIXUP.get(level, level)


def model_fields(model: Any) -> dict[str, Any]:
    """The model's fields in force (``build.model_fields``), types (the dtype) by name."""
    from gnp.train.build import model_fields as fields

    return {k: v.__name__ if isinstance(v, type) else v for k, v in fields(model).items()}


def describe_batch_norm(config: Any, variables: dict[str, Any]) -> str:
    """Where the model's BatchNorm statistics come from in training (``model.sync_batch_norm``)."""
    synced = config.model.sync_batch_norm
    if "batch_stats" not in variables:
        return "no BatchNorm (model.sync_batch_norm has no effect)" if synced else "no BatchNorm"
    if synced:
        return "BatchNorm statistics of the global batch (model.sync_batch_norm)"
    return "BatchNorm statistics per device"


def describe_gradient(config: Any) -> str:
    """The step's gradient as the trainer will compute it: r, α and λ = α·r always (the
    config dump buries them), then each GNP option away from its default."""
    from gnp.options import GNPOptions
    from gnp.train.build import GNP_KEYS, gnp_options

    options = gnp_options(config)
    if not options.penalized:
        return "plain (r = 0 or α = 0: one pass, no penalty)"
    default = GNPOptions()
    others = [
        f"gnp.{GNP_KEYS.get(f.name, f.name)}: "
        + str(True if f.name == "axis_name" else getattr(options, f.name))
        for f in dataclasses.fields(options)
        if f.name not in ("r", "alpha") and getattr(options, f.name) != getattr(default, f.name)
    ]
    lam = float(options.r) * float(options.alpha)
    warmup = config.gr_warmup_strategy
    return ", ".join(
        [f"r = {options.r}, α = {options.alpha} (λ = α·r = {lam:.4g})", *others]
        + (
            [f"r ∝ learning rate (GSAM), from gnp.r_min = {config.gnp.r_min} to r"]
            if config.gnp.r_schedule == "lr_proportional"
            else []
        )
        + ([f"GR warmup: {warmup} over {config.warmup_epochs} epochs"] if warmup != "none" else [])
        + (
            [f"hybrid: GNP with probability {config.hybrid_config.p}"]
            if config.use_hybrid_training
            else []
        )
    )


def describe_state_memory(config: Any, params: Any, opt_state: Any, devices: int) -> str:
    """What each device stores of the parameters and optimizer state (``shard_params``)."""
    import jax
    from jax.sharding import PartitionSpec

    from gnp.train.distributed import leaf_spec

    leaves = jax.tree.leaves((params, opt_state))
    whole = sum(x.size * x.dtype.itemsize for x in leaves)
    if not config.shard_params:
        return f"parameters and optimizer state replicated: {whole / 2**20:,.1f} MiB on each device"
    sharded = [leaf_spec(x.shape, devices) != PartitionSpec() for x in leaves]
    per_device = sum(
        x.size * x.dtype.itemsize // (devices if split else 1)
        for x, split in zip(leaves, sharded, strict=True)
    )
    return (
        f"parameters and optimizer state sharded over {devices} devices (shard_params): "
        f"{per_device / 2**20:,.1f} MiB of {whole / 2**20:,.1f} MiB on each device"
    )


def dry_run(config: Any) -> None:
    import jax
    import jax.numpy as jnp

    from gnp.data import build_input_pipeline
    from gnp.optim import build_optimizer, describe_optimizer, learning_rate_schedule
    from gnp.train.build import build_model
    from gnp.train.config import validate_config

    config = validate_config(config)
    pipeline = build_input_pipeline(config)
    model = build_model(config, pipeline.info.num_classes)
    images = jax.ShapeDtypeStruct((1, *pipeline.info.image_shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), images)
    count = sum(x.size for x in jax.tree.leaves(variables["params"]))
    print(config)
    print(f"data: {pipeline.info}")
    print(f"optimizer: {describe_optimizer(config)}")
    print(f"gradient: {describe_gradient(config)}")
    batch_norm = describe_batch_norm(config, variables)
    print(f"model: {config.model.model_name}, {count:,} parameters, {batch_norm}")
    schedule = learning_rate_schedule(config, pipeline.steps_per_epoch)
    optimizer = build_optimizer(config, schedule, variables["params"])
    opt_state = jax.eval_shape(optimizer.init, variables["params"])
    memory = describe_state_memory(config, variables["params"], opt_state, jax.device_count())
    print(f"state: {memory}")
    print("model fields: " + ", ".join(f"{k}: {v}" for k, v in model_fields(model).items()))


def main(argv: list[str], model_fields_set: dict[str, str] | None = None) -> None:
    if len(argv) > 1:
        raise ValueError(
            f"unexpected arguments {argv[1:]}: every flag starts with --, and a path with a "
            "space must be quoted"
        )
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    if not _DEBUG.value:
        logging.get_absl_handler().addFilter(_quiet_errors)
    config = _CONFIG.value
    if config is None:
        raise ValueError("--config=PATH is required (e.g. --config=gnp/configs/default.py)")
    apply_released_flags(config)
    set_model_fields(config, model_fields_set or {})
    from gnp.train import distributed

    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    distributed.check_platforms()
    if _DRY_RUN.value:
        dry_run(config)
        return
    if not _WORKING_DIR.value:
        raise ValueError("--working_dir=DIR is required: the run's own output directory")
    from gnp.choices import check_choice
    from gnp.train.loop import train_and_evaluate
    from gnp.train.workdir import EXTENSIBLE

    for key in _ALLOW_CONFIG_CHANGE.value:
        check_choice(key, sorted(EXTENSIBLE), "--allow_config_change key")
    record = train_and_evaluate(
        config, _WORKING_DIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value
    )
    if "test_error_rate" in record:
        print(f"test error rate {record['test_error_rate']:.4f}; outputs in {_WORKING_DIR.value}")


def _quiet_errors(record: Any) -> bool:
    """Drops orbax's error logs (a failed save logs one traceback per thread: the trainer
    reports the failure itself, once), asyncio's "Task exception was never retrieved" for the
    same failed writes (logged when the process exits), and the traceback of any other record."""
    if record.levelno == logging.converter.STANDARD_ERROR and (
        "/orbax/" in record.pathname or record.name == "asyncio"
    ):
        return False
    record.exc_info = record.exc_text = None
    return True


def describe_failure(error: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an exception that ended a run."""
    from gnp.train.checkpoint import CheckpointError
    from gnp.train.stops import NonFiniteError
    from gnp.train.workdir import RunLocked

    if stop := describe_stop(error):
        return stop
    if isinstance(error, OSError) and error.errno == errno.ENOSPC and not error.filename:
        return 1, (  # a write of the run's files (TensorBoard's, metrics): no file named
            f"error: {error.strerror} while writing the run's files; free space where "
            "--working_dir is, then run the same command to resume"
        )
    if isinstance(error, ValueError | OSError | NonFiniteError | CheckpointError | RunLocked):
        return 1, f"error: {' '.join(str(error).split())}"
    if "RESOURCE_EXHAUSTED" in str(error) or isinstance(error, MemoryError):
        return 1, (
            "error: out of memory; lower batch_size, or raise grad_accum_steps (same batch in "
            "smaller pieces), or use model.dtype=bfloat16, or on several devices "
            "shard_params=True (see docs/troubleshooting.md)"
        )
    return 1, (
        f"error: {one_line(error)} (unexpected: rerun with --debug or GNP_DEBUG=1 for the "
        "traceback, and report it)"
    )


def _drop_closed_loop_errors(unraisable: Any) -> None:
    """``sys.unraisablehook`` without the "Event loop is closed" errors of a failed save: its
    other writes (tensorstore threads) finish after orbax's event loop has closed, and each
    reports one such error from C code through this hook; nor TensorBoard's failed writes
    (``_tensorboard_failure``). Every other one prints as usual."""
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    if not _tensorboard_failure(error, unraisable.object):
        sys.__unraisablehook__(unraisable)


def _drop_tensorboard_thread_errors(failure: Any) -> None:
    """``threading.excepthook`` without the failed writes of TensorBoard's writer thread."""
    if not _tensorboard_failure(failure.exc_value, failure.thread):
        threading.__excepthook__(failure)


def _tensorboard_failure(error: BaseException | None, source: Any) -> bool:
    """An OSError of tensorboardX's writer thread or exit hook (a full disk, its queue closed
    after that): the trainer's own flush of the same file meets the error and ends the run in
    one line, which these tracebacks would follow."""
    module = getattr(source, "__module__", "") or type(source).__module__
    return isinstance(error, OSError) and module.startswith("tensorboardX")


def _print_help() -> None:
    """This module's docstring and flags: absl's own --help lists the flags of the file run as
    ``__main__``, which for ``python -m gnp.main`` is ``gnp/main/__main__.py`` and has none."""
    print((__doc__ or "").replace("``", "'"))
    print(flags.FLAGS.module_help(__name__))


def run() -> None:
    argv = normalize_argv(sys.argv)
    if any(arg in ("--help", "-h", "--helpshort", "-?") for arg in argv[1:]):
        _print_help()
        return
    debug = "--debug" in argv or os.environ.get("GNP_DEBUG", "") not in ("", "0")
    if not debug:
        sys.unraisablehook = _drop_closed_loop_errors
        threading.excepthook = _drop_tensorboard_thread_errors
    try:
        # Out of sys.argv too: config_flags reads its override flags from there.
        sys.argv, fields = split_model_fields(argv)
        argv = sys.argv
        check_override_keys(argv)
        app.run(lambda args: main(args, fields), argv=argv)
    except SystemExit:
        raise
    except BaseException as error:
        if debug:
            raise
        # Said after this block, which drops the error and its frames: they hold the last
        # batch, whose shared memory would be reported leaked if it were still held at exit.
        code, line = describe_failure(error)
    finally:  # the last line comes next: a Ctrl-C then must not print a traceback after it
        exit_at_once_on_interrupt()
    print(line, file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    run()
