"""gnp: gradient norm penalty and sharpness-aware training in JAX.

``gnp.value_and_grad`` is the whole library for users who bring their own
training loop; ``python -m gnp.main`` is the training framework built on it.
"""

from gnp.gradient import ascent_direction, global_norm, penalized_gradient, value_and_grad

__all__ = ["ascent_direction", "global_norm", "penalized_gradient", "value_and_grad"]
__version__ = "0.1.0"
