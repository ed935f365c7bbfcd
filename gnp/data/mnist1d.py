"""MNIST-1D (Greydanus 2020): ten 1-D digit templates, padded, shifted, scaled, sheared, noised.

The science data set for CPU-scale studies: unlike the 360-image digits test set it has
large splits (train / validation / test, sizes as config keys), a small CNN memorizes
noisy labels on it, and an epoch takes seconds. Signals are 40 float values, one channel.

The ``mnist1d`` package's ``get_dataset`` would download a pickle; this source calls
its generator (``make_dataset`` with the package's templates) instead, which needs no
network. The generator draws from numpy's global random state: that state (and
Python's ``random`` state, which it also seeds) is saved and restored around the call.
One generation of ``train + validation + test`` samples is split in that order, so a
split's content depends only on ``(seed, sizes)``. It is cached as ``.npz`` under
``dataset.data_dir/mnist1d/`` (written to a temporary file, then renamed: a crash
never leaves half a file that a later run would read).

There is no image-level augmentation: the generator already translates, scales and
shears each sample, and the studies (label-noise memorization) want the signals as
generated, so only ``image_level_augmentations = "none"`` is accepted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gnp.data.source import ArraySplit, Source, SourceOptions, register_source
from gnp.files import atomic_file

NUM_CLASSES = 10
SIGNAL_LENGTH = 40
SPLITS = ("train", "validation", "test")
# The split sizes and the generator's seed, as dataset.* keys (Mnist1dSizes's order).
CONFIG_DEFAULTS = {
    "mnist1d_train_size": 4000,
    "mnist1d_validation_size": 2000,
    "mnist1d_test_size": 20000,
    "mnist1d_seed": 42,
}


@dataclasses.dataclass(frozen=True)
class Mnist1dSizes:
    """How many samples each split holds and the generator's seed."""

    train: int
    validation: int
    test: int
    seed: int

    def __post_init__(self) -> None:
        for split in SPLITS:
            if getattr(self, split) < 1:
                raise ValueError(
                    f"dataset.mnist1d_{split}_size must be at least 1, got {getattr(self, split)}"
                )

    @property
    def total(self) -> int:
        return self.train + self.validation + self.test

    def cache_name(self) -> str:
        return f"mnist1d_seed{self.seed}_{self.train}_{self.validation}_{self.test}.npz"


@contextlib.contextmanager
def _global_random_state_kept() -> Iterator[None]:
    """Run a block that reseeds numpy's and Python's global generators, then undo it."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def generate(sizes: Mnist1dSizes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (signals float32 [N, 40, 1], labels int32 [N])}``, a pure function of ``sizes``."""
    from mnist1d.data import get_dataset_args, get_templates, make_dataset

    args = get_dataset_args()
    # The generator makes ``num_samples // 10`` per class: round up, then keep the first.
    args.num_samples = -(-sizes.total // NUM_CLASSES) * NUM_CLASSES
    args.train_split = 1.0
    args.seed = sizes.seed
    with _global_random_state_kept():
        data = make_dataset(args, get_templates())
    signals = np.asarray(data["x"][: sizes.total], np.float32)[..., None]
    labels = np.asarray(data["y"][: sizes.total], np.int32)
    bounds = np.cumsum([0, sizes.train, sizes.validation, sizes.test])
    return {
        split: (signals[start:stop], labels[start:stop])
        for split, start, stop in zip(SPLITS, bounds[:-1], bounds[1:], strict=True)
    }


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, binary=True) as file:
        np.savez(file, **arrays)


def load_splits(sizes: Mnist1dSizes, data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The cached generation for ``sizes`` under ``data_dir/mnist1d/``, made on first use."""
    path = data_dir / "mnist1d" / sizes.cache_name()
    if path.exists():
        with np.load(path) as cached:
            return {split: (cached[f"x_{split}"], cached[f"y_{split}"]) for split in SPLITS}
    splits = generate(sizes)
    arrays = {
        f"{kind}_{split}": splits[split][i] for split in SPLITS for i, kind in enumerate("xy")
    }
    _write_atomically(path, arrays)
    return splits


def content_hash(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """sha256 over every split's signals and labels: equal hashes, equal data sets."""
    digest = hashlib.sha256()
    for split in SPLITS:
        for array in splits[split]:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Unaugmented:
    """The signals as generated, in training and evaluation alike."""

    def train(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        del rng
        return image

    def eval(self, image: np.ndarray) -> np.ndarray:
        return image


@register_source("mnist1d", config_defaults=CONFIG_DEFAULTS)
def load(options: SourceOptions) -> Source:
    if options.image_level_augmentations != "none":
        raise ValueError(
            "mnist1d has no image-level augmentations (its generator already shifts and "
            "shears); set --config.dataset.image_level_augmentations=none"
        )
    if options.image_size not in (0, SIGNAL_LENGTH):
        raise ValueError(
            f"mnist1d signals are {SIGNAL_LENGTH} long; set dataset.image_size to 0, "
            f"not {options.image_size}"
        )
    splits = load_splits(
        Mnist1dSizes(*(options.own_keys[key] for key in CONFIG_DEFAULTS)), options.data_dir
    )
    train_signals = splits["train"][0].astype(np.float64)
    return Source(
        name="mnist1d",
        train=ArraySplit(*splits["train"]),
        test=ArraySplit(*splits["test"]),
        validation=ArraySplit(*splits["validation"]),
        num_classes=NUM_CLASSES,
        image_shape=(SIGNAL_LENGTH, 1),
        mean=tuple(train_signals.mean(axis=(0, 1)).tolist()),
        std=tuple(train_signals.std(axis=(0, 1)).tolist()),
        augment=Unaugmented(),
        worth_workers=False,
        input_dtype=np.float32,
    )
