"""The train state: everything a step reads and writes, and everything a checkpoint holds."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gnp import efficient

PyTree = Any


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    rng: jax.Array  # raw uint32 key; each step folds in its step number
    # gnp.efficient's reuse state as a dict (checkpointed with the rest); {} when unused.
    reuse: PyTree = flax.struct.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def create_train_state(
    model: nn.Module,
    optimizer_fn: Callable[[PyTree], optax.GradientTransformation],
    image_shape: tuple[int, ...],
    *,
    init_seed: int,
    seed: int,
    reuse: bool = False,
) -> tuple[TrainState, optax.GradientTransformation]:
    """Initialize params from ``init_seed``; the optimizer may depend on the params (masks).

    ``reuse``: hold ``gnp.efficient``'s reuse state (``GNPOptions.reuse_period`` > 1).
    """

    @jax.jit
    def init(key: jax.Array) -> PyTree:
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        return model.init({"params": key}, dummy, train=False)

    variables = init(jax.random.PRNGKey(init_seed))
    params = variables["params"]
    optimizer = optimizer_fn(params)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=optimizer.init(params),
        rng=jax.random.PRNGKey(seed),
        reuse=efficient.reuse_init(params)._asdict() if reuse else {},
    )
    return state, optimizer
