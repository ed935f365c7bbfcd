"""Models register by name, as in the released code: adding one touches one file
(``gnp.models`` imports every module of its package)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gnp.registry import Registry

ModelFactory = Callable[..., nn.Module]
_MODELS: Registry[ModelFactory] = Registry("model")

register = _MODELS.register  # ``@register("WideResNet_28_10")`` on a module class or a factory
names = _MODELS.names
# The compute dtypes a model takes, by the name a config gives (``model.dtype``); parameters
# stay float32 whatever the compute dtype.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def get_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
    """The flax.linen module registered under ``name``.

    ``kwargs`` go to the module (e.g. ``dtype=jnp.bfloat16`` for bf16 compute).
    """
    return _MODELS.get(name)(num_classes=num_classes, **kwargs)
