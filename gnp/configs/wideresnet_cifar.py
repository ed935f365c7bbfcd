"""WideResNet-28-10 on CIFAR-10 with GNP (r 0.1, α 0.8), 200 epochs, SGD-momentum.

    recipes/wideresnet-cifar.sh
    python -m gnp.main --config=gnp/configs/wideresnet_cifar.py --working_dir=runs/wrn \
        --config.dataset.data_dir=DATA
"""

from gnp.configs.recipes import released_defaults


def get_config():
    config = released_defaults()
    config.model.model_name = "WideResNet_28_10"
    return config
