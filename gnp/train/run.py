"""A training run read back from its directory: what the analysis tools and the study measure.

A run directory holds ``config.json`` and ``checkpoints/``; from them come the
config, the model, the latest params and BatchNorm statistics, the run's
batches without augmentation, and its training objective without randomness:
mean cross-entropy (with the run's label smoothing) plus the run's L2 term,
BatchNorm in inference mode (its running statistics), no dropout, no
augmentation. A fixed function of θ is what a gradient norm, a Hessian or a
landscape is defined for; the per-step numbers in ``metrics.jsonl`` are not.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gnp.analysis.batchnorm import BatchStatsUpdate
from gnp.analysis.checkpoints import read_checkpoint
from gnp.analysis.data import LossFn
from gnp.data import InputPipeline, build_input_pipeline
from gnp.train.build import build_model, loss_config
from gnp.train.config import config_from_saved, validate_config
from gnp.train.objective import model_variables, objective, rng_streams

PyTree = Any
Batch = dict[str, Any]  # "image", "label", "mask" (an eval batch), on the host or a device
LOSS_DEFINITION = (
    "mean cross-entropy (with the run's label smoothing) + the run's L2 term; "
    "BatchNorm in inference mode (running statistics), no dropout, no augmentation"
)


class RunError(ValueError):
    """A working directory that is not a usable run; the message says what is missing."""


# Reading a run.


@dataclasses.dataclass(frozen=True)
class Run:
    """A training run read back from its working directory: config, model and latest state."""

    working_dir: Path
    config: ml_collections.ConfigDict
    pipeline: InputPipeline
    model: nn.Module
    variables: dict[str, PyTree]  # {"params", "batch_stats"} as host arrays
    step: int
    epoch: int

    @property
    def params(self) -> PyTree:
        return self.variables["params"]

    def provenance(self) -> dict[str, Any]:
        return {
            "working_dir": str(self.working_dir),
            "checkpoint_step": self.step,
            "epoch": self.epoch,
            "model": self.config.model.model_name,
            "dataset": self.config.dataset.dataset_name,
        }


def _read_config(working_dir: Path) -> ml_collections.ConfigDict:
    if not working_dir.is_dir():
        raise RunError(f"run directory {working_dir} does not exist")
    path = working_dir / "config.json"
    if not path.is_file():
        raise RunError(
            f"{path} does not exist: {working_dir} is not a training run's --working_dir "
            "(the trainer writes config.json when it starts)"
        )
    return validate_config(config_from_saved(json.loads(path.read_text())))


def _read_state(working_dir: Path, step: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    directory = working_dir / "checkpoints"
    if not directory.is_dir():
        raise RunError(
            f"no checkpoint in {directory}: the run has not saved one yet "
            "(it saves every save_ckpt_every_n_epochs epochs and at the end)"
        )
    return read_checkpoint(directory, step)


def load_run(working_dir: str | Path, step: int | None = None) -> Run:
    """The run in ``working_dir`` with the params and BatchNorm statistics of checkpoint
    ``step`` (default: the newest that restores; see ``gnp.analysis.checkpoints``).

    Arrays come back to the host, so a run trained on several devices is read on one.
    """
    working_dir = Path(working_dir)
    config = _read_config(working_dir)
    state, progress = _read_state(working_dir, step)
    pipeline = build_input_pipeline(config)
    variables = {
        "params": jax.tree.map(np.asarray, state["params"]),
        "batch_stats": jax.tree.map(np.asarray, state.get("batch_stats") or {}),
    }
    return Run(
        working_dir=working_dir,
        config=config,
        pipeline=pipeline,
        model=build_model(config, pipeline.info.num_classes),
        variables=variables,
        step=int(state["step"]),
        epoch=int(progress.get("epoch", 0)),
    )


def split_batches(pipeline: InputPipeline, split: str, max_batches: int | None) -> list[Batch]:
    """Eval-style batches (no augmentation, padded last batch with ``mask``) of one split.

    The training split goes through a pipeline whose test split is the training
    set, so both splits get the evaluation transform and padding. The batches
    are held on the device: the Hessian and landscape tools pass over them many
    times, and copying them from the host every time would dominate on a GPU.
    """
    if split == "train":
        source = dataclasses.replace(pipeline.source, test=pipeline.source.train)
        pipeline = InputPipeline(
            source,
            batch_size=pipeline.global_batch_size,
            eval_batch_size=pipeline.eval_batch_size,
            seed=pipeline.seed,
        )
    return jax.device_put(list(itertools.islice(pipeline.eval_batches(), max_batches)))


def variables_loss(run: Run) -> Callable[[dict[str, PyTree], Batch], jax.Array]:
    """``loss(variables, batch)``: the objective of ``LOSS_DEFINITION`` as a masked batch mean."""
    terms = loss_config(run.config)

    def loss(variables: dict[str, PyTree], batch: Batch) -> jax.Array:
        params = variables["params"]
        logits = run.model.apply(
            model_variables(params, variables["batch_stats"]), batch["image"], train=False
        )
        targets = jax.nn.one_hot(batch["label"], logits.shape[-1])
        weights = jnp.asarray(batch["mask"], jnp.float32)
        return objective(logits, targets, params, terms, weights)

    return loss


def params_loss(run: Run) -> LossFn:
    """``loss(params, batch)`` with the run's BatchNorm statistics held fixed."""
    loss = variables_loss(run)
    batch_stats = run.variables["batch_stats"]
    return lambda params, batch: loss({"params": params, "batch_stats": batch_stats}, batch)


def batch_stats_update(run: Run, seed: int) -> BatchStatsUpdate:
    """A train-mode pass as the trainer makes it (fixed draws for dropout and the like)."""
    rngs = rng_streams(jax.random.key(seed))

    def update(variables: dict[str, PyTree], batch: Batch) -> PyTree:
        _, updates = run.model.apply(
            variables, batch["image"], train=True, rngs=rngs, mutable=["batch_stats"]
        )
        return updates["batch_stats"]

    return update
