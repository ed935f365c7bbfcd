"""Names to things, filled by the modules that define them: how a model family or a data set
is added in one file (its module registers itself; its package imports every module)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """``name → T``, where ``what`` ("model", "data set") names the kind in errors."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("Name")`` on a class or function."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The entry of ``name``; an unknown name is a ValueError listing the known ones."""
        if name not in self._entries:
            raise ValueError(
                f"unknown {self.what} {name!r}; registered {self.what}s: {', '.join(self.names())}"
            )
        return self._entries[name]
