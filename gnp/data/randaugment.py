"""RandAugment (Cubuk et al. 2020, arXiv 1909.13719) as the released ImageNet pipeline runs it.

The released ``image_level_augmentations = autoaugment`` on ImageNet is not the
AutoAugment policy but ``distort_image_with_randaugment(image, N, M)`` of the
TPU code it copies (``--randaug_num_layers`` N = 2, ``--randaug_magnitude``
M = 9). Each of the N layers applies one of the 16 ops below, drawn uniformly,
always (the released code draws a probability per op but never uses it), at
level M of 10.

The ops are those of ``gnp.data.autoaugment`` with the released RandAugment's
arguments: Posterize keeps ``int(4·M/10)`` bits and Solarize inverts the pixels
at or above ``int(256·M/10)`` (the TPU code's direction, the reverse of the
original AutoAugment's that ``autoaugment.py`` follows); translation reaches
100 px and the cutout square is ``2·int(40·M/10)`` px at 224 px, scaled with
the image size; grey (128) fill.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

from gnp.data.autoaugment import OPS, OpContext, level_fraction

_REFERENCE_SIZE = 224  # the released translate (100 px) and cutout (40 px) are for this size
MAX_MAGNITUDE = 10


def context(rng: np.random.Generator) -> OpContext:
    """The released sizes: translate up to 100 px, cutout ``2·40·M/10`` px, at 224 px."""
    return OpContext(rng, 100 / _REFERENCE_SIZE, 80 / _REFERENCE_SIZE)


def _posterize(image: Image.Image, level: float, ctx: OpContext) -> Image.Image:
    return ImageOps.posterize(image, int(4 * level_fraction(level)))


def _solarize(image: Image.Image, level: float, ctx: OpContext) -> Image.Image:
    return ImageOps.solarize(image, int(256 * level_fraction(level)))


# The released list, in its order; the ops of AutoAugment with the released RandAugment's
# Posterize and Solarize.
RANDAUGMENT_OPS: dict[str, Callable[[Image.Image, float, OpContext], Image.Image]] = {
    name: {"Posterize": _posterize, "Solarize": _solarize}.get(name, OPS[name])
    for name in (
        "AutoContrast",
        "Equalize",
        "Invert",
        "Rotate",
        "Posterize",
        "Solarize",
        "Color",
        "Contrast",
        "Brightness",
        "Sharpness",
        "ShearX",
        "ShearY",
        "TranslateX",
        "TranslateY",
        "Cutout",
        "SolarizeAdd",
    )
}
_NAMES = tuple(RANDAUGMENT_OPS)


@dataclasses.dataclass(frozen=True)
class RandAugment:
    """``num_layers`` uniformly drawn ops at ``magnitude``; call it with an image and an rng."""

    num_layers: int = 2
    magnitude: int = 9

    def __post_init__(self) -> None:
        if self.num_layers < 0 or not 0 <= self.magnitude <= MAX_MAGNITUDE:
            raise ValueError(
                f"RandAugment needs randaug_num_layers >= 0 and 0 <= randaug_magnitude <= "
                f"{MAX_MAGNITUDE} (beyond 10 the ops leave their ranges), got "
                f"{self.num_layers} and {self.magnitude}"
            )

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        ctx = context(rng)
        for _ in range(self.num_layers):
            name = _NAMES[rng.integers(len(_NAMES))]
            image = RANDAUGMENT_OPS[name](image, float(self.magnitude), ctx)
        return image
