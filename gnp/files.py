"""Writing and reading the small text files a run or a study keeps (metrics, configs,
results): a rewrite goes to a temporary file renamed into place, so a full disk or a kill
mid-write leaves the old file whole; a file that cannot be read is named with what to do,
not a JSONDecodeError traceback. Standard library only: the command line uses it before
JAX loads."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class DamagedFile(ValueError):
    """A file gnp wrote earlier that no longer parses (torn by a crash, or edited by hand)."""


def _mode_for(path: Path) -> int:
    """The permissions a rewrite of ``path`` keeps: its own where it exists, else what a
    plain ``open`` would give a new file (0o666 less the umask). ``mkstemp`` makes its file
    0o600, so without this every rewritten config or results file became unreadable to the
    rest of a shared group."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        pass
    try:  # Linux names the umask; os.umask can read it only by setting it, process-wide.
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], binary: bool = False) -> Iterator[IO[Any]]:
    """A file whose contents replace ``path`` in one rename when the block ends: readers see
    the old file or the new one, never a torn one; on any failure (ENOSPC included) the old
    file is left as it was and the temporary one removed."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, _mode_for(path))
        mode, encoding = ("wb", None) if binary else ("w", "utf-8")
        with os.fdopen(handle, mode, encoding=encoding) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Replaces `path` with `text` in one rename (``atomic_file``)."""
    with atomic_file(path) as file:
        file.write(text)


def write_json_atomically(path: str | os.PathLike[str], value: Any) -> None:
    """`value` as indented JSON, replaced atomically (see write_text_atomically)."""
    write_text_atomically(path, json.dumps(value, indent=1) + "\n")


def read_json(path: str | os.PathLike[str], fix: str) -> Any:
    """The JSON in `path`; a file that does not parse is refused naming it and `fix` (what
    the user can do, e.g. "delete it to start the study's runs over")."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        reason = f"{error.__class__.__name__}: {error}"
        raise DamagedFile(f"{path} is damaged ({reason}); {fix}") from None
