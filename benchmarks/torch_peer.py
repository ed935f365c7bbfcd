"""The PyTorch peer of benchmarks/step_time.py: WRN-d-k with the usual two-backward SAM step.

PyTorch is an optional benchmark extra, never a dependency of gnp:
    .venv/bin/python -m pip install torch==2.13.0
This is how PyTorch SAM/GNP code is commonly written: backward, perturb the weights in place,
backward again with BatchNorm running statistics frozen, restore, mix, step. On a GPU it runs
on ``cuda`` with the settings a PyTorch user would pick for speed (cuDNN autotuning, channels-
last tensors, TF32 allowed as XLA allows it for float32); bfloat16 is ``torch.autocast``, as
flax's ``dtype`` is a compute dtype over float32 parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def padded_shortcut(x: torch.Tensor, features: int, stride: int) -> torch.Tensor:
    """The released WRN's parameter-free shortcut (gnp.models.layers.padded_shortcut): stride×
    stride average pooling, then zero channels up to ``features`` (NCHW)."""
    if stride > 1:
        x = F.avg_pool2d(x, stride, stride)
    return F.pad(x, (0, 0, 0, 0, 0, features - x.shape[1]))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, activate_before_residual: bool):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.cout, self.stride = cout, stride
        self.activate_before_residual = activate_before_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate_before_residual:
            x = residual = y = torch.relu(self.bn1(x))
        else:
            residual, y = x, torch.relu(self.bn1(x))
        y = self.conv2(torch.relu(self.bn2(self.conv1(y))))
        return padded_shortcut(residual, self.cout, self.stride) + y


def wide_resnet(depth: int, widen_factor: int, num_classes: int = 10) -> nn.Module:
    """WRN-depth-widen_factor as gnp.models.wide_resnet builds it: (depth − 4)/6 blocks per
    group at widths 16k, 32k, 64k."""
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False)]
    cin = 16
    for group, base in enumerate((16, 32, 64)):
        for block in range((depth - 4) // 6):
            stride = 2 if group > 0 and block == 0 else 1
            layers.append(Block(cin, base * widen_factor, stride, group == 0 and block == 0))
            cin = base * widen_factor
    layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers, nn.Linear(cin, num_classes))


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe() -> str:
    """PyTorch's version and the device the peer runs on, for a results header."""
    where = device()
    name = torch.cuda.get_device_name(where) if where.type == "cuda" else "cpu"
    return f"torch {torch.__version__} on {where.type} ({name})"


def make_step(
    model: nn.Module,
    alpha: float,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    r: float,
    l2: float,
    lr: float,
    bfloat16: bool,
) -> Callable[[], None]:
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]

    def loss_fn() -> torch.Tensor:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bfloat16):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        return loss + 0.5 * l2 * sum((p * p).sum() for p in params)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        if alpha == 0:
            optimizer.step()
            return
        with torch.no_grad():
            g1 = [p.grad.clone() for p in params]
            scale = r / torch.sqrt(sum((g * g).sum() for g in g1))
            for p, g in zip(params, g1, strict=True):
                p.add_(g * scale)
        optimizer.zero_grad(set_to_none=True)
        momenta = [m.momentum for m in norms]
        for m in norms:  # the perturbed pass must not move the running statistics
            m.momentum = 0.0
        loss_fn().backward()
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        with torch.no_grad():
            for p, g in zip(params, g1, strict=True):
                p.sub_(g * scale)
                p.grad.mul_(alpha).add_(g, alpha=1 - alpha)
        optimizer.step()

    return step


def wide_resnet_runs(
    *,
    depth: int,
    widen_factor: int,
    images: np.ndarray,
    labels: np.ndarray,
    dtype: str,
    r: float,
    l2: float,
    lr: float,
    variants: dict[str, float],
) -> tuple[dict[str, Callable[[], None]], int]:
    """({variant: one training step, finished on the device when it returns}, parameter count)
    for a WRN-depth-widen_factor on ``images`` (NHWC, as the JAX side) and class ``labels``."""
    where = device()
    layout = torch.channels_last if where.type == "cuda" else torch.contiguous_format
    if where.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        torch.backends.cuda.matmul.allow_tf32 = True  # XLA's float32 default on GPU
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(where)
    x = x.contiguous(memory_format=layout)
    y = torch.from_numpy(labels).long().to(where)
    runs, count = {}, 0
    for variant, alpha in variants.items():
        model = wide_resnet(depth, widen_factor).to(where, memory_format=layout).train()
        count = sum(p.numel() for p in model.parameters())
        step = make_step(model, alpha, x, y, r=r, l2=l2, lr=lr, bfloat16=dtype == "bfloat16")

        def run(step: Callable[[], None] = step) -> None:
            step()
            if where.type == "cuda":
                torch.cuda.synchronize()

        runs[variant] = run
    return runs, count
