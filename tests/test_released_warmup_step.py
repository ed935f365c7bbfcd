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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gnp.gr_schedule import GRSchedule
from gnp.options import GNPOptions
from gnp.train.distributed import replicate, shard_batch
from gnp.train.objective import LossConfig, make_loss_fn, step_rngs
from gnp.train.state import create_train_state
from gnp.train.steps import make_train_step

R, ALPHA, LR, WARMUP = 0.3, 0.8, 0.1, 10


class Float64MLP(nn.Module):
    """A tanh MLP computed in float64 throughout, so that both sides agree to rounding."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = jnp.tanh(nn.Dense(16, param_dtype=jnp.float64)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10, param_dtype=jnp.float64)(x)


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


def our_gradient(model, state, batch, *, strategy, step, norm_perturbations):
    """The gradient our GNP step applies at ``step``: −(θ' − θ)/lr under plain SGD."""
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    train_step = make_train_step(
        model=model,
        optimizer=optax.sgd(LR),
        schedule=optax.constant_schedule(LR),
        mesh=mesh,
        loss_config=LossConfig(),
        gr=GRSchedule(r=R, alpha=ALPHA, strategy=strategy, warmup_steps=WARMUP),
        gnp_options=GNPOptions(r=R, alpha=ALPHA, normalize_reference=norm_perturbations),
        kind="gnp",
    )
    state = state.replace(step=jnp.asarray(step, jnp.int32))
    before = jax.device_get(state.params)
    placed = shard_batch(batch, mesh)
    new_state, _ = train_step(replicate(state, mesh), placed["image"], placed["label"])
    after = jax.device_get(new_state.params)
    return jax.tree.map(lambda a, b: (a - b) / LR, before, after)


@pytest.mark.parametrize("norm_perturbations", [True, False], ids=["released-mix", "paper-mix"])
@pytest.mark.parametrize("strategy", ["r", "lambda"])
@pytest.mark.parametrize("step", [0, 1, WARMUP], ids=["zero", "small", "full"])
def test_our_step_is_the_released_step_during_the_warmup(strategy, step, norm_perturbations):
    with jax.enable_x64(True):
        model = Float64MLP()
        state, _ = create_train_state(
            model, lambda p: optax.sgd(LR), (8, 8, 1), init_seed=0, seed=0
        )
        rng = np.random.default_rng(0)
        batch = {
            "image": rng.normal(size=(16, 8, 8, 1)),
            "label": jax.nn.one_hot(rng.integers(0, 10, 16), 10),
        }
        loss_fn = make_loss_fn(model, LossConfig())
        # The step's random streams (none used by TinyMLP) and BatchNorm statistics (none).
        rngs = step_rngs(jax.random.fold_in(jax.random.fold_in(state.rng, step), 0), 0)

        def grad(params):
            return jax.grad(lambda p: loss_fn(p, {}, batch["image"], batch["label"], rngs)[0])(
                params
            )

        want = released_gradient(
            grad,
            state.params,
            strategy=strategy,
            step=step,
            norm_perturbations=norm_perturbations,
        )
        got = our_gradient(
            model, state, batch, strategy=strategy, step=step, norm_perturbations=norm_perturbations
        )
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
