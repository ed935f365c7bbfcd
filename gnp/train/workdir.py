"""A run's working directory and the files in it: where a run writes, the lock that keeps it
alone there, ``config.json`` and ``config_history.jsonl``, ``metrics.jsonl`` and TensorBoard.

Start-up: every place a run writes is checked in the first second, so that a bad location
fails with one line instead of at the first checkpoint, epochs later.

The lock is ``fcntl.flock`` on ``working_dir/run.lock``. The kernel releases it when the
holding process dies, however it dies, so a lock left by a killed run is taken over without
any clean-up; the file only says who holds it now, and a run that ends (finished, stopped or
failed) removes it, so that no file names a process that is gone.

The config a run was trained with: ``config.json`` (the one in effect now) and
``config_history.jsonl`` (one line per start, with what changed). Resuming with another config
would mix two runs under one name (another α for the second half, another batch size under the
same step count), so a resumed run must have the config it was started with. Two kinds of key
are exempt: ``BOOKKEEPING`` keys change where or how often things are written, not what is
trained, and may always change; ``EXTENSIBLE`` keys change the run and are allowed only when
named in ``--allow_config_change``. A config.json written by an older gnp is read as that
version meant it: a key it lacks (added since) was trained at its default, so only another
value is a change; a function saved by its repr (``'<function f at 0x7f…>'``, before function
paths) is the function of that name; a key this version no longer has is ignored with a notice
when it was unset (None or empty), and refused by name when it was set, since this version
cannot train the run as it was.

A config.json that was deleted falls back to the last start in ``config_history.jsonl``, so
that a resume is still checked. Every rewrite (``config.json``, ``metrics.jsonl`` cut back on
resume, ``run.json``) goes to a temporary file renamed into place (``gnp.files``): a full disk
or a kill during it leaves the old file whole, and the failure is one line naming the file.

``run.json`` holds the run's id, made at its first start and written into each checkpoint's
meta: a checkpoint of another run copied into the directory is refused on restore, not resumed
as this run's (``Checkpoints.restore``).

``metrics.jsonl`` (a line per epoch) and ``step_metrics.jsonl`` (the latest step's metrics every
``log_every_n_steps`` steps) are the record; the TensorBoard events are derived from them (the
per-step points under ``step/``). On resume both are cut back to the restored epoch and step:
the lines past it are dropped, and the event files are written afresh from the kept lines,
because TensorBoard would otherwise show the redone steps twice.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import glob
import json
import logging
import os
import re
import socket
import uuid
from collections.abc import Callable, Collection, Iterator
from typing import Any

from gnp.config_keys import get_base_config
from gnp.files import DamagedFile, read_json, write_json_atomically, write_text_atomically
from gnp.gr_schedule import current_path, function_path

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


# A checkpoint folder: committed (``<step>``) or set aside (``<step>.damaged[-n]``); orbax's
# ``<step>.orbax-checkpoint-tmp-*`` folders are saves cut short, which never held a checkpoint.
_CHECKPOINT_FOLDER = re.compile(r"\d+(\.damaged(-\d+)?)?")


def run_records(working_dir: str) -> list[str]:
    """What a run has left in ``working_dir`` that a fresh start would train over: the epochs
    in ``metrics.jsonl``, its checkpoints (kept or set aside) and then its ``config.json``."""
    found = []
    metrics = os.path.join(working_dir, "metrics.jsonl")
    if os.path.isfile(metrics):
        with open(metrics, errors="replace") as f:
            epochs = sum(1 for line in f if line.strip())
        if epochs:
            found.append(f"metrics.jsonl ({epochs} epoch{'s' if epochs > 1 else ''})")
    folder = os.path.join(working_dir, "checkpoints")
    if os.path.isdir(folder):
        names = sorted(n for n in os.listdir(folder) if _CHECKPOINT_FOLDER.fullmatch(n))
        found += [f"checkpoints/{name}" for name in names]
    if found and os.path.isfile(os.path.join(working_dir, "config.json")):
        found.append("config.json")
    return found


def how_to_start_over(working_dir: str) -> str:
    """The end of a refusal: what the run in ``working_dir`` has, kept, and the ways out."""
    found = run_records(working_dir)
    if not found:
        return "Start a new run with another --working_dir"
    return (
        f"{working_dir} holds {', '.join(found)}: nothing there was changed. To start over, use "
        f"a new --working_dir, or move those files out of {working_dir} (a checkpoint set aside "
        "as <step>.damaged that you know to be sound can be renamed back to <step>)"
    )


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
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 1000).decode(errors="replace").strip() or "an unknown process"
                os.close(fd)
                raise RunLocked(
                    f"{self.working_dir} is in use by another run ({holder}); wait for it to "
                    "end or stop it, or train in another --working_dir"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # locked a file its holder removed as it ended: lock the new one
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Removes the file, then unlocks: a run that opened it meanwhile sees it gone
        (``_same_file``) and locks a new one."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: str) -> bool:
    """Whether ``path`` is still the file open as ``fd`` (not removed or replaced since)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


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


# How gnp before b380a3f saved a function: its repr, whose memory address differs in every process.
_FUNCTION_REPR = re.compile(r"<function (?P<name>\S+) at 0x[0-9a-fA-F]+>")
# Values of a key that cannot have shaped a run: an option left unset.
UNSET = (None, "", [], {})


def _same(saved: Any, current: Any) -> bool:
    if saved == current or (isinstance(saved, str) and current_path(saved) == current):
        return True
    repr_ = _FUNCTION_REPR.fullmatch(saved) if isinstance(saved, str) else None
    # The repr names the function but not its module: the import path must end in that name.
    return bool(repr_) and isinstance(current, str) and current.endswith(f".{repr_['name']}")


def differences(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``key: (saved, current)`` for every key whose value differs. A key the saved config
    lacks (added by a newer gnp) was trained at its default: ``(default, current)`` when the
    current value is another. Keys only the saved config has are ``retired``'s."""
    old, new = flatten(plain(saved)), flatten(plain(current))
    defaults = flatten(plain(get_base_config().to_dict()))
    changed = {k: (old[k], new[k]) for k in sorted(old) if k in new and not _same(old[k], new[k])}
    added = {
        k: (defaults[k], new[k])
        for k in sorted(new)
        if k not in old and k in defaults and not _same(defaults[k], new[k])
    }
    return changed | added


def retired(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """``key: saved value`` for every key of the saved config that this version no longer has."""
    old, new = flatten(plain(saved)), flatten(plain(current))
    return {k: old[k] for k in sorted(old) if k not in new}


def read_saved(working_dir: str) -> dict[str, Any] | None:
    """The config the run in ``working_dir`` was trained with: ``config.json``, or when that
    was deleted, the config of the last start in ``config_history.jsonl``; None for a new run."""
    path = os.path.join(working_dir, "config.json")
    if os.path.exists(path):
        try:
            return read_json(
                path,
                "it records the config this run was trained with: restore it, or delete it to "
                "check against the last start in config_history.jsonl, or train in another "
                "--working_dir",
            )
        except DamagedFile as error:
            raise ConfigChanged(str(error)) from None
    starts = _history(working_dir)
    if not starts:
        return None
    print(
        f"notice: {path} is missing; checking the config against the last start in "
        "config_history.jsonl"
    )
    return starts[-1]["config"]


def _history(working_dir: str) -> list[dict[str, Any]]:
    """The starts recorded in ``config_history.jsonl`` (a torn last line dropped)."""
    path = os.path.join(working_dir, "config_history.jsonl")
    return [s for s in read_metrics(path) if isinstance(s.get("config"), dict)]


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
    saved_keys = set(flatten(plain(saved)))
    gone = retired(saved, current)
    for key, value in gone.items():
        if value in UNSET:
            print(
                f"notice: {key} ({value!r} in its config.json) is not a key of this version of "
                "gnp; ignored, as it was unset"
            )
    accepted = BOOKKEEPING | (EXTENSIBLE & set(allowed))
    refused = {k: v for k, v in changes.items() if k not in accepted}
    if "total_epochs" in changes and current["total_epochs"] <= epochs_done:
        refused["total_epochs"] = changes["total_epochs"]
    gone_set = {k: v for k, v in gone.items() if v not in UNSET}
    if refused or gone_set:
        listed = "; ".join(
            [
                f"{k}: {old!r}{'' if k in saved_keys else ' (the default: not in its config.json)'}"
                f" -> {new!r}"
                for k, (old, new) in refused.items()
            ]
            + [f"{k}: {value!r}, not a key of this version of gnp" for k, value in gone_set.items()]
        )
        extensible = sorted(set(refused) & EXTENSIBLE)
        way_out = (
            f", or allow it with --allow_config_change={','.join(extensible)} (the new "
            f"total_epochs must exceed the {epochs_done} epochs trained)"
            if extensible and len(extensible) == len(refused)
            else ""
        )
        if not refused:  # only keys this version no longer has: no flag brings them back
            raise ConfigChanged(
                f"{working_dir} was trained with a config this version of gnp cannot train as "
                f"it was ({listed}); resume it with the gnp that wrote it, or train in a new "
                "--working_dir"
            )
        raise ConfigChanged(
            f"{working_dir} was trained with another config ({listed}); to train with the new "
            f"one use a new --working_dir, or drop the changed flags to resume{way_out}"
        )
    return changes


def record(
    working_dir: str, current: dict[str, Any], *, step: int, changes: dict[str, tuple[Any, Any]]
) -> None:
    """Replaces ``config.json`` (atomically: a full disk leaves the old one whole) and appends
    this start to ``config_history.jsonl``, with the run's id."""
    path = os.path.join(working_dir, "config.json")
    entry = {
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
        "start_step": step,
        "run_id": ensure_run_id(working_dir),
        "changes": {k: {"from": old, "to": new} for k, (old, new) in changes.items()},
        "config": plain(current),
    }
    with _not_written(path):
        write_text_atomically(path, json.dumps(plain(current), indent=2))
    history = os.path.join(working_dir, "config_history.jsonl")
    with _not_written(history), open(history, "a") as f:
        f.write(json.dumps(entry) + "\n")


@contextlib.contextmanager
def _not_written(path: str) -> Iterator[None]:
    """An OSError while writing ``path`` (a full disk) as one line naming it."""
    try:
        yield
    except OSError as error:
        raise NotWritable(
            f"could not write {path} ({error.strerror or error}); the file is as it was before: "
            "free space or fix the location, then run the same command to resume"
        ) from None


# The run's id: a fingerprint that each checkpoint carries, so that checkpoints copied in from
# another working directory are refused instead of resumed as this run's.

RUN_FILE = "run.json"


def run_id(working_dir: str) -> str | None:
    """The id of the run in ``working_dir`` (``run.json``, else the last start recorded in
    ``config_history.jsonl``); None for a new run or one started by a gnp before run ids."""
    path = os.path.join(working_dir, RUN_FILE)
    if os.path.exists(path):
        saved = read_json(path, "it holds the run's id: restore it, or delete it")
        if isinstance(saved, dict) and isinstance(saved.get("run_id"), str):
            return saved["run_id"]
        raise DamagedFile(f"{path} has no run_id; restore it, or delete it")
    ids = [s["run_id"] for s in _history(working_dir) if isinstance(s.get("run_id"), str)]
    return ids[-1] if ids else None


def ensure_run_id(working_dir: str) -> str:
    """The run's id, made at its first start (or the first by this gnp) and kept in
    ``run.json``."""
    current = run_id(working_dir)
    path = os.path.join(working_dir, RUN_FILE)
    if current is None or not os.path.exists(path):
        current = current or uuid.uuid4().hex
        created = datetime.datetime.now().isoformat(timespec="seconds")
        with _not_written(path):
            write_json_atomically(path, {"run_id": current, "created": created})
    return current


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


STEP_TAGS = "step/"  # the TensorBoard tags of the per-step points: step/train_loss, ...


class MetricWriter:
    """Writes from process 0 only. On resume, drops the lines past the restored epoch and step
    (they were written after the last checkpoint and are about to be redone)."""

    def __init__(
        self,
        working_dir: str,
        *,
        enabled: bool = True,
        resume_epoch: int = 0,
        resume_step: int = 0,
    ):
        self.path = os.path.join(working_dir, "metrics.jsonl")
        self.steps_path = os.path.join(working_dir, "step_metrics.jsonl")
        self.enabled = enabled
        self._tensorboard = None
        if not enabled:
            return
        kept = _cut_back(self.path, lambda m: m.get("epoch", 0) <= resume_epoch)
        kept_steps = _cut_back(self.steps_path, lambda m: m.get("step", 0) <= resume_step)
        from tensorboardX import SummaryWriter

        tensorboard_dir = os.path.join(working_dir, "tensorboard")
        for old in glob.glob(os.path.join(tensorboard_dir, "events.out.tfevents.*")):
            os.remove(old)  # derived from the records: rewritten below from the kept lines
        self._tensorboard = SummaryWriter(tensorboard_dir)
        for record in kept:
            self._add_scalars(record)
        for record in kept_steps:
            self._add_scalars(record, STEP_TAGS)
        self._tensorboard.flush()

    def _add_scalars(self, record: dict[str, Any], prefix: str = "") -> None:
        for key, value in record.items():
            if key not in ("epoch", "step") and isinstance(value, int | float):
                self._tensorboard.add_scalar(prefix + key, value, record["step"])

    def write_step(self, record: dict[str, Any]) -> None:
        """One step's metrics (with its ``epoch`` and ``step``, the steps done after it)."""
        if not self.enabled:
            return
        _append(self.steps_path, record)
        self._add_scalars(record, STEP_TAGS)
        self._tensorboard.flush()

    def write(self, record: dict[str, Any]) -> None:
        """One epoch's line."""
        if not self.enabled:
            return
        _append(self.path, record)
        self._add_scalars(record)
        self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _cut_back(path: str, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The records of ``path`` that ``keep`` keeps, the file rewritten to hold only them (in
    one rename: a full disk leaves it whole)."""
    kept = [m for m in read_metrics(path) if keep(m)]
    if os.path.exists(path):
        with _not_written(path):
            write_text_atomically(path, "".join(json.dumps(m) + "\n" for m in kept))
    return kept


def _append(path: str, record: dict[str, Any]) -> None:
    with _not_written(path), open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
