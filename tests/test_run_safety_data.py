"""Data contents that cannot be right are refused, naming the file and the problem.

CIFAR batches are written as the official archive pickles them, then one thing
in them is made wrong; image folders get a symbolic link that loops.
"""

import pickle
import tarfile

import numpy as np
import pytest
from test_data_sources import imagenet_config, make_config, write_cifar, write_imagefolder

from gnp.data import build_input_pipeline, cifar

BATCH = "data_batch_2"


def rewrite_batch(root, change):
    """Applies ``change`` to one training batch's dict of the extracted CIFAR-10 folder."""
    path = root / cifar.CIFAR10.folder / BATCH
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    path.write_bytes(pickle.dumps(change(batch), protocol=2))
    return path


def with_data(transform):
    return lambda batch: {**batch, b"data": transform(np.asarray(batch[b"data"]))}


def nan_pixel(data):
    data = data.astype(np.float32)
    data[0, 5] = np.nan
    return data


def out_of_range_label(batch):
    return {**batch, b"labels": [*batch[b"labels"][:-1], 10]}


CASES = {
    "float_pixels": (with_data(lambda d: d.astype(np.float64)), r"pixel values must be integers"),
    "nan_pixels": (with_data(nan_pixel), r"found dtype float32 with NaN or infinity"),
    "pixels_256": (
        with_data(lambda d: d.astype(np.int64) + 1),
        r"pixel values lie outside \[0, 256\)",
    ),
    "negative_pixel": (with_data(lambda d: d.astype(np.int16) - 1), r"outside \[0, 256\)"),
    "label_10": (out_of_range_label, r"1 labels lie outside \[0, 10\) \(range \d+ to 10\)"),
    "float_labels": (
        lambda b: {**b, b"labels": [float(x) for x in b[b"labels"]]},
        r"labels must be integers",
    ),
    "count_mismatch": (
        lambda b: {**b, b"labels": b[b"labels"][:-1]},
        r"holds 4 images but 3 labels",
    ),
    "no_labels": (
        lambda b: {k: v for k, v in b.items() if k != b"labels"},
        r"lacks the entries \[b'labels'\]",
    ),
    "wrong_shape": (with_data(lambda d: d[:, :100]), r"shape \(4, 100\), not \[N, 3072\]"),
    "not_a_dict": (lambda b: [b[b"data"]], r"holds a list, not a CIFAR batch"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_cifar_contents_are_refused_naming_the_file(tmp_path, case):
    change, message = CASES[case]
    write_cifar(tmp_path, cifar.CIFAR10, as_archive=False)
    path = rewrite_batch(tmp_path, change)
    with pytest.raises(ValueError, match=message) as error:
        build_input_pipeline(make_config(dataset_name="cifar10", data_dir=str(tmp_path)))
    assert str(error.value).startswith(str(path))


def test_integer_pixels_of_another_dtype_are_read_exactly(tmp_path):
    truth = write_cifar(tmp_path, cifar.CIFAR10, as_archive=False)
    rewrite_batch(tmp_path, with_data(lambda d: d.astype(np.int64)))
    train, _ = cifar.read_cifar(cifar.CIFAR10, tmp_path)
    np.testing.assert_array_equal(train.images, truth["train"][0])


def test_a_file_that_is_not_a_pickle(tmp_path):
    write_cifar(tmp_path, cifar.CIFAR10, as_archive=False)
    path = tmp_path / cifar.CIFAR10.folder / BATCH
    path.write_bytes(b"\x89PNG not a pickle")
    with pytest.raises(ValueError, match=rf"{path} is not a pickled CIFAR batch"):
        cifar.read_cifar(cifar.CIFAR10, tmp_path)


def test_a_bad_member_of_an_archive_is_named_inside_it(tmp_path):
    write_cifar(tmp_path / "folder", cifar.CIFAR10, as_archive=False)
    rewrite_batch(tmp_path / "folder", out_of_range_label)
    archive = tmp_path / cifar.CIFAR10.archive
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "folder" / cifar.CIFAR10.folder, arcname=cifar.CIFAR10.folder)
    with pytest.raises(ValueError, match=rf"{archive}:cifar-10-batches-py/{BATCH}: 1 labels"):
        cifar.read_cifar(cifar.CIFAR10, tmp_path)


@pytest.mark.parametrize("where", ["class_folder", "image"])
def test_a_symlink_loop_in_an_image_folder_is_named(tmp_path, where):
    write_imagefolder(tmp_path)
    link = tmp_path / "train" / "loop" if where == "class_folder" else tmp_path / "train"
    if where == "image":
        link = link / "n01440764" / "loop.JPEG"
    link.symlink_to(link.name)  # points at itself
    with pytest.raises(ValueError, match=rf"{link}: Too many levels of symbolic links"):
        build_input_pipeline(imagenet_config(tmp_path))
