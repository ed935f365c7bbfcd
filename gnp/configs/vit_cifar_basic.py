"""ViT-S/16 (4x4 patches) on CIFAR-10 with Adam and GNP: lr 1e-3, 300 epochs, weight decay 0.3.

recipes/vit-cifar-basic.sh
"""

from gnp.configs.recipes import adam_vit_cifar


def get_config():
    config = adam_vit_cifar()
    config.base_lr = 1e-3
    config.total_epochs = 300
    config.opt.opt_params.weight_decay = 0.3
    return config
