"""``train_and_evaluate(config, working_dir)``: the whole training run, read top to bottom.

Sections: set-up (mesh, data, model, optimizer, state), resume, the epoch loop
(train steps, metrics, evaluation, checkpoints), the end (final checkpoint, plot).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from gnp import models
from gnp.data import InputPipeline, build_input_pipeline
from gnp.optim import build_optimizer, learning_rate_schedule
from gnp.train.checkpoint import Checkpoints, NonFiniteError, Preempted, PreemptionGuard
from gnp.train.config import validate_config
from gnp.train.gr_schedule import GRSchedule
from gnp.train.metrics import MetricWriter, plot_curves
from gnp.train.steps import (
    AXIS,
    GNPOptions,
    LossConfig,
    TrainState,
    create_train_state,
    make_eval_step,
    make_train_step,
    replicate,
    shard_batch,
)

log = logging.getLogger("gnp")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(config: Any, num_classes: int) -> Any:
    """The configured model; ``model.model_params`` override its fields (e.g. a smaller ViT)."""
    return models.get_model(
        config.model.model_name,
        num_classes=num_classes,
        dtype=DTYPES[config.model.dtype],
        **config.model.get("model_params", {}),
    )


def evaluate(eval_step: Any, state: TrainState, pipeline: InputPipeline, mesh: Any, top5: bool):
    """Loss and error rates over every test sample exactly once (padding masked out)."""
    totals: dict[str, float] = {}
    for batch in pipeline.eval_batches():
        batch = shard_batch(batch, mesh)
        sums = jax.device_get(eval_step(state, batch["image"], batch["label"], batch["mask"]))
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    count = totals["count"]
    result = {
        "test_loss": totals["loss"] / count,
        "test_error_rate": totals["errors"] / count,
        "test_samples": int(count),
    }
    if top5:
        result["test_top5_error_rate"] = totals["top5_errors"] / count
    return result


# A NaN input can leave the loss finite (ReLU maps NaN to 0) while the gradient is not.
GUARDED = ("train_loss", "gradient_norm", "update_norm")


def _first_non_finite(step_metrics: list[dict[str, Any]]) -> tuple[int, str, float] | None:
    """(index, metric, value) of the first step whose loss, gradient or update is not finite."""
    for index, metrics in enumerate(step_metrics):
        for key in GUARDED:
            if not math.isfinite(float(metrics[key])):
                return index, key, float(metrics[key])
    return None


def train_and_evaluate(
    config: Any, working_dir: str, on_step: Callable[[int, TrainState], None] | None = None
) -> dict[str, Any]:
    """Train (or resume) the run in ``working_dir``; returns the last epoch's metrics.

    ``on_step(step, state)`` is called after each optimizer step with the new state, to
    observe what the metrics do not hold (the study reads Adam's second moment from it).
    """
    config = validate_config(config)
    os.makedirs(working_dir, exist_ok=True)
    is_chief = jax.process_index() == 0

    # Mesh and data.
    mesh = jax.make_mesh((jax.device_count(),), (AXIS,))
    pipeline = build_input_pipeline(
        config, process_index=jax.process_index(), process_count=jax.process_count()
    )
    info, steps_per_epoch = pipeline.info, pipeline.steps_per_epoch

    # Model, optimizer, state.
    model = build_model(config, info.num_classes)
    schedule = learning_rate_schedule(config, steps_per_epoch)
    state, optimizer = create_train_state(
        model,
        lambda params: build_optimizer(config, schedule, params),
        info.image_shape,
        init_seed=config.init_seeds,
        seed=config.seeds,
    )
    state = replicate(state, mesh)
    train_iterator = pipeline.train_iterator()

    # Resume.
    checkpoints = Checkpoints(os.path.join(working_dir, "checkpoints"), config.keep_checkpoints)
    progress: dict[str, Any] = {"epoch": 0, "finished": False}
    if checkpoints.latest_step() is not None:
        state, progress = checkpoints.restore(state, train_iterator)
        if progress.get("finished"):
            print(
                f"{working_dir}: this run finished already (epoch {progress['epoch']}); "
                "nothing to do. Use a new --working_dir to train again."
            )
            checkpoints.close()
            return progress.get("final_metrics", {})
        print(f"resuming from epoch {progress['epoch']} (step {int(state.step)})")
    if is_chief:
        with open(os.path.join(working_dir, "config.json"), "w") as f:
            json.dump(config.to_dict(), f, indent=2, default=str)

    # Steps: a GNP step and a plain step, each compiled once on first use.
    gr = GRSchedule(
        r=config.gnp.r,
        alpha=config.gnp.alpha,
        strategy=config.gr_warmup_strategy,
        warmup_steps=int(config.warmup_epochs * steps_per_epoch),
        hybrid_p=config.hybrid_config.p if config.use_hybrid_training else None,
        seed=config.seeds,
    )
    common = dict(
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        mesh=mesh,
        loss_config=LossConfig(
            label_smoothing=config.label_smoothing,
            l2_regularization=config.l2_regularization,
            no_weight_decay_on_bn=config.no_weight_decay_on_bn,
        ),
        gr=gr,
        accumulation_steps=config.grad_accum_steps,
        gnp_options=GNPOptions(
            method=config.gnp.method,
            perturbation=config.gnp.perturbation,
            eta=config.gnp.eta,
            normalize_reference=config.gnp.norm_perturbations,
            sync_perturbations=config.gnp.sync_perturbations,
        ),
    )
    train_steps = {
        penalized: make_train_step(**common, penalized=penalized) for penalized in (True, False)
    }
    eval_step = make_eval_step(model, mesh)
    writer = MetricWriter(working_dir, enabled=is_chief, resume_epoch=progress["epoch"])

    record: dict[str, Any] = {}
    resume_step = int(state.step)  # past an epoch's start when the run was preempted mid-epoch
    preemption = PreemptionGuard()
    preemption.install()
    try:
        for epoch in range(progress["epoch"] + 1, config.total_epochs + 1):
            first_step = (epoch - 1) * steps_per_epoch
            step_metrics, gnp_steps = [], 0
            started = time.perf_counter()
            bar = tqdm(
                range(max(resume_step - first_step, 0), steps_per_epoch),
                desc=f"epoch {epoch}/{config.total_epochs}",
                disable=not is_chief,
                leave=False,
                dynamic_ncols=True,
            )
            for i in bar:
                step = first_step + i
                if preemption.reached(step, checkpoints):
                    checkpoints.save(state, train_iterator, {"epoch": epoch - 1, "finished": False})
                    raise Preempted(
                        f"stopped at step {step} (epoch {epoch}) on request and saved "
                        f"{checkpoints.describe_latest()}; run the same command to resume"
                    )
                penalized = gr.is_gnp_step(step)
                gnp_steps += penalized
                batch = shard_batch(next(train_iterator), mesh)
                state, metrics = train_steps[penalized](state, batch["image"], batch["label"])
                if on_step is not None:
                    on_step(step, state)
                step_metrics.append(metrics)
                if (i + 1) % config.log_every_n_steps == 0:
                    latest = jax.device_get(metrics)
                    if _first_non_finite([latest]) is not None:
                        break
                    images_per_second = (
                        (i + 1) * config.batch_size / (time.perf_counter() - started)
                    )
                    bar.set_postfix(
                        loss=f"{latest['train_loss']:.4f}",
                        err=f"{latest['train_error_rate']:.3f}",
                        img_s=f"{images_per_second:.0f}",
                    )
            bar.close()
            fetched = jax.device_get(step_metrics)
            seconds = time.perf_counter() - started
            bad = _first_non_finite(fetched)
            if bad is not None:
                index, key, value = bad
                raise NonFiniteError(
                    f"{key} became {value} at step {first_step + index} (epoch {epoch}); nothing "
                    f"after it was saved. The last good checkpoint is "
                    f"{checkpoints.describe_latest()}. Try a lower base_lr, gradient_clipping > 0, "
                    "a smaller gnp.r, or check the input data for NaN."
                )
            r_used, alpha_used = gr.logged_values(first_step + steps_per_epoch - 1)
            record = {
                "epoch": epoch,
                "step": int(first_step + steps_per_epoch),
                **{
                    k: float(np.mean([m[k] for m in fetched]))
                    for k in ("train_loss", "train_error_rate", "gradient_norm", "update_norm")
                },
                "learning_rate": float(fetched[-1]["learning_rate"]),
                "r": r_used,
                "alpha": alpha_used,
                # Over this process's steps of the epoch: all of them unless it resumed mid-epoch.
                "gnp_step_fraction": gnp_steps / len(fetched),
                "images_per_second": len(fetched) * config.batch_size / seconds,
            }
            if epoch % config.evaluate_every_n_epochs == 0 or epoch == config.total_epochs:
                record |= evaluate(
                    eval_step, state, pipeline, mesh, config.compute_top_5_error_rate
                )
            writer.write(record)
            print(_format_record(record))
            finished = epoch == config.total_epochs
            if epoch % config.save_ckpt_every_n_epochs == 0 or finished:
                checkpoints.save(
                    state,
                    train_iterator,
                    {"epoch": epoch, "finished": finished, "final_metrics": record},
                )
    finally:
        preemption.restore()
        writer.close()
        checkpoints.close()

    if is_chief:
        plot_curves(writer.path, os.path.join(working_dir, "curves.png"))
    return record


def _format_record(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']:>3}"]
    for key in (
        "train_loss",
        "train_error_rate",
        "test_loss",
        "test_error_rate",
        "gradient_norm",
        "learning_rate",
        "images_per_second",
    ):
        if key in record:
            parts.append(f"{key}={record[key]:.4g}")
    return "  ".join(parts)
