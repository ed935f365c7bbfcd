"""ImageNet (or any image-folder data set) as class folders of JPEG/PNG files.

Layout: ``TRAIN_DIR/<class>/<image>`` and ``VAL_DIR/<class>/<image>`` (the
usual ``n01440764/*.JPEG`` layout; the flat official validation folder must be
sorted into class folders first). Labels are the indices of the sorted class
folder names of the train folder, and the validation folder must hold the same
classes. Greyscale, CMYK, palette and RGBA images are converted to RGB.

Unreadable files are skipped, counted, and the first few paths logged, unless
``dataset.strict``: at start-up every file's header is read (files that are
not images at all), and a file that fails to decode later (a truncated JPEG)
is replaced in training by the next readable sample and masked out in
evaluation, so the batch layout never depends on what decodes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from gnp.data.augment import ImageNetAugment
from gnp.data.randaugment import RandAugment
from gnp.data.source import Source, SourceOptions, register_source

logger = logging.getLogger(__name__)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224
# `autoaugment` on ImageNet is RandAugment(N, M), as the released TPU code; dataset.* keys.
CONFIG_DEFAULTS = {"randaug_num_layers": 2, "randaug_magnitude": 9}
_SHOWN = 5  # how many unreadable paths a message names
# What Pillow raises for a file that is not an image, or a truncated or damaged one.
_UNREADABLE = (OSError, SyntaxError, Image.DecompressionBombError)


def _readable(path: str) -> bool:
    """Whether Pillow recognizes the file; reads only the header, so the scan stays cheap."""
    try:
        with Image.open(path):
            return True
    except _UNREADABLE:
        return False


@dataclasses.dataclass
class FileSplit:
    """Image files by index; ``load`` decodes, and turns an unreadable file into ``None``."""

    root: Path
    paths: list[str]  # relative to root: far smaller to pickle into each worker
    labels: np.ndarray
    strict: bool
    failures: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int, transform: Callable[[Image.Image], np.ndarray]) -> np.ndarray | None:
        path = self.root / self.paths[index]
        try:
            with Image.open(path) as image:
                return transform(image)
        except _UNREADABLE as error:
            if self.strict:
                raise ValueError(
                    f"cannot decode {path} ({error}); remove it, or set "
                    "dataset.strict=False to skip unreadable images"
                ) from error
            self.failures += 1
            if self.failures <= _SHOWN:
                logger.warning("skipping unreadable image %s (%s)", path, error)
            return None


def _kind(entry: os.DirEntry) -> str | None:
    """The entry's kind, "dir" or "file" (None for anything else). A symbolic link that loops
    raises OSError when followed: an error naming the link, not a traceback from a scan."""
    try:
        return "dir" if entry.is_dir() else "file" if entry.is_file() else None
    except OSError as error:
        raise ValueError(
            f"{entry.path}: {error.strerror} (a symbolic link loop); remove or fix that link"
        ) from None


def class_names(directory: Path, flag: str) -> list[str]:
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is not a directory; set --config.{flag} to a folder of class "
            "folders (e.g. n01440764/*.JPEG)"
        )
    names = sorted(e.name for e in os.scandir(directory) if e.name[0] != "." and _kind(e) == "dir")
    if not names:
        raise ValueError(
            f"{directory} holds no class folders; --config.{flag} must point at a folder "
            "of class folders (e.g. n01440764/*.JPEG), not at the images themselves"
        )
    return names


def scan(directory: Path, classes: list[str], strict: bool, num_threads: int = 32) -> FileSplit:
    """Every readable image under ``directory/<class>/``, labelled by the class's index."""
    candidates = [
        (f"{name}/{entry.name}", label)
        for label, name in enumerate(classes)
        for entry in sorted(os.scandir(directory / name), key=lambda e: e.name)
        if entry.name[0] != "." and _kind(entry) == "file"
    ]
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        readable = list(pool.map(_readable, [str(directory / p) for p, _ in candidates]))
    kept = [c for c, ok in zip(candidates, readable, strict=True) if ok]
    bad = [str(directory / p) for (p, _), ok in zip(candidates, readable, strict=True) if not ok]
    if bad:
        message = f"{len(bad)} unreadable files under {directory}, e.g. {bad[:_SHOWN]}"
        if strict:
            raise ValueError(f"{message}; remove them, or set dataset.strict=False to skip them")
        logger.warning("skipping %s", message)
    present = {classes[label] for _, label in kept}
    if empty := [name for name in classes if name not in present]:
        raise ValueError(
            f"class folders without readable images under {directory}: {empty[:_SHOWN]}; "
            "add images or remove those folders"
        )
    return FileSplit(
        root=directory,
        paths=[p for p, _ in kept],
        labels=np.array([label for _, label in kept], dtype=np.int32),
        strict=strict,
    )


@register_source("imagenet", config_defaults=CONFIG_DEFAULTS)
def load(options: SourceOptions) -> Source:
    if options.image_level_augmentations == "aa-only":
        raise ValueError(
            "dataset.image_level_augmentations 'aa-only' has no ImageNet meaning (the released "
            "ImageNet pipeline knows only 'autoaugment', RandAugment, and crop-and-flip for "
            "anything else); use 'autoaugment' or 'basic'"
        )
    size = options.image_size or DEFAULT_IMAGE_SIZE
    # Built before the folders are read, so that bad settings fail before a long scan.
    randaugment = RandAugment(
        options.own_keys["randaug_num_layers"], options.own_keys["randaug_magnitude"]
    )
    augment = ImageNetAugment(options.image_level_augmentations, size, randaugment)
    train_dir, val_dir = options.imagenet_train_dir, options.imagenet_val_dir
    classes = class_names(train_dir, "imagenet_train_dir")
    val_classes = class_names(val_dir, "imagenet_val_dir")
    if val_classes != classes:
        missing = sorted(set(classes) - set(val_classes))[:_SHOWN]
        extra = sorted(set(val_classes) - set(classes))[:_SHOWN]
        raise ValueError(
            f"the class folders of {val_dir} differ from those of {train_dir} (missing from "
            f"val: {missing}, only in val: {extra}); both folders must hold the same classes"
        )
    return Source(
        name="imagenet",
        train=scan(train_dir, classes, options.strict),
        test=scan(val_dir, classes, options.strict),
        num_classes=len(classes),
        image_shape=(size, size, 3),
        mean=MEAN,
        std=STD,
        augment=augment,
        worth_workers=True,
    )
