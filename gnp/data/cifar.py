"""CIFAR-10 and CIFAR-100 from the official python-version archives (Krizhevsky, 2009).

Under ``dataset.data_dir`` either the archive (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``) or its extracted folder (``cifar-10-batches-py/``,
``cifar-100-python/``) is read; the archive is read in place, never extracted.
When neither is there, the archive is downloaded from the official address and
its published md5 checked; offline, the error says which file to put where.
Each pickled batch holds ``data`` uint8 [N, 3072] (the red, green and blue
32×32 planes, row-major) and ``labels`` (CIFAR-10) or ``fine_labels``
(CIFAR-100). The files are pickles, so only read archives you trust.

Contents are checked, not cast: pixels must be whole numbers in [0, 255] (any
integer dtype; float pixels are refused, since the official files never hold
them and a cast would hide a wrong file), labels whole numbers in
[0, num_classes), one per image. Anything else is an error naming the file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle
import shutil
import tarfile
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gnp.data.augment import ArrayAugment
from gnp.data.autoaugment import CIFAR_AUTOAUGMENT
from gnp.data.source import ArraySplit, Source, SourceOptions, register_source

URL = "https://www.cs.toronto.edu/~kriz/"
IMAGE_SHAPE = (32, 32, 3)


@dataclasses.dataclass(frozen=True)
class CifarFiles:
    """Where one CIFAR variant lives and how its pickles are keyed."""

    title: str
    archive: str
    folder: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR10 = CifarFiles(
    title="CIFAR-10",
    archive="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    md5="c58f30108f718f92721af3b95e74349a",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    label_key=b"labels",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)
CIFAR100 = CifarFiles(
    title="CIFAR-100",
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=("train",),
    test_files=("test",),
    label_key=b"fine_labels",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)

Downloader = Callable[[str, Path], None]


def download_url(url: str, destination: Path) -> None:
    """Fetch ``url`` into ``destination`` through a temporary name, so a broken transfer
    never leaves a file that looks complete."""
    partial = destination.with_name(destination.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
        shutil.copyfileobj(response, out)
    partial.replace(destination)


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(files: CifarFiles, data_dir: Path, download: Downloader) -> Path:
    archive = data_dir / files.archive
    where = (
        f"put {files.archive} (md5 {files.md5}, from {URL}{files.archive}) or its extracted "
        f"folder {files.folder}/ in {data_dir}, or point --config.dataset.data_dir at the "
        "folder that holds it"
    )
    created = not data_dir.exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        download(URL + files.archive, archive)
    except OSError as error:  # urllib's URLError is an OSError: offline, refused, timed out
        if created and not any(data_dir.iterdir()):
            data_dir.rmdir()  # leave nothing behind
        raise FileNotFoundError(
            f"{files.title} not found and could not be downloaded ({error}): {where}"
        ) from error
    if (digest := md5sum(archive)) != files.md5:
        archive.unlink()
        raise ValueError(
            f"downloaded {files.archive} has md5 {digest}, not the published {files.md5}; "
            f"deleted it. Retry, or {where}"
        )
    return archive


def _whole_numbers(values: np.ndarray, low: int, high: int, what: str, where: str) -> np.ndarray:
    """``values`` as integers, refused unless they are an integer array in [low, high)."""
    if not np.issubdtype(values.dtype, np.integer):
        non_finite = np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all()
        raise ValueError(
            f"{where}: {what} must be integers, found dtype {values.dtype}"
            + (" with NaN or infinity" if non_finite else "")
            + "; this is not the official python-version file"
        )
    if values.size and (values.min() < low or values.max() >= high):
        outside = int(np.count_nonzero((values < low) | (values >= high)))
        raise ValueError(
            f"{where}: {outside} {what} lie outside [{low}, {high}) (range {values.min()} to "
            f"{values.max()}); this is not the official python-version file"
        )
    return values


def _decode(payload: bytes, files: CifarFiles, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.loads(payload, encoding="bytes")
    except Exception as error:  # pickle raises many types for a file that is not one
        raise ValueError(
            f"{where} is not a pickled CIFAR batch ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(batch, dict):
        raise ValueError(f"{where} holds a {type(batch).__name__}, not a CIFAR batch (a dict)")
    if missing := sorted({b"data", files.label_key} - set(batch)):
        raise ValueError(
            f"{where} lacks the entries {missing} of a {files.title} batch (it has "
            f"{sorted(batch, key=str)})"
        )
    data = np.asarray(batch[b"data"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{where}: data has shape {data.shape}, not [N, 3072]")
    data = _whole_numbers(data, 0, 256, "pixel values", where)
    labels = _whole_numbers(
        np.asarray(batch[files.label_key]).reshape(-1), 0, files.num_classes, "labels", where
    )
    if len(labels) != len(data):
        raise ValueError(f"{where} holds {len(data)} images but {len(labels)} labels")
    images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def _read_split(
    files: CifarFiles, names: tuple[str, ...], read_member: Callable[[str], bytes], source: str
) -> ArraySplit:
    parts = [_decode(read_member(name), files, f"{source}/{name}") for name in names]
    return ArraySplit(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _read_splits(
    files: CifarFiles, read_member: Callable[[str], bytes], source: str
) -> tuple[ArraySplit, ArraySplit]:
    return (
        _read_split(files, files.train_files, read_member, source),
        _read_split(files, files.test_files, read_member, source),
    )


def read_cifar(
    files: CifarFiles, data_dir: Path, download: Downloader | None = None
) -> tuple[ArraySplit, ArraySplit]:
    """(train, test) of one CIFAR variant from ``data_dir``, downloading the archive if absent."""
    folder = data_dir / files.folder
    if folder.is_dir():
        return _read_splits(files, lambda name: (folder / name).read_bytes(), str(folder))
    archive = data_dir / files.archive
    if not archive.is_file():
        archive = _fetch(files, data_dir, download or download_url)
    wanted = {f"{files.folder}/{name}" for name in (*files.train_files, *files.test_files)}
    # One pass in archive order: a gzip stream cannot seek back, so reading members by name
    # would decompress from the start again for each of them.
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar if m.name in wanted}
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:  # truncated or not gzip
        raise ValueError(
            f"{archive} is not a readable .tar.gz archive ({type(error).__name__}: {error}); "
            f"download it again ({URL}{files.archive}, md5 {files.md5})"
        ) from None
    if missing := sorted(wanted - set(members)):
        raise ValueError(
            f"{archive} lacks {missing}: it is not the official python-version archive "
            f"({URL}{files.archive})"
        )
    return _read_splits(
        files, lambda name: members[f"{files.folder}/{name}"], f"{archive}:{files.folder}"
    )


def load(files: CifarFiles, options: SourceOptions, download: Downloader | None = None) -> Source:
    options.native_size(IMAGE_SHAPE[0], files.title)
    train, test = read_cifar(files, options.data_dir, download)
    level = options.image_level_augmentations
    return Source(
        name=files.title.lower().replace("-", ""),
        train=train,
        test=test,
        num_classes=files.num_classes,
        image_shape=IMAGE_SHAPE,
        mean=files.mean,
        std=files.std,
        augment=ArrayAugment(level, padding=4, flip=True, autoaugment=CIFAR_AUTOAUGMENT),
        worth_workers=level in ("autoaugment", "aa-only"),
    )


load_cifar10 = register_source("cifar10")(functools.partial(load, CIFAR10))
load_cifar100 = register_source("cifar100")(functools.partial(load, CIFAR100))
