"""The norms a train step logs: one meaning on every kind of step and device count.

Each is checked against a float64 computation of the same definition on the whole
batch (``docs/training.md``, "Metrics"):
  gradient_norm        ‖ḡ‖ of the gradient handed to the optimizer, after clipping
  clean_gradient_norm  ‖∇L(θ)‖ of the whole global batch at the clean point
  update_norm          ‖optimizer update‖ (here SGD: lr·‖ḡ‖)
  param_norm           ‖θ‖ after the update
and on a GNP step the sharpness diagnostics of the whole global batch, each device i perturbing
θ by its own ε_i (or, synced, all by the whole batch's ε):
  sharpness                mean_i L_i(θ + ε_i) − L(θ)
  gradient_cosine          cos(g1, g2), g1 = ∇L(θ), g2 = mean_i ∇L_i(θ + ε_i)
  perturbed_gradient_norm  ‖g2‖
written out here with ε = r·g/‖g‖ and dot products, not through gnp's own functions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tiny_models  # noqa: F401  (registers TinyMLP)

import gnp
from gnp import models
from gnp.gr_schedule import GRSchedule
from gnp.options import GNPOptions
from gnp.train.distributed import replicate, shard_batch
from gnp.train.objective import LossConfig
from gnp.train.state import create_train_state
from gnp.train.steps import make_train_step

pytestmark = pytest.mark.compile_bound  # conftest: its compiles skip XLA's expensive passes

LR, R, ALPHA = 0.5, 0.1, 0.8
SHARDS = 4


def problem():
    model = models.get_model("TinyMLP", num_classes=10)
    state, _ = create_train_state(model, lambda p: optax.sgd(LR), (8, 8, 1), init_seed=0, seed=0)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 32)]
    return model, jax.device_get(state), {"image": images, "label": labels}


def logged(model, state, batch, *, devices, penalized, synced, clip, accumulation=1):
    mesh = jax.make_mesh((devices,), ("data",), devices=jax.devices()[:devices])
    optimizer = optax.sgd(LR)
    if clip:
        optimizer = optax.chain(optax.clip_by_global_norm(clip), optimizer)
    step = make_train_step(
        model=model,
        optimizer=optimizer,
        schedule=optax.constant_schedule(LR),
        mesh=mesh,
        loss_config=LossConfig(),
        gr=GRSchedule(r=R, alpha=ALPHA),
        gnp_options=GNPOptions(axis_name="data" if synced else None),
        kind="gnp" if penalized else "plain",
        gradient_clipping=clip,
        accumulation_steps=accumulation,
    )
    state = state.replace(opt_state=optimizer.init(state.params))
    batch = shard_batch(batch, mesh)
    return jax.device_get(step(replicate(state, mesh), batch["image"], batch["label"])[1])


def expected(model, state, batch, *, devices, penalized, synced, clip):
    """The same four norms from float64 whole-batch and per-shard gradients."""
    with jax.enable_x64(True):
        params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), state.params)
        images, labels = (jnp.asarray(batch[k], jnp.float64) for k in ("image", "label"))

        def loss(p, x, y):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy(logits, y).mean()

        def norm(tree):
            return float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree))))

        clean = jax.grad(loss)(params, images, labels)
        if not penalized:
            combined = clean
        elif synced:
            combined = gnp.value_and_grad(loss, r=R, alpha=ALPHA)(params, images, labels)[1]
        else:
            size = len(images) // devices
            shards = [
                gnp.value_and_grad(loss, r=R, alpha=ALPHA)(
                    params, images[i * size : (i + 1) * size], labels[i * size : (i + 1) * size]
                )[1]
                for i in range(devices)
            ]
            combined = jax.tree.map(lambda *g: sum(g) / devices, *shards)
        handed = norm(combined) if not clip else min(norm(combined), clip)
        scale = handed / norm(combined)
        new_params = jax.tree.map(lambda p, g: p - LR * scale * g, params, combined)
        norms = {
            "gradient_norm": handed,
            "clean_gradient_norm": norm(clean),
            "update_norm": LR * handed,
            "param_norm": norm(new_params),
        }
        if not penalized:
            return norms
        # Synced, every device perturbs by the whole batch's ε, and its mean g2 is the whole
        # batch's at θ + ε: one "shard". Per device, each shard by its own.
        perturbed_losses, perturbed_grads = [], []
        for rows in np.split(np.arange(len(images)), 1 if synced else devices):
            x, y = images[rows], labels[rows]
            g = flat(jax.grad(loss)(params, x, y))
            point = jax.tree.map(jnp.add, params, unflat(R * g / np.linalg.norm(g), params))
            perturbed_losses.append(float(loss(point, x, y)))
            perturbed_grads.append(flat(jax.grad(loss)(point, x, y)))
        g1, g2 = flat(clean), np.mean(perturbed_grads, axis=0)
        return norms | {
            "sharpness": np.mean(perturbed_losses) - float(loss(params, images, labels)),
            "gradient_cosine": g1 @ g2 / (np.linalg.norm(g1) * np.linalg.norm(g2)),
            "perturbed_gradient_norm": np.linalg.norm(g2),
        }


def flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def unflat(vector, like):
    """``vector`` in the shapes of the tree ``like`` (the inverse of ``flat``)."""
    leaves = jax.tree.leaves(like)
    pieces = np.split(vector, np.cumsum([x.size for x in leaves])[:-1])
    shaped = [piece.reshape(x.shape) for piece, x in zip(pieces, leaves, strict=True)]
    return jax.tree.unflatten(jax.tree.structure(like), shaped)


KINDS = {
    "plain": dict(penalized=False, synced=False),
    "gnp_per_device": dict(penalized=True, synced=False),
    "gnp_synced": dict(penalized=True, synced=True),
}


@pytest.fixture(scope="module")
def setup():
    return problem()


@pytest.mark.parametrize("devices", [1, SHARDS])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_each_norm_has_its_one_meaning(setup, kind, devices, clip):
    model, state, batch = setup
    options = dict(devices=devices, clip=clip, **KINDS[kind])
    got = logged(model, state, batch, **options)
    want = expected(model, state, batch, **options)
    assert set(want) <= set(got) and ("sharpness" in got) == (kind != "plain")
    for key, value in want.items():
        assert float(got[key]) == pytest.approx(value, rel=2e-5), key
    if clip:  # the clip really acts on this batch, so the two gradient norms differ
        assert float(got["gradient_norm"]) == pytest.approx(clip, rel=1e-6)
        assert float(got["clean_gradient_norm"]) > 2 * clip


def test_accumulated_steps_log_the_whole_batch_diagnostics(setup):
    """Two micro-batches per device: ε from each device's accumulated gradient, the losses and
    g2 means over the micro-batches: the same numbers as one pass over the batch."""
    model, state, batch = setup
    options = dict(devices=SHARDS, clip=0.0, **KINDS["gnp_per_device"])
    got = logged(model, state, batch, accumulation=2, **options)
    for key, value in expected(model, state, batch, **options).items():
        assert float(got[key]) == pytest.approx(value, rel=2e-5), key
