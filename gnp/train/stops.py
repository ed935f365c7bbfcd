"""How a run ends before its last epoch: the conditions the trainer raises and the command
line turns into an exit code and one line (``gnp.main.main.describe_failure``).

Standard library only, so that the command line can name them before JAX loads.
"""

from __future__ import annotations

import signal


class NonFiniteError(RuntimeError):
    """Training produced NaN or Inf; the message names the step and the last good checkpoint."""


class Preempted(RuntimeError):
    """The run was asked to stop (SIGTERM or Ctrl-C) and saved a checkpoint at the current step.

    ``exit_code`` follows the shell's convention for the signal (128 + its number).
    """

    def __init__(self, message: str, exit_code: int = 128 + signal.SIGTERM) -> None:
        super().__init__(message)
        self.exit_code = exit_code
