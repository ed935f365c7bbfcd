"""What the released training scripts share: their base config and the values every script sets.

Each recipe file changes what its released script changed. The released code's
default ``gnp.norm_perturbations = True`` is kept in the recipes, so that they
reproduce the released runs; the paper's formula is one flag away. So are its
batch-wide cutout window (``dataset.cutout_mode = "batch"``, the base default)
and its optimizer defaults (``gnp.optim.OPTIMIZER_PARAMS``: Momentum is Nesterov).
``tests/test_recipes.py`` checks every recipe against its released script.
"""

from __future__ import annotations

import ml_collections

from gnp.configs import train_config


def released_defaults() -> ml_collections.ConfigDict:
    """The released base config with what every released script sets alike (Momentum, r 0.1,
    α 0.8); checkpoints more often than its every 200 epochs, to lose less to a preemption."""
    config = train_config.get_config()
    config.opt.opt_type = "Momentum"
    config.gnp.r = 0.1
    config.gnp.alpha = 0.8
    config.save_ckpt_every_n_epochs = 5
    return config


def adam_vit_cifar() -> ml_collections.ConfigDict:
    """ViT-S/16 on CIFAR-10 with Adam: decoupled weight decay instead of L2 in the loss."""
    config = released_defaults()
    config.model.model_name = "ViT_S16"
    config.opt.opt_type = "Adam"
    config.l2_regularization = 0.0
    return config


def imagenet() -> ml_collections.ConfigDict:
    """The released ImageNet scripts: image-level ``none``, which on ImageNet is still a
    random-resized crop and a flip (``gnp.data.augment.ImageNetAugment``)."""
    config = released_defaults()
    config.dataset.dataset_name = "imagenet"
    config.dataset.image_level_augmentations = "none"
    config.compute_top_5_error_rate = True
    return config
