"""Orbax checkpoints of the train state, the grain iterator and the run's progress.

A checkpoint is written only when every array in it is finite, so the latest
checkpoint of a run that diverged is always a good one to resume or inspect.
A checkpoint that does not restore (a damaged file, a folder left empty) is set
aside as ``<step>.damaged``, never deleted, and the next older one is used: a
fault costs at most the steps since the last good checkpoint. A flipped bit
that still decodes is caught by the SHA-256 of the arrays saved in the meta.

A checkpoint whose arrays read back but whose tree differs from this version's
(written by another gnp, or for another model) is not damage: what matches is
restored, a field it lacks is taken from the template when that field holds no
arrays (a feature the run does not use), and anything else refuses it in one
line naming the arrays that differ and the gnp that wrote it (saved in the meta).
It stays where it is. A working directory that holds a run but no checkpoint of
it that restores is refused too (``run_records``): a fresh start would train
over its history.
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
from gnp.provenance import gnp_version
from gnp.train.state import TrainState
from gnp.train.stops import NonFiniteError
from gnp.train.workdir import NotWritable, how_to_start_over, run_id


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


# The longest path a save writes below the working directory, with room for larger steps and
# process counts: "checkpoints/22.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/
# ocdbt.process_0/d/<32 hex digits>" is 113 bytes (the longest in a checkpoint of step 22 is
# 71, plus orbax's two temporary suffixes while it is written).
_SAVE_PATH_BYTES = 160


def check_location(working_dir: str) -> None:
    """Refuses, before any work, a ``--working_dir`` the checkpoint layer cannot write: a name
    that is not UTF-8 (TensorStore takes UTF-8 paths only) or one so long that the files of a
    save would pass the system's longest path. Else each fails at the first save, an epoch in."""
    path = os.path.abspath(working_dir)
    try:
        encoded = path.encode("utf-8")  # a non-UTF-8 name reaches Python as lone surrogates
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise NotWritable(
            f"--working_dir {shown} is not valid UTF-8, and the checkpoints (TensorStore) take "
            "UTF-8 paths only: choose a --working_dir whose name is UTF-8 (e.g. ASCII)"
        ) from None
    longest = _path_max(path)
    if len(encoded) + 1 + _SAVE_PATH_BYTES > longest:
        raise NotWritable(
            f"--working_dir is {len(encoded)} bytes long, and a checkpoint's files below it "
            f"would pass the system's longest path ({longest} bytes): choose a --working_dir "
            f"of at most {longest - 1 - _SAVE_PATH_BYTES} bytes"
        )


def _path_max(path: str) -> int:
    """The longest path the file system of ``path`` (its nearest existing folder) takes."""
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return os.pathconf(path, "PC_PATH_MAX")
    except (OSError, ValueError):  # no such limit here (not POSIX): Linux's
        return 4096


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or none could be read back; the message says which."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint that reads back but holds another train state than this version builds."""


class NoUsableCheckpoint(CheckpointError):
    """A working directory holds a run, but no checkpoint of it restores."""


def _dotted(path: tuple[Any, ...]) -> str:
    """A leaf's path as orbax names its array (``opt_state.0.trace.Dense_0.kernel``): the same
    for a namedtuple field and the dict key that the checkpoint stores it under."""
    keys = (getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
    return ".".join(str(key) for key in keys)


def _arrays(tree: Any) -> dict[str, Any]:
    return {_dotted(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _described(leaf: Any, other: Any) -> str:
    shape = tuple(leaf.shape)
    return f"{np.dtype(leaf.dtype)}{list(shape)}" if leaf.dtype != other.dtype else str(shape)


def _listed(paths: list[str], most: int = 3, separator: str = ", ") -> str:
    """The first few paths, the parameters' first (what a user knows the model by)."""
    paths = sorted(paths, key=lambda path: (not path.startswith("params."), path))
    more = f" and {len(paths) - most} more" if len(paths) > most else ""
    return separator.join(paths[:most]) + more


def _tree_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What keeps the arrays of a checkpoint (``saved``, its metadata) from filling this
    version's state (``wanted``): arrays of another shape or type, arrays only one has."""
    reshaped = [
        f"{path}: {_described(saved[path], leaf)} in the checkpoint, "
        f"{_described(leaf, saved[path])} here"
        for path, leaf in wanted.items()
        if path in saved
        and (tuple(saved[path].shape), np.dtype(saved[path].dtype))
        != (tuple(leaf.shape), np.dtype(leaf.dtype))
    ]
    missing = list(set(wanted) - set(saved))
    extra = list(set(saved) - set(wanted))
    return (
        ([_listed(reshaped, 2, "; ")] if reshaped else [])
        + ([f"this version also has {_listed(missing)}"] if missing else [])
        + ([f"the checkpoint also has {_listed(extra)}"] if extra else [])
    )


# orbax's warnings about what gnp does on purpose, which read as failures in a run's log:
# "Given directory is read only" whenever a manager is opened read-only (the analysis and the
# study ask for that after every run), and "Waiting for previous save to complete took 1.3
# seconds" when an epoch ends before the previous epoch's asynchronous save has (short epochs).
_ROUTINE_NOTICES = ("Given directory is read only", "Waiting for previous save to complete")


def _not_routine_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_ROUTINE_NOTICES)


class Checkpoints:
    """``working_dir/checkpoints/<step>/{state,data,meta}``; keeps the newest ``keep``."""

    def __init__(self, directory: str, keep: int = 3, *, read_only: bool = False):
        self.directory = os.path.abspath(directory)  # orbax takes absolute paths only
        options = (
            ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
            if read_only
            else ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )
        # orbax logs through absl's logger; a filter already there is not added twice.
        logging.getLogger("absl").addFilter(_not_routine_notice)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

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
                    meta=ocp.args.JsonSave(
                        meta
                        | {
                            "state_sha256": state_digest(state.as_dict()),
                            "gnp_version": gnp_version(),
                            "run_id": run_id(os.path.dirname(self.directory)),
                        }
                    ),
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
        aside). Raises CheckpointMismatch for a sound checkpoint of another train state (kept
        as it is), NoUsableCheckpoint when every one is damaged."""
        wanted = template.as_dict()
        wanted_arrays = _arrays(wanted)
        this_run = run_id(os.path.dirname(self.directory))
        skipped: list[str] = []
        listed = set(self._manager.all_steps())
        for name in sorted(os.listdir(self.directory)):
            if name.isdigit() and int(name) not in listed:  # a step folder orbax cannot read
                skipped.append(self._set_aside(int(name), "not a complete checkpoint"))
        for step in sorted(listed, reverse=True):
            try:  # what the checkpoint holds, before reading any array
                saved = ocp.StandardCheckpointHandler().metadata(
                    epath.Path(self.directory) / str(step) / "state"
                )
                saved_arrays = _arrays(saved)
                meta = dict(
                    self._manager.restore(
                        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                    )["meta"]
                )
            except Exception as error:  # unreadable metadata or meta: damage
                skipped.append(self._set_aside(step, one_line(error)))
                continue
            if meta.get("run_id") not in (None, this_run):  # None: before run ids
                self._refuse_foreign(step, meta["run_id"], this_run)
            if differences := _tree_differences(saved_arrays, wanted_arrays):
                self._refuse(step, meta, differences)
            # Read in the checkpoint's own tree (its containers may differ from this version's:
            # a namedtuple is saved as a dict), then placed into the template's by array name.
            target = jax.tree_util.tree_map_with_path(
                lambda path, _: ocp.utils.to_shape_dtype_struct(wanted_arrays[_dotted(path)]),
                saved,
            )
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target),
                        data=grain.checkpoint.CheckpointRestore(data_iterator),
                    ),
                )
                if not isinstance(meta.get("epoch"), int):
                    raise ValueError("its meta has no epoch")
                arrays = _arrays(restored["state"])
                leaves, treedef = jax.tree_util.tree_flatten_with_path(wanted)
                state = jax.tree_util.tree_unflatten(
                    treedef, [arrays[_dotted(path)] for path, _ in leaves]
                )
                saved_digest = meta.get("state_sha256")  # absent in older checkpoints
                if saved_digest is not None and saved_digest not in (
                    state_digest(state),  # in this version's order of the arrays
                    state_digest(restored["state"]),  # in the order of the gnp that wrote it
                ):
                    raise ValueError("its arrays differ from the SHA-256 saved with them")
            except Exception as error:  # any damage (TensorStore, JSON, missing item): next one
                skipped.append(self._set_aside(step, one_line(error)))
                continue
            return TrainState(**state), meta, skipped
        working_dir = os.path.dirname(self.directory)
        raise NoUsableCheckpoint(
            f"no checkpoint in {self.directory} restores: "
            + "; ".join(skipped)
            + ". "
            + how_to_start_over(working_dir)
        )

    def _refuse(self, step: int, meta: dict[str, Any], differences: list[str]) -> None:
        version = meta.get("gnp_version")
        writer = (
            f"gnp {version}"
            if version
            else f"a gnp that records no version (older than this gnp {gnp_version()})"
        )
        raise CheckpointMismatch(
            f"checkpoint {os.path.join(self.directory, str(step))} was written by {writer} "
            f"and holds another train state than this version builds ({'; '.join(differences)}); "
            "it is kept as it is. Resume the run with the gnp that wrote it, or start a new "
            "run with another --working_dir"
        )

    def _refuse_foreign(self, step: int, theirs: str, ours: str | None) -> None:
        working_dir = os.path.dirname(self.directory)
        this = f"this run's is {ours}" if ours else f"{working_dir} records none"
        raise CheckpointMismatch(
            f"checkpoint {os.path.join(self.directory, str(step))} belongs to another run (its "
            f"run id is {theirs}; {this}, in run.json): it was copied here from another "
            "--working_dir. Nothing was changed: move it out of "
            f"{self.directory} to resume this run, or resume that run in its own --working_dir"
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
