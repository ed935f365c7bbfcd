"""The curves of a training run: loss, error rate, gradient norms and (when the run logged
them) the sharpness diagnostics per epoch, from the records of its ``metrics.jsonl``
(``curves.png`` in every working directory), and the same for several runs on one figure
(``gnp-analyze curves RUN1 RUN2 ...``).

The working directory's ``config.json`` names the run in the title (model, data set) and says
whether gradients were clipped; its ``config_history.jsonl`` (one line per start) says where
the run was resumed or extended, drawn as dotted lines. An epoch resumed from a checkpoint
saved inside it has mini-batch means over only the steps after the resume: drawn as a hollow
marker off the line, not as a bump in it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from gnp.files import write_json_atomically

Panel = tuple[str, str, float, list[tuple[str, str]]]

# (title, y scale, factor, [(key, label), ...]): what curves.png draws. Loss on a log axis;
# error in percent on a symlog axis (linear below 0.1 %, so an error of 0 still shows); the
# norms say which gradient they are (see docs/training.md#metrics).
PLOTTED: tuple[Panel, ...] = (
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
            ("gradient_norm", "to the optimizer"),
        ],
    ),
)
# The sharpness diagnostics of a penalized step (epoch means), each drawn in its own panel
# when the run logged it; the trainer may name them with or without the ``train_`` prefix.
DIAGNOSTICS: tuple[Panel, ...] = (
    ("sharpness L(θ+ε) − L(θ) (epoch mean)", "linear", 1.0, [("sharpness", "mini-batch")]),
    ("cos(g₁, g₂) (epoch mean)", "linear", 1.0, [("gradient_cosine", "mini-batch")]),
    ("perturbed ‖g₂‖ (epoch mean)", "log", 1.0, [("perturbed_gradient_norm", "mini-batch")]),
)
# Records that are means over an epoch's steps (a partial epoch makes them partial means).
EPOCH_MEAN_KEYS = {
    "train_loss",
    "train_error_rate",
    "clean_gradient_norm",
    "gradient_norm",
    "sharpness",
    "gradient_cosine",
    "perturbed_gradient_norm",
}


@dataclass
class RunRecords:
    """What the figure needs of one run: its records and what its directory says."""

    records: Sequence[Mapping[str, Any]]
    name: str = "run"
    config: Mapping[str, Any] = field(default_factory=dict)
    starts: Sequence[Mapping[str, Any]] = ()  # config_history.jsonl lines


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line of an interrupted start
            continue
    return lines


def read_run_records(working_dir: str | Path, records: Sequence[Mapping[str, Any]] | None = None):
    """``RunRecords`` of a working directory (``metrics.jsonl`` unless ``records`` are given)."""
    working_dir = Path(working_dir)
    if records is None:
        records = [r for r in _read_jsonl(working_dir / "metrics.jsonl") if "epoch" in r]
    try:
        config = json.loads((working_dir / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    starts = _read_jsonl(working_dir / "config_history.jsonl")
    return RunRecords(records, working_dir.resolve().name, config, starts)


def metric_key(records: Sequence[Mapping[str, Any]], key: str) -> str:
    """``key`` as the records name it: ``train_<key>`` when only that is logged."""
    if key.startswith(("train_", "test_")) or any(key in m for m in records):
        return key
    prefixed = f"train_{key}"
    return prefixed if any(prefixed in m for m in records) else key


def steps_per_epoch(records: Sequence[Mapping[str, Any]]) -> int | None:
    """Steps per epoch: every epoch ends at step epoch × steps per epoch."""
    for m in records:
        step, epoch = m.get("step"), m.get("epoch")
        if isinstance(step, int) and isinstance(epoch, int) and epoch > 0 and step % epoch == 0:
            return step // epoch
    return None


def resumes(run: RunRecords) -> list[tuple[float, str]]:
    """``(epoch, label)`` of every start after the first: "resumed", or "extended" when it
    changed ``total_epochs`` (and the change)."""
    per_epoch = steps_per_epoch(run.records)
    marks = []
    for start in run.starts:
        step = start.get("start_step") or 0
        if step <= 0 or not per_epoch:
            continue
        changes = start.get("changes") or {}
        label = "resumed"
        if "total_epochs" in changes:
            change = changes["total_epochs"]
            label = f"extended ({change.get('from')} → {change.get('to')} epochs)"
        elif changes:
            label = f"resumed ({', '.join(sorted(changes))} changed)"
        marks.append((step / per_epoch, label))
    return marks


def partial_epochs(run: RunRecords) -> set[int]:
    """Epochs resumed from a checkpoint saved inside them: their epoch means cover only the
    steps after the resume."""
    per_epoch = steps_per_epoch(run.records)
    if not per_epoch:
        return set()
    starts = [s.get("start_step") or 0 for s in run.starts]
    return {step // per_epoch + 1 for step in starts if step > 0 and step % per_epoch}


def clipping_label(config: Mapping[str, Any]) -> str:
    clipping = config.get("gradient_clipping") or 0
    return (
        f"to the optimizer (after clipping at {clipping:g})"
        if clipping > 0
        else ("to the optimizer (no clipping)" if config else "to the optimizer")
    )


def _panels(runs: Sequence[RunRecords]) -> list[Panel]:
    panels = list(PLOTTED)
    for panel in DIAGNOSTICS:
        key = panel[3][0][0]
        if any(any(metric_key(r.records, key) in m for m in r.records) for r in runs):
            panels.append(panel)
    return panels


def _points(records: Sequence[Mapping[str, Any]], key: str, factor: float, epochs: set[int]):
    return [
        (m["epoch"], factor * m[key])
        for m in records
        if m.get("epoch") in epochs
        and isinstance(m.get(key), int | float)
        and math.isfinite(m[key])
    ]


def _draw(ax: Any, run: RunRecords, key: str, factor: float, label: str, **style: Any) -> dict:
    """One curve of one run; a partial epoch's mean is a hollow marker off the line."""
    key = metric_key(run.records, key)
    partial = partial_epochs(run) if key in EPOCH_MEAN_KEYS else set()
    epochs = {m.get("epoch") for m in run.records}
    whole = _points(run.records, key, factor, epochs - partial)
    drawn = {"key": key, "points": whole}
    if whole:
        (line,) = ax.plot(*zip(*whole, strict=True), marker=".", label=label, **style)
        style = {**style, "color": line.get_color()}
    hollow = _points(run.records, key, factor, partial)
    if hollow:
        ax.plot(
            *zip(*hollow, strict=True),
            "o",
            mfc="white",
            mec=style.get("color", "gray"),
            linestyle="none",
        )
        drawn["partial_epoch_points"] = hollow
    return drawn


def _title(run: RunRecords) -> str:
    """``RUN: Model on data set, r = 0.05, α = 0.8``."""
    model = (run.config.get("model") or {}).get("model_name")
    dataset = (run.config.get("dataset") or {}).get("dataset_name")
    what = f"{model} on {dataset}" if model and dataset else ""
    head = ": ".join(part for part in (run.name, what) if part)
    return ", ".join(part for part in (head, _coefficients_title(run.records)) if part != "curves")


def plot_runs(runs: Sequence[RunRecords], png_path: str | Path, *, with_json: bool = True) -> Path:
    """The curves of ``runs`` on one figure (one colour per run when there are several; train
    solid, test and the optimizer's gradient norm dashed), with the numbers drawn in a JSON
    beside the PNG (``with_json``)."""
    panels = _panels(runs)
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.5 * columns, 3.6 * rows + 0.4))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    numbers: dict[str, Any] = {"runs": {}}
    partial_drawn = False
    for ax, (title, scale, factor, curves) in zip(axes, panels, strict=False):
        for index, run in enumerate(runs):
            color = {"color": f"C{index}"} if len(runs) > 1 else {}
            for position, (key, label) in enumerate(curves):
                if key == "gradient_norm":
                    label = clipping_label(run.config)
                if len(runs) > 1:
                    label = f"{run.name}: {label}"
                # One colour per run: a panel's second curve (test, or the optimizer's norm) dashed.
                dashed = {"linestyle": "--"} if position and len(runs) > 1 else {}
                drawn = _draw(ax, run, key, factor, label, **color, **dashed)
                partial_drawn |= "partial_epoch_points" in drawn
                numbers["runs"].setdefault(run.name, {})[drawn["key"]] = drawn
            for epoch, mark in resumes(run):
                ax.axvline(epoch, color=color.get("color", "gray"), linestyle=":", linewidth=1)
                ax.annotate(
                    mark,
                    (epoch, 1),
                    xycoords=("data", "axes fraction"),
                    xytext=(2, -10),
                    textcoords="offset points",
                    color="gray",
                    fontsize=7,
                )
        if scale == "symlog":
            ax.set_yscale("symlog", linthresh=0.1)
        elif ax.lines or scale == "linear":
            ax.set_yscale(scale)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            if partial_drawn:
                ax.plot([], [], "o", mfc="white", mec="gray", label="partial epoch (resumed)")
            ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for run in runs:
        numbers["runs"].setdefault(run.name, {})["resumes"] = resumes(run)
    title = "\n".join(_title(run) for run in runs)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    numbers["title"] = title
    if with_json:
        write_json_atomically(Path(png_path).with_suffix(".json"), _finite(numbers))
    return Path(png_path)


def _finite(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plot_training_curves(
    records: Sequence[Mapping[str, Any]],
    png_path: str | Path,
    *,
    working_dir: str | Path | None = None,
) -> Path:
    """``curves.png`` of one run: loss, error rate, gradient norms and the sharpness
    diagnostics it logged per epoch, train and test. The title names the run, its model and
    data set, and the r and α in force at the last epoch (with the range where they moved);
    ``working_dir`` (default: the PNG's folder) supplies its ``config.json`` and
    ``config_history.jsonl``."""
    directory = Path(working_dir) if working_dir is not None else Path(png_path).parent
    # No JSON beside it: metrics.jsonl is the record of these numbers.
    return plot_runs([read_run_records(directory, records)], png_path, with_json=False)


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
