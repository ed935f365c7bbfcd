"""The config a run was trained with: ``config.json`` (the one in effect now) and
``config_history.jsonl`` (one line per start, with what changed).

Resuming with another config would mix two runs under one name (another α for
the second half, another batch size under the same step count), so a resumed
run must have the config it was started with. Two kinds of key are exempt:
``BOOKKEEPING`` keys change where or how often things are written, not what is
trained, and may always change; ``EXTENSIBLE`` keys change the run and are
allowed only when named in ``--allow_config_change``.

A config.json written by an older gnp is read as that version meant it: a key it
lacks (added since) was trained at its default, so only another value is a
change; a function saved by its repr (``'<function f at 0x7f…>'``, before
function paths) is the function of that name; a key this version no longer has
is ignored with a notice when it was unset (None or empty), and refused by name
when it was set, since this version cannot train the run as it was.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Collection
from typing import Any

from gnp.configs.base import get_base_config
from gnp.train.gr_schedule import function_path

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
    if saved == current:
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
