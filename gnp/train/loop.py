"""``train_and_evaluate(config, working_dir)``: the whole training run, read top to bottom.

Sections: set-up (mesh, data, model, optimizer, state), resume, the epoch loop
(train steps, metrics, evaluation, checkpoints), the end (final checkpoint, plot).
What the run reports (resuming, config changes, a record per epoch) is printed to stdout,
the chief process's console; it has no logger of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Collection
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from gnp import efficient
from gnp.analysis.curves import plot_training_curves
from gnp.data import InputPipeline, build_input_pipeline
from gnp.gr_schedule import GRSchedule
from gnp.optim import learning_rate_schedule
from gnp.train import build, workdir
from gnp.train.checkpoint import (
    CheckpointError,
    Checkpoints,
    NoUsableCheckpoint,
    check_location,
)
from gnp.train.config import validate_config
from gnp.train.distributed import data_mesh, place, shard_batch
from gnp.train.state import TrainState
from gnp.train.steps import make_eval_step, step_kind
from gnp.train.stops import NonFiniteError, Preempted, PreemptionGuard, first_non_finite
from gnp.train.workdir import MetricWriter, RunLock, check_working_dir, prepare_outputs


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


# Per-step metrics averaged over the epoch (each has one meaning on every kind of step).
AVERAGED = (
    "train_loss",
    "train_error_rate",
    "gradient_norm",
    "clean_gradient_norm",
    "update_norm",
    "param_norm",
    # A GNP step's sharpness diagnostics: over the GNP steps (docs/training.md#metrics).
    "sharpness",
    "gradient_cosine",
    "perturbed_gradient_norm",
)


def train_and_evaluate(
    config: Any,
    working_dir: str,
    *,
    allow_config_change: Collection[str] = (),
    on_step: Callable[[int, TrainState], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) the run in ``working_dir``; returns the last epoch's metrics.

    ``allow_config_change`` names the changed keys a resume may accept (see
    ``workdir.EXTENSIBLE``); any other change to the run's config is refused.
    ``on_step(step, state)`` is called after each optimizer step with the new state, to
    observe what the metrics do not hold (the study reads Adam's second moment from it).
    """
    config = validate_config(config)
    check_working_dir(working_dir)
    check_location(working_dir)

    # Mesh and data: read before any output exists, so that a data error leaves nothing behind.
    mesh = data_mesh()
    pipeline = build_input_pipeline(
        config, process_index=jax.process_index(), process_count=jax.process_count()
    )
    prepare_outputs(working_dir)
    is_chief = jax.process_index() == 0
    lock = RunLock(working_dir) if is_chief else contextlib.nullcontext()
    with contextlib.closing(pipeline), lock:  # closing: the data workers stop with the run
        return _train(config, working_dir, mesh, pipeline, allow_config_change, on_step)


def _train(
    config: Any,
    working_dir: str,
    mesh: Any,
    pipeline: InputPipeline,
    allowed: Collection[str],
    on_step: Callable[[int, TrainState], None] | None,
) -> dict[str, Any]:
    """The run itself, while this process holds the working directory's lock; ``allowed``: the
    config changes a resume may make."""
    is_chief = jax.process_index() == 0
    info, steps_per_epoch = pipeline.info, pipeline.steps_per_epoch

    # A resume must have the config the run was trained with: checked before anything is built.
    checkpoints = Checkpoints(os.path.join(working_dir, "checkpoints"), config.keep_checkpoints)
    try:
        steps, changes = _resume_check(config, working_dir, checkpoints, steps_per_epoch, allowed)
    except (workdir.ConfigChanged, NoUsableCheckpoint):
        checkpoints.close()
        raise

    # Model, optimizer, state.
    model = build.build_model(config, info.num_classes)
    state, optimizer, schedule = build.train_state(config, model, info.image_shape, steps_per_epoch)
    specs = build.state_specs(config, state)
    state = place(state, mesh, specs)
    train_iterator = pipeline.train_iterator()

    # Resume from the newest checkpoint that restores.
    progress: dict[str, Any] = {"epoch": 0, "finished": False}
    if steps:
        try:
            state, progress, skipped = checkpoints.restore(state, train_iterator)
        except CheckpointError:  # refused or none restores: orbax's threads end before the error
            checkpoints.close()
            raise
        for line in skipped:
            print(line)
        if progress["epoch"] >= config.total_epochs:
            print(
                f"{working_dir}: this run finished already (epoch {progress['epoch']}); "
                "nothing to do. Use a new --working_dir to train again, or extend it with "
                "--config.total_epochs=N --allow_config_change=total_epochs."
            )
            checkpoints.close()
            return progress.get("final_metrics", {})
        print(f"resuming at {position(int(state.step), steps_per_epoch)}")
        _report_changes(changes, config, steps_per_epoch, int(state.step))
    if is_chief:
        workdir.record(working_dir, config.to_dict(), step=int(state.step), changes=changes)

    # Steps: a plain step and a GNP step (full or reuse), each compiled once on first use.
    gr = build.gr_schedule(config, steps_per_epoch)
    train_steps = build.train_steps(
        config,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        mesh=mesh,
        gr=gr,
        state_specs=specs,
    )
    epochs = _Epochs(
        config=config,
        mesh=mesh,
        pipeline=pipeline,
        checkpoints=checkpoints,
        train_iterator=train_iterator,
        train_steps=train_steps,
        gr=gr,
        eval_step=make_eval_step(model, mesh, specs),
        on_step=on_step,
        gnp_taken=int(jax.device_get(state.reuse["count"])) if state.reuse else 0,
    )
    writer = MetricWriter(
        working_dir, enabled=is_chief, resume_epoch=progress["epoch"], resume_step=int(state.step)
    )

    if is_chief:
        # The first step compiles: on a large model that is minutes with nothing else to show.
        print("compiling the training step (the first step takes longest) ...", flush=True)
    try:
        record = epochs.run(state, progress["epoch"] + 1, writer)
    finally:
        writer.close()
        checkpoints.close()

    if is_chief:
        curves = workdir.read_metrics(writer.path)
        plot_training_curves(curves, os.path.join(working_dir, "curves.png"))
    if epochs.stopped is not None:  # asked after the last step: what would follow must not run
        raise epochs.stopped
    return record


def _resume_check(
    config: Any,
    working_dir: str,
    checkpoints: Checkpoints,
    steps_per_epoch: int,
    allowed: Collection[str],
) -> tuple[list[int], dict[str, tuple[Any, Any]]]:
    """The checkpoints' steps and the config changes of a resume (``workdir.check_resume``).

    With a run's records but no checkpoint, only a run that never saved one may start again,
    and only with its own config (which retrains the same epochs): else it would train over a
    history (``NoUsableCheckpoint``)."""
    steps, records = checkpoints.all_steps(), workdir.run_records(working_dir)
    if not (steps or records):
        return steps, {}
    if not steps and (
        any(r.startswith("checkpoints/") for r in records) or "config.json" not in records
    ):
        raise NoUsableCheckpoint(
            f"no checkpoint of the run in {working_dir} restores, and a fresh start would "
            f"replace its records. {workdir.how_to_start_over(working_dir)}"
        )
    changes = workdir.check_resume(
        working_dir,
        config.to_dict(),
        epochs_done=steps[-1] // steps_per_epoch if steps else 0,
        allowed=allowed,
    )
    if not steps:
        print(
            f"{working_dir}: no checkpoint was saved yet ({records[0]}); training again from "
            "the start with the same config"
        )
    return steps, changes


@dataclasses.dataclass
class _Epochs:
    """What an epoch of training needs beside the state, built once per run."""

    config: Any
    mesh: Any
    pipeline: InputPipeline
    checkpoints: Checkpoints
    train_iterator: Any
    train_steps: dict[str, Any]
    gr: GRSchedule
    eval_step: Any
    on_step: Callable[[int, TrainState], None] | None
    gnp_taken: int  # GNP steps so far: every reuse_period-th is a full one
    # Step kinds called once in this process: a kind's first call compiles it, and is timed
    # apart so that images_per_second and the ETA measure training, not XLA.
    compiled: set[str] = dataclasses.field(default_factory=set)
    stopped: Preempted | None = None  # a stop asked for after the run's last step

    def run(self, state: TrainState, first_epoch: int, writer: MetricWriter) -> dict[str, Any]:
        """Every epoch from ``first_epoch`` (a preempted run restarts mid-epoch, at the state's
        step): train, evaluate, write, save. Returns the last epoch's record."""
        config, record = self.config, {}
        resume_step = int(state.step)
        epoch_seconds: list[float] = []
        preemption = PreemptionGuard()
        preemption.install()
        try:
            for epoch in range(first_epoch, config.total_epochs + 1):
                started = time.perf_counter()
                state, record = self.train(state, epoch, resume_step, preemption, writer)
                if epoch % config.evaluate_every_n_epochs == 0 or epoch == config.total_epochs:
                    record |= evaluate(
                        self.eval_step,
                        state,
                        self.pipeline,
                        self.mesh,
                        config.compute_top_5_error_rate,
                    )
                writer.write(record)
                epoch_seconds.append(
                    time.perf_counter() - started - record.get("compile_seconds", 0.0)
                )
                eta = _remaining_seconds(epoch_seconds, config.total_epochs - epoch)
                print(f"{_format_record(record)}  eta {_clock(eta)}", flush=True)
                finished = epoch == config.total_epochs
                if epoch % config.save_ckpt_every_n_epochs == 0 or finished:
                    self.checkpoints.save(
                        state,
                        self.train_iterator,
                        {"epoch": epoch, "finished": finished, "final_metrics": record},
                    )
            if preemption.requested:
                self.stopped = Preempted(
                    f"the run finished (epoch {config.total_epochs}) and saved "
                    f"{self.checkpoints.describe_latest()}; stopped on request "
                    f"({preemption.cause}) before what follows it: run the same command to go on",
                    preemption.exit_code,
                )
        finally:
            preemption.restore()
        return record

    def train(
        self,
        state: TrainState,
        epoch: int,
        resume_step: int,
        preemption: PreemptionGuard,
        writer: MetricWriter,
    ) -> tuple[TrainState, dict[str, Any]]:
        """The epoch's train steps from ``resume_step`` (a preempted run restarts mid-epoch);
        every ``log_every_n_steps`` steps the latest step's metrics go to ``writer`` (and a
        line to a log file). Returns the state and the epoch's record before evaluation."""
        config, steps_per_epoch = self.config, self.pipeline.steps_per_epoch
        first_step = (epoch - 1) * steps_per_epoch
        step_metrics, kinds = [], []
        started = time.perf_counter()
        bar = tqdm(
            range(max(resume_step - first_step, 0), steps_per_epoch),
            desc=f"epoch {epoch}/{config.total_epochs}",
            # Off a terminal (a log file, a batch job) a bar is a stream of \r fragments:
            # the per-epoch lines are the progress there.
            disable=jax.process_index() != 0 or not sys.stderr.isatty(),
            leave=False,
            dynamic_ncols=True,
        )
        # The steps that compiled (each kind's first call) and their seconds, left out of the
        # rate; off a terminal (a log file, SLURM, nohup) a line stands in for the bar.
        compiled_steps, compiling = 0, 0.0
        log_lines = jax.process_index() == 0 and not sys.stderr.isatty()
        for i in bar:
            step = first_step + i
            if preemption.reached(step, self.checkpoints):
                self._stop(state, step, epoch, preemption)
            kind = step_kind(
                self.gr.is_gnp_step(step),
                efficient.is_full_step(self.gnp_taken, config.gnp.reuse_period),
            )
            self.gnp_taken += kind != "plain"
            batch = shard_batch(next(self.train_iterator), self.mesh)
            first_call = kind not in self.compiled
            if first_call:
                jax.block_until_ready(state)  # the steps before it stay in the measured time
                paused = time.perf_counter()
            state, metrics = self.train_steps[kind](state, batch["image"], batch["label"])
            if first_call:
                jax.block_until_ready(metrics)
                compiling += time.perf_counter() - paused
                compiled_steps += 1
                self.compiled.add(kind)
            if self.on_step is not None:
                self.on_step(step, state)
            step_metrics.append(metrics)
            kinds.append(kind)
            if (i + 1) % config.log_every_n_steps == 0:
                latest = jax.device_get(metrics)
                if first_non_finite([latest]) is not None:
                    break
                writer.write_step(
                    {"epoch": epoch, "step": step + 1, **{k: float(v) for k, v in latest.items()}}
                )
                measured = throughput(
                    config.batch_size,
                    len(kinds) - compiled_steps,
                    time.perf_counter() - started - compiling,
                )
                progress = {
                    "loss": f"{latest['train_loss']:.4f}",
                    "err": f"{latest['train_error_rate']:.3f}",
                    "img_s": "compiling" if measured is None else f"{measured:.0f}",
                }
                bar.set_postfix(progress)
                if log_lines:  # a log file (SLURM, nohup): the bar is off, a line stands in
                    fields = " ".join(f"{k}={v}" for k, v in progress.items())
                    print(f"step {step + 1} (epoch {epoch}): {fields}", flush=True)
        bar.close()
        fetched = jax.device_get(step_metrics)
        seconds = time.perf_counter() - started
        _raise_if_non_finite(fetched, first_step, epoch, self.checkpoints)
        end_step = first_step + steps_per_epoch
        timing = {
            "compile_seconds": compiling,
            "images_per_second": throughput(
                config.batch_size, len(kinds) - compiled_steps, seconds - compiling
            ),
        }
        return state, _epoch_record(config, self.gr, epoch, end_step, fetched, kinds, timing)

    def _stop(self, state: TrainState, step: int, epoch: int, preemption: PreemptionGuard) -> None:
        """Saves the state before ``step`` and ends the run as asked (SIGTERM, Ctrl-C)."""
        self.checkpoints.save(state, self.train_iterator, {"epoch": epoch - 1, "finished": False})
        raise Preempted(
            f"stopped at {position(step, self.pipeline.steps_per_epoch)} on request "
            f"({preemption.cause}) and saved {self.checkpoints.describe_latest()}; "
            "run the same command to resume",
            preemption.exit_code,
        )


def _raise_if_non_finite(
    fetched: list[dict[str, Any]], first_step: int, epoch: int, checkpoints: Checkpoints
) -> None:
    """Ends the run at an epoch's end if any of its steps went NaN or Inf (nothing saved)."""
    bad = first_non_finite(fetched)
    if bad is not None:
        index, key, value = bad
        raise NonFiniteError(
            f"{key} became {value} at step {first_step + index} (epoch {epoch}); nothing "
            f"after it was saved. The last good checkpoint is "
            f"{checkpoints.describe_latest()}. Try a lower base_lr, gradient_clipping > 0, "
            "a smaller gnp.r, or check the input data for NaN."
        )


def as_float32(value: Any) -> float:
    """A float32 the step used, as the shortest decimal that is that float32 (0.05, not
    0.05000000074505806)."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="0"))


def _epoch_record(
    config: Any,
    gr: GRSchedule,
    epoch: int,
    end_step: int,
    fetched: list[dict[str, Any]],
    kinds: list[str],
    timing: dict[str, float | None],
) -> dict[str, Any]:
    """One epoch's line of ``metrics.jsonl`` (before evaluation), from its steps' metrics and
    kinds; ``end_step`` is the step count at the epoch's end; ``timing``: the seconds spent
    compiling and the rate of the other steps (None, and left out, if every step compiled)."""
    gnp_steps = [m for m, kind in zip(fetched, kinds, strict=True) if kind != "plain"]
    # The r and α of the epoch's last GNP step, as that step used them (0, 0: none in it).
    coefficients = {
        key: as_float32(gnp_steps[-1][key]) if gnp_steps else 0.0 for key in ("r", "alpha")
    }
    return {
        "epoch": epoch,
        "step": int(end_step),
        # Over the steps that have it (a one-pass MSAM step has no clean gradient).
        **{
            k: float(np.mean([m[k] for m in fetched if k in m]))
            for k in AVERAGED
            if any(k in m for m in fetched)
        },
        "learning_rate": float(fetched[-1]["learning_rate"]),
        **coefficients,
        # Over this process's steps of the epoch: all of them unless it resumed mid-epoch.
        "gnp_step_fraction": len(gnp_steps) / len(fetched),
        # The value in force at the epoch's last step (the released log).
        **({"probability": gr.probability(end_step - 1)} if config.use_hybrid_training else {}),
        **{key: value for key, value in timing.items() if value is not None},
    }


def _report_changes(
    changes: dict[str, tuple[Any, Any]], config: Any, steps_per_epoch: int, step: int
) -> None:
    """Says what a resume changed; for a longer run, how the learning rate moves at ``step``."""
    for key, (old, new) in changes.items():
        print(f"config change on resume: {key} {old!r} -> {new!r}")
    if "total_epochs" in changes:
        before = config.copy_and_resolve_references()
        before.total_epochs = changes["total_epochs"][0]
        old_lr = float(learning_rate_schedule(before, steps_per_epoch)(step))
        new_lr = float(learning_rate_schedule(config, steps_per_epoch)(step))
        print(
            f"from step {step} the learning rate follows the {config.total_epochs}-epoch "
            f"schedule: {old_lr:.4g} -> {new_lr:.4g} at this step"
        )


def position(step: int, steps_per_epoch: int) -> str:
    """``step N (epoch E)``: where a run stops (before step N) or resumes (at step N), and the
    epoch step N lies in, said the same way by both (epoch E has E − 1 epochs done before it)."""
    return f"step {step} (epoch {step // steps_per_epoch + 1})"


def throughput(batch_size: int, steps: int, seconds: float) -> float | None:
    """Images per second over ``steps`` steps that took ``seconds``; None when no step was
    measured (each one compiled) rather than a rate that is really XLA's compile time."""
    return steps * batch_size / seconds if steps > 0 and seconds > 0 else None


def _remaining_seconds(epoch_seconds: list[float], epochs_left: int) -> float:
    """The rest of the run at the median epoch's pace (compile time already taken out; the
    first epoch also compiles the evaluation, so it counts only while it is the only one)."""
    measured = epoch_seconds[1:] or epoch_seconds
    return float(np.median(measured)) * epochs_left


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


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
