"""A run's working directory and the files in it: where a run writes, the lock that keeps it
alone there, ``config.json`` and ``config_history.jsonl``, ``metrics.jsonl`` and TensorBoard.

Start-up: every place a run writes is checked in the first second, so that a bad location
fails with one line instead of at the first checkpoint, epochs later.

The lock is ``fcntl.flock`` on ``working_dir/run.lock``. The kernel releases it when the
holding process dies, however it dies, so a lock left by a killed run is taken over without
any clean-up; the file only says who holds it now.

The config a run was trained with: ``config.json`` (the one in effect now) and
``config_history.jsonl`` (one line per start, with what changed). Resuming with another config
would mix two runs under one name (another α for the second half, another batch size under the
same step count), so a resumed run must have the config it was started with. Two kinds of key
are exempt: ``BOOKKEEPING`` keys change where or how often things are written, not what is
trained, and may always change; ``EXTENSIBLE`` keys change the run and are allowed only when
named in ``--allow_config_change``.

``metrics.jsonl`` is the record; the TensorBoard events are derived from it. On resume both are
cut back to the restored epoch: the lines past it are dropped, and the event files are written
afresh from the kept lines, because TensorBoard would otherwise show the redone steps twice.
"""

from __future__ import annotations

import datetime
import fcntl
import glob
import json
import logging
import os
import socket
from collections.abc import Collection
from typing import Any

from gnp.gr_schedule import function_path

log = logging.getLogger("gnp")

# Where a run writes.

OUTPUT_SUBDIRS = ("checkpoints", "tensorboard")


class NotWritable(OSError):
    """An output location that cannot be created or written; the message names it."""


def check_working_dir(working_dir: str) -> None:
    """Before anything is built: a ``--working_dir`` that is a file is refused."""
    if os.path.exists(working_dir) and not os.path.isdir(working_dir):
        raise NotWritable(
            f"--working_dir {working_dir} is a file, not a directory; choose another --working_dir"
        )


def prepare_outputs(working_dir: str) -> None:
    """Creates the working directory and its output folders and writes a probe file in each."""
    for path in (working_dir, *(os.path.join(working_dir, d) for d in OUTPUT_SUBDIRS)):
        if os.path.exists(path) and not os.path.isdir(path):
            raise NotWritable(
                f"{path} is a file, but the run writes a folder there; move the file away "
                "or choose another --working_dir"
            )
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        try:
            os.makedirs(path, exist_ok=True)
            with open(probe, "w") as f:
                f.write("ok")
            os.remove(probe)
        except OSError as error:
            raise NotWritable(
                f"cannot write to {path} ({error.strerror or error}); make it writable or "
                "choose another --working_dir"
            ) from None


# The lock.


class RunLocked(RuntimeError):
    """Another live process is training in the same working directory."""


class RunLock:
    """``with RunLock(working_dir):`` trains alone in ``working_dir`` or raises RunLocked."""

    def __init__(self, working_dir: str) -> None:
        self.working_dir = working_dir
        self.path = os.path.join(working_dir, "run.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 1000).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise RunLocked(
                f"{self.working_dir} is in use by another run ({holder}); wait for it to end "
                "or stop it, or train in another --working_dir"
            ) from None
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# The config a run was trained with.

BOOKKEEPING = frozenset(
    {
        "evaluate_every_n_epochs",
        "save_ckpt_every_n_epochs",
        "keep_checkpoints",
        "log_every_n_steps",
        "compute_top_5_error_rate",
        "eval_batch_size",
        "dataset.num_workers",
        "dataset.data_dir",
        "imagenet_train_dir",
        "imagenet_val_dir",
        # Where the parameters live, not what is trained: a resume may shard or gather them.
        "shard_params",
    }
)
# Extending total_epochs continues on the learning-rate schedule of the longer run (see
# docs/training.md): the trained epochs stay as they were, the rest follow the new total.
EXTENSIBLE = frozenset({"total_epochs"})


class ConfigChanged(ValueError):
    """The resolved config differs from the one the run in ``working_dir`` was trained with."""


def _json_default(value: Any) -> str:
    """Functions (``schedule_function``) by import path: the same in every process."""
    return function_path(value) if callable(value) else str(value)


def plain(config_dict: dict[str, Any]) -> dict[str, Any]:
    """The config as it reads back from JSON (tuples become lists), so that both compare."""
    return json.loads(json.dumps(config_dict, default=_json_default))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``key: (saved, current)`` for every key whose value differs. A key the saved config
    lacks (added by a newer gnp) takes its current value and is not a difference."""
    old, new = flatten(plain(saved)), flatten(plain(current))
    return {k: (old[k], new.get(k)) for k in sorted(old) if k in new and old[k] != new[k]} | {
        k: (old[k], None) for k in sorted(old) if k not in new
    }


def read_saved(working_dir: str) -> dict[str, Any] | None:
    path = os.path.join(working_dir, "config.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as error:
        raise ConfigChanged(
            f"{path} is not valid JSON ({error}); it records the config this run was trained "
            "with: restore it, or train in another --working_dir"
        ) from None


def check_resume(
    working_dir: str,
    current: dict[str, Any],
    *,
    epochs_done: int,
    allowed: Collection[str] = (),
) -> dict[str, tuple[Any, Any]]:
    """The changes to record (bookkeeping and allowed ones); raises ConfigChanged for any other,
    naming each key and the way out."""
    saved = read_saved(working_dir)
    if saved is None:
        return {}
    changes = differences(saved, current)
    accepted = BOOKKEEPING | (EXTENSIBLE & set(allowed))
    refused = {k: v for k, v in changes.items() if k not in accepted}
    if "total_epochs" in changes and current["total_epochs"] <= epochs_done:
        refused["total_epochs"] = changes["total_epochs"]
    if refused:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        extensible = sorted(set(refused) & EXTENSIBLE)
        way_out = (
            f", or allow it with --allow_config_change={','.join(extensible)} (the new "
            f"total_epochs must exceed the {epochs_done} epochs trained)"
            if extensible and len(extensible) == len(refused)
            else ""
        )
        raise ConfigChanged(
            f"{working_dir} was trained with another config ({listed}); to train with the new "
            f"one use a new --working_dir, or drop the changed flags to resume{way_out}"
        )
    return changes


def record(
    working_dir: str, current: dict[str, Any], *, step: int, changes: dict[str, tuple[Any, Any]]
) -> None:
    """Writes ``config.json`` and appends this start to ``config_history.jsonl``."""
    with open(os.path.join(working_dir, "config.json"), "w") as f:
        json.dump(plain(current), f, indent=2)
    entry = {
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
        "start_step": step,
        "changes": {k: {"from": old, "to": new} for k, (old, new) in changes.items()},
        "config": plain(current),
    }
    with open(os.path.join(working_dir, "config_history.jsonl"), "a") as f:
        f.write(json.dumps(entry) + "\n")


# Metrics.


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Every record in ``path``. A torn last line (a crash or a full disk while appending)
    is dropped with a warning; a bad line elsewhere is an error naming the file and line."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [(number, line) for number, line in enumerate(f, 1) if line.strip()]
    records = []
    for position, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError as error:
            if position == len(lines) - 1:
                log.warning("%s: dropping its torn last line %d (%r)", path, number, line[:80])
                break
            raise ValueError(
                f"{path} line {number} is not JSON ({error}); fix or delete that line"
            ) from None
    return records


class MetricWriter:
    """Writes from process 0 only. On resume, drops lines past the restored epoch
    (they were written after the last checkpoint and are about to be redone)."""

    def __init__(self, working_dir: str, *, enabled: bool = True, resume_epoch: int = 0):
        self.path = os.path.join(working_dir, "metrics.jsonl")
        self.enabled = enabled
        self._tensorboard = None
        if not enabled:
            return
        kept = [m for m in read_metrics(self.path) if m.get("epoch", 0) <= resume_epoch]
        with open(self.path, "w") as f:
            f.writelines(json.dumps(m) + "\n" for m in kept)
        from tensorboardX import SummaryWriter

        tensorboard_dir = os.path.join(working_dir, "tensorboard")
        for old in glob.glob(os.path.join(tensorboard_dir, "events.out.tfevents.*")):
            os.remove(old)  # derived from metrics.jsonl: rewritten below from the kept lines
        self._tensorboard = SummaryWriter(tensorboard_dir)
        for record in kept:
            self._add_scalars(record)
        self._tensorboard.flush()

    def _add_scalars(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key not in ("epoch", "step") and isinstance(value, int | float):
                self._tensorboard.add_scalar(key, value, record["step"])

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._add_scalars(record)
        self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
