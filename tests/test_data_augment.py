"""Image- and batch-level augmentations against hand-computed results."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from gnp.data import augment, autoaugment, mixing, randaugment


def _image(size: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A gradient with noise: not constant, not full-range, with an uneven histogram."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 200, size)[None, :, None] + np.linspace(0, 30, size)[:, None, None]
    noise = rng.integers(-10, 10, size=(size, size, channels))
    return np.clip(ramp + noise, 0, 255).astype(np.uint8)


def test_pad_crop_flip_is_a_shifted_window_of_the_reflect_padded_image():
    image = _image()
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    windows = [padded[t : t + 32, s : s + 32] for t in range(9) for s in range(9)]
    candidates = windows + [w[:, ::-1] for w in windows]
    flips = 0
    for seed in range(40):
        out = augment.pad_crop_flip(image, 4, True, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.uint8
        match = [i for i, c in enumerate(candidates) if np.array_equal(out, c)]
        assert match
        flips += match[0] >= len(windows)
    assert 5 < flips < 35  # flips about half the time
    same = augment.pad_crop_flip(image, 4, True, np.random.default_rng(3))
    np.testing.assert_array_equal(
        same, augment.pad_crop_flip(image, 4, True, np.random.default_rng(3))
    )


def test_digit_shifts_never_flip():
    image = _image(8, 1)
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    windows = [padded[t : t + 8, s : s + 8] for t in range(3) for s in range(3)]
    for seed in range(20):
        out = augment.pad_crop_flip(image, 1, False, np.random.default_rng(seed))
        assert any(np.array_equal(out, w) for w in windows)


@pytest.mark.parametrize("level", augment.IMAGE_AUGMENTATIONS)
def test_array_augment_shapes_ranges_and_determinism(level):
    aug = augment.ArrayAugment(
        level, padding=4, flip=True, autoaugment=autoaugment.CIFAR_AUTOAUGMENT
    )
    image = _image()
    outs = [aug.train(image, np.random.default_rng(seed)) for seed in range(8)]
    for out in outs:
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    again = aug.train(image, np.random.default_rng(5))
    np.testing.assert_array_equal(outs[5], again)
    changed = sum(not np.array_equal(out, image) for out in outs)
    assert changed == 0 if level == "none" else changed > 0
    np.testing.assert_array_equal(aug.eval(image), image)


def test_random_resized_box_stays_inside_with_the_released_ranges():
    centre = augment.center_box(120, 80)
    for seed in range(200):
        box = augment.random_resized_box(120, 80, np.random.default_rng(seed))
        left, top, right, bottom = box
        assert 0 <= left < right <= 120 and 0 <= top < bottom <= 80
        width, height = right - left, bottom - top
        if box != centre:  # not the fallback
            # min_object_covered 0.1 of the whole image; aspect 3/4..4/3 up to rounding
            assert 0.1 <= width * height / (120 * 80) <= 1.0
            assert 3 / 4 - 0.05 <= width / height <= 4 / 3 + 0.05
            assert (width, height) != (120, 80)  # the whole image gives way to the centre crop


def test_random_resized_box_draws_the_height_uniformly_as_tensorflow():
    # TF's GenerateRandomCrop draws the height uniformly between those of the smallest and the
    # largest area at the drawn aspect a. On a square image with a < 1 the largest is the full
    # height, and with the 10 % coverage floor the accepted h/S is uniform on [sqrt(0.1/a), 1]:
    # mean (sqrt(0.1/a) + 1)/2, about 0.680 for a in [0.75, 0.8] (float64 average below).
    # An area-uniform sampler (torchvision's) gives about 0.84 there.
    side = 400
    heights = []
    for seed in range(4000):
        left, top, right, bottom = augment.random_resized_box(
            side, side, np.random.default_rng(seed)
        )
        if (right - left) / (bottom - top) < 0.8:
            heights.append((bottom - top) / side)
    aspects = np.linspace(0.75, 0.8, 1001)
    want = float(np.mean((np.sqrt(0.1 / aspects) + 1) / 2))
    assert len(heights) > 200
    assert abs(np.mean(heights) - want) < 0.03


def test_center_box_is_the_resize_then_center_crop_window():
    # Resize the shorter side (80) to 224 / 0.875 = 256, crop 224: keeps 0.875 of it, centred.
    left, top, right, bottom = augment.center_box(120, 80)
    assert math.isclose(right - left, 70) and math.isclose(bottom - top, 70)
    assert math.isclose(left, 25) and math.isclose(top, 5)


IMAGENET_LEVELS = ("none", "basic", "autoaugment")


@pytest.mark.parametrize("level", IMAGENET_LEVELS)
def test_imagenet_augment_outputs_the_image_size(level):
    aug = augment.ImageNetAugment(level, image_size=24)
    image = Image.fromarray(_image(64)).resize((90, 60))
    for seed in range(4):
        out = aug.train(image, np.random.default_rng(seed))
        assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(
        aug.train(image, np.random.default_rng(1)), aug.train(image, np.random.default_rng(1))
    )


def test_imagenet_none_is_the_released_crop_and_flip_and_autoaugment_adds_randaugment():
    # The released ImageNet pipeline reads only whether the level is 'autoaugment': 'none'
    # still crops at random and flips (it is not the evaluation crop).
    image = Image.fromarray(_image(64)).resize((90, 60))
    none, basic = augment.ImageNetAugment("none", 24), augment.ImageNetAugment("basic", 24)
    rand = augment.ImageNetAugment("autoaugment", 24)
    evaluation = none.eval(image)
    differs_from_eval = differs_from_basic = 0
    for seed in range(12):
        out = none.train(image, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, basic.train(image, np.random.default_rng(seed)))
        differs_from_eval += not np.array_equal(out, evaluation)
        augmented = rand.train(image, np.random.default_rng(seed))
        differs_from_basic += not np.array_equal(augmented, out)
    assert differs_from_eval == 12 and differs_from_basic >= 10


def test_imagenet_crop_falls_back_to_the_evaluation_centre_crop():
    # A 1000 x 10 strip admits no crop with aspect 3/4..4/3 and 8 % of the area: after 10 tries
    # the released pipeline takes the centre crop, 0.875 of the shorter side.
    box = augment.random_resized_box(1000, 10, np.random.default_rng(0))
    assert box == augment.center_box(1000, 10)
    assert math.isclose(box[2] - box[0], 8.75) and math.isclose(box[0], (1000 - 8.75) / 2)


def test_imagenet_resizing_is_bicubic():
    image = Image.fromarray(_image(64)).resize((90, 60))
    want = image.resize((24, 24), Image.Resampling.BICUBIC, box=augment.center_box(90, 60))
    got = augment.ImageNetAugment("none", 24).eval(image)
    np.testing.assert_array_equal(got, np.asarray(want))


def test_imagenet_eval_keeps_only_the_centre():
    # Red outside the centre crop window, blue inside: the evaluation crop is all blue.
    pixels = np.zeros((80, 120, 3), np.uint8)
    pixels[..., 0] = 255
    pixels[5:75, 25:95] = (0, 0, 255)
    out = augment.ImageNetAugment("basic", image_size=16).eval(Image.fromarray(pixels))
    assert (out[1:-1, 1:-1] == (0, 0, 255)).all()


def test_imagenet_eval_of_a_large_jpeg_uses_a_reduced_decode_yet_keeps_the_size(tmp_path):
    Image.fromarray(_image(64)).resize((1200, 900)).save(tmp_path / "big.jpg", quality=95)
    with Image.open(tmp_path / "big.jpg") as image:
        out = augment.ImageNetAugment("none", image_size=32).eval(image)
        assert image.size[0] < 1200  # the decoder shrank it
    reference = np.asarray(Image.open(tmp_path / "big.jpg").convert("RGB"))
    assert out.shape == (32, 32, 3)
    # Same content as a full decode: mean colours agree to a few levels.
    assert np.abs(out.mean(axis=(0, 1)) - reference[56:844, 206:994].mean(axis=(0, 1))).max() < 6


# --- AutoAugment ------------------------------------------------------------------------

POLICY_OPS = sorted(autoaugment.OPS)


def _ctx(seed: int = 0) -> autoaugment.OpContext:
    return autoaugment.OpContext(np.random.default_rng(seed), 10 / 32, 20 / 32)


def test_policies_are_the_published_ones():
    assert len(autoaugment.CIFAR_POLICY) == 95
    for sub in autoaugment.CIFAR_POLICY:
        assert len(sub) == 2 and all(name in autoaugment.OPS for name, _, _ in sub)
        assert all(0 <= p <= 1 and 0 <= level <= 10 for _, p, level in sub)


@pytest.mark.parametrize("name", POLICY_OPS)
def test_every_op_changes_the_image_where_it_should(name):
    for channels in (3, 1):
        pixels = _image(channels=channels)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
        out = autoaugment.OPS[name](image, 8, _ctx())
        assert out.size == image.size and out.mode == image.mode
        changed = not np.array_equal(np.asarray(out), np.asarray(image))
        # Colour saturation has nothing to act on in a greyscale image.
        assert changed == (name != "Color" or channels == 3), (name, channels)


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("Rotate", 0),
        ("ShearX", 0),
        ("ShearY", 0),
        ("TranslateX", 0),
        ("TranslateY", 0),
        ("Solarize", 0),
        ("SolarizeAdd", 0),
        ("Cutout", 0),
        ("Color", 5),
        ("Brightness", 5),
        ("Contrast", 5),
        ("Sharpness", 5),
    ],
)
def test_ops_at_their_neutral_level_leave_the_image_alone(name, level):
    image = Image.fromarray(_image())
    out = autoaugment.OPS[name](image, level, _ctx())
    np.testing.assert_array_equal(np.asarray(out), np.asarray(image))


def test_pixel_ops_match_hand_computed_values():
    pixels = _image()
    image = Image.fromarray(pixels)
    ops, ctx = autoaugment.OPS, _ctx()
    np.testing.assert_array_equal(np.asarray(ops["Invert"](image, 0, ctx)), 255 - pixels)
    # Posterize level 7: 4 - int(2.8) = 2 bits kept.
    np.testing.assert_array_equal(np.asarray(ops["Posterize"](image, 7, ctx)), pixels & 0b11000000)
    # Solarize level 5: invert pixels at or above 256 - 128 = 128.
    want = np.where(pixels >= 128, 255 - pixels, pixels)
    np.testing.assert_array_equal(np.asarray(ops["Solarize"](image, 5, ctx)), want)
    # SolarizeAdd level 5: add 55 below 128, clipped.
    want = np.where(pixels < 128, np.minimum(pixels.astype(int) + 55, 255), pixels)
    np.testing.assert_array_equal(np.asarray(ops["SolarizeAdd"](image, 5, ctx)), want)
    # TranslateX level 5 moves by 5 px (half of 10 px at 32 px), one way or the other.
    shifted = np.asarray(ops["TranslateX"](image, 5, ctx))
    left, right = pixels[:, 5:], pixels[:, :-5]
    assert np.array_equal(shifted[:, :-5], left) or np.array_equal(shifted[:, 5:], right)
    # Cutout level 5 greys a 10 px square (fewer pixels at a border).
    grey = (np.asarray(ops["Cutout"](image, 5, ctx)) == 128).all(axis=-1).sum()
    assert 25 <= grey <= 100


def test_every_sub_policy_applies():
    image = Image.fromarray(_image(32))
    for sub in autoaugment.CIFAR_POLICY:
        forced = tuple((name, 1.0, level) for name, _, level in sub)
        out = autoaugment.AutoAugment((forced,), 10 / 32, 20 / 32)(image, np.random.default_rng(0))
        assert out.size == image.size and out.mode == "RGB"


# --- RandAugment (the released ImageNet 'autoaugment') ---------------------------------


def test_randaugment_has_the_released_sixteen_ops():
    # ds_pipeline/autoaugment/autoaugment.py, distort_image_with_randaugment: available_ops.
    assert list(randaugment.RANDAUGMENT_OPS) == [
        "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
        "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
        "Cutout", "SolarizeAdd",
    ]  # fmt: skip


def test_randaugment_posterize_and_solarize_use_the_released_arguments():
    # Released level_to_arg at magnitude 9: Posterize int(9/10 * 4) = 3 bits kept;
    # Solarize threshold int(9/10 * 256) = 230, pixels >= 230 inverted (tf.where(image < t, ...)).
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    image, ops = Image.fromarray(pixels), randaugment.RANDAUGMENT_OPS
    ctx = randaugment.context(np.random.default_rng(0))
    np.testing.assert_array_equal(np.asarray(ops["Posterize"](image, 9, ctx)), pixels & 0b11100000)
    want = np.where(pixels >= 230, 255 - pixels, pixels)
    np.testing.assert_array_equal(np.asarray(ops["Solarize"](image, 9, ctx)), want)


def test_randaugment_sizes_are_the_released_pixels_at_224():
    # Released: translate level/10 * 100 px (90 at M 9); cutout 2 * int(9/10 * 40) = 72 px.
    pixels = _image(224)
    image, ops = Image.fromarray(pixels), randaugment.RANDAUGMENT_OPS
    ctx = randaugment.context(np.random.default_rng(1))
    shifted = np.asarray(ops["TranslateX"](image, 9, ctx))
    assert np.array_equal(shifted[:, :-90], pixels[:, 90:]) or np.array_equal(
        shifted[:, 90:], pixels[:, :-90]
    )
    sides = set()
    for seed in range(20):
        out = ops["Cutout"](image, 9, randaugment.context(np.random.default_rng(seed)))
        grey = (np.asarray(out) == 128).all(axis=-1)
        sides.add((int(grey.any(axis=1).sum()), int(grey.any(axis=0).sum())))
    assert (72, 72) in sides and all(h <= 72 and w <= 72 for h, w in sides)


def test_randaugment_applies_an_op_in_every_layer():
    # The released code draws a probability per op but never uses it: the chosen op always
    # applies. At magnitude 9 each op changes this image, so no draw leaves it unchanged.
    image = Image.fromarray(_image(48))
    unchanged = sum(
        np.array_equal(
            np.asarray(randaugment.RandAugment(1, 9)(image, np.random.default_rng(s))),
            np.asarray(image),
        )
        for s in range(40)
    )
    assert unchanged == 0
    same = randaugment.RandAugment(0, 9)(image, np.random.default_rng(0))
    np.testing.assert_array_equal(np.asarray(same), np.asarray(image))
    with pytest.raises(ValueError, match="randaug_magnitude"):
        randaugment.RandAugment(2, 11)


# --- batch level ------------------------------------------------------------------------


def test_mixup_is_a_convex_combination_with_soft_labels_summing_to_one():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 4, 4, 3)).astype(np.float32)
    labels = np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 4, 0]]
    weights = [mixing.mixup_weight(1.0, np.random.default_rng(s)) for s in range(50)]
    assert all(0.5 <= w <= 1.0 for w in weights) and len(set(weights)) > 40
    mixed, soft = mixing.mixup(images, labels, images[::-1], labels[::-1], 0.7)
    np.testing.assert_allclose(mixed, 0.7 * images + 0.3 * images[::-1], rtol=1e-6)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(soft[0], [0.7, 0, 0, 0, 0] + 0.3 * labels[5], rtol=1e-6)


def test_cutout_area():
    assert mixing.cutout_window((16, 16), 16, (32, 32)) == (slice(8, 24), slice(8, 24))
    assert mixing.cutout_window((0, 31), 16, (32, 32)) == (slice(0, 8), slice(23, 32))
    ones = np.ones((32, 32, 3), np.float32)
    areas = set()
    for seed in range(50):
        out = mixing.cutout(ones, 16, np.random.default_rng(seed))
        zeros = out[..., 0] == 0
        assert (out[zeros] == 0).all() and ((out == 0) == zeros[..., None]).all()
        rows, cols = np.flatnonzero(zeros.any(axis=1)), np.flatnonzero(zeros.any(axis=0))
        assert zeros.sum() == len(rows) * len(cols)  # one rectangle
        assert len(rows) <= 16 and len(cols) <= 16
        areas.add(int(zeros.sum()))
    assert 256 in areas and min(areas) >= 64  # whole square inside, or clipped at a border


def test_cutout_of_a_batch_cuts_the_same_window_from_every_image():
    # The released augmentation.cutout draws one centre per batch.
    batch = np.ones((5, 32, 32, 3), np.float32)
    out = mixing.cutout(batch, 16, np.random.default_rng(3))
    zeros = out[..., 0] == 0
    assert zeros[0].any() and all(np.array_equal(zeros[0], z) for z in zeros[1:])
