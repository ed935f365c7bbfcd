"""The PyTorch peer of benchmarks/step_time.py: WRN-16-4 with the usual two-backward SAM step.

PyTorch is an optional benchmark extra, never a dependency of gnp:
    .venv/bin/python -m pip install torch==2.13.0
This is how PyTorch SAM/GNP code is commonly written: backward, perturb the weights in place,
backward again with BatchNorm running statistics frozen, restore, mix, step.
"""

from __future__ import annotations

import statistics
import time

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


def wide_resnet_16_4(num_classes: int = 10) -> nn.Module:
    widths, layers, cin = (64, 128, 256), [nn.Conv2d(3, 16, 3, 1, 1, bias=False)], 16
    for group, width in enumerate(widths):
        for block in range(2):  # (16 - 4) / 6 blocks per group
            stride = 2 if group > 0 and block == 0 else 1
            layers.append(Block(cin, width, stride, group == 0 and block == 0))
            cin = width
    layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers, nn.Linear(cin, num_classes))


def make_step(model: nn.Module, alpha: float, images, labels, *, r: float, l2: float, lr: float):
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]

    def loss_fn() -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(images), labels)
        return loss + 0.5 * l2 * sum((p * p).sum() for p in params)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        if alpha == 0:
            optimizer.step()
            return
        with torch.no_grad():
            g1 = [p.grad.clone() for p in params]
            scale = float(r / torch.sqrt(sum((g * g).sum() for g in g1)))
            for p, g in zip(params, g1, strict=True):
                p.add_(g, alpha=scale)
        optimizer.zero_grad(set_to_none=True)
        momenta = [m.momentum for m in norms]
        for m in norms:  # the perturbed pass must not move the running statistics
            m.momentum = 0.0
        loss_fn().backward()
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        with torch.no_grad():
            for p, g in zip(params, g1, strict=True):
                p.sub_(g, alpha=scale)
                p.grad.mul_(alpha).add_(g, alpha=1 - alpha)
        optimizer.step()

    return step


def time_torch_steps(
    *, batch: int, steps: int, r: float, l2: float, lr: float, variants: dict[str, float]
) -> dict[str, float]:
    """Median seconds per step of each variant (α), after two warm-up steps."""
    torch.manual_seed(0)
    images, labels = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    results = {}
    for variant, alpha in variants.items():
        step = make_step(wide_resnet_16_4().train(), alpha, images, labels, r=r, l2=l2, lr=lr)
        for _ in range(2):
            step()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        results[variant] = statistics.median(times)
    return results
