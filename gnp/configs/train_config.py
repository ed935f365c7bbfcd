"""The released base config (its ``config/train_config.py``): what the released scripts pass as
``--config``, so that their command lines give the released runs.

    python -m gnp.main --config=gnp/configs/train_config.py --working_dir=DIR \
        --config.model.model_name=WideResNet_28_10 --config.opt.opt_type=Momentum \
        --config.gnp.r=0.1 --config.gnp.alpha=0.8 ...

Its values are the released ``config/base_config.py``'s; the recipe files
(``gnp/configs/*.py``) start from these too (``gnp.configs.recipes``). Its
``opt_type = "SGD"`` is plain SGD here: in the release it fails, and every
released script sets ``Momentum`` or ``Adam``.
"""

from gnp.config_keys import get_base_config


def get_config():
    config = get_base_config()
    config.batch_size = 256
    config.base_lr = 0.1
    config.total_epochs = 200
    config.gradient_clipping = 5.0
    config.l2_regularization = 1e-3
    config.lr_schedule_type = "cosine"
    config.warmup_epochs = 0
    config.label_smoothing = 0.0
    config.save_ckpt_every_n_epochs = 200
    config.opt.opt_type = "SGD"
    config.gnp.r = 0.0
    config.gnp.alpha = 0.0
    config.gnp.norm_perturbations = True
    config.hybrid_config.p = 0.0
    config.dataset.dataset_name = "cifar10"
    config.dataset.image_level_augmentations = "basic"
    config.dataset.batch_level_augmentations = "none"
    config.model.model_name = "WideResNet_28_10"
    return config
