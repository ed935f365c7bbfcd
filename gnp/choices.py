"""One check for every named option (model, data set, optimizer, schedule, ...)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def check_choice(value: T, choices: Iterable[T], key: str) -> T:
    """``value`` if it is one of ``choices``; else a ValueError naming the key and the choices."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {key} {value!r}; choose one of {choices}")
    return value
