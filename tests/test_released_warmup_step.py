"""The GR warmups step by step as the released ``train_step`` computes them, under both mixes.

The released code (zhaoyang-0204/gnp, ``training/training_core.py``, ``train_step``) takes its
GNP branch whenever the *configured* r is positive (``if r > 0:``, line 194), then warms up
``r = warmup_strategy_fn(config.gnp.r, step)`` (line 200, strategy ``r``) or
``alpha = warmup_strategy_fn(config.gnp.alpha, step)`` (line 203, strategy ``lambda``), with
``warmup_strategy_fn(v, step) = v · min(1, step / (steps_per_epoch · warmup_epochs))``
(``training/utli.py``, ``generate_warmup_fn``) and ``step = opt_state.count``. Its
``get_gnp_gradient`` (lines 131-187) computes g1, the unit vector ``g1/‖g1‖``
(``utli.dual_vector``), g2 at ``θ + r·g1/‖g1‖``, and mixes ``(1 − α)·g1/‖g1‖ + α·g2`` with
``gnp.norm_perturbations`` (line 184) or ``(1 − α)·g1 + α·g2`` without (line 186). At a step
where the warmed r or α is 0 the released mix is therefore ``(1 − α)·g1/‖g1‖ + α·g1`` or
``g1/‖g1‖``, not g1. Below, that arithmetic is written out in float64 from ``jax.grad`` of the
same loss and compared with the gradient our jitted train step hands to a plain SGD update.
"""

import jax
import numpy as np
import pytest
from step_harness import applied_gradient, assert_close, loss_gradient, problem

from gnp.gr_schedule import GRSchedule
from gnp.options import GNPOptions

pytestmark = pytest.mark.compile_bound  # conftest: its compiles skip XLA's expensive passes

R, ALPHA, WARMUP = 0.3, 0.8, 10


def released_gradient(grad, params, *, strategy, step, norm_perturbations):
    """``train_step``'s combined gradient before the pmean (one device), lines 191-205."""
    r, alpha = R, ALPHA
    # warmup_strategy_fn: ``base_value * jnp.minimum(1, step / (spe · warmup))`` with the int32
    # step, i.e. in float32 (JAX's default there), the base value a weakly typed Python float;
    # so is ``1 - alpha`` of a warmed α.
    ramp = np.minimum(np.float32(1), np.float32(step) / np.float32(WARMUP))
    if strategy == "r":
        r = np.float32(R) * ramp
    if strategy == "lambda":
        alpha = np.float32(ALPHA) * ramp
    g1 = grad(params)
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(g1)))
    unit = jax.tree.map(lambda g: g / norm, g1)  # utli.dual_vector
    g2 = grad(jax.tree.map(lambda p, u: p + r * u, params, unit))
    first = unit if norm_perturbations else g1
    return jax.tree.map(lambda a, b: (1 - alpha) * a + alpha * b, first, g2)


@pytest.mark.parametrize("norm_perturbations", [True, False], ids=["released-mix", "paper-mix"])
@pytest.mark.parametrize("strategy", ["r", "lambda"])
@pytest.mark.parametrize("step", [0, 1, WARMUP], ids=["zero", "small", "full"])
def test_our_step_is_the_released_step_during_the_warmup(strategy, step, norm_perturbations):
    with jax.enable_x64(True):
        model, state, batch = problem()
        grad = loss_gradient(model, state, step)
        want = released_gradient(
            lambda params: grad(params, batch["image"], batch["label"]),
            state.params,
            strategy=strategy,
            step=step,
            norm_perturbations=norm_perturbations,
        )
        got = applied_gradient(
            model,
            state,
            batch,
            gr=GRSchedule(r=R, alpha=ALPHA, strategy=strategy, warmup_steps=WARMUP),
            options=GNPOptions(r=R, alpha=ALPHA, normalize_reference=norm_perturbations),
            step=step,
        )
        assert_close(got, want)
