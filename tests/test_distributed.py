"""Data parallelism on 4 CPU devices (and 2 processes) against 1 device with the whole batch."""

import json
import os
import re
import subprocess
import sys

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
from gnp.train.gr_schedule import GRSchedule
from gnp.train.steps import (
    GNPOptions,
    LossConfig,
    create_train_state,
    make_train_step,
    replicate,
    shard_batch,
)

HERE = os.path.dirname(__file__)
LR = 0.5


def build_step(mesh, *, synced):
    model = models.get_model("TinyMLP", num_classes=10)
    return make_train_step(
        model=model,
        optimizer=optax.sgd(LR),
        schedule=optax.constant_schedule(LR),
        mesh=mesh,
        loss_config=LossConfig(),
        gr=GRSchedule(r=0.1, alpha=0.8),
        gnp_options=GNPOptions(sync_perturbations=synced),
        penalized=True,
    )


def one_step(mesh, state, batch, *, synced):
    step = build_step(mesh, synced=synced)
    batch = shard_batch(batch, mesh)
    new_state, metrics = step(replicate(state, mesh), batch["image"], batch["label"])
    return jax.device_get(new_state.params), jax.device_get(metrics)


def setup():
    model = models.get_model("TinyMLP", num_classes=10)
    state, _ = create_train_state(model, lambda p: optax.sgd(LR), (8, 8, 1), init_seed=0, seed=0)
    batch = next(build_input_pipeline(tiny_config(batch_size=64)).train_iterator())
    return model, jax.device_get(state), batch


def meshes():
    return jax.make_mesh((4,), ("data",)), jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])


def test_synced_step_on_four_devices_equals_one_device_with_the_whole_batch():
    _, state, batch = setup()
    four, one = meshes()
    params4, metrics4 = one_step(four, state, batch, synced=True)
    params1, metrics1 = one_step(one, state, batch, synced=True)
    for a, b in zip(jax.tree.leaves(params4), jax.tree.leaves(params1), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    assert metrics4["train_loss"] == pytest.approx(metrics1["train_loss"], rel=1e-5)


def test_per_device_step_is_the_mean_of_four_shard_gradients():
    model, state, batch = setup()
    four, _ = meshes()
    params4, _ = one_step(four, state, batch, synced=False)

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
    params_synced, _ = one_step(four, state, batch, synced=True)
    assert (
        max(
            np.max(np.abs(a - b))
            for a, b in zip(jax.tree.leaves(params4), jax.tree.leaves(params_synced), strict=True)
        )
        > 1e-6
    )


@pytest.mark.parametrize("synced,expected", [(False, 1), (True, 2)])
def test_all_reduces_per_step(synced, expected):
    """Per-device perturbations: the first pass communicates nothing; one all-reduce of the
    combined gradient (with BN statistics and metrics) per step. Synced: one more, of g1."""
    _, state, batch = setup()
    mesh, _ = meshes()
    batch = shard_batch(batch, mesh)
    compiled = (
        build_step(mesh, synced=synced)
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


def run(devices, working_dir, *distributed):
    command = [
        sys.executable,
        os.path.join(HERE, "run_training.py"),
        str(devices),
        str(working_dir),
        json.dumps(RUN),
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


def test_training_on_four_devices_matches_one_device(tmp_path):
    one = run(1, tmp_path / "one")
    finish(one)
    from gnp.train.loop import train_and_evaluate

    train_and_evaluate(tiny_config(**RUN), str(tmp_path / "four"))
    assert_same_metrics(metrics(tmp_path / "four"), metrics(tmp_path / "one"))


def test_two_processes_match_one_process(tmp_path):
    port = portpicker.pick_unused_port()
    workers = [run(2, tmp_path / "two", pid, 2, port) for pid in range(2)]
    for worker in workers:
        finish(worker)
    finish(run(4, tmp_path / "single"))
    assert_same_metrics(metrics(tmp_path / "two"), metrics(tmp_path / "single"))
