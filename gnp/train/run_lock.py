"""One run per ``--working_dir``: an advisory lock held for the whole run.

The lock is ``fcntl.flock`` on ``working_dir/run.lock``. The kernel releases it
when the holding process dies, however it dies, so a lock left by a killed run
is taken over without any clean-up; the file only says who holds it now.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket


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
