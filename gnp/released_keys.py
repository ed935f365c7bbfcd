"""Keys of the released config that mean nothing here: accepted, so that the released command
lines run, and reported when set. Data for both the config files (``gnp/configs/base.py``
declares them) and the trainer's checks (``gnp.train.config``), so it lives below both.
"""

from __future__ import annotations

from typing import Any

# Released key -> (type, why it has no effect here).
IGNORED_KEYS: dict[str, tuple[type, str]] = {
    "model_folder": (str, "the run's directory is --working_dir itself"),
    "retrain": (bool, "runs always resume from --working_dir; remove it to start afresh"),
    "write_config_to_json": (bool, "config.json is always written"),
    "use_learning_rate_schedule": (bool, "the released code never read it; see lr_schedule_type"),
    "tfds_dir": (str, "no TensorFlow Datasets here; CIFAR is read from dataset.data_dir"),
    "logging.tensorboard_logging_frequency": (int, "see log_every_n_steps"),
    "logging.basic_logger_level": (str, "the command line logs warnings and errors"),
    "logging.logger_sys_output": (bool, "the command line logs to stderr"),
    "dataset.num_classes": (int, "it comes from the data set, as in the released code"),
    "dataset.num_channels": (int, "it comes from the data set, as in the released code"),
    "opt.opt_params.grad_norm_clip": (float, "no released optimizer used it: gradient_clipping"),
}


def ignored_key_notices(config: Any) -> list[str]:
    """One line per released-but-meaningless key that is set (not None) in ``config``."""
    notices = []
    for key, (_, reason) in IGNORED_KEYS.items():
        node = config
        for part in key.split("."):
            node = node.get(part) if node is not None and hasattr(node, "get") else None
        if node is not None:
            notices.append(f"notice: {key} = {node!r} has no effect here: {reason}")
    return notices
