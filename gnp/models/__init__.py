"""The model zoo: every family registers its names on import.

from gnp import models
models.names()
module = models.get_model("WideResNet_28_10", num_classes=10)
"""

from gnp.models import (  # noqa: F401  (each registers its names)
    cait,
    cnn1d,
    pyramidnet,
    resnet,
    small_cnn,
    swin,
    vgg,
    vit,
    vit1d,
    wide_resnet,
)
from gnp.models.registry import get_model, names, register

__all__ = ["get_model", "names", "register"]
