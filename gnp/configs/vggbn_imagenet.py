"""VGG-16 with BatchNorm on ImageNet with GNP; the ResNet-50 ImageNet schedule.

recipes/vggbn-imagenet.sh
"""

from gnp.configs.recipes import imagenet


def get_config():
    config = imagenet()
    config.model.model_name = "VGG16BN"
    config.batch_size = 512
    config.base_lr = 0.2
    config.total_epochs = 100
    config.l2_regularization = 1e-4
    config.gnp.r = 0.05
    return config
