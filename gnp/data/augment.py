"""Image-level augmentations: ``none``, ``basic``, ``autoaugment`` (with basic), ``aa-only``.

On ImageNet they mean what the released ImageNet pipeline does (``ImageNetAugment``).

Each source picks one of the two families below. Both take one image and a
``numpy`` Generator that the loader derives from (seed, step, row), so the
same sample of the same step is augmented the same way in a resumed run, on
any number of processes or workers. Outputs are uint8 [H, W, C]; the loader
normalizes after augmenting.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

from gnp.choices import check_choice
from gnp.data.autoaugment import AutoAugment
from gnp.data.randaugment import RandAugment

IMAGE_AUGMENTATIONS = ("none", "basic", "autoaugment", "aa-only")


def check_image_level(level: str) -> str:
    return check_choice(level, IMAGE_AUGMENTATIONS, "dataset.image_level_augmentations")


def _uses_basic(level: str) -> bool:
    return level in ("basic", "autoaugment")


def _uses_autoaugment(level: str) -> bool:
    return level in ("autoaugment", "aa-only")


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    """Map indices up to ``size - 1`` outside an axis back inside, as numpy's ``reflect`` pad."""
    index = np.abs(index)
    return np.where(index >= size, 2 * (size - 1) - index, index)


def pad_crop_flip(
    image: np.ndarray, padding: int, flip: bool, rng: np.random.Generator
) -> np.ndarray:
    """A random same-size crop of the reflect-padded image (a shift of up to ``padding`` px).

    Reflect padding, as the released code uses, keeps the shifted-in border
    looking like image content rather than black bars. The crop is one gather
    of reflected indices, several times faster than padding then slicing.
    """
    height, width = image.shape[:2]
    top, left = rng.integers(-padding, padding + 1, size=2)
    rows = _reflect(np.arange(height) + top, height)
    cols = _reflect(np.arange(width) + left, width)
    if flip and rng.random() < 0.5:
        cols = cols[::-1]
    return image[np.ix_(rows, cols)]


def _to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _from_pil(image: Image.Image, channels: int) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if channels == 1 else pixels


@dataclasses.dataclass(frozen=True)
class ArrayAugment:
    """Fixed-size in-memory images (CIFAR, digits): AutoAugment, then a padded crop and flip."""

    level: str
    padding: int
    flip: bool
    autoaugment: AutoAugment

    def train(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if _uses_autoaugment(self.level):
            image = _from_pil(self.autoaugment(_to_pil(image), rng), image.shape[-1])
        if _uses_basic(self.level):
            image = pad_crop_flip(image, self.padding, self.flip, rng)
        return image

    def eval(self, image: np.ndarray) -> np.ndarray:
        return image


def _draft(image: Image.Image, box: tuple[float, float, float, float], size: int) -> tuple:
    """Let the JPEG decoder shrink by 1/2, 1/4 or 1/8 while the crop stays at least ``size`` px.

    Decoding at reduced scale is the largest single saving for ImageNet-sized
    JPEGs; ``box`` (in original pixels) is mapped onto the reduced image.
    """
    left, top, right, bottom = box
    width, height = image.size
    scale_x, scale_y = size / (right - left), size / (bottom - top)
    image.draft("RGB", (math.ceil(width * scale_x), math.ceil(height * scale_y)))
    ratio_x, ratio_y = image.size[0] / width, image.size[1] / height
    return (left * ratio_x, top * ratio_y, right * ratio_x, bottom * ratio_y)


def _resize_box(image: Image.Image, box: tuple, size: int) -> np.ndarray:
    box = _draft(image, box, size)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.asarray(rgb.resize((size, size), Image.Resampling.BICUBIC, box=box))


def center_box(width: int, height: int, fraction: float = 0.875) -> tuple[float, ...]:
    """The centred square that resizing the shorter side to ``size / fraction`` then cropping
    ``size`` keeps, in original pixels (the standard ImageNet evaluation crop)."""
    side = min(width, height) * fraction
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def _tf_crop(
    width: int, height: int, aspect: float, rng: np.random.Generator
) -> tuple[int, int, int, int] | None:
    """One try of TensorFlow's ``sample_distorted_bounding_box`` crop (``GenerateRandomCrop``)
    with the released area range 8-100 %: the height is uniform between those of the smallest
    and the largest area at this aspect (width / height), the offsets uniform; None where the
    rounded crop misses the range. Python's ``round`` halves to even, as C's ``lrintf``."""
    min_area, max_area = 0.08 * width * height, 1.0 * width * height
    low, high = round(math.sqrt(min_area / aspect)), round(math.sqrt(max_area / aspect))
    if round(high * aspect) > width:
        high = int((width + 0.5 - 1e-7) / aspect)
        if round(high * aspect) > width:
            high -= 1
    high = min(high, height)
    low = min(low, high)
    h = low + int(rng.integers(high - low + 1))
    w = round(h * aspect)
    if w * h < min_area:
        h += 1
        w = round(h * aspect)
    if w * h > max_area:
        h -= 1
        w = round(h * aspect)
    if not (min_area <= w * h <= max_area and 0 < w <= width and 0 < h <= height):
        return None
    top = int(rng.integers(height - h)) if h < height else 0
    left = int(rng.integers(width - w)) if w < width else 0
    return (left, top, left + w, top + h)


def random_resized_box(
    width: int, height: int, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """The released training crop: up to 10 tries of TensorFlow's sampler at an aspect uniform
    in 3/4..4/3, keeping the first crop that covers at least 10 % of the image
    (``min_object_covered``); where none does, or the crop is the whole image, the evaluation
    centre crop (the released ``_decode_and_random_crop``)."""
    for _ in range(10):
        box = _tf_crop(width, height, rng.uniform(3 / 4, 4 / 3), rng)
        if box is None:
            continue
        left, top, right, bottom = box
        if (right - left) * (bottom - top) < 0.1 * width * height:
            continue
        if (right - left, bottom - top) == (width, height):
            break
        return box
    return center_box(width, height)


@dataclasses.dataclass(frozen=True)
class ImageNetAugment:
    """The released ImageNet preprocessing: a random-resized crop, bicubic to ``image_size``,
    then (``autoaugment``) RandAugment, then a horizontal flip; evaluation is the centre crop.

    As in the release, ``none`` and ``basic`` are the same (crop and flip; the
    release reads only whether the level is ``autoaugment``); ``aa-only`` has
    no ImageNet meaning there and is refused by the source.
    """

    level: str
    image_size: int
    randaugment: RandAugment = dataclasses.field(default_factory=RandAugment)

    def train(self, image: Image.Image, rng: np.random.Generator) -> np.ndarray:
        pixels = _resize_box(image, random_resized_box(*image.size, rng), self.image_size)
        if self.level == "autoaugment":
            pixels = np.asarray(self.randaugment(Image.fromarray(pixels), rng))
        if rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        return np.ascontiguousarray(pixels)

    def eval(self, image: Image.Image) -> np.ndarray:
        return _resize_box(image, center_box(*image.size), self.image_size)
