"""Data parallelism on 4 CPU devices (and 2 processes) against 1 device with the whole batch;
synchronized BatchNorm (``model.sync_batch_norm``) among them."""

import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import optax
import portpicker
import pytest
import tiny_models  # noqa: F401  (registers TinyMLP)
from test_train import tiny_config

import gnp
from gnp import models
from gnp.data import build_input_pipeline
from gnp.gr_schedule import GRSchedule
from gnp.options import GNPOptions
from gnp.train import build
from gnp.train.distributed import replicate, shard_batch
from gnp.train.objective import LossConfig
from gnp.train.state import create_train_state
from gnp.train.steps import make_train_step

pytestmark = pytest.mark.compile_bound  # conftest: its compiles skip XLA's expensive passes

HERE = os.path.dirname(__file__)
LR = 0.5


# A SmallCNN narrow enough to compile in a moment: two BatchNorm layers.
BATCH_NORM_MODEL = {"name": "SmallCNN", "width": 8}


def build_step(mesh, *, synced, model=None, sync_batch_norm=False, accumulation_steps=1):
    return make_train_step(
        model=model or models.get_model("TinyMLP", num_classes=10),
        optimizer=optax.sgd(LR),
        schedule=optax.constant_schedule(LR),
        mesh=mesh,
        loss_config=LossConfig(),
        gr=GRSchedule(r=0.1, alpha=0.8),
        gnp_options=GNPOptions(axis_name="data" if synced else None),
        kind="gnp",
        sync_batch_norm=sync_batch_norm,
        accumulation_steps=accumulation_steps,
    )


def one_step(mesh, state, batch, *, synced, **step_options):
    step = build_step(mesh, synced=synced, **step_options)
    batch = shard_batch(batch, mesh)
    new_state, metrics = step(replicate(state, mesh), batch["image"], batch["label"])
    return jax.device_get(new_state), jax.device_get(metrics)


def setup(name="TinyMLP", **fields):
    model = models.get_model(name, num_classes=10, **fields)
    state, _ = create_train_state(model, lambda p: optax.sgd(LR), (8, 8, 1), init_seed=0, seed=0)
    batch = next(build_input_pipeline(tiny_config(batch_size=64)).train_iterator())
    return model, jax.device_get(state), batch


def max_difference(a, b):
    return max(
        np.max(np.abs(x - y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def meshes():
    return jax.make_mesh((4,), ("data",)), jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])


def test_synced_step_on_four_devices_equals_one_device_with_the_whole_batch():
    _, state, batch = setup()
    four, one = meshes()
    state4, metrics4 = one_step(four, state, batch, synced=True)
    state1, metrics1 = one_step(one, state, batch, synced=True)
    for a, b in zip(jax.tree.leaves(state4.params), jax.tree.leaves(state1.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    assert metrics4["train_loss"] == pytest.approx(metrics1["train_loss"], rel=1e-5)


def test_per_device_step_is_the_mean_of_four_shard_gradients():
    model, state, batch = setup()
    four, _ = meshes()
    params4 = one_step(four, state, batch, synced=False)[0].params

    def loss(params, images, labels):
        logits = model.apply({"params": params}, images)
        return optax.softmax_cross_entropy(logits, labels).mean()

    grad_fn = gnp.value_and_grad(loss, r=0.1, alpha=0.8)
    shards = [
        grad_fn(
            state.params, batch["image"][16 * i : 16 * i + 16], batch["label"][16 * i : 16 * i + 16]
        )[1]
        for i in range(4)
    ]
    mean = jax.tree.map(lambda *g: sum(g) / 4, *shards)
    expected = jax.tree.map(lambda p, g: p - LR * g, state.params, mean)
    for a, b in zip(jax.tree.leaves(params4), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    # and differs from the synced step: m-sharpness is a different method
    params_synced = one_step(four, state, batch, synced=True)[0].params
    assert max_difference(params4, params_synced) > 1e-6


def test_synced_batch_norm_on_four_devices_equals_one_device_with_the_whole_batch():
    model, state, batch = setup(**BATCH_NORM_MODEL)
    four, one = meshes()
    options = dict(synced=True, model=model, sync_batch_norm=True)
    state4, metrics4 = one_step(four, state, batch, **options)
    state1, metrics1 = one_step(one, state, batch, **options)
    assert max_difference(state.batch_stats, state1.batch_stats) > 1e-3  # the statistics moved
    for a, b in zip(jax.tree.leaves(state4), jax.tree.leaves(state1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # params, batch_stats, opt_state
    assert metrics4["train_loss"] == pytest.approx(metrics1["train_loss"], rel=1e-5)
    # Each device's own statistics (the released behaviour) give another step: the test can fail.
    per_device, _ = one_step(four, state, batch, synced=True, model=model)
    assert max_difference(per_device.params, state1.params) > 1e-4
    assert max_difference(per_device.batch_stats, state1.batch_stats) > 1e-4


def test_synced_batch_norm_with_accumulation_normalizes_each_global_micro_batch():
    """With 2 micro-batches, micro-batch i is the i-th half of every device's rows together: one
    device fed those rows in that order (its micro-batch i, the same rows) takes the same step."""
    model, state, batch = setup(**BATCH_NORM_MODEL)
    four, one = meshes()
    options = dict(synced=True, model=model, sync_batch_norm=True, accumulation_steps=2)
    state4, metrics4 = one_step(four, state, batch, **options)
    # rows of device d: 16d..16d+15; its micro-batch i: 16d + 8i .. 16d + 8i + 7
    order = np.array([16 * d + 8 * i + j for i in range(2) for d in range(4) for j in range(8)])
    reordered = {key: value[order] for key, value in batch.items()}
    state1, metrics1 = one_step(one, state, reordered, **options)
    for a, b in zip(jax.tree.leaves(state4), jax.tree.leaves(state1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # params, batch_stats, opt_state
    assert metrics4["train_loss"] == pytest.approx(metrics1["train_loss"], rel=1e-5)
    # In the batch's own order the one device's micro-batches hold other rows: another step.
    unordered, _ = one_step(one, state, batch, **options)
    assert max_difference(unordered.params, state1.params) > 1e-4


class UnsyncableBatchNorm(nn.Module):
    """A user's model whose BatchNorm is not built by ``layers.batch_norm``."""

    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.BatchNorm(use_running_average=not train)(x.reshape(x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)


def test_sync_batch_norm_refuses_a_batch_norm_it_cannot_reach():
    config = tiny_config(**{"model.sync_batch_norm": True})
    with pytest.raises(ValueError, match="no field batch_norm_axis_name"):
        build.train_state(config, UnsyncableBatchNorm(10), (8, 8, 1), steps_per_epoch=10)
    build.train_state(config, models.get_model("TinyMLP", num_classes=10), (8, 8, 1), 10)


@pytest.mark.parametrize(
    "synced,sync_batch_norm,expected", [(False, False, 1), (True, False, 2), (False, True, 9)]
)
def test_all_reduces_per_step(synced, sync_batch_norm, expected):
    """Per-device perturbations: the first pass communicates nothing; one all-reduce of the
    combined gradient (with BN statistics and metrics) per step. Synced: one more, of g1.
    Synchronized BatchNorm: one per layer in each forward and each backward pass, so 4 per
    layer on a GNP step (here 2 layers)."""
    model, state, batch = setup(**BATCH_NORM_MODEL) if sync_batch_norm else setup()
    mesh, _ = meshes()
    batch = shard_batch(batch, mesh)
    compiled = (
        build_step(mesh, synced=synced, model=model, sync_batch_norm=sync_batch_norm)
        .lower(replicate(state, mesh), batch["image"], batch["label"])
        .compile()
    )
    lines = compiled.as_text().splitlines()
    all_reduces = [line for line in lines if re.search(r"= .*\ball-reduce(-start)?\(", line)]
    assert len(all_reduces) == expected, all_reduces


RUN = {
    "model.model_name": "TinyMLP",
    "gnp.sync_perturbations": True,
    "total_epochs": 2,
    "batch_size": 64,
    "evaluate_every_n_epochs": 2,
    "save_ckpt_every_n_epochs": 2,
}
# One epoch of a BatchNorm model with its statistics and perturbations over the global batch.
SYNC_BATCH_NORM_RUN = RUN | {
    "model.model_name": "SmallCNN",
    "model.sync_batch_norm": True,
    "total_epochs": 1,
    "evaluate_every_n_epochs": 1,
    "save_ckpt_every_n_epochs": 1,
}


def run(devices, runs, *distributed):
    """A process training ``runs`` (``(working_dir, overrides)`` pairs) one after another."""
    command = [
        sys.executable,
        os.path.join(HERE, "run_training.py"),
        str(devices),
        json.dumps([(str(working_dir), overrides) for working_dir, overrides in runs]),
        *map(str, distributed),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]


def metrics(working_dir):
    with open(os.path.join(working_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def assert_same_metrics(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for key in ("train_loss", "train_error_rate", "gradient_norm", "test_loss"):
            if key in x:
                assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_training_on_four_devices_matches_one_device(tmp_path):
    finish(run(1, [(tmp_path / "one", RUN)]))
    from gnp.train.loop import train_and_evaluate

    train_and_evaluate(tiny_config(**RUN), str(tmp_path / "four"))
    assert_same_metrics(metrics(tmp_path / "four"), metrics(tmp_path / "one"))


@pytest.mark.slow
def test_two_processes_with_synced_batch_norm_match_one_device(tmp_path):
    """2 processes × 2 devices, BatchNorm statistics and perturbations synced across both hosts,
    with the parameters replicated and then sharded over the 4 devices of both hosts (saved,
    verified and evaluated): each is the run of one device with the whole batch (test_loss:
    the running statistics too)."""
    port = portpicker.pick_unused_port()
    runs = [
        (tmp_path / "two", SYNC_BATCH_NORM_RUN),
        (tmp_path / "two_sharded", SYNC_BATCH_NORM_RUN | {"shard_params": True}),
    ]
    two = [run(2, runs, pid, 2, port) for pid in (0, 1)]
    for worker in two:
        finish(worker)
    finish(run(1, [(tmp_path / "one", SYNC_BATCH_NORM_RUN)]))
    assert_same_metrics(metrics(tmp_path / "two"), metrics(tmp_path / "one"))
    assert_same_metrics(metrics(tmp_path / "two_sharded"), metrics(tmp_path / "one"))
