"""Data sources against files the tests write in the official formats.

CIFAR: the python-version pickles (``data`` uint8 [N, 3072] as R, G, B planes,
row-major; ``labels`` / ``fine_labels``), as a .tar.gz and as the extracted
folder. ImageNet: class folders of JPEGs and PNGs, with a greyscale, a CMYK and
an RGBA image, a file that is not an image, and a truncated JPEG.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import pickle
import tarfile
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from gnp.data import build_input_pipeline, cifar, dataset_names
from gnp.data.source import SourceOptions


def make_config(**dataset: object) -> ml_collections.ConfigDict:
    """A config with the keys the trainer's has; batch sizes go to the top level."""
    config = ml_collections.ConfigDict()
    config.batch_size = dataset.pop("batch_size", 4)
    config.seeds = 0
    if "eval_batch_size" in dataset:
        config.eval_batch_size = dataset.pop("eval_batch_size")
    config.dataset = ml_collections.ConfigDict(
        {
            "image_level_augmentations": "none",
            "batch_level_augmentations": "none",
            "num_workers": 0,
            **dataset,
        }
    )
    return config


def _cifar_bytes(images: np.ndarray, labels: np.ndarray, label_key: bytes) -> bytes:
    """One batch exactly as the official archive pickles it."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # R, G, B planes
    batch = {b"batch_label": b"test", b"data": planes, label_key: labels.tolist()}
    return pickle.dumps(batch, protocol=2)


def write_cifar(
    root: Path, variant: cifar.CifarFiles, *, as_archive: bool, per_file: int = 4, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny CIFAR in the official layout; returns the images (HWC) and labels it wrote."""
    rng = np.random.default_rng(seed)
    members, truth = {}, {}
    for split, names in (("train", variant.train_files), ("test", variant.test_files)):
        images = rng.integers(0, 256, size=(per_file * len(names), 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, variant.num_classes, size=len(images))
        truth[split] = (images, labels)
        for i, name in enumerate(names):
            part = slice(i * per_file, (i + 1) * per_file)
            members[name] = _cifar_bytes(images[part], labels[part], variant.label_key)
    members["meta" if variant is cifar.CIFAR100 else "batches.meta"] = pickle.dumps({}, protocol=2)
    root.mkdir(parents=True, exist_ok=True)
    if as_archive:
        with tarfile.open(root / variant.archive, "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(f"{variant.folder}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        (root / variant.folder).mkdir()
        for name, data in members.items():
            (root / variant.folder / name).write_bytes(data)
    return truth


def _pixel_order(images: np.ndarray) -> np.ndarray:
    """An order that sorts images by their pixels, to compare sets of images."""
    return np.lexsort(images.reshape(len(images), -1).T)


def unnormalize(pipeline, images: np.ndarray) -> np.ndarray:
    return np.round((images * pipeline.std + pipeline.mean) * 255.0).astype(np.int64)


@pytest.mark.parametrize("variant", [cifar.CIFAR10, cifar.CIFAR100], ids=["cifar10", "cifar100"])
@pytest.mark.parametrize("as_archive", [True, False], ids=["archive", "folder"])
def test_cifar_loader_returns_the_written_images_and_labels(tmp_path, variant, as_archive):
    truth = write_cifar(tmp_path, variant, as_archive=as_archive)
    name = variant.title.lower().replace("-", "")
    pipeline = build_input_pipeline(make_config(dataset_name=name, data_dir=str(tmp_path)))
    n_train, n_test = len(truth["train"][1]), len(truth["test"][1])
    assert pipeline.info.num_classes == variant.num_classes
    assert pipeline.info.image_shape == (32, 32, 3)
    assert (pipeline.info.num_train, pipeline.info.num_test) == (n_train, n_test)

    batches = list(pipeline.eval_batches())
    images = np.concatenate([b["image"] for b in batches])[
        np.concatenate([b["mask"] for b in batches])
    ]
    labels = np.concatenate([b["label"] for b in batches])[:n_test]
    np.testing.assert_array_equal(unnormalize(pipeline, images), truth["test"][0])
    np.testing.assert_array_equal(labels, truth["test"][1])

    # One epoch of training batches is a permutation of the training set.
    iterator = pipeline.train_iterator()
    seen = [next(iterator) for _ in range(pipeline.steps_per_epoch)]
    train_images = unnormalize(pipeline, np.concatenate([b["image"] for b in seen]))
    train_labels = np.concatenate([b["label"] for b in seen]).argmax(axis=1)
    order, want = _pixel_order(train_images), _pixel_order(truth["train"][0])
    np.testing.assert_array_equal(train_images[order], truth["train"][0][want])
    np.testing.assert_array_equal(train_labels[order], truth["train"][1][want])


def test_cifar_download_is_verified_and_offline_error_says_what_to_put_where(tmp_path):
    def offline(url: str, destination: Path) -> None:
        raise OSError("network unreachable")

    options = SourceOptions.from_config(make_config(data_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError) as error:
        cifar.load(cifar.CIFAR10, options, download=offline)
    assert "cifar-10-python.tar.gz" in str(error.value) and str(tmp_path) in str(error.value)
    assert cifar.CIFAR10.md5 in str(error.value)

    source_dir = tmp_path / "mirror"
    write_cifar(source_dir, cifar.CIFAR10, as_archive=True)
    requested = []

    def fake_download(url: str, destination: Path) -> None:
        requested.append(url)
        destination.write_bytes((source_dir / cifar.CIFAR10.archive).read_bytes())

    # The tiny archive's md5 is not the published one: the file is rejected and deleted.
    with pytest.raises(ValueError, match="md5"):
        cifar.load(cifar.CIFAR10, options, download=fake_download)
    assert requested == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert not (tmp_path / cifar.CIFAR10.archive).exists()

    genuine = dataclasses.replace(
        cifar.CIFAR10, md5=cifar.md5sum(source_dir / cifar.CIFAR10.archive)
    )
    source = cifar.load(genuine, options, download=fake_download)
    assert len(source.train) == 20 and (tmp_path / cifar.CIFAR10.archive).is_file()


def test_cifar_archive_without_the_expected_member_is_a_clear_error(tmp_path):
    with tarfile.open(tmp_path / cifar.CIFAR10.archive, "w:gz") as tar:
        info = tarfile.TarInfo("something/else")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="data_batch_1"):
        build_input_pipeline(make_config(dataset_name="cifar10", data_dir=str(tmp_path)))


# --- ImageNet-style folders -------------------------------------------------------------

CLASSES = ["n01440764", "n01443537", "n01484850"]
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def _save(image: Image.Image, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt)


def write_imagefolder(root: Path) -> None:
    """Solid-colour PNGs (exact after resizing) and noisy JPEGs, odd sizes, odd modes."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("val", 2)):
        for label, (name, colour) in enumerate(zip(CLASSES, COLOURS, strict=True)):
            for i in range(per_class):
                size = (40 + 7 * i, 30 + 5 * label)
                _save(Image.new("RGB", size, colour), root / split / name / f"{i}.png", "PNG")
            noise = rng.integers(0, 256, size=(37, 45, 3), dtype=np.uint8)
            _save(Image.fromarray(noise), root / split / name / "noise.JPEG", "JPEG")
    _save(Image.new("L", (33, 41), 90), root / "train" / CLASSES[0] / "grey.png", "PNG")
    _save(
        Image.new("CMYK", (30, 30), (0, 0, 0, 0)), root / "train" / CLASSES[1] / "cmyk.JPEG", "JPEG"
    )
    _save(
        Image.new("RGBA", (30, 30), (10, 20, 30, 128)), root / "train" / CLASSES[2] / "a.png", "PNG"
    )
    (root / "train" / CLASSES[2] / "corrupt.JPEG").write_bytes(b"this is not an image")
    # A JPEG cut short: its header reads, its pixels do not.
    whole = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(whole, "JPEG")
    data = whole.getvalue()
    (root / "val" / CLASSES[1] / "truncated.JPEG").write_bytes(data[: len(data) // 2])


def imagenet_config(root: Path, **dataset: object) -> ml_collections.ConfigDict:
    """The folders at the top level, where the released config keeps them."""
    train_dir = dataset.pop("imagenet_train_dir", root / "train")
    val_dir = dataset.pop("imagenet_val_dir", root / "val")
    config = make_config(dataset_name="imagenet", **{"image_size": 16, **dataset})
    config.imagenet_train_dir, config.imagenet_val_dir = str(train_dir), str(val_dir)
    return config


def test_imagefolder_reads_labels_modes_and_skips_unreadable_files(tmp_path, caplog):
    write_imagefolder(tmp_path)
    with caplog.at_level(logging.WARNING):
        pipeline = build_input_pipeline(imagenet_config(tmp_path, batch_size=3, eval_batch_size=4))
    assert "corrupt.JPEG" in caplog.text
    # train: 3 classes x (3 PNG + 1 JPEG) + grey + CMYK + RGBA; the non-image is skipped.
    assert pipeline.info.num_train == 15
    # val: 3 x (2 + 1) + the truncated JPEG, whose header reads; it fails only when decoded.
    assert pipeline.info.num_test == 10
    assert pipeline.info.num_classes == 3 and pipeline.info.image_shape == (16, 16, 3)

    batches = list(pipeline.eval_batches())
    images = unnormalize(pipeline, np.concatenate([b["image"] for b in batches]))
    labels = np.concatenate([b["label"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 9  # every readable val image once; the truncated one masked out
    test = pipeline.source.test
    for i in np.flatnonzero(mask):
        assert labels[i] == CLASSES.index(test.paths[i].split("/")[0])
        if test.paths[i].endswith(".png"):  # solid colours survive the crop and resize
            assert (images[i] == COLOURS[labels[i]]).all()
    assert "truncated.JPEG" in caplog.text

    iterator = pipeline.train_iterator()
    for _ in range(2 * pipeline.steps_per_epoch):
        batch = next(iterator)
        assert batch["image"].shape == (3, 16, 16, 3)
        assert np.isfinite(batch["image"]).all()

    train = pipeline.source.train  # a greyscale image decodes to three equal channels
    grey = train.paths.index(f"{CLASSES[0]}/grey.png")
    pixels = train.load(grey, pipeline.source.augment.eval)
    assert pixels.shape == (16, 16, 3) and (pixels == 90).all()


def test_imagefolder_strict_mode_names_the_unreadable_file(tmp_path):
    write_imagefolder(tmp_path)
    with pytest.raises(ValueError, match=r"corrupt\.JPEG"):
        build_input_pipeline(imagenet_config(tmp_path, strict=True))
    (tmp_path / "train" / CLASSES[2] / "corrupt.JPEG").unlink()
    pipeline = build_input_pipeline(imagenet_config(tmp_path, strict=True, eval_batch_size=10))
    with pytest.raises(ValueError, match=r"truncated\.JPEG"):
        list(pipeline.eval_batches())


def test_imagefolder_bad_layouts_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagenet_train_dir"):
        build_input_pipeline(imagenet_config(tmp_path))
    write_imagefolder(tmp_path)
    (tmp_path / "val" / "n99999999").mkdir()
    with pytest.raises(ValueError, match="n99999999") as error:
        build_input_pipeline(imagenet_config(tmp_path))
    assert str(tmp_path / "val") in str(error.value)
    (tmp_path / "val" / "n99999999").rmdir()
    (tmp_path / "train" / "n99999999").mkdir()
    (tmp_path / "val" / "n99999999").mkdir()
    with pytest.raises(ValueError, match=r"without readable images.*n99999999"):
        build_input_pipeline(imagenet_config(tmp_path))
    flat = tmp_path / "flat"
    flat.mkdir()
    _save(Image.new("RGB", (8, 8)), flat / "x.JPEG", "JPEG")
    with pytest.raises(ValueError, match="no class folders"):
        build_input_pipeline(imagenet_config(tmp_path, imagenet_train_dir=str(flat)))


def test_unknown_names_list_the_valid_choices(tmp_path):
    with pytest.raises(ValueError, match=r"cifar10.*digits.*imagenet"):
        build_input_pipeline(make_config(dataset_name="mnist"))
    with pytest.raises(ValueError, match="basic"):
        build_input_pipeline(make_config(dataset_name="digits", image_level_augmentations="x"))
    with pytest.raises(ValueError, match="mixcut"):
        build_input_pipeline(make_config(dataset_name="digits", batch_level_augmentations="x"))
    with pytest.raises(ValueError, match="image_size"):
        build_input_pipeline(make_config(dataset_name="digits", image_size=32))
    with pytest.raises(ValueError, match="batch_size"):
        build_input_pipeline(make_config(dataset_name="digits", batch_size=5000))
    assert dataset_names() == ["cifar10", "cifar100", "digits", "imagenet", "mnist1d"]


def test_digits_split_is_the_documented_one():
    pipeline = build_input_pipeline(make_config(dataset_name="digits"))
    info = pipeline.info
    assert (info.num_train, info.num_test, info.num_classes) == (1437, 360, 10)
    assert info.image_shape == (8, 8, 1)
    # Stratified: every class keeps its share (36 per class in the test set, give or take one).
    counts = np.bincount(pipeline.source.test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
