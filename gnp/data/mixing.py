"""Batch-level augmentations as in the released code: cutout, mixup, mixcut (mixup, then cutout).

They act on normalized float images, so cutout's zeros are the data set's mean
colour, and on soft labels, so mixup's label mixing reaches the loss. Cutout
has two modes: ``batch``, the released code's (``augmentation.cutout`` draws
one window and cuts it from every image of the batch), and ``image``, one
window per image as in the Cutout paper. Mixup
pairs row ``j`` of the global batch with row ``B - 1 - j`` (the batch mixed
with itself reversed) and draws one weight per batch, ``max(w, 1 - w)`` with
``w ~ Beta(alpha, alpha)``, so the unreversed image always dominates.
"""

from __future__ import annotations

import numpy as np

from gnp.choices import check_choice

BATCH_AUGMENTATIONS = ("none", "cutout", "mixup", "mixcut")
CUTOUT_MODES = ("batch", "image")


def check_batch_level(name: str) -> str:
    return check_choice(name, BATCH_AUGMENTATIONS, "dataset.batch_level_augmentations")


def check_cutout_mode(name: str) -> str:
    return check_choice(name, CUTOUT_MODES, "dataset.cutout_mode")


def uses_mixup(name: str) -> bool:
    return name in ("mixup", "mixcut")


def uses_cutout(name: str) -> bool:
    return name in ("cutout", "mixcut")


def cutout_window(
    center: tuple[int, int], size: int, shape: tuple[int, int]
) -> tuple[slice, slice]:
    """Rows and columns of a ``size`` square centred at ``center``, clipped at the image border.

    The centre is uniform over the whole image (as in the Cutout paper and the
    released code), so near a border less than ``size**2`` pixels are cut.
    """
    (cy, cx), (height, width) = center, shape
    top, left = cy - size // 2, cx - size // 2
    return (
        slice(max(0, top), min(height, top + size)),
        slice(max(0, left), min(width, left + size)),
    )


def cutout(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``images`` [..., H, W, C] with one random ``size`` square set to 0 (the mean after
    normalizing): the same square in every image of a batch, or in the one image given."""
    height, width = images.shape[-3:-1]
    center = (rng.integers(height), rng.integers(width))
    rows, cols = cutout_window(center, size, (height, width))
    images = images.copy()
    images[..., rows, cols, :] = 0.0
    return images


def mixup_weight(alpha: float, rng: np.random.Generator) -> float:
    weight = rng.beta(alpha, alpha)
    return float(max(weight, 1.0 - weight))


def mixup(
    images: np.ndarray,
    labels: np.ndarray,
    partner_images: np.ndarray,
    partner_labels: np.ndarray,
    weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Convex combination of each row with its partner row; soft labels still sum to 1."""
    mixed_images = weight * images + (1.0 - weight) * partner_images
    mixed_labels = weight * labels + (1.0 - weight) * partner_labels
    return mixed_images.astype(np.float32), mixed_labels.astype(np.float32)
