"""The curves of a training run: loss, error rate and gradient norms per epoch, from the records
of its ``metrics.jsonl`` (``curves.png`` in every working directory).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

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


def plot_training_curves(records: Sequence[Mapping[str, Any]], png_path: str | Path) -> Path:
    """Loss, error rate and gradient norms per epoch, train and test, with the r and α of the
    run in the title (the values in force at the last epoch, and the range where they moved)."""
    figure = Figure(figsize=(4.5 * len(PLOTTED), 3.6))
    axes = figure.subplots(1, len(PLOTTED))
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
    figure.suptitle(_coefficients_title(records), fontsize=10)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    return Path(png_path)


def _coefficients_title(records: Sequence[Mapping[str, Any]]) -> str:
    """``r = 0.05, α = 0.8`` (plain training when α or r is 0), with the range of a warmup."""
    parts = []
    for key, symbol in (("r", "r"), ("alpha", "α")):
        values = [m[key] for m in records if isinstance(m.get(key), int | float)]
        if not values:
            continue
        low, last = min(values), values[-1]
        parts.append(f"{symbol} = {last:g}" + (f" (from {low:g})" if low != last else ""))
    return ", ".join(parts) or "curves"
