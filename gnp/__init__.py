"""gnp: gradient norm penalty and sharpness-aware training in JAX.

``gnp.value_and_grad`` is the whole library for users who bring their own
training loop (``gnp.efficient`` has its cheaper variants); ``python -m gnp.main``
is the training framework built on it.
"""

from gnp import efficient
from gnp.gradient import (
    Diagnostics,
    ascent_direction,
    diagnostics,
    global_norm,
    mix,
    penalized_gradient,
    perturb,
    value_and_grad,
)
from gnp.options import GNPOptions, OptionError

__all__ = [
    "Diagnostics",
    "GNPOptions",
    "OptionError",
    "ascent_direction",
    "diagnostics",
    "efficient",
    "global_norm",
    "mix",
    "penalized_gradient",
    "perturb",
    "value_and_grad",
]
__version__ = "0.1.0"
