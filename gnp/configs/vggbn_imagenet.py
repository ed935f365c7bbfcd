"""VGG-16 with BatchNorm on ImageNet with GNP (r 0.05, α 0.8): batch 256, lr 0.1, 100 epochs.

The released script's values: batch 256 and lr 0.1 (not ResNet-50's 512 / 0.2), L2 1e-4.

    recipes/vggbn-imagenet.sh
"""

from gnp.configs.recipes import imagenet


def get_config():
    config = imagenet()
    config.model.model_name = "VGG16BN"
    config.batch_size = 256
    config.base_lr = 0.1
    config.total_epochs = 100
    config.l2_regularization = 1e-4
    config.gnp.r = 0.05
    return config
