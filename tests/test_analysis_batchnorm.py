"""BatchNorm statistics re-estimated at given weights, against numpy on the layer's inputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnp import analysis


class Net(nn.Module):
    """Two BatchNorms with different momenta: the estimate must not depend on either."""

    @nn.compact
    def __call__(self, x, train):
        x = nn.Dense(3)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.7)(x)
        x = nn.Dense(2)(jnp.tanh(x))
        return nn.BatchNorm(use_running_average=not train, momentum=0.99)(x)


def test_recomputed_statistics_are_the_batches_own_mean_and_variance():
    model = Net()
    rng = np.random.default_rng(0)
    batches = [jnp.asarray(rng.normal(size=(16, 4)) * 2 + 1, jnp.float32) for _ in range(3)]
    variables = model.init(jax.random.key(0), batches[0], train=False)
    # Saved statistics far from the truth: the estimate must not keep any of them.
    variables = {
        "params": variables["params"],
        "batch_stats": jax.tree.map(lambda s: s + 5.0, variables["batch_stats"]),
    }

    def update(v, batch):
        return model.apply(v, batch, train=True, mutable=["batch_stats"])[1]["batch_stats"]

    stats = analysis.recompute_batch_stats(update, variables, batches)
    params = variables["params"]
    first = [
        np.asarray(b @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]) for b in batches
    ]
    np.testing.assert_allclose(
        stats["BatchNorm_0"]["mean"], np.mean([f.mean(0) for f in first], 0), rtol=1e-5
    )
    np.testing.assert_allclose(
        stats["BatchNorm_0"]["var"], np.mean([f.var(0) for f in first], 0), rtol=1e-4
    )
    # The second layer sees the first normalized with each batch's own statistics (train mode).
    normalized = [(f - f.mean(0)) / np.sqrt(f.var(0) + 1e-5) for f in first]
    scale, offset = params["BatchNorm_0"]["scale"], params["BatchNorm_0"]["bias"]
    second = [
        np.tanh(n * scale + offset) @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
        for n in normalized
    ]
    np.testing.assert_allclose(
        stats["BatchNorm_1"]["mean"], np.mean([s.mean(0) for s in second], 0), rtol=1e-4, atol=1e-6
    )
    with pytest.raises(ValueError, match="no batch"):
        analysis.recompute_batch_stats(update, variables, [])
