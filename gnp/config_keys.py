"""Every config key the trainer reads, with its default, and the released keys that mean
nothing here.

Key names follow the released code, so its recipes' flags work unchanged. Recipe files
(``gnp/configs/*.py``) call ``get_base_config()`` and override. The trainer reads the defaults
too (an older run's ``config.json`` lacks the keys added since; they were trained at their
default), so they live here, below both the config files and ``gnp/train``.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from gnp.data.source import source_config_defaults  # gnp.data registers every source
from gnp.gr_schedule import constant_probability


def get_base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # Optimization.
    config.batch_size = 128  # global, over all devices and hosts
    config.eval_batch_size = 0  # 0: same as batch_size
    config.base_lr = 0.1
    config.total_epochs = 200
    config.warmup_epochs = 0  # linear learning-rate warmup; also the GR warmup length
    config.lr_schedule_type = "cosine"  # constant | stepped | cosine | exponential
    config.stepped_lr_boundaries = (0.3, 0.6, 0.8)  # fractions of total_epochs
    config.stepped_lr_scales = (0.2, 0.04, 0.008)  # lr = base_lr * scale after each boundary
    config.exponential_decay_rate = 0.97  # lr multiplied by this every epoch
    config.l2_regularization = 5e-4  # ½·l2·‖θ‖² added to the loss (both GNP points)
    config.no_weight_decay_on_bn = False  # skip 1-D params (BatchNorm scales, biases) in L2
    config.gradient_clipping = 0.0  # global-norm clip of the combined gradient; 0 = off
    config.label_smoothing = 0.0
    config.grad_accum_steps = 1  # micro-batches per optimizer step
    # Parameters and optimizer state sharded over the devices (FSDP-style) instead of replicated:
    # the same training, 1/n of their memory per device (docs/distributed.md).
    config.shard_params = False

    config.opt = ml_collections.ConfigDict()
    config.opt.opt_type = "Momentum"  # SGD | Momentum | Adam | RMSProp
    # Union of every optimizer's parameters; None means "that optimizer's default".
    # Setting one the chosen optimizer does not take is an error.
    config.opt.opt_params = ml_collections.ConfigDict(
        {
            "momentum": config_dict.placeholder(float),
            "nesterov": config_dict.placeholder(bool),
            "beta1": config_dict.placeholder(float),
            "beta2": config_dict.placeholder(float),
            "eps": config_dict.placeholder(float),
            "weight_decay": config_dict.placeholder(float),
            "decay": config_dict.placeholder(float),
            "centered": config_dict.placeholder(bool),
        }
    )

    # Gradient norm penalty (ICML 2022) and its warmups (ICML 2024).
    config.gnp = ml_collections.ConfigDict()
    config.gnp.r = 0.05
    config.gnp.alpha = 0.8  # α = λ/r; 1.0 is SAM, 0.0 plain training
    config.gnp.norm_perturbations = False  # released variant: (1-α)·g1/‖g1‖ + α·g2
    config.gnp.sync_perturbations = False  # perturb with the all-reduced gradient
    config.gnp.method = "finite_difference"  # or "exact" (Hessian-vector product)
    config.gnp.perturbation = "sam"  # or "asam"
    config.gnp.eta = 0.01  # ASAM's η
    config.gnp.asam_leaves = "weights"  # ASAM scales weights only (original ASAM) | "all"
    # Cheaper GNP (gnp.efficient, docs/training.md): the perturbed gradient every k GNP steps,
    # its part orthogonal to g1 reused in between (LookSAM); 1 = every step (plain GNP).
    config.gnp.reuse_period = 1
    config.gnp.orthogonal_scale = config_dict.placeholder(float)  # LookSAM's α; None: measured
    # The share of each batch's rows the second pass sees (after ESAM's data selection; g1 stays
    # the whole batch's): 1 + f passes of a batch per step; 1.0 = GNP.
    config.gnp.perturbed_fraction = 1.0
    config.gnp.perturbation_direction = "gradient"  # or "momentum": along −momentum (MSAM)
    # Decoupled GR (after WSAM's decouple): the optimizer steps on the clean gradient g1 alone,
    # the penalty part (g − g1) joins the update outside it, at the step's learning rate.
    config.gnp.decoupled = False
    # ρ schedule: "constant" (r at every step) or "lr_proportional" (GSAM's ρ_t: r follows the
    # learning rate, from gnp.r_min at its smallest to gnp.r at its largest; docs/training.md).
    config.gnp.r_schedule = "constant"
    config.gnp.r_min = 0.0  # lr_proportional's r at the smallest learning rate; 0 <= r_min <= r
    config.gr_warmup_strategy = "none"  # none | r | lambda | zero
    config.use_hybrid_training = False
    config.hybrid_config = ml_collections.ConfigDict()
    config.hybrid_config.p = 0.5  # probability that a step is a GNP step
    # Released key: called with hybrid_config's keys, returns step ↦ probability (set a
    # step-dependent one in a config file; see docs/training.md).
    config.schedule_function = constant_probability

    # Data.
    config.dataset = ml_collections.ConfigDict()
    config.dataset.dataset_name = "cifar10"
    config.dataset.data_dir = ""
    config.dataset.image_size = 0  # 0: the source's own size (ImageNet: 224)
    config.dataset.image_level_augmentations = "basic"
    config.dataset.batch_level_augmentations = "none"
    config.dataset.mixup_alpha = 1.0
    config.dataset.cutout_size = 0  # 0: 16 px at 32 px, scaled with the image (--cutout_length)
    config.dataset.cutout_mode = "batch"  # batch: one window for the batch (released) | image
    config.dataset.num_workers = -1  # -1: from the CPU count
    config.dataset.strict = False  # fail on a corrupt image instead of skipping it
    config.dataset.label_noise = 0.0  # fraction of training labels flipped to another class
    # True (with use_test_set=False): the validation labels flipped at label_noise too.
    config.dataset.flip_validation_labels = False
    # The keys one data set alone reads, declared by its module: ImageNet's RandAugment
    # (randaug_num_layers 2, randaug_magnitude 9), MNIST-1D's split sizes and generator seed
    # (mnist1d_train_size 4000, mnist1d_validation_size 2000, mnist1d_test_size 20000,
    # mnist1d_seed 42).
    config.dataset.update(source_config_defaults())
    # Where the released config has them: top level, not under dataset. '': <data_dir>/imagenet/.
    config.imagenet_train_dir = ""
    config.imagenet_val_dir = ""
    # False: evaluate on a validation split, never the test set: the source's own (MNIST-1D), else
    # the last tenth of the training set (CIFAR: 45,000 / 5,000, as released).
    config.use_test_set = True

    # Model.
    config.model = ml_collections.ConfigDict()
    config.model.model_name = "WideResNet_28_10"
    config.model.dtype = "float32"  # compute dtype; params stay float32 ("bfloat16" for AMP)
    # Fields of the model to override, as in the released config (set them in a config file:
    # e.g. model_params.depth = 4 for a smaller ViT).
    config.model.model_params = ml_collections.ConfigDict()
    # BatchNorm statistics of the whole global batch (all devices and hosts), not of each
    # device's shard as released; no effect on a model without BatchNorm (docs/distributed.md).
    config.model.sync_batch_norm = False
    # The released WideResNet option (a skip connection around each group of blocks).
    config.use_additional_skip_connections_in_wrn = False

    # Bookkeeping.
    config.seeds = 0  # data order, dropout and hybrid draws
    config.init_seeds = 0  # parameter initialization
    config.evaluate_every_n_epochs = 1
    config.save_ckpt_every_n_epochs = 10
    config.keep_checkpoints = 3
    config.compute_top_5_error_rate = False
    config.log_every_n_steps = 50

    # Released keys that mean nothing here: accepted so that released command lines run, and
    # setting one prints a notice (``ignored_key_notices``).
    for key, kind in IGNORED_KEYS.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            if parent not in node:
                node[parent] = ml_collections.ConfigDict()
            node = node[parent]
        node[leaf] = config_dict.placeholder(kind[0])
    return config


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


def ignored_key_notices(config: ml_collections.ConfigDict) -> list[str]:
    """One line per released-but-meaningless key that is set (not None) in ``config``."""
    notices = []
    for key, (_, reason) in IGNORED_KEYS.items():
        node = config
        for part in key.split("."):
            node = node.get(part) if node is not None and hasattr(node, "get") else None
        if node is not None:
            notices.append(f"notice: {key} = {node!r} has no effect here: {reason}")
    return notices
