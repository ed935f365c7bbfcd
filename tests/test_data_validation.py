"""``use_test_set = False`` (the released validation split) and the ImageNet-only settings."""

from __future__ import annotations

import numpy as np
import pytest
from test_data_sources import imagenet_config, make_config, unnormalize, write_imagefolder

from gnp.data import build_input_pipeline, digits, validation
from gnp.data.source import ArraySplit, Source


def _source(count: int) -> Source:
    images = np.zeros((count, 1, 1, 1), np.uint8)
    labels = np.arange(count, dtype=np.int32) % 10
    return Source(
        name="cifar10",
        train=ArraySplit(images, labels),
        test=ArraySplit(images[:7], labels[:7]),
        num_classes=10,
        image_shape=(1, 1, 1),
        mean=(0.5,),
        std=(0.25,),
        augment=None,
        worth_workers=False,
    )


def test_cifar_sized_training_set_splits_like_the_released_train_45000():
    # Released dataset_source.py: train 'train[:45000]', evaluation 'train[45000:]'.
    split = validation.with_validation_split(_source(50_000))
    assert (len(split.train), len(split.test)) == (45_000, 5_000)
    np.testing.assert_array_equal(split.train.indices, np.arange(45_000))
    np.testing.assert_array_equal(split.test.indices, np.arange(45_000, 50_000))
    np.testing.assert_array_equal(split.test.labels, np.arange(45_000, 50_000) % 10)


def test_digits_evaluate_on_the_held_out_tail_of_the_training_set():
    config = make_config(dataset_name="digits", batch_size=64)
    config.use_test_set = False
    pipeline = build_input_pipeline(config)
    train_images, train_labels = digits.load_digits_split()["train"]
    assert (pipeline.info.num_train, pipeline.info.num_test) == (1437 - 143, 143)
    batches = list(pipeline.eval_batches())
    mask = np.concatenate([b["mask"] for b in batches])
    images = unnormalize(pipeline, np.concatenate([b["image"] for b in batches]))[mask]
    labels = np.concatenate([b["label"] for b in batches])[mask]
    np.testing.assert_array_equal(images, train_images[-143:])
    np.testing.assert_array_equal(labels, train_labels[-143:])


def test_imagenet_refuses_a_validation_split_and_aa_only(tmp_path):
    write_imagefolder(tmp_path)
    config = imagenet_config(tmp_path)
    config.use_test_set = False
    with pytest.raises(ValueError, match="use_test_set=True"):
        build_input_pipeline(config)
    with pytest.raises(ValueError, match="'aa-only' has no ImageNet meaning"):
        build_input_pipeline(imagenet_config(tmp_path, image_level_augmentations="aa-only"))


def test_randaugment_settings_reach_the_imagenet_source(tmp_path):
    write_imagefolder(tmp_path)
    config = imagenet_config(
        tmp_path, image_level_augmentations="autoaugment", randaug_num_layers=3, randaug_magnitude=5
    )
    augment = build_input_pipeline(config).source.augment
    assert (augment.randaugment.num_layers, augment.randaugment.magnitude) == (3, 5)
    bad = imagenet_config(tmp_path, randaug_magnitude=12)
    with pytest.raises(ValueError, match="randaug_magnitude"):
        build_input_pipeline(bad)
