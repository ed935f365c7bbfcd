"""CIFAR-10 and CIFAR-100 from the official python-version archives (Krizhevsky, 2009).

Under ``dataset.data_dir`` either the archive (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``) or its extracted folder (``cifar-10-batches-py/``,
``cifar-100-python/``) is read; the archive is read in place, never extracted.
When neither is there, the archive is downloaded from the official address and
its published md5 checked; offline, the error says which file to put where.
Each pickled batch holds ``data`` uint8 [N, 3072] (the red, green and blue
32×32 planes, row-major) and ``labels`` (CIFAR-10) or ``fine_labels``
(CIFAR-100). The files are pickles, so only read archives you trust.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle
import shutil
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gnp.data.augment import ArrayAugment
from gnp.data.autoaugment import CIFAR_AUTOAUGMENT
from gnp.data.source import ArraySplit, Source, SourceOptions

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
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        download(URL + files.archive, archive)
    except OSError as error:  # urllib's URLError is an OSError: offline, refused, timed out
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


def _decode(batch: dict[bytes, object], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(batch[label_key], dtype=np.int32)


def _read_split(
    files: CifarFiles, names: tuple[str, ...], read_member: Callable[[str], bytes]
) -> ArraySplit:
    parts = [
        _decode(pickle.loads(read_member(name), encoding="bytes"), files.label_key)
        for name in names
    ]
    return ArraySplit(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _read_splits(
    files: CifarFiles, read_member: Callable[[str], bytes]
) -> tuple[ArraySplit, ArraySplit]:
    return (
        _read_split(files, files.train_files, read_member),
        _read_split(files, files.test_files, read_member),
    )


def read_cifar(
    files: CifarFiles, data_dir: Path, download: Downloader | None = None
) -> tuple[ArraySplit, ArraySplit]:
    """(train, test) of one CIFAR variant from ``data_dir``, downloading the archive if absent."""
    folder = data_dir / files.folder
    if folder.is_dir():
        return _read_splits(files, lambda name: (folder / name).read_bytes())
    archive = data_dir / files.archive
    if not archive.is_file():
        archive = _fetch(files, data_dir, download or download_url)
    wanted = {f"{files.folder}/{name}" for name in (*files.train_files, *files.test_files)}
    # One pass in archive order: a gzip stream cannot seek back, so reading members by name
    # would decompress from the start again for each of them.
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.name in wanted}
    if missing := sorted(wanted - set(members)):
        raise ValueError(
            f"{archive} lacks {missing}: it is not the official python-version archive "
            f"({URL}{files.archive})"
        )
    return _read_splits(files, lambda name: members[f"{files.folder}/{name}"])


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


load_cifar10 = functools.partial(load, CIFAR10)
load_cifar100 = functools.partial(load, CIFAR100)
