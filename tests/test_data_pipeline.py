"""The loader: epochs, determinism, exact resume, process slices, evaluation coverage."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from test_data_sources import make_config, unnormalize, write_cifar

from gnp.data import build_input_pipeline, cifar


def digits(**dataset: object):
    return build_input_pipeline(make_config(dataset_name="digits", **dataset))


def take(iterator, n: int) -> list[dict[str, np.ndarray]]:
    return [next(iterator) for _ in range(n)]


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_train_batches_have_the_contract_shapes_and_soft_labels():
    pipeline = digits(
        batch_size=64, image_level_augmentations="basic", batch_level_augmentations="mixup"
    )
    batch = next(pipeline.train_iterator())
    assert batch["image"].shape == (64, 8, 8, 1) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (64, 10) and batch["label"].dtype == np.float32
    np.testing.assert_allclose(batch["label"].sum(axis=1), 1.0, rtol=1e-6)
    assert ((batch["label"] > 0).sum(axis=1) <= 2).all()
    # One mixing weight per batch: the larger label weight of every mixed row is the same.
    top = batch["label"].max(axis=1)
    mixed = top < 1
    assert mixed.any() and np.allclose(top[mixed], top[mixed][0])
    assert pipeline.steps_per_epoch == 1437 // 64 and pipeline.local_batch_size == 64


def test_epochs_cover_the_training_set_and_are_reshuffled():
    pipeline = digits(batch_size=128)
    steps = pipeline.steps_per_epoch
    iterator = pipeline.train_iterator()
    train = pipeline.source.train
    available = collections.Counter(
        (img.tobytes(), int(label)) for img, label in zip(train.images, train.labels, strict=True)
    )
    epochs = []
    for _ in range(2):
        batches = take(iterator, steps)
        images = unnormalize(pipeline, np.concatenate([b["image"] for b in batches]))
        labels = np.concatenate([b["label"] for b in batches]).argmax(axis=1)
        seen = collections.Counter(
            (img.astype(np.uint8).tobytes(), int(label))
            for img, label in zip(images, labels, strict=True)
        )
        # Without augmentation: training samples, none twice; only the last partial batch left out.
        assert seen.total() == steps * 128 and not seen - available
        epochs.append(labels)
    assert not np.array_equal(epochs[0], epochs[1])


def test_batches_depend_only_on_the_seed():
    settings = dict(
        batch_size=32, image_level_augmentations="autoaugment", batch_level_augmentations="mixcut"
    )
    a = take(digits(**settings).train_iterator(), 3)
    assert_same_batches(a, take(digits(**settings).train_iterator(), 3))
    config = make_config(dataset_name="digits", **settings)
    config.seeds = 1
    other = next(build_input_pipeline(config).train_iterator())
    assert not np.array_equal(a[0]["image"], other["image"])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_restored_iterator_continues_with_the_same_batches(num_workers):
    settings = dict(
        batch_size=256,  # 5 steps an epoch: the checkpoint below falls mid-epoch 1
        image_level_augmentations="basic",
        batch_level_augmentations="mixcut",
    )
    reference = take(digits(**settings).train_iterator(), 10)
    pipeline = digits(num_workers=num_workers, **settings)
    iterator = pipeline.train_iterator()
    assert_same_batches(take(iterator, 7), reference[:7])
    state = iterator.get_state()
    resumed = pipeline.train_iterator()
    resumed.set_state(state)
    assert_same_batches(take(resumed, 3), reference[7:])
    pipeline.close()  # both iterators: their workers stop, their shared memory is freed
    with pytest.raises(ValueError, match="closed iterator"):
        next(resumed)


@pytest.mark.parametrize("batch_level", ["none", "mixcut"])
def test_process_slices_concatenate_to_the_one_process_batch(batch_level):
    settings = dict(
        batch_size=64,
        image_level_augmentations="autoaugment",
        batch_level_augmentations=batch_level,
    )
    config = make_config(dataset_name="digits", **settings)
    whole = take(build_input_pipeline(config).train_iterator(), 2)
    parts = [
        take(build_input_pipeline(config, process_index=p, process_count=2).train_iterator(), 2)
        for p in range(2)
    ]
    for step in range(2):
        for key in ("image", "label"):
            joined = np.concatenate([parts[0][step][key], parts[1][step][key]])
            np.testing.assert_array_equal(joined, whole[step][key])


def test_eval_sees_every_test_sample_once_with_a_batch_that_does_not_divide_it():
    pipeline = digits(batch_size=32, eval_batch_size=50)  # 360 test images: 7 full + 1 of 10
    batches = list(pipeline.eval_batches())
    assert len(batches) == 8 == pipeline.num_eval_batches
    for batch in batches:
        assert batch["image"].shape == (50, 8, 8, 1) and batch["label"].dtype == np.int32
        assert batch["mask"].dtype == bool
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 360 and mask[:360].all() and not mask[360:].any()
    test = pipeline.source.test
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:360], test.labels)
    images = unnormalize(pipeline, np.concatenate([b["image"] for b in batches])[:360])
    np.testing.assert_array_equal(images, test.images)


def test_eval_process_slices_concatenate_to_the_one_process_batch():
    config = make_config(dataset_name="digits", batch_size=32, eval_batch_size=50)
    whole = list(build_input_pipeline(config).eval_batches())
    parts = [
        list(build_input_pipeline(config, process_index=p, process_count=2).eval_batches())
        for p in range(2)
    ]
    for i, batch in enumerate(whole):
        for key in batch:
            joined = np.concatenate([parts[0][i][key], parts[1][i][key]])
            np.testing.assert_array_equal(joined, batch[key])


def test_train_images_are_normalized_with_the_data_set_statistics(tmp_path):
    write_cifar(tmp_path, cifar.CIFAR10, as_archive=True, per_file=16)
    config = make_config(
        dataset_name="cifar10",
        data_dir=str(tmp_path),
        batch_size=16,
        image_level_augmentations="basic",
    )
    pipeline = build_input_pipeline(config)
    np.testing.assert_allclose(pipeline.mean, cifar.CIFAR10.mean)
    np.testing.assert_allclose(pipeline.std, cifar.CIFAR10.std)
    batch = next(pipeline.train_iterator())
    pixels = batch["image"] * pipeline.std + pipeline.mean
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert batch["image"].shape == (16, 32, 32, 3)


@pytest.mark.parametrize("mode", ["batch", "image"])
def test_cutout_zeroes_a_square_of_the_configured_size(mode):
    pipeline = digits(
        batch_size=64, batch_level_augmentations="cutout", cutout_size=4, cutout_mode=mode
    )
    plain = digits(batch_size=64)
    assert digits(batch_size=64).cutout_size == 4  # 16 px at 32 px, scaled to 8 px
    cut, clean = next(pipeline.train_iterator())["image"], next(plain.train_iterator())["image"]
    np.testing.assert_array_equal(cut.shape, clean.shape)
    changed = (cut != clean)[..., 0]
    assert (cut[..., 0][changed] == 0).all()
    assert changed.sum(axis=(1, 2)).max() <= 16
    # Released ('batch'): one window for the whole batch; 'image': one window per image.
    windows = {(cut[i, ..., 0] == 0).tobytes() for i in range(len(cut))}
    assert len(windows) == 1 if mode == "batch" else len(windows) > 10
