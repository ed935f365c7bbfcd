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
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike

from gnp.analysis.hessian import Eigenpairs

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
    marks: Mapping[str, float] | None = None,
) -> Path:
    """A 1-D slice or interpolation: loss against t, one line per label when ``losses`` is a dict.

    Several runs along directions normalized to their own filters share one
    axis, which is how Li et al. compare sharpness. ``marks`` names points of
    the t axis (the checkpoint at t = 0, the two runs of an interpolation),
    drawn as dotted lines and labelled on the axis.
    """
    curves = dict(losses) if isinstance(losses, Mapping) else {"loss": losses}
    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    for label, values in curves.items():
        axes.plot(np.asarray(coordinates), np.asarray(values), label=label)
    for name, t in (marks or {}).items():
        axes.axvline(t, color="gray", linestyle=":", linewidth=1)
        axes.annotate(
            name,
            (t, 1),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10),
            textcoords="offset points",
            color="gray",
            fontsize=8,
        )
    axes.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    axes.set_xlabel(xlabel)
    axes.set_ylabel("loss")
    if len(curves) > 1:
        axes.legend()
    if title:
        axes.set_title(title)
    numbers = {"coordinates": np.asarray(coordinates), "losses": curves}
    return _save(figure, path, numbers)


def contour_levels(values: np.ndarray, count: int) -> tuple[np.ndarray, bool]:
    """``count`` levels from the lowest to the highest finite value, and whether they are
    log-spaced: they are when every value is positive (a loss basin's floor then gets as
    many lines as its walls, as in Li et al.'s plots), else evenly spaced."""
    finite = values[np.isfinite(values)]
    low, high = float(finite.min()), float(finite.max())
    if low > 0 and high > low:
        return np.geomspace(low, high, count), True
    return np.linspace(low, high if high > low else low + 1.0, count), False


def plot_loss_contour(
    coordinates_x: ArrayLike,
    coordinates_y: ArrayLike,
    values: ArrayLike,
    path: str | Path,
    *,
    levels: int = 30,
    title: str | None = None,
) -> Path:
    """A 2-D slice as filled contours; ``values[i, j]`` is the loss at ``(x_i, y_j)``.

    The levels (``contour_levels``, in the JSON) are log-spaced for a positive loss, with a
    log colour scale to match; the checkpoint (0, 0) is marked.
    """
    x, y, z = np.asarray(coordinates_x), np.asarray(coordinates_y), np.asarray(values)
    if z.shape != (x.size, y.size):
        raise ValueError(
            f"values has shape {z.shape}, expected (len(x), len(y)) = {(x.size, y.size)}"
        )
    edges, logarithmic = contour_levels(z, levels)
    norm = LogNorm(edges[0], edges[-1]) if logarithmic else None
    figure = Figure(figsize=(4.5, 4))
    axes = figure.subplots()
    filled = axes.contourf(x, y, z.T, levels=edges, cmap="viridis", norm=norm)
    axes.contour(x, y, z.T, levels=edges, colors="k", linewidths=0.3)
    bar = figure.colorbar(
        filled, ax=axes, label="loss (log-spaced levels)" if logarithmic else "loss"
    )
    ticks = edges[:: max(1, levels // 6)]
    bar.set_ticks(ticks, labels=[f"{v:.3g}" for v in ticks])
    bar.minorticks_off()
    if x.min() <= 0 <= x.max() and y.min() <= 0 <= y.max():
        axes.plot([0], [0], "w+", markersize=9, label="θ")
    axes.set_xlabel("direction 1")
    axes.set_ylabel("direction 2")
    axes.set_aspect("equal" if np.ptp(x) == np.ptp(y) else "auto")
    if title:
        axes.set_title(title)
    numbers = {"coordinates_x": x, "coordinates_y": y, "values": z, "levels": edges}
    return _save(figure, path, numbers)


def plot_batch_gradient_norms(
    norms: ArrayLike, full_norm: float, path: str | Path, *, title: str | None = None
) -> Path:
    """The per-batch gradient norms ‖∇L_b‖ against the whole split's ‖∇L‖.

    Up to 30 batches each is a point (a histogram of a handful of values says
    nothing); more make a histogram with whole-number counts. The mean of the
    per-batch norms is drawn too: it exceeds ‖∇L‖ by the batch-to-batch noise.
    """
    norms = np.asarray(norms, dtype=float)
    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    if norms.size <= 30:
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, norms.size)
        axes.plot(norms, jitter, "o", color="tab:blue", alpha=0.7, label=f"{norms.size} batches")
        axes.set_ylim(-1, 1)
        axes.set_yticks([])
    else:
        axes.hist(norms, bins=min(50, norms.size // 3), color="tab:blue", alpha=0.7)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("batches")
    axes.axvline(
        norms.mean(), color="tab:blue", linestyle=":", label=f"mean per batch = {norms.mean():.4g}"
    )
    axes.axvline(full_norm, color="k", linestyle="--", label=f"whole split ‖∇L‖ = {full_norm:.4g}")
    axes.set_xlabel("per-batch gradient norm ‖∇L_b‖")
    axes.legend(fontsize=8)
    if title:
        axes.set_title(title)
    return _save(figure, path, {"batch_gradient_norms": norms, "norm": full_norm})


def plot_eigenvalues(
    eigenvalues: ArrayLike | Eigenpairs | Mapping[str, ArrayLike | Eigenpairs],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Top Hessian eigenvalues by rank, one series per label (e.g. per α or per checkpoint).

    Given ``Eigenpairs`` (from ``top_eigenvalues``) each value gets an error bar
    of ± its residual ‖H v − λ v‖ (an eigenvalue of H lies within it) and a
    hollow marker when it is not converged; the JSON holds the residuals and flags.
    """
    series = dict(eigenvalues) if isinstance(eigenvalues, Mapping) else {"eigenvalues": eigenvalues}
    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    numbers: dict[str, Any] = {"eigenvalues": {}}
    unconverged_drawn = False
    for index, (label, values) in enumerate(series.items()):
        color = f"C{index}"  # explicit: error bars would otherwise advance the colour cycle
        pairs = values if isinstance(values, Eigenpairs) else None
        values = np.asarray(pairs.eigenvalues if pairs else values)
        ranks = np.arange(1, values.size + 1)
        numbers["eigenvalues"][label] = values
        if pairs is None:
            axes.plot(ranks, values, marker="o", color=color, label=label)
            continue
        axes.plot(ranks, values, color=color, label=label)
        axes.errorbar(ranks, values, yerr=pairs.residual_norms, fmt="none", ecolor=color, capsize=3)
        done = pairs.converged
        axes.plot(ranks[done], values[done], "o", color=color, zorder=3)
        axes.plot(ranks[~done], values[~done], "o", mfc="white", mec=color, zorder=3)
        unconverged_drawn |= bool((~done).any())
        numbers.setdefault("residual_norms", {})[label] = pairs.residual_norms
        numbers.setdefault("converged", {})[label] = pairs.converged
        numbers["tolerance"] = pairs.tolerance
    axes.set_xlabel("rank")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("Hessian eigenvalue ± ‖Hv − λv‖" if "converged" in numbers else "eigenvalue")
    if unconverged_drawn:
        axes.plot([], [], "o", mfc="white", mec="gray", label="not converged")
    if len(series) > 1 or unconverged_drawn:
        axes.legend()
    if title:
        axes.set_title(title)
    return _save(figure, path, numbers)


# The trainer's per-epoch clean gradient norm; runs written before it existed logged the same
# quantity as ``gradient_norm``, which now means the clipped combined gradient.
CLEAN_GRADIENT_NORM = "clean_gradient_norm"
LEGACY_GRADIENT_NORM = "gradient_norm"


def clean_gradient_norm_key(rows: Sequence[EpochMetrics]) -> str:
    """``clean_gradient_norm`` if the run logged it, else ``gradient_norm`` (an older run)."""
    return (
        CLEAN_GRADIENT_NORM
        if any(row.get(CLEAN_GRADIENT_NORM) is not None for row in rows)
        else LEGACY_GRADIENT_NORM
    )


def plot_alpha_sweep(
    curves: Mapping[str, Sequence[EpochMetrics]],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Clean mini-batch gradient norm and test error per epoch for each α (2022 paper, Figure 3).

    ``curves`` maps a label (e.g. ``"α=0.8"``) to per-epoch ``metrics.jsonl``
    rows with ``epoch``, ``clean_gradient_norm`` (or, for runs written before
    that key, ``gradient_norm``, which then held the same quantity) and
    ``test_error_rate`` (a fraction, drawn in percent). Epochs without an
    evaluation may leave ``test_error_rate`` out. The norm is the epoch's mean
    of mini-batch norms ‖∇L_B(θ)‖, not ‖∇L(θ)‖: the axis says so, and a curve
    read from the older key says so in its legend.
    """
    figure = Figure(figsize=(10, 3.8))
    norm_axes, error_axes = figure.subplots(1, 2)
    keys = {label: clean_gradient_norm_key(rows) for label, rows in curves.items()}
    for label, rows in curves.items():
        for axes, key, scale in (
            (norm_axes, keys[label], 1.0),
            (error_axes, "test_error_rate", 100.0),
        ):
            points = sorted((row["epoch"], row[key]) for row in rows if row.get(key) is not None)
            if points:
                epochs, values = zip(*points, strict=True)
                legacy = axes is norm_axes and key == LEGACY_GRADIENT_NORM
                name = f"{label} (older run: gradient_norm)" if legacy else label
                axes.plot(epochs, np.asarray(values) * scale, marker=".", label=name)
    norm_axes.set_ylabel("clean gradient norm, epoch mean of ‖∇L_B‖")
    error_axes.set_ylabel("test error (%)")
    for axes in (norm_axes, error_axes):
        axes.set_xlabel("epoch")
        axes.legend()
    if title:
        figure.suptitle(title)
    numbers = {
        "curves": {label: [dict(row) for row in rows] for label, rows in curves.items()},
        "gradient_norm_keys": keys,
    }
    return _save(figure, path, numbers)
