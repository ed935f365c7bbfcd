"""PyramidNet-272 (α 200) with ShakeDrop on CIFAR-10: AutoAugment + mixup-then-cutout, 1800 epochs.

recipes/pyramidnet-sd-cifar.sh
"""

from gnp.configs.recipes import released_defaults


def get_config():
    config = released_defaults()
    config.model.model_name = "PyramidNet_272_200_ShakeDrop"
    config.batch_size = 128
    config.base_lr = 0.05
    config.total_epochs = 1800
    config.l2_regularization = 5e-4
    config.dataset.image_level_augmentations = "autoaugment"
    config.dataset.batch_level_augmentations = "mixcut"
    config.save_ckpt_every_n_epochs = 20
    return config
