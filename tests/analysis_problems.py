"""Shared problems for the analysis tests: a quadratic with a known spectrum, a small MLP."""

import jax
import jax.numpy as jnp
import numpy as np


def quadratic(eigenvalues, seed=0):
    """A = Q diag(λ) Qᵀ for a random orthogonal Q, and the loss ½θᵀAθ on params in two leaves.

    The batch is ignored: the Hessian is A everywhere.
    """
    eigenvalues = np.asarray(eigenvalues, np.float64)
    n = eigenvalues.size
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    matrix = q @ np.diag(eigenvalues) @ q.T
    split = n // 3

    def loss(params, batch):
        theta = jnp.concatenate([params["a"].ravel(), params["b"]])
        return 0.5 * theta @ jnp.asarray(matrix) @ theta

    def params_from(vector):
        vector = jnp.asarray(vector)
        return {"a": vector[:split].reshape(split, 1), "b": vector[split:]}

    return matrix, loss, params_from


def masked_mlp_loss(params, batch):
    """Mean squared error of a tanh MLP over the real (mask = 1) examples of the batch."""
    hidden = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    out = hidden @ params["w2"] + params["b2"]
    per_example = jnp.sum((out - batch["y"]) ** 2, axis=-1)
    return jnp.sum(batch["mask"] * per_example) / jnp.sum(batch["mask"])


def mlp_params(seed=0):
    """float64 leaves (call under ``jax.enable_x64``); numpy draws keep test set-up cheap."""
    rng = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(rng.normal(size=(4, 6)) * 0.7),
        "b1": jnp.zeros(6, jnp.float64),
        "w2": jnp.asarray(rng.normal(size=(6, 2)) * 0.7),
        "b2": jnp.asarray(rng.normal(size=2) * 0.1),
    }


def uneven_batches(seed=1, sizes=(5, 7), padded=(8, 3)):
    """Batches of unequal sizes and a last one padded to ``padded[0]`` with ``padded[1]`` real rows.

    Returns the batches and the concatenated real data (mask all ones).
    """
    rng = np.random.default_rng(seed)
    total = sum(sizes) + padded[0]
    x, y = rng.normal(size=(total, 4)), rng.normal(size=(total, 2))
    batches, start = [], 0
    for size in (*sizes, padded[0]):
        mask = np.ones(size)
        if size == padded[0]:
            mask[padded[1] :] = 0.0
        batch = {"x": x[start : start + size], "y": y[start : start + size], "mask": mask}
        batches.append(jax.tree.map(jnp.asarray, batch))
        start += size
    real = sum(sizes) + padded[1]
    full = {"x": x[:real], "y": y[:real], "mask": np.ones(real)}
    return batches, jax.tree.map(jnp.asarray, full)
