"""The model zoo: every family registers its names on import.

from gnp import models
models.names()
module = models.get_model("WideResNet_28_10", num_classes=10)

Adding a model family is adding one module here: every module of this package is
imported below, so its ``@register`` decorators run without a list to keep up to date.
"""

import importlib
import pkgutil

from gnp.models.layers import synchronized_batch_norm
from gnp.models.registry import DTYPES, get_model, names, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DTYPES", "get_model", "names", "register", "synchronized_batch_norm"]
