"""VGG-16 with BatchNorm on ImageNet with GNP; the ResNet-50 ImageNet schedule.

recipes/vggbn-imagenet.sh
"""

from gnp.configs.resnet_imagenet import get_config as resnet_imagenet_config


def get_config():
    config = resnet_imagenet_config()
    config.model.model_name = "VGG16BN"
    return config
