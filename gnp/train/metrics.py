"""Per-epoch metrics: ``metrics.jsonl``, TensorBoard events and a PNG of the curves.

``metrics.jsonl`` is the record; the TensorBoard events are derived from it. On
resume both are cut back to the restored epoch: the lines past it are dropped,
and the event files are written afresh from the kept lines, because TensorBoard
would otherwise show the redone steps twice.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
from typing import Any

log = logging.getLogger("gnp")

PLOTTED = (
    ("train_loss", "test_loss", "loss"),
    ("train_error_rate", "test_error_rate", "error rate"),
    ("clean_gradient_norm", "gradient_norm", "gradient norm"),
)


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Every record in ``path``. A torn last line (a crash or a full disk while appending)
    is dropped with a warning; a bad line elsewhere is an error naming the file and line."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [(number, line) for number, line in enumerate(f, 1) if line.strip()]
    records = []
    for position, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError as error:
            if position == len(lines) - 1:
                log.warning("%s: dropping its torn last line %d (%r)", path, number, line[:80])
                break
            raise ValueError(
                f"{path} line {number} is not JSON ({error}); fix or delete that line"
            ) from None
    return records


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

        tensorboard_dir = os.path.join(working_dir, "tensorboard")
        for old in glob.glob(os.path.join(tensorboard_dir, "events.out.tfevents.*")):
            os.remove(old)  # derived from metrics.jsonl: rewritten below from the kept lines
        self._tensorboard = SummaryWriter(tensorboard_dir)
        for record in kept:
            self._add_scalars(record)
        self._tensorboard.flush()

    def _add_scalars(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key not in ("epoch", "step") and isinstance(value, int | float):
                self._tensorboard.add_scalar(key, value, record["step"])

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._add_scalars(record)
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
