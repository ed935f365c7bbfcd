"""Symmetric label noise: a fixed fraction of the training labels flipped to another class.

Robustness studies (the ICML 2022 paper's noisy-label runs, ``docs/reproduction.md``) train on
corrupted labels and test on clean ones. The flipped set is drawn once from the run's seed,
never from the batch order, so every epoch, worker, process and resumed run sees the same
noisy labels; the test split is never touched. A held-out validation split may be flipped at
the same rate (``dataset.flip_validation_labels``): a user without clean labels tunes on
noisy ones too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from gnp.data.source import Source, Split


def check_fraction(fraction: float) -> float:
    """``dataset.label_noise`` as a float in [0, 1); 1 would leave no label to learn from."""
    fraction = float(fraction)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"dataset.label_noise must lie in [0, 1), got {fraction}")
    return fraction


def flip_labels(
    labels: np.ndarray, fraction: float, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """A copy with ``round(fraction · N)`` labels, chosen without replacement, moved to a
    different class drawn uniformly from the other ``num_classes − 1``."""
    fraction = check_fraction(fraction)
    if num_classes < 2 and fraction > 0:
        raise ValueError("label noise needs at least two classes")
    noisy = np.array(labels, copy=True)
    count = round(fraction * len(noisy))
    flipped = rng.choice(len(noisy), size=count, replace=False)
    # A shift in 1..C-1 modulo C never lands on the original class.
    shift = rng.integers(1, num_classes, size=count)
    noisy[flipped] = (noisy[flipped] + shift) % num_classes
    return noisy


@dataclasses.dataclass(frozen=True)
class RelabeledSplit:
    """A split's images with other labels (the loader reads labels from ``split.labels``)."""

    split: Split
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.split)

    def load(self, index: int, transform: Callable[[Any], np.ndarray]) -> np.ndarray | None:
        return self.split.load(index, transform)


def with_label_noise(source: Source, fraction: float, rng: np.random.Generator) -> Source:
    """``source`` with ``fraction`` of its training labels flipped; the test split as it was.
    (``flip_labels`` checks the fraction.)"""
    if fraction == 0.0:
        return source
    labels = flip_labels(source.train.labels, fraction, source.num_classes, rng)
    return dataclasses.replace(source, train=RelabeledSplit(source.train, labels))


def with_noisy_evaluation(source: Source, fraction: float, rng: np.random.Generator) -> Source:
    """``source`` evaluated against labels flipped at ``fraction`` (its ``test`` must be the
    held-out validation split: test labels are never flipped; the pipeline checks that)."""
    if fraction == 0.0:
        return source
    labels = flip_labels(source.test.labels, fraction, source.num_classes, rng)
    return dataclasses.replace(source, test=RelabeledSplit(source.test, labels))
