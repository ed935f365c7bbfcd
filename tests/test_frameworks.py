"""gnp.value_and_grad serves Flax NNX (split/merge) and equinox (partition/combine) models."""

import pathlib
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gnp

R = 0.1


def hand_sam(loss_fn, params, *args):
    """SAM's gradient written out: ∇L at θ + r·g/‖g‖."""
    g = jax.grad(loss_fn)(params, *args)
    norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)))
    return jax.grad(loss_fn)(jax.tree.map(lambda p, d: p + R * d / norm, params, g), *args)


def data():
    kx, ky = jax.random.split(jax.random.key(0))
    return jax.random.normal(kx, (32, 4)), jax.random.normal(ky, (32, 2))


def assert_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def train_a_little(grad_fn, loss_fn, params, x, y):
    """20 SGD steps with the GNP gradient; the loss must fall. Returns the trained params."""
    optimizer = optax.sgd(0.1)
    opt_state, first = optimizer.init(params), float(loss_fn(params, x, y))
    for _ in range(20):
        _, grads = grad_fn(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
    assert float(loss_fn(params, x, y)) < first
    return params


def test_flax_nnx_through_split_and_merge():
    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(4, 16, rngs=rngs)
            self.out = nnx.Linear(16, 2, rngs=rngs)

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    model = MLP(nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    x, y = data()

    def loss_fn(params, x, y):
        return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

    grad_fn = jax.jit(gnp.value_and_grad(loss_fn, r=R, alpha=1.0))
    _, grads = grad_fn(params, x, y)
    assert_close(grads, hand_sam(loss_fn, params, x, y))

    params = train_a_little(grad_fn, loss_fn, params, x, y)
    nnx.update(model, params)
    # the module itself now holds the trained parameters
    assert float(jnp.mean((model(x) - y) ** 2)) == pytest.approx(float(loss_fn(params, x, y)))


def test_library_md_nnx_example_with_batchnorm_runs_as_written():
    text = (pathlib.Path(__file__).parents[1] / "docs" / "library.md").read_text()
    section = text[text.index("## Flax NNX") : text.index("## equinox")]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace: dict = {}
    exec(compile(block, "docs/library.md", "exec"), namespace)
    x, y, model = namespace["x"], namespace["y"], namespace["model"]
    model.eval()
    trained = float(jnp.mean((model(x) - y) ** 2))  # running statistics, after nnx.update
    fresh = namespace["Net"](nnx.Rngs(0))
    fresh.eval()
    assert trained < 0.5 * float(jnp.mean((fresh(x) - y) ** 2))

    # One step from the start: the running mean moves by (1 − momentum) times the clean
    # pass's batch mean of the BatchNorm input (not the perturbed pass's), by hand in float64.
    fresh.train()
    _, params, rest = nnx.split(fresh, nnx.Param, ...)
    hidden = nnx.to_pure_dict(params)["hidden"]
    batch_mean = (np.asarray(x, np.float64) @ hidden["kernel"] + hidden["bias"]).mean(axis=0)
    _, rest, _, _ = namespace["train_step"](params, rest, namespace["opt_state"], x, y)
    running_mean = nnx.to_pure_dict(rest)["norm"]["mean"]
    momentum = fresh.norm.momentum
    np.testing.assert_allclose(running_mean, (1 - momentum) * batch_mean, rtol=1e-4, atol=1e-6)


def test_the_nnx_module_itself_as_argument_leaves_batch_norm_statistics_behind():
    """What docs/library.md warns of: the module passed as the differentiated pytree runs, but
    its running statistics are never written back (as with jax.value_and_grad); the split form
    above is the one that updates them."""

    def loss_fn(module, x):
        return jnp.mean(module(x) ** 2)

    x = jax.random.normal(jax.random.key(1), (16, 3)) + 2.0  # a batch mean far from 0
    for value_and_grad in (jax.value_and_grad, lambda f: gnp.value_and_grad(f, r=R, alpha=0.8)):
        module = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
        module.train()
        _, grads = value_and_grad(loss_fn)(module, x)
        assert isinstance(grads, nnx.BatchNorm)  # it ran, with a gradient shaped as the module
        np.testing.assert_array_equal(module.mean[...], np.zeros(3))  # never updated


def test_equinox_through_partition_and_combine():
    model = eqx.nn.MLP(4, 2, width_size=16, depth=1, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    x, y = data()

    def loss_fn(params, x, y):
        return jnp.mean((jax.vmap(eqx.combine(params, static))(x) - y) ** 2)

    grad_fn = eqx.filter_jit(gnp.value_and_grad(loss_fn, r=R, alpha=1.0))
    _, grads = grad_fn(params, x, y)
    assert_close(grads, hand_sam(loss_fn, params, x, y))

    train_a_little(grad_fn, loss_fn, params, x, y)
