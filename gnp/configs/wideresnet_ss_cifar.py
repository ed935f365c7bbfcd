"""Shake-Shake 26 2x96d on CIFAR-10 with GNP, 1800 epochs.

Values the released script did not change follow the WideResNet recipe.

    recipes/wideresnet-ss-cifar.sh
"""

from gnp.configs.recipes import released_defaults


def get_config():
    config = released_defaults()
    config.model.model_name = "WideResNet_2_96_ShakeShake"
    config.total_epochs = 1800
    config.save_ckpt_every_n_epochs = 20
    return config
