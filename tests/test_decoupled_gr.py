"""Decoupled GR (``gnp.decoupled``, after WSAM's ``decouple=True``), held against a hand
computation in float64: the optimizer (optax, from its own state) steps on the clean gradient
g1 = ∇L(θ) alone, and the penalty part joins outside it,

    θ ← θ + optimizer_update(g1) − lr(step) · α · (g2 − g1),    g2 = ∇L(θ + r · g1/‖g1‖),

so Adam's moments and the momentum never see g2. At α = 0 the step is the optimizer's own."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from step_harness import loss_gradient, problem
from test_sharded_params import step_both_ways, tiny_batch

from gnp import models
from gnp.configs import default
from gnp.gr_schedule import GRSchedule
from gnp.options import GNPOptions
from gnp.train import build
from gnp.train.config import validate_config
from gnp.train.distributed import replicate, shard_batch
from gnp.train.objective import LossConfig
from gnp.train.steps import make_train_step

pytestmark = pytest.mark.compile_bound  # conftest: its compiles skip XLA's expensive passes

R, ALPHA = 0.3, 0.8


def SCHEDULE(count):  # a different learning rate at each step, in float64 under x64
    return 0.1 - 0.03 * count


OPTIMIZERS = {
    "adamw": lambda: optax.adamw(SCHEDULE, weight_decay=0.01),
    "sgd-momentum": lambda: optax.sgd(SCHEDULE, momentum=0.9, nesterov=True),
}


def trainer(optimizer, *, steps, gr, options, decoupled, kind="gnp"):
    """θ after ``steps`` of the jitted train step on one device, and the last step's metrics."""
    model, state, batch = problem()
    state = state.replace(opt_state=optimizer.init(state.params))
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    train_step = make_train_step(
        model=model,
        optimizer=optimizer,
        schedule=SCHEDULE,
        mesh=mesh,
        loss_config=LossConfig(),
        gr=gr,
        gnp_options=options,
        kind=kind,
        decoupled=decoupled,
    )
    state = replicate(jax.tree.map(jnp.copy, state), mesh)
    placed = shard_batch(batch, mesh)
    for _ in range(steps):
        state, metrics = train_step(state, placed["image"], placed["label"])
    return jax.device_get(state.params), jax.device_get(metrics)


def by_hand(optimizer, *, steps):
    """The same steps written out: optax on g1 alone, the penalty part outside it."""
    model, state, batch = problem()
    params, opt_state = state.params, optimizer.init(state.params)
    for step in range(steps):
        grad = loss_gradient(model, state, step)
        total, opt_state = hand_update(
            lambda p, grad=grad: grad(p, batch["image"], batch["label"]),
            optimizer,
            opt_state,
            params,
            lr=float(SCHEDULE(step)),
        )
        params = jax.tree.map(lambda p, u: p + u, params, total)
    update_norm = np.sqrt(sum(np.sum(np.square(u)) for u in jax.tree.leaves(total)))
    return params, update_norm


def hand_update(g, optimizer, opt_state, params, *, lr):
    g1 = g(params)
    norm = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(g1)))
    g2 = g(jax.tree.map(lambda p, d: p + R * d / norm, params, g1))
    updates, opt_state = optimizer.update(g1, opt_state, params)
    return jax.tree.map(lambda u, a, b: u - lr * ALPHA * (b - a), updates, g1, g2), opt_state


def assert_close(got, want, atol=1e-12):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=atol)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_decoupled_step_is_the_optimizer_on_g1_plus_the_penalty_outside_it(name):
    with jax.enable_x64(True):
        got, metrics = trainer(
            OPTIMIZERS[name](),
            steps=2,
            gr=GRSchedule(r=R, alpha=ALPHA),
            options=GNPOptions(r=R, alpha=ALPHA),
            decoupled=True,
        )
        want, update_norm = by_hand(OPTIMIZERS[name](), steps=2)
        assert_close(got, want)
        assert metrics["update_norm"] == pytest.approx(update_norm, rel=1e-5)  # the total update


@pytest.mark.parametrize(
    "gr",
    [GRSchedule(r=R, alpha=0.0), GRSchedule(r=R, alpha=ALPHA, strategy="lambda", warmup_steps=5)],
    ids=["alpha-0", "lambda-warmup-step-0"],
)
def test_decoupled_at_alpha_zero_is_plain_adam(gr):
    with jax.enable_x64(True):
        options = GNPOptions(r=R, alpha=gr.alpha)
        decoupled, _ = trainer(
            OPTIMIZERS["adamw"](), steps=1, gr=gr, options=options, decoupled=True
        )
        plain, _ = trainer(
            OPTIMIZERS["adamw"](), steps=1, gr=gr, options=options, decoupled=False, kind="plain"
        )
        assert_close(decoupled, plain, atol=1e-15)


@pytest.mark.slow  # two 4-device compiles of a reuse step, ~30 s idle
def test_sharded_decoupled_step_equals_the_replicated_one():
    """Synced perturbations of a reuse step: g1 is whole on every device, the sharded step
    takes its shard (per-device ones use the device mean's shards, as the gradient does)."""
    model = models.get_model("TinyMLP", num_classes=10)
    _, ((replicated, _), (sharded, _)) = step_both_ways(
        model,
        optax.adamw(0.01),
        tiny_batch(),
        options=dict(axis_name="data", reuse_period=2),
        reuse=True,
        decoupled=True,
    )
    for a, b in zip(jax.tree.leaves(replicated), jax.tree.leaves(sharded), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def decoupled_config(**values):
    config = default.get_config()
    config.update_from_flattened_dict({"gnp.decoupled": True} | values)
    return config


def test_msam_one_pass_step_is_refused_in_one_line():
    config = decoupled_config(
        **{"gnp.perturbation_direction": "momentum", "gnp.alpha": 1.0, "opt.opt_type": "Momentum"}
    )
    with pytest.raises(ValueError, match=r"gnp\.decoupled needs the clean gradient g1") as found:
        validate_config(config)
    assert "\n" not in str(found.value)
    assert "set gnp.decoupled=False or gnp.perturbation_direction='gradient'" in str(found.value)


def test_the_key_is_a_switch_read_into_the_steps():
    assert build.decoupled_gr(validate_config(decoupled_config())) is True
    assert build.decoupled_gr(validate_config(default.get_config())) is False
    # Two passes along the momentum (α ≠ 1) have their g1: allowed.
    two_passes = {"gnp.perturbation_direction": "momentum", "gnp.alpha": 0.5}
    assert build.decoupled_gr(validate_config(decoupled_config(**two_passes))) is True
