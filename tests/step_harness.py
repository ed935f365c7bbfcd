"""One train step of the trainer on a float64 problem, and the gradient it applied, so that a
test can hold the step against a formula written out by hand."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnp.gr_schedule import GRSchedule
from gnp.options import GNPOptions
from gnp.train.distributed import replicate, shard_batch
from gnp.train.objective import LossConfig, make_loss_fn, step_rngs
from gnp.train.state import TrainState, create_train_state
from gnp.train.steps import make_train_step

LR = 0.1


class Float64MLP(nn.Module):
    """A tanh MLP computed in float64 throughout, so that both sides agree to rounding."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = jnp.tanh(nn.Dense(16, param_dtype=jnp.float64)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10, param_dtype=jnp.float64)(x)


def problem(rows: int = 16) -> tuple[nn.Module, TrainState, dict]:
    """The model, its state (SGD, float64) and one batch of ``rows`` (call under x64)."""
    model = Float64MLP()
    state, _ = create_train_state(model, lambda p: optax.sgd(LR), (8, 8, 1), init_seed=0, seed=0)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(rows, 8, 8, 1)),
        "label": np.asarray(jax.nn.one_hot(rng.integers(0, 10, rows), 10)),
    }
    return model, state, batch


def loss_gradient(model: nn.Module, state: TrainState, step: int):
    """``grad(params, images, labels)`` of the training objective with the step's random
    streams (device 0), as the step's passes take it."""
    loss_fn = make_loss_fn(model, LossConfig())
    rngs = step_rngs(jax.random.fold_in(jax.random.fold_in(state.rng, step), 0), 0)
    return lambda params, images, labels: jax.grad(
        lambda p: loss_fn(p, {}, images, labels, rngs)[0]
    )(params)


def applied_gradient(
    model: nn.Module,
    state: TrainState,
    batch: dict,
    *,
    gr: GRSchedule,
    options: GNPOptions,
    step: int = 0,
    kind: str = "gnp",
):
    """The gradient the step at ``step`` handed to plain SGD: −(θ' − θ)/lr."""
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    train_step = make_train_step(
        model=model,
        optimizer=optax.sgd(LR),
        schedule=optax.constant_schedule(LR),
        mesh=mesh,
        loss_config=LossConfig(),
        gr=gr,
        gnp_options=options,
        kind=kind,
    )
    # A copy: the step donates its state, and the caller may step from the same one again.
    state = jax.tree.map(jnp.copy, state.replace(step=jnp.asarray(step, jnp.int32)))
    before = jax.device_get(state.params)
    placed = shard_batch(batch, mesh)
    new_state, _ = train_step(replicate(state, mesh), placed["image"], placed["label"])
    after = jax.device_get(new_state.params)
    return jax.tree.map(lambda a, b: (a - b) / LR, before, after)


def assert_close(got, want) -> None:
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
