"""Gradient accumulation with GNP semantics, and bfloat16 compute with float32 parameters."""

import json

import jax
import numpy as np
import optax
import pytest
import tiny_models  # noqa: F401  (registers TinyMLP)
from test_train import tiny_config

from gnp import models
from gnp.data import build_input_pipeline
from gnp.gr_schedule import GRSchedule
from gnp.options import GNPOptions
from gnp.train.distributed import replicate, shard_batch
from gnp.train.loop import train_and_evaluate
from gnp.train.objective import LossConfig
from gnp.train.state import create_train_state
from gnp.train.steps import make_train_step


def step_with(accumulation_steps, *, synced, method="finite_difference"):
    model = models.get_model("TinyMLP", num_classes=10)
    optimizer = optax.sgd(0.5, momentum=0.9)
    state, _ = create_train_state(model, lambda p: optimizer, (8, 8, 1), init_seed=0, seed=0)
    batch = next(build_input_pipeline(tiny_config(batch_size=64)).train_iterator())
    mesh = jax.make_mesh((4,), ("data",))
    step = make_train_step(
        model=model,
        optimizer=optimizer,
        schedule=optax.constant_schedule(0.5),
        mesh=mesh,
        loss_config=LossConfig(l2_regularization=1e-3),
        gr=GRSchedule(r=0.1, alpha=0.8),
        gnp_options=GNPOptions(axis_name="data" if synced else None, method=method),
        kind="gnp",
        accumulation_steps=accumulation_steps,
    )
    batch = shard_batch(batch, mesh)
    new_state, metrics = step(replicate(state, mesh), batch["image"], batch["label"])
    return jax.device_get(new_state.params), jax.device_get(metrics)


@pytest.mark.parametrize("synced", [True, False])
def test_four_micro_batches_equal_one_batch(synced):
    whole_params, whole_metrics = step_with(1, synced=synced)
    micro_params, micro_metrics = step_with(4, synced=synced)
    for a, b in zip(jax.tree.leaves(micro_params), jax.tree.leaves(whole_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for key in ("train_loss", "gradient_norm", "update_norm"):
        assert micro_metrics[key] == pytest.approx(whole_metrics[key], rel=1e-5)


def test_exact_method_accumulates_too():
    whole_params, _ = step_with(1, synced=True, method="exact")
    micro_params, _ = step_with(2, synced=True, method="exact")
    for a, b in zip(jax.tree.leaves(micro_params), jax.tree.leaves(whole_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow  # a BatchNorm model's whole training run: about 12 s
def test_batchnorm_model_trains_with_accumulation(tmp_path):
    train_and_evaluate(tiny_config(grad_accum_steps=2), str(tmp_path))
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]


def test_bfloat16_compute_trains_with_float32_params(tmp_path):
    record = train_and_evaluate(
        tiny_config(**{"model.dtype": "bfloat16", "total_epochs": 4}), str(tmp_path)
    )
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert all(np.isfinite(m["train_loss"]) and np.isfinite(m["gradient_norm"]) for m in lines)
    assert lines[-1]["train_loss"] < lines[0]["train_loss"] - 0.3
    assert record["test_error_rate"] < 0.5
    from gnp.train.checkpoint import Checkpoints

    state, _ = Checkpoints(str(tmp_path / "checkpoints")).load_latest()
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(state["params"]))


def test_accumulation_that_does_not_divide_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="grad_accum_steps 3"):
        train_and_evaluate(tiny_config(grad_accum_steps=3), str(tmp_path))
