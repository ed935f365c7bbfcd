"""Sharded parameters and optimizer state (``shard_params``) on 4 CPU devices: the same step as
replicated, 1/n of the state's memory per device, no whole gradient on any device, and
checkpoints that move between the two layouts."""

import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tiny_models  # noqa: F401  (registers TinyMLP)
from test_distributed import BATCH_NORM_MODEL, max_difference
from test_train import tiny_config

from gnp import models
from gnp.data import build_input_pipeline
from gnp.gr_schedule import GRSchedule
from gnp.main import main
from gnp.options import GNPOptions
from gnp.train import distributed
from gnp.train.checkpoint import Checkpoints
from gnp.train.distributed import shard_batch
from gnp.train.loop import train_and_evaluate
from gnp.train.objective import LossConfig
from gnp.train.state import create_train_state
from gnp.train.steps import make_train_step

pytestmark = pytest.mark.compile_bound  # conftest: its compiles skip XLA's expensive passes


class WideMLP(nn.Module):
    """Most of its parameters in leaves that 4 devices divide; one replicated bias (10)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = jnp.tanh(nn.Dense(512)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes)(x)


def test_leaf_spec_shards_the_largest_dimension_the_devices_divide():
    P = jax.sharding.PartitionSpec
    assert distributed.leaf_spec((3, 3, 16, 64), 4) == P(None, None, None, "data")
    assert distributed.leaf_spec((64, 64), 4) == P("data", None)  # the first of equals
    assert distributed.leaf_spec((10,), 4) == P()  # 4 does not divide 10
    assert distributed.leaf_spec((2, 6), 4) == P()
    assert distributed.leaf_spec((), 4) == P()
    assert distributed.leaf_spec((64,), 1) == P()


def build(model, optimizer, mesh, specs, *, options, **step_options):
    return make_train_step(
        model=model,
        optimizer=optimizer,
        schedule=optax.constant_schedule(0.1),
        mesh=mesh,
        loss_config=LossConfig(l2_regularization=1e-3),
        gr=GRSchedule(r=0.1, alpha=0.8),
        gnp_options=GNPOptions(**options),
        kind="gnp",
        state_specs=specs,
        **step_options,
    )


def step_both_ways(model, optimizer, batch, *, options, reuse=False, **step_options):
    """One GNP step of the same state on 4 devices, replicated and sharded."""
    state, _ = create_train_state(
        model, lambda p: optimizer, (8, 8, 1), init_seed=0, seed=0, reuse=reuse
    )
    state = jax.device_get(state)  # host copies: the steps donate what they are given
    mesh = jax.make_mesh((4,), ("data",))
    batch = shard_batch(batch, mesh)
    results = []
    for specs in (None, distributed.state_specs(state, 4)):
        placed = distributed.place(state, mesh, specs)
        step = build(model, optimizer, mesh, specs, options=options, **step_options)
        new_state, metrics = step(placed, batch["image"], batch["label"])
        results.append((jax.device_get(new_state), jax.device_get(metrics)))
    return state, results


def tiny_batch():
    return next(build_input_pipeline(tiny_config(batch_size=64)).train_iterator())


CASES = {
    "per-device perturbations": ({"name": "TinyMLP"}, dict(axis_name=None), {}),
    "synced, clipped, synchronized BatchNorm": (
        BATCH_NORM_MODEL,
        dict(axis_name="data"),
        dict(gradient_clipping=0.1, sync_batch_norm=True),
    ),
    "synced ASAM, released mix, 2 micro-batches": (
        {"name": "TinyMLP"},
        dict(axis_name="data", perturbation="asam", normalize_reference=True),
        dict(accumulation_steps=2),
    ),
    "synced, exact Hessian-vector product": (
        {"name": "TinyMLP"},
        dict(axis_name="data", method="exact"),
        {},
    ),
    "synced, reused perturbed gradient (whole-tree path)": (
        {"name": "TinyMLP"},
        dict(axis_name="data", reuse_period=2),
        {},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_sharded_step_equals_the_replicated_step(case):
    (fields, options, step_options) = CASES[case]
    model = models.get_model(num_classes=10, **fields)
    optimizer = optax.sgd(0.1, momentum=0.9)
    if step_options.get("gradient_clipping"):
        optimizer = optax.chain(optax.clip_by_global_norm(0.1), optimizer)
    state, ((replicated, metrics_r), (sharded, metrics_s)) = step_both_ways(
        model,
        optimizer,
        tiny_batch(),
        options=options,
        reuse=options.get("reuse_period", 1) > 1,
        **step_options,
    )
    assert max_difference(state.params, replicated.params) > 1e-3  # the step moved them
    for a, b in zip(jax.tree.leaves(replicated), jax.tree.leaves(sharded), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # params, stats, opt state
    for key in ("train_loss", "gradient_norm", "clean_gradient_norm", "update_norm", "param_norm"):
        assert metrics_s[key] == pytest.approx(metrics_r[key], rel=1e-5), key
    if step_options.get("gradient_clipping"):
        assert metrics_s["gradient_norm"] == pytest.approx(0.1)  # the clip bound the step
        assert metrics_s["clean_gradient_norm"] > 0.2


def local_bytes(tree, device):
    return sum(
        shard.data.nbytes
        for leaf in jax.tree.leaves(tree)
        for shard in leaf.addressable_shards
        if shard.device == device
    )


def test_state_memory_per_device_falls_with_the_device_count():
    """XLA's compiled account of a step's arguments: the state's share of one device falls as
    1/n (Adam: parameters and two moments), the rest is that device's rows of the batch."""
    model, optimizer, batch = WideMLP(), optax.adamw(1e-3), tiny_batch()
    state, _ = create_train_state(model, lambda p: optimizer, (8, 8, 1), init_seed=0, seed=0)
    whole = sum(x.nbytes for x in jax.tree.leaves(state))
    batch_bytes = sum(x.nbytes for x in batch.values())
    for n in (1, 2, 4):
        mesh = jax.make_mesh((n,), ("data",), devices=jax.devices()[:n])
        specs = distributed.state_specs(state, n)
        placed = distributed.place(state, mesh, specs)
        sharded_batch = shard_batch(batch, mesh)
        step = build(model, optimizer, mesh, specs, options=dict(axis_name="data"))
        memory = (
            step.lower(placed, sharded_batch["image"], sharded_batch["label"])
            .compile()
            .memory_analysis()
        )
        stored = local_bytes(placed, jax.devices()[0])
        assert memory.argument_size_in_bytes == stored + batch_bytes // n
        assert stored == pytest.approx(whole / n, rel=0.01)  # 1/n, up to the replicated bias


def test_dry_run_states_each_devices_share_of_the_state():
    """``--dry_run``'s line, from shapes only, against the bytes a placed state has on device 0."""
    model, optimizer = WideMLP(num_classes=10), optax.adamw(1e-3)
    state, _ = create_train_state(model, lambda p: optimizer, (8, 8, 1), init_seed=0, seed=0)
    placed = distributed.place(
        state, jax.make_mesh((4,), ("data",)), distributed.state_specs(state, 4)
    )
    stored = local_bytes((placed.params, placed.opt_state), jax.devices()[0])
    whole = sum(x.nbytes for x in jax.tree.leaves((state.params, state.opt_state)))
    config = tiny_config(shard_params=True)
    line = main.describe_state_memory(config, state.params, state.opt_state, devices=4)
    assert line == (
        "parameters and optimizer state sharded over 4 devices (shard_params): "
        f"{stored / 2**20:,.1f} MiB of {whole / 2**20:,.1f} MiB on each device"
    )
    assert stored == pytest.approx(whole / 4, rel=0.01)


def collective_shapes(hlo, op):
    """The element counts of every array each ``op`` in the compiled program produces."""
    counts = []
    for line in hlo.splitlines():
        match = re.search(rf"= (.*?) {op}(-start)?\(", line)
        if match:
            for dims in re.findall(r"\[([\d,]*)\]", match.group(1)):
                counts.append(int(np.prod([int(d) for d in dims.split(",") if d])))
    return counts


@pytest.mark.parametrize("synced", [False, True])
def test_no_device_holds_the_averaged_gradient_whole(synced):
    """The gradient is reduce-scattered, never all-reduced: the only all-reduces carry scalars
    (norms, metrics) and the one leaf 4 devices do not divide. The parameters are gathered
    once per point: the clean one, and with synced perturbations the perturbed one (per device,
    each device perturbs its gathered copy)."""
    model, optimizer, batch = WideMLP(), optax.sgd(0.1, momentum=0.9), tiny_batch()
    state, _ = create_train_state(model, lambda p: optimizer, (8, 8, 1), init_seed=0, seed=0)
    mesh = jax.make_mesh((4,), ("data",))
    specs = distributed.state_specs(state, 4)
    step = build(model, optimizer, mesh, specs, options=dict(axis_name="data" if synced else None))
    sharded_batch = shard_batch(batch, mesh)
    hlo = (
        step.lower(
            distributed.place(state, mesh, specs), sharded_batch["image"], sharded_batch["label"]
        )
        .compile()
        .as_text()
    )
    leaves = zip(jax.tree.leaves(specs.params), jax.tree.leaves(state.params), strict=True)
    sharded = [x.size for spec, x in leaves if spec != jax.sharding.PartitionSpec()]
    assert sum(sharded) == sum(x.size for x in jax.tree.leaves(state.params)) - 10
    assert max(collective_shapes(hlo, "all-reduce")) <= 10
    assert collective_shapes(hlo, "reduce-scatter")  # the gradient's reduction
    assert sum(collective_shapes(hlo, "all-gather")) == (2 if synced else 1) * sum(sharded)


READ_ON_ONE_DEVICE = """
import sys
import jax
from gnp.train.checkpoint import Checkpoints, state_digest
state, meta = Checkpoints(sys.argv[1], read_only=True).load(int(sys.argv[2]))
print(jax.device_count(), state_digest(state) == meta["state_sha256"])
"""


@pytest.mark.slow
def test_a_run_resumes_sharded_from_a_replicated_checkpoint_and_back(tmp_path):
    """Epoch 1 replicated, 2 sharded, 3 replicated again: the metrics of one uninterrupted run
    (the checkpoint restores into either layout, and its SHA-256 verifies in both). The sharded
    checkpoint of 4 devices reads back whole in a process that has one (the analysis tools)."""
    run = {
        "model.model_name": "TinyMLP",  # BatchNorm and its statistics: the 2-process test
        "gnp.sync_perturbations": True,
        "batch_size": 128,
        "lr_schedule_type": "constant",  # extending total_epochs keeps the learning rate
        "warmup_epochs": 0,
        "gradient_clipping": 1.0,
        "opt.opt_type": "Adam",
        "base_lr": 0.01,
    }
    train_and_evaluate(tiny_config(**run, total_epochs=3), str(tmp_path / "whole"))
    for epochs, sharded in ((1, False), (2, True), (3, False)):
        config = tiny_config(**run, total_epochs=epochs, shard_params=sharded)
        train_and_evaluate(config, str(tmp_path / "moved"), allow_config_change=("total_epochs",))
    records = []
    for name in ("whole", "moved"):
        with open(os.path.join(tmp_path, name, "metrics.jsonl")) as f:
            records.append([json.loads(line) for line in f])
    assert len(records[1]) == 3
    for whole, moved in zip(*records, strict=True):
        for key in ("train_loss", "gradient_norm", "test_loss"):
            assert moved[key] == pytest.approx(whole[key], rel=1e-5), key
    directory = tmp_path / "moved" / "checkpoints"
    sharded_step = Checkpoints(str(directory), read_only=True).all_steps()[1]  # epoch 2's
    environment = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    result = subprocess.run(
        [sys.executable, "-c", READ_ON_ONE_DEVICE, str(directory), str(sharded_step)],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    )
    assert result.stdout.split() == ["1", "True"]
