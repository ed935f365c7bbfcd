"""How a run ends before its last epoch: a stop asked for (SIGTERM, SIGHUP, Ctrl-C) and a step gone
non-finite; the conditions the trainer raises and the command line turns into an exit code and
one line (``gnp.main.main.describe_failure``).

Standard library only at import (JAX is imported where it is used), so that the command line
can name these before JAX loads.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

# A NaN input can leave the loss finite (ReLU maps NaN to 0) while the gradient is not.
GUARDED = ("train_loss", "gradient_norm", "clean_gradient_norm", "update_norm")


class NonFiniteError(RuntimeError):
    """Training produced NaN or Inf; the message names the step and the last good checkpoint."""


class Preempted(RuntimeError):
    """The run was asked to stop (SIGTERM, SIGHUP or Ctrl-C) and saved a checkpoint at the
    current step (or had just finished: what would run next, the study's next run, must not).

    ``exit_code`` follows the shell's convention for the signal (128 + its number).
    """

    def __init__(self, message: str, exit_code: int = 128 + signal.SIGTERM) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def first_non_finite(step_metrics: Sequence[dict[str, Any]]) -> tuple[int, str, float] | None:
    """(index, metric, value) of the first step whose loss, gradient or update is not finite."""
    for index, metrics in enumerate(step_metrics):
        for key in GUARDED:
            if not math.isfinite(float(metrics.get(key, 0.0))):
                return index, key, float(metrics[key])
    return None


# Each means "stop and keep the work": a cluster's preemption notice (SIGTERM), a closed
# terminal or ssh session (SIGHUP, whose default would end the run unsaved), Ctrl-C.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name)
)


class PreemptionGuard:
    """Turns SIGTERM, SIGHUP and a first Ctrl-C into "save at the next step and stop"; a
    second Ctrl-C aborts at once, keeping the last checkpoint.

    One process: a signal handler sets a flag. Several: JAX's preemption sync point
    (through orbax), so that every host saves at the same step.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum
        if signum == signal.SIGINT:
            print(
                "\nCtrl-C: saving a checkpoint at the next step, then stopping "
                "(press Ctrl-C again to stop at once without saving)",
                file=sys.stderr,
                flush=True,
            )
            signal.signal(signal.SIGINT, signal.default_int_handler)

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signal or signal.SIGTERM)

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # signals go to it only
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    @property
    def cause(self) -> str:
        return signal.Signals(self.signal or signal.SIGTERM).name

    def reached(self, step: int, checkpoints: Any) -> bool:
        """Whether to save and stop before ``step``; several processes decide together (JAX's
        preemption sync point, through orbax's ``checkpoints``)."""
        import jax

        if jax.process_count() > 1:  # every host must stop at the same step: JAX syncs them
            return checkpoints.reached_preemption(step)
        return self.requested


def describe_stop(error: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) when ``error`` is a stop asked for (a signal, Ctrl-C), else None:
    the same line from gnp-train and alpha-sweep; the study takes the exit code and says a line
    of its own (its finished runs, not one run's checkpoints, are what is kept)."""
    if isinstance(error, Preempted):
        return error.exit_code, str(error)
    if isinstance(error, KeyboardInterrupt):
        return 128 + signal.SIGINT, (
            "interrupted (Ctrl-C); the checkpoints already in --working_dir are kept: run the "
            "same command to resume"
        )
    return None


def exit_at_once_on_interrupt(code: int = 128 + signal.SIGINT) -> None:
    """From here on (a command line that has said its last line and is exiting), Ctrl-C ends
    the process at once and quietly: the run is saved or reported already, and a
    KeyboardInterrupt inside the exit's clean-up (orbax's, JAX's, grain's atexit callbacks)
    would print an "Exception ignored in atexit callback" traceback after that last line."""

    def exit_now(signum: int, frame: Any) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, exit_now)
