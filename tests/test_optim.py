"""Schedules, optimizer options, L2 and clipping against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gnp.configs.base import get_base_config
from gnp.optim import build_optimizer, l2_penalty, learning_rate_schedule, optimizer_kwargs


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
