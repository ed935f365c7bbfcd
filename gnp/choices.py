"""One check for every named option (model, data set, optimizer, schedule, ...)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def check_choice(value: T, choices: Iterable[T], key: str) -> T:
    """``value`` if it is one of ``choices``; else a ValueError naming the key, the closest
    choice (case aside: ``resnet18`` finds ``ResNet18``) and the choices."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(
            f"unknown {key} {value!r}{did_you_mean(value, choices)}; choose one of {choices}"
        )
    return value


def did_you_mean(value: object, choices: list[T]) -> str:
    """`` (did you mean 'X'?)`` for the choice nearest ``value`` by spelling, case aside, or
    nothing: the one hint every unknown name gets (choices, config keys, model fields)."""
    if not isinstance(value, str) or not all(isinstance(c, str) for c in choices):
        return ""
    folded = {str(c).lower(): c for c in choices}
    hint = difflib.get_close_matches(value.lower(), list(folded), n=1)
    return f" (did you mean {folded[hint[0]]!r}?)" if hint else ""
