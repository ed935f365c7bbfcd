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

# (title, y scale, factor, [(key, label), ...]): what curves.png draws. Loss on a log axis;
# error in percent on a symlog axis (linear below 0.1 %, so an error of 0 still shows); the
# norms say which gradient they are (see docs/training.md#metrics).
PLOTTED = (
    ("loss", "log", 1.0, [("train_loss", "train (mini-batch mean)"), ("test_loss", "test")]),
    (
        "error rate (%)",
        "symlog",
        100.0,
        [("train_error_rate", "train (mini-batch mean)"), ("test_error_rate", "test")],
    ),
    (
        "gradient norm (epoch mean)",
        "log",
        1.0,
        [
            ("clean_gradient_norm", "clean ‖g₁‖ of a mini-batch"),
            ("gradient_norm", "to the optimizer (after clipping)"),
        ],
    ),
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
    """Loss, error rate and gradient norms per epoch, train and test, with the r and α of the
    run in the title (the values in force at the last epoch, and the range where they moved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4.5 * len(PLOTTED), 3.6))
    for ax, (title, scale, factor, curves) in zip(axes, PLOTTED, strict=True):
        for key, label in curves:
            points = [
                (m["epoch"], factor * m[key])
                for m in records
                if key in m and m[key] is not None and math.isfinite(m[key])
            ]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=label)
        if scale == "symlog":
            ax.set_yscale("symlog", linthresh=0.1)
        else:
            ax.set_yscale(scale)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(_coefficients_title(records), fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def _coefficients_title(records: list[dict[str, Any]]) -> str:
    """``r = 0.05, α = 0.8`` (plain training when α or r is 0), with the range of a warmup."""
    parts = []
    for key, symbol in (("r", "r"), ("alpha", "α")):
        values = [m[key] for m in records if isinstance(m.get(key), int | float)]
        if not values:
            continue
        low, last = min(values), values[-1]
        parts.append(f"{symbol} = {last:g}" + (f" (from {low:g})" if low != last else ""))
    return ", ".join(parts) or "curves"
