"""``use_test_set = False``: evaluate on a validation split, never on the test set.

A source with a validation split of its own (MNIST-1D) is evaluated on it. Otherwise a
part of the training set is held out from training, as released: the released code
(``ds_pipeline/datasets/dataset_source.py``) trains CIFAR on
``train[:45000]`` and evaluates on ``train[45000:]``: the last tenth of the
training set. Here the same: the last ``len(train) // 10`` training images, in
the order the source stores them (CIFAR: the archive's order, so the held-out
5,000 are ``data_batch_5``; TFDS, which the release read, stores CIFAR in an
order of its own, so the size is the released one but not necessarily the
images). The test split is then not used at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from gnp.data.source import Source, Split

HELD_OUT_FRACTION = 10  # one tenth, as the released 45,000 / 5,000 of CIFAR's 50,000


@dataclasses.dataclass(frozen=True)
class SubsetSplit:
    """Images ``indices`` of a split, renumbered from 0 (``labels`` are theirs, gathered once)."""

    split: Split
    indices: np.ndarray
    labels: np.ndarray

    @classmethod
    def of(cls, split: Split, indices: np.ndarray) -> SubsetSplit:
        return cls(split, indices, split.labels[indices])

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int, transform: Callable[[Any], np.ndarray]) -> np.ndarray | None:
        return self.split.load(int(self.indices[index]), transform)


def check_dataset(name: str) -> None:
    """Only in-memory sources hold a training set to split; checked before anything is read."""
    if name == "imagenet":
        raise ValueError(
            "use_test_set=False holds out part of an in-memory training set, not of imagenet "
            "(the released code ignores it there and evaluates on imagenet_val_dir); set "
            "use_test_set=True"
        )


def with_validation_split(source: Source) -> Source:
    """``source`` evaluated on its own validation split where it has one (MNIST-1D), else
    trained on the first nine tenths of its training set and evaluated on the rest."""
    check_dataset(source.name)
    if source.validation is not None:
        return dataclasses.replace(source, test=source.validation)
    count = len(source.train)
    held_out = count // HELD_OUT_FRACTION
    if held_out == 0:
        raise ValueError(
            f"use_test_set=False needs at least {HELD_OUT_FRACTION} training images to hold "
            f"one tenth out; {source.name} has {count}"
        )
    return dataclasses.replace(
        source,
        train=SubsetSplit.of(source.train, np.arange(count - held_out)),
        test=SubsetSplit.of(source.train, np.arange(count - held_out, count)),
    )
