"""ResNet-50 (CIFAR stem) on CIFAR-10 with GNP, 200 epochs.

recipes/resnet-cifar.sh
"""

from gnp.configs.recipes import released_defaults


def get_config():
    config = released_defaults()
    config.model.model_name = "ResNet50"
    return config
