"""The 1-D models for MNIST-1D: shapes, parameter counts by hand, BatchNorm, dropout draws."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnp import models

NAMES = ["CNN1D_32", "CNN1D_64", "ViT1D_32", "ViT1D_64"]


def param_count(name: str, **kwargs) -> int:
    module = models.get_model(name, num_classes=10, **kwargs)
    signals = jnp.zeros((1, 40, 1), jnp.float32)
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), signals, train=False))
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def cnn1d_count(width: int) -> int:
    # Conv kernels (no bias) and BatchNorm scale+bias: 5·1·w, 3·w·2w, 3·2w·2w; Dense 2w·10 + 10.
    convs = 5 * 1 * width + 3 * width * 2 * width + 3 * 2 * width * 2 * width
    norms = 2 * (width + 2 * width + 2 * width)
    return convs + norms + 2 * width * 10 + 10


def vit1d_count(width: int) -> int:
    patch = 4 * 1 * width + width  # 4-sample patches of one channel, with bias
    tokens = (40 // 4 + 1) * width + width  # position embedding of 11 tokens, class token
    attention = 4 * (width * width + width)  # query, key, value, output (all with bias)
    mlp = width * 4 * width + 4 * width + 4 * width * width + width
    block = 2 * 2 * width + attention + mlp  # two LayerNorms
    return patch + tokens + 4 * block + 2 * width + width * 10 + 10


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CNN1D_32", cnn1d_count(32)),
        ("CNN1D_64", cnn1d_count(64)),
        ("ViT1D_32", vit1d_count(32)),
        ("ViT1D_64", vit1d_count(64)),
        ("ViT1D_128", vit1d_count(128)),
    ],
)
def test_parameter_count_by_hand(name, expected):
    assert param_count(name) == expected
    if name == "CNN1D_32":
        assert 10_000 <= expected <= 30_000  # the size the study asks for: 19,562


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_logits_shape_and_dtype(name):
    module = models.get_model(name, num_classes=10)
    signals = jax.random.normal(jax.random.key(1), (3, 40, 1))
    variables = module.init(jax.random.key(0), signals, train=False)
    logits = module.apply(variables, signals, train=False)
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_an_image_is_read_row_by_row_as_a_signal():
    module = models.get_model("CNN1D_32", num_classes=10)
    images = jax.random.normal(jax.random.key(2), (2, 5, 8, 3))
    variables = module.init(jax.random.key(0), images, train=False)
    np.testing.assert_array_equal(
        module.apply(variables, images, train=False),
        module.apply(variables, images.reshape(2, 40, 3), train=False),
    )


def test_batchnorm_running_statistics_by_hand():
    module = models.get_model("CNN1D_32", num_classes=10)
    signals = np.random.default_rng(0).normal(size=(4, 40, 1)).astype(np.float32)
    variables = module.init(jax.random.key(0), signals, train=False)
    _, updated = module.apply(variables, signals, train=True, mutable=["batch_stats"])
    # The first conv by hand in float64: kernel 5, stride 1, "SAME" zero padding of 2 each side.
    kernel = np.asarray(variables["params"]["Conv_0"]["kernel"], np.float64)  # [5, 1, 32]
    padded = np.pad(signals.astype(np.float64), ((0, 0), (2, 2), (0, 0)))
    windows = np.stack([padded[:, i : i + 40] for i in range(5)], axis=2)  # [4, 40, 5, 1]
    conv = np.einsum("blkc,kcf->blf", windows, kernel)
    stats = updated["batch_stats"]["BatchNorm_0"]
    # momentum 0.9 from the initial mean 0 and variance 1; the batch variance is the biased one.
    np.testing.assert_allclose(stats["mean"], 0.1 * conv.mean(axis=(0, 1)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        stats["var"], 0.9 + 0.1 * conv.var(axis=(0, 1)), rtol=1e-4, atol=1e-6
    )


def test_batchnorm_eval_is_per_example_and_train_is_per_batch():
    module = models.get_model("CNN1D_32", num_classes=10)
    signals = jax.random.normal(jax.random.key(3), (6, 40, 1))
    variables = module.init(jax.random.key(0), signals, train=False)
    alone = module.apply(variables, signals[:1], train=False)
    np.testing.assert_allclose(
        module.apply(variables, signals, train=False)[:1], alone, rtol=1e-5, atol=1e-6
    )
    in_batch = module.apply(variables, signals, train=True, mutable=["batch_stats"])[0][:1]
    in_half = module.apply(variables, signals[:3], train=True, mutable=["batch_stats"])[0][:1]
    assert not np.allclose(in_batch, in_half, atol=1e-4)


@pytest.mark.slow
def test_vit1d_dropout_draws_follow_the_rng():
    module = models.get_model("ViT1D_32", num_classes=10, dropout_rate=0.3)
    signals = jax.random.normal(jax.random.key(4), (2, 40, 1))
    variables = module.init(jax.random.key(0), signals, train=False)
    # The head starts at zero (as the released ViT's): give it weights, so the logits show
    # what dropout did to the features.
    head = variables["params"]["head"]
    head["kernel"] = jax.random.normal(jax.random.key(5), head["kernel"].shape)

    def train(seed: int) -> jax.Array:
        return module.apply(variables, signals, train=True, rngs={"dropout": jax.random.key(seed)})

    np.testing.assert_array_equal(train(7), train(7))
    assert not np.allclose(train(7), train(8))
    # Without dropout, training and evaluation compute the same function (LayerNorm only).
    plain = models.get_model("ViT1D_32", num_classes=10)
    np.testing.assert_allclose(
        plain.apply(variables, signals, train=True, rngs={"dropout": jax.random.key(7)}),
        plain.apply(variables, signals, train=False),
        rtol=1e-6,
    )
