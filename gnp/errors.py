"""Exceptions as the one line a user reads (no imports beyond the standard library, so the
command line can use it before JAX loads)."""

from __future__ import annotations

import os
import re


def one_line(error: BaseException) -> str:
    """Its type and the first line of its message; for the long messages TensorStore wraps
    an OS error in (e.g. a full disk), the OS error's own words."""
    if code := re.search(r"os_error_code='?(\d+)", str(error)):
        return f"{type(error).__name__}: {os.strerror(int(code[1]))}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__
