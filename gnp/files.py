"""Writing and reading the small text files a run or a study keeps (metrics, configs,
results): a rewrite goes to a temporary file renamed into place, so a full disk or a kill
mid-write leaves the old file whole; a file that cannot be read is named with what to do,
not a JSONDecodeError traceback. Standard library only: the command line uses it before
JAX loads."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class DamagedFile(ValueError):
    """A file gnp wrote earlier that no longer parses (torn by a crash, or edited by hand)."""


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Replaces `path` with `text` in one rename: readers see the old file or the new one,
    never a torn one; on any failure (ENOSPC included) the old file is left as it was."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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
