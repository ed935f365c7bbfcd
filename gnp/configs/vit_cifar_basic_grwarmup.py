"""ViT-S/16 on CIFAR-10, Adam with a 40-epoch warmup and the 'zero' GR warmup (ICML 2024), α 1.

Gradient regularization during Adam's learning-rate warmup can hurt; with
``gr_warmup_strategy = "zero"`` the warmup epochs train without it.

    recipes/vit-cifar-basic-grwarmup.sh
"""

from gnp.configs.vit_cifar_basic import get_config as basic_config


def get_config():
    config = basic_config()
    config.gnp.alpha = 1.0
    config.warmup_epochs = 40
    config.gr_warmup_strategy = "zero"
    return config
