"""Models register by name, as in the released code: adding one touches one file
(``gnp.models`` imports every module of its package)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: ``@register("WideResNet_28_10")`` on a module class or a factory."""

    def add(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return add


def names() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_REGISTRY)


def get_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
    """The flax.linen module registered under ``name``.

    ``kwargs`` go to the module (e.g. ``dtype=jnp.bfloat16`` for bf16 compute).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(names())}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)
