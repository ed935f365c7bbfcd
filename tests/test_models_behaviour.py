"""What the trainer relies on from every family, on tiny variants: shapes, dtypes, RNG streams,
train/eval behaviour, Shake-Shake/ShakeDrop semantics, and that a few SGD steps reduce the loss."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gnp import models
from gnp.models.layers import (
    DropPath,
    classifier_init,
    padded_shortcut,
    shake_drop,
    shake_shake,
)
from gnp.models.swin import (
    relative_position_index,
    shifted_window_mask,
    window_merge,
    window_partition,
)

NUM_CLASSES = 5
IMAGE_SIZE = 16

# family -> (registered name, kwargs shrinking it to a few thousand parameters)
SMALL = {
    "vgg": ("VGG16BN", dict(stage_sizes=(1, 1, 1), width=4, hidden_size=16)),
    "resnet": ("ResNet18", dict(stage_sizes=(1, 1), width=4)),
    "resnet_bottleneck": ("ResNet50", dict(stage_sizes=(1, 1), width=4)),
    "wide_resnet": ("WideResNet_16_4", dict(depth=10, widen_factor=1)),
    "shake_shake": ("WideResNet_2_96_ShakeShake", dict(depth=8, widen_factor=1)),
    "pyramidnet": ("PyramidNet_164_48", dict(depth=11, alpha=12)),
    "shake_drop": ("PyramidNet_164_48_ShakeDrop", dict(depth=11, alpha=12)),
    # Dropout off (released default 0.1): the common tests below tell train from eval by
    # BatchNorm and shake noise only.
    "vit": (
        "ViT_TI16",
        dict(
            hidden_size=16,
            depth=2,
            num_heads=2,
            mlp_dim=32,
            dropout_rate=0.0,
            attention_dropout_rate=0.0,
        ),
    ),
    # 16px, 2×2 patches: an 8×8 map, so the first stage really shifts and masks its windows.
    "swin": (
        "Swin_Tiny",
        dict(embed_dim=8, depths=(2, 2), num_heads=(1, 2), attention_dropout_rate=0.0),
    ),
    "cait": ("CaiT_XXS12", dict(embed_dim=16, depth=2, num_heads=2)),
}


def key(seed: int) -> jax.Array:
    # XLA compiles the "rbg" generator several times faster than threefry on CPU.
    return jax.random.key(seed, impl="rbg")


def rngs(seed: int = 0) -> dict[str, jax.Array]:
    keys = jax.random.split(key(seed), 3)
    return dict(zip(("dropout", "drop_path", "shake"), keys, strict=True))


def images(batch: int = 4, seed: int = 1) -> jnp.ndarray:
    return jax.random.normal(jax.random.key(seed), (batch, IMAGE_SIZE, IMAGE_SIZE, 3))


def small_model(family: str, **overrides):
    name, kwargs = SMALL[family]
    return models.get_model(name, num_classes=NUM_CLASSES, **{**kwargs, **overrides})


def init(module, x: jnp.ndarray):
    return module.init(key(0), x, train=False)


# Each test compiles one function, with LLVM's optimizations off: compiling, not running,
# dominates these tiny models' cost on CPU.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def eval_logits(module, variables, x: jnp.ndarray) -> jax.Array:
    """The eval-mode forward pass, compiled as one program (eagerly each op compiles apart)."""
    return jit(lambda v, x: module.apply(v, x, train=False))(variables, x)


@pytest.mark.parametrize("family", SMALL)
def test_bfloat16_compute_keeps_float32_params_and_logits(family):
    module = small_model(family, dtype=jnp.bfloat16)
    x = images()
    logits, variables = jax.eval_shape(
        lambda: module.init_with_output(jax.random.key(0), x, train=False)
    )
    assert logits.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    jaxpr = str(jax.make_jaxpr(lambda v: module.apply(v, x, train=False))(variables))
    assert "bf16" in jaxpr


@pytest.mark.parametrize(
    "rate", [dict(dropout_rate=0.5), dict(attention_dropout_rate=0.5), dict(drop_path_rate=0.5)]
)
def test_dropout_and_drop_path_act_in_training_only(rate):
    module = small_model("vit", **rate)

    @jit
    def forward(x):
        variables = init(module, x)
        # The released head starts at zero, which would hide everything before it.
        head = variables["params"]["head"]
        head["kernel"] = jax.random.normal(key(2), head["kernel"].shape)
        train = lambda seed: module.apply(variables, x, train=True, rngs=rngs(seed))
        return module.apply(variables, x, train=False), train(0), train(1), train(0)

    eval_logits, first, second, first_again = forward(images())
    assert not np.allclose(first, eval_logits)
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(first, first_again)


def test_shake_shake_by_hand():
    a, b = jax.random.normal(jax.random.key(0), (2, 64, 3, 3, 2))
    np.testing.assert_allclose(
        shake_shake(a, b, key=None, train=False, true_gradient=False), (a + b) / 2
    )
    mixed = shake_shake(a, b, key=jax.random.key(1), train=True, true_gradient=False)
    gate = (mixed - b) / (a - b)  # one gate per example, in [0, 1]
    np.testing.assert_allclose(gate, np.broadcast_to(gate[:, :1, :1, :1], gate.shape), rtol=1e-4)
    assert np.all((gate >= -1e-5) & (gate <= 1 + 1e-5))
    # Over many examples the gates average to the eval value's 1/2.
    assert abs(float(gate[:, 0, 0, 0].mean()) - 0.5) < 0.15


def test_shake_drop_by_hand():
    x = jnp.ones((2000, 1, 1, 1))
    survival = 0.7
    np.testing.assert_allclose(
        shake_drop(x, survival=survival, key=None, train=False, true_gradient=False), 0.7 * x
    )
    # E[b + α − bα] with α ~ U[0, 1]: p + 1/2 − p/2.
    np.testing.assert_allclose(
        shake_drop(x, survival=0.7, key=None, train=False, true_gradient=False,
                   alpha_range=(0.0, 1.0)),
        (0.7 + 0.5 - 0.35) * x,
    )  # fmt: skip
    coefficient = shake_drop(
        x, survival=survival, key=jax.random.key(0), train=True, true_gradient=False
    ).ravel()
    kept = coefficient == 1.0  # b = 1: the branch passes unchanged
    assert abs(float(kept.mean()) - survival) < 0.05
    shaken = coefficient[~kept]  # b = 0: α ~ U[−1, 1]
    assert np.all(np.abs(shaken) <= 1.0) and abs(float(shaken.mean())) < 0.1
    assert abs(float(coefficient.mean()) - survival) < 0.05


@pytest.mark.parametrize("true_gradient", [True, False])
def test_shake_gradient_uses_forward_coefficient_only_with_true_gradient(true_gradient):
    shake_key = jax.random.key(3)
    a, b = jax.random.normal(jax.random.key(0), (2, 8, 2, 2, 1))
    forward = shake_shake(a, b, key=shake_key, train=True, true_gradient=true_gradient)
    forward_gate = (forward - b) / (a - b)
    grad_a = jax.grad(
        lambda a: shake_shake(a, b, key=shake_key, train=True, true_gradient=true_gradient).sum()
    )(a)
    assert np.allclose(grad_a, forward_gate, rtol=1e-4) == true_gradient

    x = jnp.ones((64, 1, 1, 1))
    drop = lambda x: shake_drop(
        x, survival=0.5, key=shake_key, train=True, true_gradient=true_gradient
    )
    assert np.allclose(jax.grad(lambda x: drop(x).sum())(x), drop(x)) == true_gradient


@pytest.mark.slow
@pytest.mark.parametrize("family", ["shake_shake", "shake_drop"])
def test_true_gradient_changes_only_the_backward_pass(family):
    module = small_model(family)
    assert module.supports_true_gradient
    x = images(batch=16)  # ShakeDrop keeps whole branches: more examples, fewer ties

    @jit
    def gradients_and_eval(x):
        variables = init(module, x)

        def loss(params, true_gradient):
            logits, _ = module.apply(
                {**variables, "params": params},
                x,
                train=True,
                rngs=rngs(),
                mutable=["batch_stats"],
                true_gradient=true_gradient,
            )
            return jnp.sum(logits**2), logits

        grad_fn = jax.value_and_grad(loss, has_aux=True)
        evals = [module.apply(variables, x, train=False, true_gradient=t) for t in (False, True)]
        return grad_fn(variables["params"], False), grad_fn(variables["params"], True), evals

    ((_, shaken_logits), shaken), ((_, true_logits), true), evals = gradients_and_eval(x)
    np.testing.assert_allclose(shaken_logits, true_logits, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ravel(shaken), ravel(true))
    np.testing.assert_array_equal(*evals)  # eval is the deterministic expectation either way


def ravel(tree) -> np.ndarray:
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def test_drop_path_drops_whole_examples():
    x = jnp.ones((1000, 3, 3, 2))
    y = DropPath(0.25).apply({}, x, deterministic=False, rngs={"drop_path": jax.random.key(0)})
    per_example = np.asarray(y).reshape(1000, -1)
    assert np.all((per_example == 0).all(1) | np.isclose(per_example, 1 / 0.75).all(1))
    assert abs(float((per_example[:, 0] == 0).mean()) - 0.25) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("family", SMALL)
def test_forward_train_eval_and_a_few_sgd_steps(family):
    """Shapes and dtypes, what tells training from eval, and that SGD reduces the loss."""
    module = small_model(family)
    labels = jnp.arange(8) % NUM_CLASSES
    optimizer = optax.sgd(0.05)

    def loss_fn(params, state, x):
        logits, updates = module.apply(
            {"params": params, **state}, x, train=True, rngs=rngs(), mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, {**state, **updates}

    @jit
    def run(x):
        variables = init(module, x)
        eval_logits = module.apply(variables, x, train=False)
        train_logits, updates = module.apply(
            variables, x, train=True, rngs=rngs(), mutable=["batch_stats"]
        )

        def step(carry, _):
            params, state, opt_state = carry
            (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), state, opt_state), loss

        params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
        _, losses = jax.lax.scan(step, (params, state, optimizer.init(params)), length=10)
        return variables, eval_logits, train_logits, updates, losses

    variables, eval_logits, train_logits, updates, losses = run(images(batch=8))
    for logits in (eval_logits, train_logits):
        assert logits.shape == (8, NUM_CLASSES) and logits.dtype == jnp.float32
        assert np.all(np.isfinite(logits))
    has_batch_norm = "batch_stats" in variables
    assert set(updates) == ({"batch_stats"} if has_batch_norm else set())
    if has_batch_norm:  # training normalizes with batch statistics and updates the running ones
        before, after = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(updates)
        assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    # With dropout rates at zero, only BatchNorm and shake noise tell training from eval.
    random_in_training = has_batch_norm or family in ("shake_shake", "shake_drop")
    assert np.allclose(train_logits, eval_logits, rtol=1e-5, atol=1e-6) != random_in_training
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def test_swin_windows_by_hand():
    x = np.arange(2 * 4 * 4).reshape(2, 4, 4, 1)
    windows = window_partition(x, 2)
    assert windows.shape == (8, 4, 1)
    np.testing.assert_array_equal(windows[1, :, 0], [2, 3, 6, 7])  # image 0, top-right window
    np.testing.assert_array_equal(window_merge(windows, 2, 4, 4), x)
    # Tokens (0,0) (0,1) (1,0) (1,1); offset (dy, dx) ∈ {−1, 0, 1}² is entry 3·(dy+1) + (dx+1).
    expected = [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    np.testing.assert_array_equal(relative_position_index(2), expected)


def test_swin_shifted_window_mask_by_hand():
    # 4×4 map, 2×2 windows shifted by 1: rows and columns fall in bands {0, 1}, {2}, {3}.
    mask = shifted_window_mask(4, 4, window=2, shift=1) != 0
    assert mask.shape == (4, 4, 4)
    assert not mask[0].any()  # top-left window: one region
    alternate = np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]], bool)
    np.testing.assert_array_equal(mask[1], alternate)  # top-right: columns 2 and 3 differ
    np.testing.assert_array_equal(mask[3], ~np.eye(4, dtype=bool))  # bottom-right: four regions


def test_unknown_resnet_stem_is_an_error():
    module = small_model("resnet", stem="imagenet_like")
    with pytest.raises(ValueError, match="stem must be"):
        jax.eval_shape(lambda: module.init(key(0), images(), train=False))


# Details of the released networks that a parameter count does not see: initializers,
# parameter-free shortcuts, where a ReLU is (not) applied; checked by hand on tiny variants.


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


@pytest.mark.slow
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
    # Shapes only (eval_shape): an eager init compiles each initializer op apart.
    basic, bottleneck = (
        jax.eval_shape(lambda n=name: init(models.get_model(n, **small), x))
        for name in ("ResNet18", "ResNet50")
    )
    for block in ("BasicBlock_0", "BasicBlock_1"):  # two 3×3 convs and a projection each
        assert _conv_param_names(basic["params"], block) == [{"kernel", "bias"}] * 3
    for block in ("Bottleneck_0", "Bottleneck_1"):  # three convs and a projection each
        assert _conv_param_names(bottleneck["params"], block) == [{"kernel"}] * 4
    assert set(basic["params"]["Conv_0"]) == {"kernel"}  # the stem


def test_resnet_cifar_stem_is_16_wide_without_relu():
    module = models.get_model("ResNet18", num_classes=4, stage_sizes=(1,), width=32)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))

    @jit
    def first_block_input(x):
        block_inputs = []

        def record_first_block_input(next_fun, args, kwargs, context):
            if context.module.name == "BasicBlock_0" and context.method_name == "__call__":
                block_inputs.append(args[0])
            return next_fun(*args, **kwargs)

        variables = init(module, x)
        with nn.intercept_methods(record_first_block_input):
            module.apply(variables, x, train=False)
        (stem,) = block_inputs
        return stem

    stem = first_block_input(x)
    assert stem.shape == (2, 8, 8, 16)  # 16 channels whatever the stage width (32 here)
    assert float(stem.min()) < 0.0  # BatchNorm, no ReLU after it


def test_wide_resnet_additional_skip_connection_by_hand():
    # With every convolution zeroed, only the skip around the whole network carries the input:
    # logits = head(mean(relu(BN_eval(pad(avg_pool_4x4(image)))))), BN_eval(v) = v/√(1 + 1e-5).
    kwargs = dict(depth=10, widen_factor=1, use_additional_skip_connections=True)
    module = models.get_model("WideResNet_16_4", num_classes=3, **kwargs)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, leaf: (
            jnp.zeros_like(leaf) if leaf.ndim == 4 and path[-1].key == "kernel" else leaf
        ),
        jit(lambda x: init(module, x))(x),
    )
    logits = eval_logits(module, zeroed, x)
    pooled = np.asarray(x).reshape(2, 4, 4, 4, 4, 3).mean(axis=(2, 4))  # 4×4 windows
    features = np.zeros((2, 64))
    features[:, :3] = np.maximum(pooled / np.sqrt(1 + 1e-5), 0).mean(axis=(1, 2))
    head = zeroed["params"]["Dense_0"]
    np.testing.assert_allclose(logits, features @ head["kernel"] + head["bias"], rtol=1e-5)
    # Off (the default), the same zeroed network sees nothing of its input.
    plain = models.get_model("WideResNet_16_4", num_classes=3, depth=10, widen_factor=1)
    np.testing.assert_array_equal(eval_logits(plain, zeroed, x), 0.0)


def test_vit_released_initialization():
    module = models.get_model(
        "ViT_TI16", num_classes=5, hidden_size=16, depth=1, num_heads=2, mlp_dim=32
    )
    assert (module.dropout_rate, module.attention_dropout_rate) == (0.1, 0.1)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = jit(lambda x: init(module, x))(x)
    np.testing.assert_array_equal(eval_logits(module, variables, x), 0.0)  # zero head
    mlp = variables["params"]["EncoderBlock_0"]["MlpBlock_0"]
    for dense in mlp.values():
        bias = np.asarray(dense["bias"])
        assert 0 < np.abs(bias).max() < 1e-5  # N(0, 1e-6)
        fan_in, fan_out = dense["kernel"].shape
        bound = np.sqrt(6 / (fan_in + fan_out))  # Xavier uniform
        assert np.abs(dense["kernel"]).max() <= bound
        assert np.abs(dense["kernel"]).max() > 0.8 * bound


@pytest.mark.parametrize("family", ["vit", "swin", "cait"])
def test_transformer_mlps_use_tanh_approximate_gelu(family):
    module = small_model(family)
    x = images()
    variables = jax.eval_shape(lambda: init(module, x))
    jaxpr = str(jax.make_jaxpr(lambda v: module.apply(v, x, train=False))(variables))
    assert "tanh" in jaxpr and "erf" not in jaxpr
