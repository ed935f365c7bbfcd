"""scikit-learn's handwritten digits: 1,797 real 8×8 greyscale images shipped with the package.

The split is fixed and documented: a stratified 80/20 split with seed 0
(1,437 train, 360 test), so every run and every paper table uses the same one.
``basic`` augmentation is a random shift by up to one pixel (reflect-pad 1,
crop 8) without flips, since a mirrored digit is a different symbol.
"""

from __future__ import annotations

import numpy as np

from gnp.data.augment import ArrayAugment
from gnp.data.autoaugment import CIFAR_AUTOAUGMENT
from gnp.data.source import ArraySplit, Source, SourceOptions, register_source

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)


def load_digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images uint8 [N,8,8,1], labels int32 [N]), "test": ...}``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # The pixels are integers 0..16; scale to 0..255 so every source is uint8 images.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=0, stratify=labels
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


@register_source("digits")
def load(options: SourceOptions) -> Source:
    options.native_size(IMAGE_SHAPE[0], "digits")
    split = load_digits_split()
    train_images = split["train"][0].astype(np.float64) / 255.0
    return Source(
        name="digits",
        train=ArraySplit(*split["train"]),
        test=ArraySplit(*split["test"]),
        num_classes=NUM_CLASSES,
        image_shape=IMAGE_SHAPE,
        mean=tuple(train_images.mean(axis=(0, 1, 2)).tolist()),
        std=tuple(train_images.std(axis=(0, 1, 2)).tolist()),
        augment=ArrayAugment(
            options.image_level_augmentations, padding=1, flip=False, autoaugment=CIFAR_AUTOAUGMENT
        ),
        worth_workers=False,
    )
