"""The command line: ``python -m gnp.main --config=PATH --working_dir=DIR [--config.K=V ...]``.

Also installed as ``gnp-train``. ``--dry_run`` resolves the config, builds the
model with ``jax.eval_shape`` and the data source, prints both and exits.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import sys
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.")
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


def _load_config_file(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("gnp_user_config", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load config file {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def check_override_keys(argv: list[str]) -> None:
    """An unknown ``--config.KEY`` is a clear error listing the valid keys at that level."""
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None:
        return
    try:
        config = _load_config_file(path)
    except FileNotFoundError:
        raise SystemExit(f"error: config file {path!r} does not exist") from None
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        keys = arg[len("--config.") :].split("=", 1)[0].split(".")
        node = config
        for depth, key in enumerate(keys):
            if not hasattr(node, "keys") or key not in node:
                valid = sorted(node.keys()) if hasattr(node, "keys") else []
                where = ".".join(keys[:depth]) or "the config"
                hint = difflib.get_close_matches(key, valid, n=1)
                raise SystemExit(
                    f"error: unknown config key {'.'.join(keys)!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; valid keys of {where}: {', '.join(valid)}"
                )
            node = node[key]


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
    """The flax module's dataclass fields in force (defaults and overrides alike); types (the
    dtype) by name."""
    values = {
        f.name: getattr(model, f.name)
        for f in dataclasses.fields(model)
        if f.name not in ("parent", "name")
    }
    return {k: v.__name__ if isinstance(v, type) else v for k, v in values.items()}


def dry_run(config: Any) -> None:
    import jax
    import jax.numpy as jnp

    from gnp.data import build_input_pipeline
    from gnp.optim import describe_optimizer
    from gnp.train.config import validate_config
    from gnp.train.loop import build_model

    config = validate_config(config)
    pipeline = build_input_pipeline(config)
    model = build_model(config, pipeline.info.num_classes)
    images = jax.ShapeDtypeStruct((1, *pipeline.info.image_shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), images)
    count = sum(x.size for x in jax.tree.leaves(variables["params"]))
    print(config)
    print(f"data: {pipeline.info}")
    print(f"optimizer: {describe_optimizer(config)}")
    print(f"model: {config.model.model_name}, {count:,} parameters")
    print("model fields: " + ", ".join(f"{k}: {v}" for k, v in model_fields(model).items()))


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config=PATH is required (e.g. gnp/configs/default.py)")
    apply_released_flags(config)
    from gnp.train import distributed

    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    try:
        if _DRY_RUN.value:
            dry_run(config)
            return
        if not _WORKING_DIR.value:
            raise app.UsageError("--working_dir=DIR is required")
        from gnp.train.checkpoint import NonFiniteError, Preempted
        from gnp.train.loop import train_and_evaluate

        try:
            record = train_and_evaluate(config, _WORKING_DIR.value)
        except NonFiniteError as e:
            raise SystemExit(f"error: {e}") from None
        except Preempted as e:
            raise SystemExit(f"preempted: {e}") from None
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if "test_error_rate" in record:
        print(f"test error rate {record['test_error_rate']:.4f}; outputs in {_WORKING_DIR.value}")


def run() -> None:
    argv = normalize_argv(sys.argv)
    check_override_keys(argv)
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
