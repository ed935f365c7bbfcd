"""Figures of the analysis tools, each saved as a PNG with its numbers in a JSON beside it.

The JSON (same stem, ``.json``) holds exactly the numbers drawn, so a figure can
be re-plotted, restyled or compared without recomputing anything. Non-finite
values (a loss that overflows far along a direction) are written as ``null``
to keep the files standard JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

EpochMetrics = Mapping[str, float]


def json_ready(value: Any) -> Any:
    """Arrays and numpy scalars as JSON lists and floats; NaN and ±inf as None."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _save(figure: Figure, path: str | Path, numbers: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150, bbox_inches="tight")
    path.with_suffix(".json").write_text(json.dumps(json_ready(numbers), indent=1) + "\n")
    return path


def plot_loss_curve(
    coordinates: ArrayLike,
    losses: ArrayLike | Mapping[str, ArrayLike],
    path: str | Path,
    *,
    xlabel: str = "t",
    title: str | None = None,
) -> Path:
    """A 1-D slice or interpolation: loss against t, one line per label when ``losses`` is a dict.

    Several runs along directions normalized to their own filters share one
    axis, which is how Li et al. compare sharpness.
    """
    curves = dict(losses) if isinstance(losses, Mapping) else {"loss": losses}
    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    for label, values in curves.items():
        axes.plot(np.asarray(coordinates), np.asarray(values), label=label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("loss")
    if len(curves) > 1:
        axes.legend()
    if title:
        axes.set_title(title)
    numbers = {"coordinates": np.asarray(coordinates), "losses": curves}
    return _save(figure, path, numbers)


def plot_loss_contour(
    coordinates_x: ArrayLike,
    coordinates_y: ArrayLike,
    values: ArrayLike,
    path: str | Path,
    *,
    levels: int = 30,
    title: str | None = None,
) -> Path:
    """A 2-D slice as filled contours; ``values[i, j]`` is the loss at ``(x_i, y_j)``."""
    x, y, z = np.asarray(coordinates_x), np.asarray(coordinates_y), np.asarray(values)
    if z.shape != (x.size, y.size):
        raise ValueError(
            f"values has shape {z.shape}, expected (len(x), len(y)) = {(x.size, y.size)}"
        )
    figure = Figure(figsize=(4.5, 4))
    axes = figure.subplots()
    filled = axes.contourf(x, y, z.T, levels=levels, cmap="viridis")
    axes.contour(x, y, z.T, levels=levels, colors="k", linewidths=0.3)
    figure.colorbar(filled, ax=axes, label="loss")
    axes.set_xlabel("direction 1")
    axes.set_ylabel("direction 2")
    if title:
        axes.set_title(title)
    numbers = {"coordinates_x": x, "coordinates_y": y, "values": z}
    return _save(figure, path, numbers)


def plot_eigenvalues(
    eigenvalues: ArrayLike | Mapping[str, ArrayLike],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Top Hessian eigenvalues by rank, one series per label (e.g. per α or per checkpoint)."""
    series = dict(eigenvalues) if isinstance(eigenvalues, Mapping) else {"eigenvalues": eigenvalues}
    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    for label, values in series.items():
        values = np.asarray(values)
        axes.plot(np.arange(1, values.size + 1), values, marker="o", label=label)
    axes.set_xlabel("rank")
    axes.set_ylabel("Hessian eigenvalue")
    if len(series) > 1:
        axes.legend()
    if title:
        axes.set_title(title)
    return _save(figure, path, {"eigenvalues": series})


def plot_alpha_sweep(
    curves: Mapping[str, Sequence[EpochMetrics]],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Gradient norm and test error per epoch for each α, two panels (the 2022 paper's Figure 3).

    ``curves`` maps a label (e.g. ``"α=0.8"``) to per-epoch dicts with ``epoch``,
    ``gradient_norm`` and ``test_error_rate`` (a fraction, drawn in percent).
    Epochs without an evaluation may leave ``test_error_rate`` out.
    """
    figure = Figure(figsize=(10, 3.8))
    norm_axes, error_axes = figure.subplots(1, 2)
    for label, rows in curves.items():
        for axes, key, scale in (
            (norm_axes, "gradient_norm", 1.0),
            (error_axes, "test_error_rate", 100.0),
        ):
            points = sorted((row["epoch"], row[key]) for row in rows if row.get(key) is not None)
            if points:
                epochs, values = zip(*points, strict=True)
                axes.plot(epochs, np.asarray(values) * scale, label=label)
    norm_axes.set_ylabel("gradient norm ‖∇L‖")
    error_axes.set_ylabel("test error (%)")
    for axes in (norm_axes, error_axes):
        axes.set_xlabel("epoch")
        axes.legend()
    if title:
        figure.suptitle(title)
    numbers = {"curves": {label: [dict(row) for row in rows] for label, rows in curves.items()}}
    return _save(figure, path, numbers)
