"""ResNet-50 on ImageNet with GNP (r 0.05, α 0.8): batch 512, lr 0.2, 100 epochs, L2 1e-4.

    recipes/resnet-imagenet.sh
    python -m gnp.main --config=gnp/configs/resnet_imagenet.py --working_dir=runs/r50 \
        --config.imagenet_train_dir=.../train --config.imagenet_val_dir=.../val
"""

from gnp.configs.recipes import imagenet


def get_config():
    config = imagenet()
    config.model.model_name = "ResNet50"
    config.batch_size = 512
    config.base_lr = 0.2
    config.total_epochs = 100
    config.l2_regularization = 1e-4
    config.gnp.r = 0.05
    return config
