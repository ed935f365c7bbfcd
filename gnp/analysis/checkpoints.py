"""Which checkpoint of a run an analysis reads: the one asked for (``--step``), else the
newest that restores.

Analysis only reads: a damaged checkpoint is skipped with one line saying so, never renamed
(the trainer sets it aside when it next resumes). A run that is still training rotates its
checkpoints, so a step listed a moment ago can vanish before it is read: the newest is then
looked up again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gnp.errors import one_line
from gnp.train.checkpoint import Checkpoints, state_digest

# A run rotating its checkpoints can delete the one being read; this many fresh looks.
ATTEMPTS = 3


class CheckpointChoiceError(ValueError):
    """No checkpoint of the run can be read (or the step asked for is not kept)."""


def _steps_text(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if steps else "none"


def _read(directory: Path, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    checkpoints = Checkpoints(str(directory), read_only=True)
    try:
        state, meta = checkpoints.load(step)
    finally:
        checkpoints.close()
    saved = meta.get("state_sha256")  # absent in checkpoints of older gnp
    if saved is not None and saved != state_digest(state):
        raise ValueError("its arrays differ from the SHA-256 saved with them")
    return state, meta


def kept_steps(directory: Path) -> list[int]:
    checkpoints = Checkpoints(str(directory), read_only=True)
    try:
        return checkpoints.all_steps()
    finally:
        checkpoints.close()


def read_checkpoint(
    directory: str | os.PathLike[str],
    step: int | None = None,
    *,
    say: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, meta)`` of checkpoint ``step`` in ``directory`` (``RUN/checkpoints``).

    ``step=None``: the newest that restores; each damaged one passed over is reported through
    ``say`` in one line. A given step that is not kept is refused listing the kept steps; one
    that is damaged is refused (another step is the user's choice, not ours).
    """
    directory = Path(directory)
    if step is not None:
        steps = kept_steps(directory)
        if step not in steps:
            raise CheckpointChoiceError(
                f"no checkpoint of step {step} in {directory}; kept steps: {_steps_text(steps)}"
            )
        try:
            return _read(directory, step)
        except FileNotFoundError:
            raise CheckpointChoiceError(
                f"checkpoint {directory / str(step)} was deleted while it was read (the run "
                f"rotates its checkpoints); kept steps now: {_steps_text(kept_steps(directory))}"
            ) from None
        except Exception as error:
            raise CheckpointChoiceError(
                f"checkpoint {directory / str(step)} is damaged ({one_line(error)}); kept "
                f"steps: {_steps_text(steps)}"
            ) from None
    damaged: set[int] = set()
    for _ in range(ATTEMPTS):
        candidates = [s for s in reversed(kept_steps(directory)) if s not in damaged]
        vanished = False
        for position, candidate in enumerate(candidates):
            try:
                return _read(directory, candidate)
            except FileNotFoundError:  # rotated away by the training run: look again
                vanished = True
                break
            except Exception as error:
                damaged.add(candidate)
                then = (
                    "reading the previous one" if position + 1 < len(candidates) else "none older"
                )
                say(
                    f"checkpoint {directory / str(candidate)} is damaged "
                    f"({one_line(error)}); {then}"
                )
        if not vanished:
            break
    steps = kept_steps(directory)
    if not steps:
        raise CheckpointChoiceError(
            f"no checkpoint in {directory}: the run has not saved one yet "
            "(it saves every save_ckpt_every_n_epochs epochs and at the end)"
        )
    raise CheckpointChoiceError(
        f"no checkpoint in {directory} could be read (kept steps: {_steps_text(steps)}; "
        f"damaged: {_steps_text(sorted(damaged))})"
    )
