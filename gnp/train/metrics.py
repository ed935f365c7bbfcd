"""Per-epoch metrics: ``metrics.jsonl``, TensorBoard events and a PNG of the curves."""

from __future__ import annotations

import json
import math
import os
from typing import Any

PLOTTED = (
    ("train_loss", "test_loss", "loss"),
    ("train_error_rate", "test_error_rate", "error rate"),
    ("clean_gradient_norm", "gradient_norm", "gradient norm"),
)


def read_metrics(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
    """Writes from process 0 only. On resume, drops lines past the restored epoch
    (they were written after the last checkpoint and are about to be redone)."""

    def __init__(self, working_dir: str, *, enabled: bool = True, resume_epoch: int = 0):
        self.path = os.path.join(working_dir, "metrics.jsonl")
        self.enabled = enabled
        self._tensorboard = None
        if not enabled:
            return
        kept = [m for m in read_metrics(self.path) if m.get("epoch", 0) <= resume_epoch]
        with open(self.path, "w") as f:
            f.writelines(json.dumps(m) + "\n" for m in kept)
        from tensorboardX import SummaryWriter

        self._tensorboard = SummaryWriter(os.path.join(working_dir, "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key not in ("epoch", "step") and isinstance(value, int | float):
                self._tensorboard.add_scalar(key, value, record["step"])
        self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def plot_curves(metrics_path: str, png_path: str) -> None:
    """Loss, error rate and gradient norm per epoch, train and test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4.5 * len(PLOTTED), 3.5))
    for ax, (train_key, test_key, title) in zip(axes, PLOTTED, strict=True):
        for key in (train_key, test_key):
            points = [
                (m["epoch"], m[key]) for m in records if key and key in m and math.isfinite(m[key])
            ]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
