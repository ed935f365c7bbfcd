"""Orbax checkpoints of the train state, the grain iterator and the run's progress.

A checkpoint is written only when every array in it is finite, so the latest
checkpoint of a run that diverged is always a good one to resume or inspect.
A checkpoint that does not restore (a damaged file, a folder left empty) is set
aside as ``<step>.damaged``, never deleted, and the next older one is used: a
fault costs at most the steps since the last good checkpoint. A flipped bit
that still decodes is caught by the SHA-256 of the arrays saved in the meta.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from gnp.errors import one_line
from gnp.train.state import TrainState
from gnp.train.stops import NonFiniteError


def _whole(leaf: Any) -> np.ndarray:
    """The whole array on the host, however it is laid out: replicated (any shard is all of
    it), sharded over this process's devices, or over several processes (gathered: a
    collective, which every process reaches in the same order)."""
    if not isinstance(leaf, jax.Array):
        return np.asarray(leaf)
    if leaf.is_fully_replicated:
        return np.asarray(leaf.addressable_shards[0].data)
    if leaf.is_fully_addressable:
        return np.asarray(leaf)
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))


def state_digest(tree: Any) -> str:
    """SHA-256 over every array's bytes, whole: the same for any layout (``shard_params``), so a
    checkpoint of a replicated run verifies when restored sharded, and back."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        digest.update(np.ascontiguousarray(_whole(leaf)).tobytes())
    return digest.hexdigest()


def all_finite(tree: Any) -> bool:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or none could be read back; the message says which."""


def _not_read_only_notice(record: logging.LogRecord) -> bool:
    """orbax warns "Given directory is read only" whenever a manager is opened read-only, which
    is what the analysis and the study ask for: a warning after every one of their runs."""
    return not record.getMessage().startswith("Given directory is read only")


class Checkpoints:
    """``working_dir/checkpoints/<step>/{state,data,meta}``; keeps the newest ``keep``."""

    def __init__(self, directory: str, keep: int = 3, *, read_only: bool = False):
        self.directory = os.path.abspath(directory)  # orbax takes absolute paths only
        options = (
            ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
            if read_only
            else ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )
        absl_logger = logging.getLogger("absl")  # orbax logs through absl's logger
        absl_logger.addFilter(_not_read_only_notice)
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        finally:
            absl_logger.removeFilter(_not_read_only_notice)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def describe_latest(self) -> str:
        step = self.latest_step()
        if step is None:
            return "none was written yet"
        return os.path.join(self.directory, str(step))

    def save(self, state: TrainState, data_iterator: Any, meta: dict[str, Any]) -> None:
        """Writes the checkpoint of ``state.step`` unless it exists already (a stop requested
        right after an epoch's save); any failure is one CheckpointError naming the cause."""
        step = int(state.step)
        if step in self._manager.all_steps():
            return
        if not all_finite((state.params, state.batch_stats, state.opt_state)):
            raise NonFiniteError(
                f"refusing to checkpoint non-finite parameters at step {step}; "
                f"the last good checkpoint is {self.describe_latest()}"
            )
        last_good = self.describe_latest()
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state.as_dict()),
                    data=grain.checkpoint.CheckpointSave(data_iterator),
                    meta=ocp.args.JsonSave(meta | {"state_sha256": state_digest(state.as_dict())}),
                ),
            )
            self._manager.wait_until_finished()
        except Exception as error:  # orbax wraps OS errors in several types; all mean "not saved"
            raise CheckpointError(
                f"could not save the checkpoint of step {step} in {self.directory} "
                f"({one_line(error)}); the last good checkpoint is {last_good}: free space "
                "or fix the location, then run the same command to resume"
            ) from error

    def restore(
        self, template: TrainState, data_iterator: Any
    ) -> tuple[TrainState, dict[str, Any], list[str]]:
        """The newest checkpoint that restores, into ``template``'s structure and shardings;
        moves the iterator. Returns (state, progress, one line per damaged checkpoint set
        aside). Raises CheckpointError when none restores."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template.as_dict())
        skipped: list[str] = []
        listed = set(self._manager.all_steps())
        for name in sorted(os.listdir(self.directory)):
            if name.isdigit() and int(name) not in listed:  # a step folder orbax cannot read
                skipped.append(self._set_aside(int(name), "not a complete checkpoint"))
        for step in sorted(listed, reverse=True):
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract),
                        data=grain.checkpoint.CheckpointRestore(data_iterator),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
                meta = dict(restored["meta"])
                if not isinstance(meta.get("epoch"), int):
                    raise ValueError("its meta has no epoch")
                saved_digest = meta.get("state_sha256")  # absent in older checkpoints
                if saved_digest is not None and saved_digest != state_digest(restored["state"]):
                    raise ValueError("its arrays differ from the SHA-256 saved with them")
            except Exception as error:  # any damage (TensorStore, JSON, missing item): next one
                skipped.append(self._set_aside(step, one_line(error)))
                continue
            return TrainState(**restored["state"]), meta, skipped
        raise CheckpointError(
            f"no checkpoint in {self.directory} restores: "
            + "; ".join(skipped)
            + ". Start a new run with another --working_dir"
        )

    def _set_aside(self, step: int, reason: str) -> str:
        """Renames a damaged ``<step>`` folder to ``<step>.damaged`` (kept for inspection, out
        of orbax's way so that a new save of that step cannot collide with it)."""
        path = os.path.join(self.directory, str(step))
        aside, copies = f"{path}.damaged", 1
        while os.path.exists(aside):  # the same step damaged before: keep both
            copies += 1
            aside = f"{path}.damaged-{copies}"
        if jax.process_index() == 0:
            os.rename(path, aside)
        self._manager.reload()
        return f"skipped damaged checkpoint {path} ({reason}), kept as {aside}"

    def reached_preemption(self, step: int) -> bool:
        return self._manager.reached_preemption(step)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def load(self, step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The state at ``step`` (default: the latest), a dict of arrays on this process's first
        device with no template needed, and its progress: for tools that read a run without
        its trainer, on any number of devices (a run trained on 8 GPUs, replicated or sharded,
        reads back on a laptop)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        saved = ocp.StandardCheckpointHandler().metadata(  # the arrays' shapes and dtypes
            epath.Path(self.directory) / str(step) / "state"
        )
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), saved
        )
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
            ),
        )
        return dict(restored["state"]), dict(restored["meta"])

    def load_latest(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.load()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
