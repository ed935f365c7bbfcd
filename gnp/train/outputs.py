"""Start-up checks of every place a run writes, so that a bad location fails in the first
second with one line instead of at the first checkpoint, epochs later."""

from __future__ import annotations

import os

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
