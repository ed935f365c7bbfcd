"""AutoAugment (Cubuk et al. 2019, arXiv 1805.09501) with Pillow ops.

A policy is a list of sub-policies; each image gets one sub-policy drawn at
random, whose two ops each apply with their own probability. The policy is the
one the released GNP/SAM code trains CIFAR with: the full CIFAR policy of the
original AutoAugment code (its ``good_policies``). (On ImageNet the released
``autoaugment`` is RandAugment: ``gnp.data.randaugment``, which reuses these ops.)

Magnitudes follow the original AutoAugment code: a level in 0..10 picks
``level / 10`` of each op's range. Translation and the op-level Cutout scale
with the image width (10 px and 20 px at 32 px, as in the original code), not
the TPU port's fixed 250/100 px that the release runs, which blank out a 32 px
image entirely.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from gnp.data.mixing import cutout_window

SubPolicy = tuple[tuple[str, float, int], ...]

CIFAR_POLICY: tuple[SubPolicy, ...] = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.0, 2)),
    (("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 0), ("Solarize", 0.4, 3)),
    (("Equalize", 0.7, 5), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 1)),
    (("TranslateY", 0.8, 9), ("TranslateY", 0.9, 9)),
    (("AutoContrast", 0.8, 0), ("TranslateY", 0.7, 9)),
    (("TranslateY", 0.2, 7), ("Color", 0.9, 6)),
    (("Equalize", 0.7, 6), ("Color", 0.4, 9)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Brightness", 0.3, 7), ("AutoContrast", 0.5, 8)),
    (("AutoContrast", 0.9, 4), ("AutoContrast", 0.5, 6)),
    (("Solarize", 0.3, 5), ("Equalize", 0.6, 5)),
    (("TranslateY", 0.2, 4), ("Sharpness", 0.3, 3)),
    (("Brightness", 0.0, 8), ("Color", 0.8, 8)),
    (("Solarize", 0.2, 6), ("Color", 0.8, 6)),
    (("Solarize", 0.2, 6), ("AutoContrast", 0.8, 1)),
    (("Solarize", 0.4, 1), ("Equalize", 0.6, 5)),
    (("Brightness", 0.0, 0), ("Solarize", 0.5, 2)),
    (("AutoContrast", 0.9, 5), ("Brightness", 0.5, 3)),
    (("Contrast", 0.7, 5), ("Brightness", 0.0, 2)),
    (("Solarize", 0.2, 8), ("Solarize", 0.1, 5)),
    (("Contrast", 0.5, 1), ("TranslateY", 0.2, 9)),
    (("AutoContrast", 0.6, 5), ("TranslateY", 0.0, 9)),
    (("AutoContrast", 0.9, 4), ("Equalize", 0.8, 4)),
    (("Brightness", 0.0, 7), ("Equalize", 0.4, 7)),
    (("Solarize", 0.2, 5), ("Equalize", 0.7, 5)),
    (("Equalize", 0.6, 8), ("Color", 0.6, 2)),
    (("Color", 0.3, 7), ("Color", 0.2, 4)),
    (("AutoContrast", 0.5, 2), ("Solarize", 0.7, 2)),
    (("AutoContrast", 0.2, 0), ("Equalize", 0.1, 0)),
    (("ShearY", 0.6, 5), ("Equalize", 0.6, 5)),
    (("Brightness", 0.9, 3), ("AutoContrast", 0.4, 1)),
    (("Equalize", 0.8, 8), ("Equalize", 0.7, 7)),
    (("Equalize", 0.7, 7), ("Solarize", 0.5, 0)),
    (("Equalize", 0.8, 4), ("TranslateY", 0.8, 9)),
    (("TranslateY", 0.8, 9), ("TranslateY", 0.6, 9)),
    (("TranslateY", 0.9, 0), ("TranslateY", 0.5, 9)),
    (("AutoContrast", 0.5, 3), ("Solarize", 0.3, 4)),
    (("Solarize", 0.5, 3), ("Equalize", 0.4, 4)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("AutoContrast", 0.1, 5), ("Brightness", 0.0, 0)),
    (("Cutout", 0.2, 4), ("Equalize", 0.1, 1)),
    (("Equalize", 0.7, 7), ("AutoContrast", 0.6, 4)),
    (("Color", 0.1, 8), ("ShearY", 0.2, 3)),
    (("ShearY", 0.4, 2), ("Rotate", 0.7, 0)),
    (("ShearY", 0.1, 3), ("AutoContrast", 0.9, 5)),
    (("TranslateY", 0.3, 6), ("Cutout", 0.3, 3)),
    (("Equalize", 0.5, 0), ("Solarize", 0.6, 6)),
    (("AutoContrast", 0.3, 5), ("Rotate", 0.2, 7)),
    (("Equalize", 0.8, 2), ("Invert", 0.4, 0)),
    (("Equalize", 0.9, 5), ("Color", 0.7, 0)),
    (("Equalize", 0.1, 1), ("ShearY", 0.1, 3)),
    (("AutoContrast", 0.7, 3), ("Equalize", 0.7, 0)),
    (("Brightness", 0.5, 1), ("Contrast", 0.1, 7)),
    (("Contrast", 0.1, 4), ("Solarize", 0.6, 5)),
    (("Solarize", 0.2, 3), ("ShearX", 0.0, 0)),
    (("TranslateX", 0.3, 0), ("TranslateX", 0.6, 0)),
    (("Equalize", 0.5, 9), ("TranslateY", 0.6, 7)),
    (("ShearX", 0.1, 0), ("Sharpness", 0.5, 1)),
    (("Equalize", 0.8, 6), ("Invert", 0.3, 6)),
    (("AutoContrast", 0.3, 9), ("Cutout", 0.5, 3)),
    (("ShearX", 0.4, 4), ("AutoContrast", 0.9, 2)),
    (("ShearX", 0.0, 3), ("Posterize", 0.0, 3)),
    (("Solarize", 0.4, 3), ("Color", 0.2, 4)),
    (("Equalize", 0.1, 4), ("Equalize", 0.7, 6)),
    (("Equalize", 0.3, 8), ("AutoContrast", 0.4, 3)),
    (("Solarize", 0.6, 4), ("AutoContrast", 0.7, 6)),
    (("AutoContrast", 0.2, 9), ("Brightness", 0.4, 8)),
    (("Equalize", 0.1, 0), ("Equalize", 0.0, 6)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 4)),
    (("Equalize", 0.5, 5), ("AutoContrast", 0.1, 2)),
    (("Solarize", 0.5, 5), ("AutoContrast", 0.9, 5)),
    (("AutoContrast", 0.6, 1), ("AutoContrast", 0.7, 8)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.1, 2)),
    (("Equalize", 0.6, 9), ("Equalize", 0.4, 4)),
)

_MAX_LEVEL = 10.0
_FILL = 128  # grey, so that geometric ops do not add pure black borders


@dataclasses.dataclass(frozen=True)
class OpContext:
    """What an op needs beyond the image and the level: the random sign and size scales."""

    rng: np.random.Generator
    translate_fraction: float
    cutout_fraction: float

    def signed(self, magnitude: float) -> float:
        return magnitude if self.rng.random() < 0.5 else -magnitude


def _fill(image: Image.Image) -> tuple[int, ...]:
    return (_FILL,) * len(image.getbands())


def _affine(image: Image.Image, coefficients: tuple[float, ...]) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, coefficients, fillcolor=_fill(image))


def level_fraction(level: float) -> float:
    return level / _MAX_LEVEL


def _enhance(enhancer: type) -> Callable[[Image.Image, float, OpContext], Image.Image]:
    # Factor 1.0 (level 5) is the identity; 0.1..1.9 spans the paper's range.
    return lambda image, level, ctx: enhancer(image).enhance(0.1 + 1.8 * level_fraction(level))


def _shear_x(image: Image.Image, level: float, ctx: OpContext) -> Image.Image:
    return _affine(image, (1, ctx.signed(0.3 * level_fraction(level)), 0, 0, 1, 0))


def _shear_y(image: Image.Image, level: float, ctx: OpContext) -> Image.Image:
    return _affine(image, (1, 0, 0, ctx.signed(0.3 * level_fraction(level)), 1, 0))


def _translate_x(image: Image.Image, level: float, ctx: OpContext) -> Image.Image:
    pixels = ctx.signed(ctx.translate_fraction * image.width * level_fraction(level))
    return _affine(image, (1, 0, round(pixels), 0, 1, 0))


def _translate_y(image: Image.Image, level: float, ctx: OpContext) -> Image.Image:
    pixels = ctx.signed(ctx.translate_fraction * image.height * level_fraction(level))
    return _affine(image, (1, 0, 0, 0, 1, round(pixels)))


def _rotate(image: Image.Image, level: float, ctx: OpContext) -> Image.Image:
    return image.rotate(ctx.signed(30.0 * level_fraction(level)), fillcolor=_fill(image))


def _posterize(image: Image.Image, level: float, ctx: OpContext) -> Image.Image:
    return ImageOps.posterize(image, 4 - int(4 * level_fraction(level)))


def _solarize(image: Image.Image, level: float, ctx: OpContext) -> Image.Image:
    return ImageOps.solarize(image, 256 - int(256 * level_fraction(level)))


def _solarize_add(image: Image.Image, level: float, ctx: OpContext) -> Image.Image:
    pixels = np.asarray(image).astype(np.int16)
    added = np.clip(pixels + int(110 * level_fraction(level)), 0, 255)
    return Image.fromarray(np.where(pixels < 128, added, pixels).astype(np.uint8))


def _cutout(image: Image.Image, level: float, ctx: OpContext) -> Image.Image:
    size = round(ctx.cutout_fraction * image.width * level_fraction(level))
    pixels = np.array(image)
    center = (ctx.rng.integers(image.height), ctx.rng.integers(image.width))
    rows, cols = cutout_window(center, size, pixels.shape[:2])
    pixels[rows, cols] = _FILL
    return Image.fromarray(pixels)


OPS: dict[str, Callable[[Image.Image, float, OpContext], Image.Image]] = {
    "AutoContrast": lambda image, level, ctx: ImageOps.autocontrast(image),
    "Equalize": lambda image, level, ctx: ImageOps.equalize(image),
    "Invert": lambda image, level, ctx: ImageOps.invert(image),
    "Rotate": _rotate,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "SolarizeAdd": _solarize_add,
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
    "Cutout": _cutout,
}


@dataclasses.dataclass(frozen=True)
class AutoAugment:
    """One policy with the size scales that suit its images; call it with an image and an rng."""

    policy: tuple[SubPolicy, ...]
    translate_fraction: float
    cutout_fraction: float

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        ctx = OpContext(rng, self.translate_fraction, self.cutout_fraction)
        for name, probability, level in self.policy[rng.integers(len(self.policy))]:
            if rng.random() < probability:
                image = OPS[name](image, level, ctx)
        return image


CIFAR_AUTOAUGMENT = AutoAugment(CIFAR_POLICY, translate_fraction=10 / 32, cutout_fraction=20 / 32)
