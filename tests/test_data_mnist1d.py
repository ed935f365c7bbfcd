"""MNIST-1D: generated offline from a seed, cached atomically, split as configured."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest

from gnp.configs.default import get_config
from gnp.data import build_input_pipeline, mnist1d
from gnp.data.mnist1d import Mnist1dSizes

SIZES = Mnist1dSizes(train=43, validation=21, test=35, seed=5)  # not multiples of 10


def mnist1d_config(tmp_path, **dataset):
    config = get_config()
    config.dataset.dataset_name = "mnist1d"
    config.dataset.data_dir = str(tmp_path)
    config.dataset.mnist1d_train_size = SIZES.train
    config.dataset.mnist1d_validation_size = SIZES.validation
    config.dataset.mnist1d_test_size = SIZES.test
    config.dataset.mnist1d_seed = SIZES.seed
    config.batch_size = 16
    config.eval_batch_size = 16
    for key, value in dataset.items():
        config.dataset[key] = value
    return config


@pytest.fixture(scope="module")
def generated():
    return mnist1d.generate(SIZES)


def test_split_sizes_shapes_and_labels(generated):
    for split, size in (("train", 43), ("validation", 21), ("test", 35)):
        signals, labels = generated[split]
        assert signals.shape == (size, 40, 1) and signals.dtype == np.float32
        assert labels.shape == (size,) and labels.dtype == np.int32
        assert set(np.unique(labels)) <= set(range(10))
    everything = np.concatenate([generated[s][0] for s in mnist1d.SPLITS])
    # The generator centres the whole set and scales it to unit standard deviation.
    assert abs(everything.mean()) < 0.1 and abs(everything.std() - 1.0) < 0.1


def test_same_seed_same_content_other_seed_other_content(generated):
    again = mnist1d.generate(SIZES)
    assert mnist1d.content_hash(again) == mnist1d.content_hash(generated)
    other = mnist1d.generate(Mnist1dSizes(43, 21, 35, seed=6))
    assert mnist1d.content_hash(other) != mnist1d.content_hash(generated)


def test_generation_needs_no_network_and_keeps_the_global_random_state(monkeypatch, generated):
    def refuse(*args, **kwargs):
        raise AssertionError("MNIST-1D generation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    np.random.seed(123)
    random.seed(123)
    expected_numpy, expected_python = np.random.random(3), random.random()
    np.random.seed(123)
    random.seed(123)
    splits = mnist1d.generate(SIZES)
    assert mnist1d.content_hash(splits) == mnist1d.content_hash(generated)
    np.testing.assert_array_equal(np.random.random(3), expected_numpy)
    assert random.random() == expected_python


def test_cache_is_written_once_and_read_back_unchanged(tmp_path, generated):
    first = mnist1d.load_splits(SIZES, tmp_path)
    files = sorted(p.name for p in (tmp_path / "mnist1d").iterdir())
    assert files == [SIZES.cache_name()]  # no temporary file left behind
    cached = mnist1d.load_splits(SIZES, tmp_path)
    assert mnist1d.content_hash(first) == mnist1d.content_hash(generated)
    assert mnist1d.content_hash(cached) == mnist1d.content_hash(generated)


def test_pipeline_normalizes_float_signals_without_the_pixel_scale(tmp_path, generated):
    pipeline = build_input_pipeline(mnist1d_config(tmp_path))
    assert pipeline.info.image_shape == (40, 1)
    assert (pipeline.info.num_train, pipeline.info.num_test) == (43, 35)
    train_signals = generated["train"][0].astype(np.float64)
    mean, std = train_signals.mean(), train_signals.std()
    batch = pipeline.eval_batch(0)
    expected = (generated["test"][0][:16].astype(np.float64) - mean) / std
    np.testing.assert_allclose(batch["image"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(batch["label"], generated["test"][1][:16])
    order = pipeline._epoch_order(0)[:16]
    train = pipeline.train_batch(0)
    expected = (generated["train"][0][order].astype(np.float64) - mean) / std
    np.testing.assert_allclose(train["image"], expected, rtol=1e-5, atol=1e-5)


def test_without_the_test_set_it_evaluates_on_the_validation_signals(tmp_path, generated):
    config = mnist1d_config(tmp_path)
    config.use_test_set = False
    pipeline = build_input_pipeline(config)
    assert pipeline.info.num_test == 21 and pipeline.info.num_train == 43  # nothing held out
    last = pipeline.eval_batch(1)  # rows 16..31 of 21: five real, the rest masked
    assert last["mask"].sum() == 5
    np.testing.assert_array_equal(last["label"][:5], generated["validation"][1][16:])


def test_label_noise_flips_training_labels_only(tmp_path, generated):
    pipeline = build_input_pipeline(mnist1d_config(tmp_path, label_noise=0.3))
    flipped = pipeline.source.train.labels != generated["train"][1]
    assert flipped.sum() == round(0.3 * 43)
    np.testing.assert_array_equal(pipeline.source.test.labels, generated["test"][1])


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"image_level_augmentations": "basic"}, "image_level_augmentations=none"),
        ({"image_size": 32}, "dataset.image_size to 0"),
        ({"mnist1d_test_size": 0}, "mnist1d_test_size must be at least 1"),
    ],
)
def test_mistakes_are_clear_errors(tmp_path, dataset, message):
    with pytest.raises(ValueError, match=message):
        build_input_pipeline(mnist1d_config(tmp_path, **dataset))
