"""Schedules, optimizer options, L2 and clipping against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gnp.config_keys import get_base_config, ignored_key_notices
from gnp.optim import (
    build_optimizer,
    describe_optimizer,
    l2_penalty,
    learning_rate_schedule,
    optimizer_kwargs,
)


def schedule_config(kind, **overrides):
    config = get_base_config()
    config.lr_schedule_type = kind
    config.base_lr = 0.4
    config.total_epochs = 10
    config.warmup_epochs = 2
    config.update(overrides)
    return config


def test_warmup_is_linear_from_zero():
    schedule = learning_rate_schedule(schedule_config("constant"), steps_per_epoch=10)
    for step, want in [(0, 0.0), (5, 0.1), (10, 0.2), (19, 0.38), (20, 0.4), (99, 0.4)]:
        assert float(schedule(step)) == pytest.approx(want, abs=1e-7)


def test_cosine_after_warmup():
    schedule = learning_rate_schedule(schedule_config("cosine"), steps_per_epoch=10)
    # 80 decay steps after 20 warmup steps: 0.4·½(1 + cos(π·t/80)).
    for step in (20, 40, 60, 99):
        want = 0.4 * 0.5 * (1 + math.cos(math.pi * (step - 20) / 80))
        assert float(schedule(step)) == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_stepped_uses_absolute_scales_at_epoch_fractions():
    config = schedule_config(
        "stepped", warmup_epochs=0, stepped_lr_boundaries=(0.5, 0.8), stepped_lr_scales=(0.1, 0.01)
    )
    schedule = learning_rate_schedule(config, steps_per_epoch=10)
    for step, want in [(0, 0.4), (49, 0.4), (50, 0.04), (79, 0.04), (80, 0.004), (99, 0.004)]:
        assert float(schedule(step)) == pytest.approx(want, rel=1e-6)


def test_exponential_decays_per_epoch():
    config = schedule_config("exponential", warmup_epochs=0, exponential_decay_rate=0.5)
    schedule = learning_rate_schedule(config, steps_per_epoch=10)
    for step in (0, 10, 25, 30):
        assert float(schedule(step)) == pytest.approx(0.4 * 0.5 ** (step / 10), rel=1e-6)


def test_unknown_schedule_lists_choices():
    with pytest.raises(ValueError, match="cosine"):
        learning_rate_schedule(schedule_config("linear"), steps_per_epoch=10)


def test_optimizer_params_are_validated_per_optimizer():
    params = ml_collections.ConfigDict({"weight_decay": 0.3, "momentum": None})
    assert optimizer_kwargs("Adam", params)["weight_decay"] == 0.3
    with pytest.raises(ValueError, match="do not apply to Momentum"):
        optimizer_kwargs("Momentum", params)
    with pytest.raises(ValueError, match="RMSProp"):
        optimizer_kwargs("LBFGS", params)


def test_l2_penalty_with_and_without_vector_exclusion():
    params = {
        "kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]]),
        "bias": jnp.array([5.0]),
        "bn": {"scale": jnp.array([6.0, 7.0])},
    }
    assert float(l2_penalty(params, 0.1, skip_vectors=False)) == pytest.approx(
        0.05 * (1 + 4 + 9 + 16 + 25 + 36 + 49)
    )
    assert float(l2_penalty(params, 0.1, skip_vectors=True)) == pytest.approx(0.05 * 30)


def test_gradient_clipping_bounds_the_combined_gradient():
    config = get_base_config()
    config.opt.opt_type = "SGD"
    config.gradient_clipping = 1.0
    params = {"w": jnp.zeros(4)}
    optimizer = build_optimizer(config, optax.constant_schedule(1.0), params)
    grads = {"w": jnp.array([3.0, 4.0, 0.0, 0.0])}  # norm 5
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    np.testing.assert_allclose(updates["w"], -np.array([0.6, 0.8, 0.0, 0.0]), rtol=1e-6)


def test_adamw_weight_decay_is_decoupled_and_masked():
    config = get_base_config()
    config.opt.opt_type = "Adam"
    config.opt.opt_params.weight_decay = 0.5
    config.no_weight_decay_on_bn = True
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    optimizer = build_optimizer(config, optax.constant_schedule(0.1), params)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zero, optimizer.init(params), params)
    # Zero gradient: the only update is -lr·wd·θ on the kernel; the bias is not decayed.
    np.testing.assert_allclose(updates["kernel"], -0.05 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(updates["bias"], np.zeros(2), atol=0)


def _updates(config, grads, steps, lr=0.1):
    params = jax.tree.map(jnp.zeros_like, grads)
    optimizer = build_optimizer(config, optax.constant_schedule(lr), params)
    state, out = optimizer.init(params), []
    for _ in range(steps):
        updates, state = optimizer.update(grads, state, params)
        out.append(updates)
    return out


def test_momentum_is_the_released_nesterov_sgd():
    # Released optimizer/get_optimizer.py + base_config.py: Momentum keeps opt_params nesterov
    # (True) and momentum (0.9), i.e. optax.sgd(lr, momentum=0.9, nesterov=True).
    # By hand, lr 0.1, constant gradient 1: trace t1 = 1, update -0.1·(1 + 0.9·1) = -0.19;
    # t2 = 1 + 0.9 = 1.9, update -0.1·(1 + 0.9·1.9) = -0.271. (Heavy-ball: -0.1, -0.19.)
    config = get_base_config()
    config.opt.opt_type = "Momentum"
    assert optimizer_kwargs("Momentum", config.opt.opt_params) == {
        "momentum": 0.9,
        "nesterov": True,
    }
    first, second = _updates(config, {"w": jnp.ones(2)}, steps=2)
    np.testing.assert_allclose(first["w"], [-0.19, -0.19], rtol=1e-6)
    np.testing.assert_allclose(second["w"], [-0.271, -0.271], rtol=1e-6)
    config.opt.opt_params.nesterov = False
    first, second = _updates(config, {"w": jnp.ones(2)}, steps=2)
    np.testing.assert_allclose(second["w"], [-0.19, -0.19], rtol=1e-6)


def test_adam_defaults_are_the_released_adamw():
    # Released: optax.adamw(lr, weight_decay=0.3) (base_config opt_params.weight_decay; beta1,
    # beta2 and eps not in the base config, so optax's 0.9, 0.999, 1e-8). Released names of the
    # flags it keeps for Adam: beta1, beta2, eps, weight_decay.
    params = get_base_config().opt.opt_params
    assert optimizer_kwargs("Adam", params) == {
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.3,
    }
    params.eps = 1e-6
    assert optimizer_kwargs("Adam", params)["eps"] == 1e-6


def test_released_grad_norm_clip_is_accepted_and_has_no_effect():
    config = get_base_config()
    config.opt.opt_type = "Momentum"
    config.opt.opt_params.grad_norm_clip = 5.0  # released base value; no released optimizer used it
    assert optimizer_kwargs("Momentum", config.opt.opt_params) == {
        "momentum": 0.9,
        "nesterov": True,
    }
    assert any("grad_norm_clip" in line for line in ignored_key_notices(config))
    grads = {"w": jnp.full(2, 100.0)}  # far above 5: not clipped
    np.testing.assert_allclose(_updates(config, grads, steps=1)[0]["w"], [-19.0, -19.0], rtol=1e-6)


def test_describe_optimizer_spells_out_every_setting_in_force():
    config = get_base_config()
    config.opt.opt_type = "Momentum"
    config.gradient_clipping = 5.0
    text = describe_optimizer(config)
    assert text == (
        "clip_by_global_norm(5.0), then optax.sgd(momentum: 0.9, nesterov: True); "
        "learning rate: cosine from 0.1 over 200 epochs, linear warmup 0"
    )
    config.opt.opt_type = "Adam"
    config.gradient_clipping = 0.0
    assert describe_optimizer(config).startswith(
        "optax.adamw(b1: 0.9, b2: 0.999, eps: 1e-08, weight_decay: 0.3, mask: all); "
    )
