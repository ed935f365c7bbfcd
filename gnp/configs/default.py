"""The default run: GNP on the embedded digits set with a small conv net, in seconds
on CPU (8 s on an idle 2-core machine, docs/training.md).

python -m gnp.main --config=gnp/configs/default.py --working_dir=runs/default
"""

from gnp.config_keys import get_base_config


def get_config():
    config = get_base_config()
    config.dataset.dataset_name = "digits"
    config.dataset.image_level_augmentations = "none"
    config.dataset.num_workers = 0
    config.model.model_name = "SmallCNN"
    config.batch_size = 128
    config.base_lr = 0.1
    config.total_epochs = 30
    config.warmup_epochs = 2
    config.l2_regularization = 5e-4
    config.gnp.r = 0.05
    config.gnp.alpha = 0.8
    config.evaluate_every_n_epochs = 5
    config.save_ckpt_every_n_epochs = 10
    config.log_every_n_steps = 10
    return config
