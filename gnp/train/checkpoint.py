"""Orbax checkpoints of the train state, the grain iterator and the run's progress.

A checkpoint is written only when every array in it is finite, so the latest
checkpoint of a run that diverged is always a good one to resume or inspect.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from gnp.train.steps import TrainState


class NonFiniteError(RuntimeError):
    """Training produced NaN or Inf; the message names the step and the last good checkpoint."""


def all_finite(tree: Any) -> bool:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


class Preempted(RuntimeError):
    """The run was asked to stop (SIGTERM) and saved a checkpoint at the current step."""


class PreemptionGuard:
    """Turns SIGTERM, a cluster's preemption notice, into "save at the next step and stop".

    One process: a signal handler sets a flag. Several: JAX's preemption sync point
    (through orbax), so that every host saves at the same step.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # signals go to it only
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def reached(self, step: int, checkpoints: Checkpoints) -> bool:
        if jax.process_count() > 1:
            return checkpoints.reached_preemption(step)
        return self.requested


class Checkpoints:
    """``working_dir/checkpoints/<step>/{state,data,meta}``; keeps the newest ``keep``."""

    def __init__(self, directory: str, keep: int = 3, *, read_only: bool = False):
        self.directory = os.path.abspath(directory)  # orbax takes absolute paths only
        options = (
            ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
            if read_only
            else ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def describe_latest(self) -> str:
        step = self.latest_step()
        if step is None:
            return "none was written yet"
        return os.path.join(self.directory, str(step))

    def save(self, state: TrainState, data_iterator: Any, meta: dict[str, Any]) -> None:
        if not all_finite((state.params, state.batch_stats, state.opt_state)):
            raise NonFiniteError(
                f"refusing to checkpoint non-finite parameters at step {int(state.step)}; "
                f"the last good checkpoint is {self.describe_latest()}"
            )
        self._manager.save(
            int(state.step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state.as_dict()),
                data=grain.checkpoint.CheckpointSave(data_iterator),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        self._manager.wait_until_finished()

    def restore(self, template: TrainState, data_iterator: Any) -> tuple[TrainState, dict]:
        """The latest checkpoint into ``template``'s structure and shardings; moves the iterator."""
        step = self.latest_step()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template.as_dict())
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                data=grain.checkpoint.CheckpointRestore(data_iterator),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return TrainState(**restored["state"]), dict(restored["meta"])

    def reached_preemption(self, step: int) -> bool:
        return self._manager.reached_preemption(step)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def load(self, step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The state at ``step`` (default: the latest) as saved, a dict of arrays with no
        template needed, and its progress: for tools that read a run without its trainer."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
        )
        return dict(restored["state"]), dict(restored["meta"])

    def load_latest(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.load()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
