"""Details of the released networks that a parameter count does not see: initializers,
parameter-free shortcuts, where a ReLU is (not) applied. Each is checked against numbers
computed here by hand, on tiny variants."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gnp import models
from gnp.models.layers import classifier_init, padded_shortcut


def _leaves_named(tree, name: str) -> list[jnp.ndarray]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [leaf for path, leaf in flat if getattr(path[-1], "key", None) == name]


def test_padded_shortcut_by_hand():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    y = padded_shortcut(x, features=3, strides=2)
    # Means of the 2×2 blocks of [[0..3], [4..7], ...]: (0+1+4+5)/4 = 2.5, and so on.
    np.testing.assert_allclose(y[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(y[..., 1:], 0.0)
    np.testing.assert_array_equal(padded_shortcut(x, features=1, strides=1), x)


def test_classifier_init_scales_by_the_number_of_outputs():
    kernel = classifier_init(jax.random.key(0), (512, 16))
    bound = 1 / np.sqrt(16)  # outputs, not the 512 inputs
    assert np.abs(kernel).max() <= bound
    # Uniform on [−b, b]: variance b²/3.
    np.testing.assert_allclose(np.var(kernel), bound**2 / 3, rtol=0.05)


def test_cnn_heads_start_uniform_over_plus_minus_one_over_root_classes():
    for name, kwargs in [
        ("ResNet18", dict(stage_sizes=(1,), width=8)),
        ("WideResNet_16_4", dict(depth=10, widen_factor=1)),
        ("PyramidNet_164_48", dict(depth=11, alpha=12)),
    ]:
        module = models.get_model(name, num_classes=4, **kwargs)
        params = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)["params"]
        kernel = params["Dense_0"]["kernel"]
        assert np.abs(kernel).max() <= 0.5, name  # 1/√4
        assert np.abs(kernel).max() > 0.25, name  # not the fan-in scale 1/√features
        # BatchNorm scales start at 1 (no zero-initialized last scale in a block).
        for scale in _leaves_named(params, "scale"):
            np.testing.assert_array_equal(scale, 1.0)


def _conv_param_names(params, block: str) -> list[set[str]]:
    return [set(leaves) for layer, leaves in params[block].items() if layer.startswith("Conv")]


def test_resnet_biases_on_basic_block_convolutions_only():
    x = jnp.zeros((1, 8, 8, 3))
    small = dict(num_classes=4, stage_sizes=(1, 1), width=8)
    basic = models.get_model("ResNet18", **small).init(jax.random.key(0), x, train=False)
    bottleneck = models.get_model("ResNet50", **small).init(jax.random.key(0), x, train=False)
    for block in ("BasicBlock_0", "BasicBlock_1"):  # two 3×3 convs and a projection each
        assert _conv_param_names(basic["params"], block) == [{"kernel", "bias"}] * 3
    for block in ("Bottleneck_0", "Bottleneck_1"):  # three convs and a projection each
        assert _conv_param_names(bottleneck["params"], block) == [{"kernel"}] * 4
    assert set(basic["params"]["Conv_0"]) == {"kernel"}  # the stem


def test_resnet_cifar_stem_is_16_wide_without_relu():
    module = models.get_model("ResNet18", num_classes=4, stage_sizes=(1,), width=32)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = module.init(jax.random.key(0), x, train=False)
    block_inputs = []

    def record_first_block_input(next_fun, args, kwargs, context):
        if context.module.name == "BasicBlock_0" and context.method_name == "__call__":
            block_inputs.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record_first_block_input):
        module.apply(variables, x, train=False)
    (stem,) = block_inputs
    assert stem.shape == (2, 8, 8, 16)  # 16 channels whatever the stage width (32 here)
    assert float(stem.min()) < 0.0  # BatchNorm, no ReLU after it


def test_wide_resnet_additional_skip_connection_by_hand():
    # With every convolution zeroed, only the skip around the whole network carries the input:
    # logits = head(mean(relu(BN_eval(pad(avg_pool_4x4(image)))))), BN_eval(v) = v/√(1 + 1e-5).
    kwargs = dict(depth=10, widen_factor=1, additional_skip_connections=True)
    module = models.get_model("WideResNet_16_4", num_classes=3, **kwargs)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    variables = module.init(jax.random.key(0), x, train=False)
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, leaf: (
            jnp.zeros_like(leaf) if leaf.ndim == 4 and path[-1].key == "kernel" else leaf
        ),
        variables,
    )
    logits = module.apply(zeroed, x, train=False)
    pooled = np.asarray(x).reshape(2, 4, 4, 4, 4, 3).mean(axis=(2, 4))  # 4×4 windows
    features = np.zeros((2, 64))
    features[:, :3] = np.maximum(pooled / np.sqrt(1 + 1e-5), 0).mean(axis=(1, 2))
    head = zeroed["params"]["Dense_0"]
    np.testing.assert_allclose(logits, features @ head["kernel"] + head["bias"], rtol=1e-5)
    # Off (the default), the same zeroed network sees nothing of its input.
    plain = models.get_model("WideResNet_16_4", num_classes=3, depth=10, widen_factor=1)
    np.testing.assert_array_equal(plain.apply(zeroed, x, train=False), 0.0)


def test_vit_released_initialization():
    module = models.get_model(
        "ViT_TI16", num_classes=5, hidden_size=16, depth=1, num_heads=2, mlp_dim=32
    )
    assert (module.dropout_rate, module.attention_dropout_rate) == (0.1, 0.1)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = module.init(jax.random.key(0), x, train=False)
    np.testing.assert_array_equal(module.apply(variables, x, train=False), 0.0)  # zero head
    mlp = variables["params"]["EncoderBlock_0"]["MlpBlock_0"]
    for dense in mlp.values():
        bias = np.asarray(dense["bias"])
        assert 0 < np.abs(bias).max() < 1e-5  # N(0, 1e-6)
        fan_in, fan_out = dense["kernel"].shape
        bound = np.sqrt(6 / (fan_in + fan_out))  # Xavier uniform
        assert np.abs(dense["kernel"]).max() <= bound
        assert np.abs(dense["kernel"]).max() > 0.8 * bound


def test_vit_mlp_uses_tanh_approximate_gelu():
    module = models.get_model(
        "ViT_TI16", num_classes=5, hidden_size=16, depth=1, num_heads=2, mlp_dim=32
    )
    x = jnp.zeros((1, 8, 8, 3))
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
    jaxpr = str(jax.make_jaxpr(lambda v: module.apply(v, x, train=False))(variables))
    assert "tanh" in jaxpr and "erf" not in jaxpr
