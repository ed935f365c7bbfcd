"""The reproduction study of issue 7 at CPU scale: both papers' main claims on the digits set.

    python -m gnp.study [--seeds=3] [--epochs=N] [--out=runs/study] [--only=icml2022|icml2024]

ICML 2022 (SmallCNN, SGD-momentum): plain training (α = 0) against SAM (α = 1), GNP (α = 0.8)
and a small α sweep, on clean labels and with 20 % of the training labels flipped.
ICML 2024 (a 4-block ViT, AdamW with a learning-rate warmup): Adam against Adam + GR, and GR
with each warmup strategy (r, λ, zero), with Adam's second moment ν read from a checkpoint
after every early epoch, since the paper blames GR for inflating ν during the warmup.

Every run is a plain ``train_and_evaluate`` in ``OUT/<part>/<variant>/seed<k>``, so a
re-run skips finished runs and resumes interrupted ones. ``OUT/results.json`` and
``OUT/results.md`` hold the tables (mean ± std over seeds), the PNGs the curves. See
``docs/reproduction.md`` for the numbers and what they do and do not show.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from gnp import analysis
from gnp.analysis.plots import json_ready, plot_alpha_sweep
from gnp.analyze import load_run, params_loss, split_batches
from gnp.configs.default import get_config as digits_config
from gnp.train.checkpoint import Checkpoints
from gnp.train.loop import train_and_evaluate

PARTS = ("icml2022", "icml2024")
DEFAULT_EPOCHS = {"icml2022": 20, "icml2024": 20}
LABEL_NOISE = (0.0, 0.2)
# A ViT small enough for 8×8 digits on CPU: 2×2 patches give 16 tokens and a class token.
SMALL_VIT = {"hidden_size": 64, "depth": 4, "num_heads": 4, "mlp_dim": 128, "patch_size": 2}
WARMUP_FRACTION = 0.3  # of the ViT run, as learning-rate (and GR) warmup
REPORTED = ("test_error_rate", "gradient_norm", "train_loss", "train_error_rate")
# Where a part measures them: ‖∇L‖ of the final checkpoint (ICML 2022); test error when the
# warmup ends and Adam's √ν̂ after the first epoch, where the paper sees GR do its harm (2024).
MEASURED = ("full_gradient_norm", "warmup_test_error_rate", "first_epoch_mean_sqrt_nu")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One training setting; ``key`` names its directory, ``label`` its row in the tables."""

    part: str
    key: str
    label: str
    overrides: dict[str, Any]


def icml2022_variants() -> list[Variant]:
    """α = 0 (plain SGD-momentum), 0.5, 0.8 (GNP), 0.9, 1 (SAM) at r = 0.05, clean and noisy."""
    names = {0.0: "SGD", 0.5: "GNP α=0.5", 0.8: "GNP α=0.8", 0.9: "GNP α=0.9", 1.0: "SAM"}
    return [
        Variant(
            part="icml2022",
            key=f"noise{noise:g}_alpha{alpha:g}",
            label=name,
            overrides={"gnp.alpha": alpha, "dataset.label_noise": noise},
        )
        for noise in LABEL_NOISE
        for alpha, name in names.items()
    ]


def icml2024_variants() -> list[Variant]:
    """Adam, Adam + GR from the first step, and GR with each of the paper's three warmups."""
    settings = {
        "adam": ("Adam", {"gnp.alpha": 0.0}),
        "gr": ("Adam+GR", {"gr_warmup_strategy": "none"}),
        "gr_warmup_r": ("Adam+GR, r warmup", {"gr_warmup_strategy": "r"}),
        "gr_warmup_lambda": ("Adam+GR, λ warmup", {"gr_warmup_strategy": "lambda"}),
        "gr_warmup_zero": ("Adam+GR, zero warmup", {"gr_warmup_strategy": "zero"}),
    }
    return [
        Variant(part="icml2024", key=key, label=label, overrides=overrides)
        for key, (label, overrides) in settings.items()
    ]


def icml2022_config(epochs: int) -> ml_collections.ConfigDict:
    """The default digits run (SmallCNN, momentum 0.9, lr 0.1, cosine, r = 0.05), shortened."""
    config = digits_config()
    config.total_epochs = epochs
    config.warmup_epochs = min(config.warmup_epochs, epochs)
    config.evaluate_every_n_epochs = 1
    config.save_ckpt_every_n_epochs = epochs
    config.keep_checkpoints = 1
    return config


def icml2024_config(epochs: int) -> ml_collections.ConfigDict:
    """A small ViT with AdamW and a warmup of 30 % of the run; GR as the released ViT
    GR-warmup recipe sets it (α = 1). A checkpoint every epoch keeps Adam's ν readable."""
    config = digits_config()
    config.model.model_name = "ViT_TI16"
    config.model.model_params = ml_collections.ConfigDict(SMALL_VIT)
    config.opt.opt_type = "Adam"
    config.opt.opt_params.weight_decay = 0.05
    config.l2_regularization = 0.0
    config.base_lr = 2e-3
    config.batch_size = 64
    config.total_epochs = epochs
    config.warmup_epochs = round(WARMUP_FRACTION * epochs)
    config.gnp.r = 0.05
    config.gnp.alpha = 1.0
    config.evaluate_every_n_epochs = 1
    config.save_ckpt_every_n_epochs = 1
    config.keep_checkpoints = epochs + 1
    return config


def configure(base: ml_collections.ConfigDict, overrides: dict[str, Any], seed: int) -> Any:
    """``base`` with dotted-key overrides and the seed for data order, noise and init."""
    config = base.copy_and_resolve_references()
    for dotted, value in {**overrides, "seeds": seed, "init_seeds": seed}.items():
        *parents, leaf = dotted.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def read_metrics(working_dir: Path) -> list[dict[str, Any]]:
    """Every epoch line of a run's ``metrics.jsonl`` (the last line per epoch wins)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    with open(working_dir / "metrics.jsonl") as lines:
        for line in lines:
            row = json.loads(line)
            by_epoch[row["epoch"]] = row
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _adam_state(tree: Any) -> dict[str, Any] | None:
    """The ``{count, mu, nu}`` node of a restored optax state (its place depends on the chain)."""
    if isinstance(tree, dict):
        if {"count", "mu", "nu"} <= tree.keys():
            return tree
        children = tree.values()
    elif isinstance(tree, list | tuple):
        children = tree
    else:
        return None
    for child in children:
        found = _adam_state(child)
        if found is not None:
            return found
    return None


def second_moment(working_dir: Path, beta2: float, last_epoch: int) -> list[dict[str, float]]:
    """Mean √ν̂ over all parameters (ν̂ bias-corrected) at the end of each epoch ≤ last_epoch.

    The effective Adam step is lr / (√ν̂ + ε): a larger √ν̂ in the warmup means smaller
    steps. Cached in ``second_moment.json`` so that a re-run does not reread checkpoints.
    """
    cache = working_dir / "second_moment.json"
    if cache.exists():
        return json.loads(cache.read_text())
    epochs = {row["step"]: row["epoch"] for row in read_metrics(working_dir)}
    rows = []
    checkpoints = Checkpoints(str(working_dir / "checkpoints"), read_only=True)
    for step in checkpoints.all_steps():
        if epochs.get(step, math.inf) > last_epoch:
            continue
        adam = _adam_state(checkpoints.load(step)[0]["opt_state"])
        if adam is None:
            raise ValueError(f"no Adam state in the checkpoint at step {step} of {working_dir}")
        correction = 1.0 - beta2 ** int(np.asarray(adam["count"]))
        leaves = [np.sqrt(np.asarray(v) / correction).ravel() for v in jax.tree.leaves(adam["nu"])]
        rows.append({"epoch": epochs[step], "mean_sqrt_nu": float(np.concatenate(leaves).mean())})
    checkpoints.close()
    cache.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def full_train_gradient_norm(working_dir: Path) -> float:
    """‖∇L(θ)‖ of the final checkpoint over the whole (possibly noisy) training set.

    The logged ``gradient_norm`` is a mean of mini-batch norms, mostly sampling noise once
    training has converged; this is the training objective's own gradient (cross-entropy +
    L2, BatchNorm in inference mode: ``gnp-analyze gradient-norm``). Cached like ν.
    """
    cache = working_dir / "full_gradient_norm.json"
    if not cache.exists():
        run = load_run(working_dir)
        batches = split_batches(run.pipeline, "train", None)
        result = analysis.full_gradient_norm(params_loss(run), run.params, batches)
        cache.write_text(json.dumps({"norm": result.norm, "loss": result.loss}) + "\n")
    return json.loads(cache.read_text())["norm"]


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one seed) of a metric over seeds."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "n": len(array)}


def mean_curve(curves: Sequence[Sequence[dict[str, Any]]], keys: Sequence[str]) -> list[dict]:
    """Per-epoch means over seeds of ``keys`` (epochs every seed has)."""
    epochs = sorted(set.intersection(*(set(row["epoch"] for row in rows) for rows in curves)))
    by_seed = [{row["epoch"]: row for row in rows} for rows in curves]
    return [
        {"epoch": epoch}
        | {
            key: float(np.mean([rows[epoch][key] for rows in by_seed]))
            for key in keys
            if all(key in rows[epoch] for rows in by_seed)
        }
        for epoch in epochs
    ]


def measurements(config: Any, working_dir: Path, rows: Sequence[dict]) -> dict[str, Any]:
    """What each part looks at beyond metrics.jsonl's last line (``MEASURED``).

    Adam runs (ICML 2024): √ν̂ over the warmup and as many epochs after it, and the test
    error when the warmup ends. Others (ICML 2022): ‖∇L‖ of the final checkpoint.
    """
    if config.opt.opt_type != "Adam":
        return {"full_gradient_norm": full_train_gradient_norm(working_dir)}
    beta2 = config.opt.opt_params.beta2 or 0.999
    moments = second_moment(working_dir, beta2, max(2 * config.warmup_epochs, 1))
    result = {"second_moment": moments, "first_epoch_mean_sqrt_nu": moments[0]["mean_sqrt_nu"]}
    for row in rows:
        if row["epoch"] == config.warmup_epochs:
            result["warmup_test_error_rate"] = row["test_error_rate"]
    return result


def run_variant(variant: Variant, base: Any, seeds: Sequence[int], out: Path) -> dict[str, Any]:
    """Train (or skip, if finished) every seed of ``variant``; its numbers from metrics.jsonl."""
    runs, curves = [], []
    for seed in seeds:
        working_dir = out / variant.part / variant.key / f"seed{seed}"
        print(f"== {variant.part} {variant.label} ({variant.key}) seed {seed}: {working_dir}")
        config = configure(base, variant.overrides, seed)
        train_and_evaluate(config, str(working_dir))
        rows = read_metrics(working_dir)
        final = rows[-1]
        run = {"seed": seed, "working_dir": str(working_dir), "epoch": final["epoch"]}
        run |= {key: final[key] for key in REPORTED}
        runs.append(run | measurements(config, working_dir, rows))
        curves.append(rows)
    keys = ("test_error_rate", "gradient_norm", "train_loss", "update_norm", "learning_rate")
    summary = {
        "key": variant.key,
        "label": variant.label,
        "overrides": variant.overrides,
        "runs": runs,
        "curve": mean_curve(curves, keys),
    }
    summary |= {
        key: mean_std([run[key] for run in runs])
        for key in (*REPORTED, *MEASURED)
        if key in runs[0]
    }
    if "second_moment" in runs[0]:
        summary["second_moment"] = mean_curve(
            [run["second_moment"] for run in runs], ["mean_sqrt_nu"]
        )
    return summary


def add_paired_differences(variants: Sequence[dict[str, Any]], group: str | None) -> None:
    """Each variant's test error minus that of the first variant of its group, seed by seed.

    A seed fixes the initialization, the data order and the flipped labels, so runs of one
    seed are paired; their difference is far less noisy than a difference of means, whose
    seed spread (a few of 360 test images) exceeds the effects looked for. ``group`` is the
    override that splits the variants into groups (None: one group).
    """
    baselines: dict[Any, dict[str, Any]] = {}
    for variant in variants:
        baseline = baselines.setdefault(variant["overrides"].get(group), variant)
        reference = {run["seed"]: run["test_error_rate"] for run in baseline["runs"]}
        differences = [
            run["test_error_rate"] - reference[run["seed"]]
            for run in variant["runs"]
            if run["seed"] in reference
        ]
        variant["paired_delta_test_error_rate"] = mean_std(differences) | {
            "baseline": baseline["label"]
        }


def _percent(stats: dict[str, float]) -> str:
    return f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"


def _delta(stats: dict[str, float]) -> str:
    return f"{100 * stats['mean']:+.2f} ± {100 * stats['std']:.2f}"


def _plain(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.3g} ± {stats['std']:.2g}"


def markdown_table(variants: Sequence[dict[str, Any]], *, noise_column: bool) -> str:
    """Test error (%), its paired difference to the group's first row, what the part
    measures, gradient norm and train loss at the end: mean ± std over seeds."""
    columns: list[tuple[str, Any]] = [
        ("variant", lambda v: v["label"]),
        ("test error (%)", lambda v: _percent(v["test_error_rate"])),
        ("Δ vs first row (pp, paired)", lambda v: _delta(v["paired_delta_test_error_rate"])),
    ]
    if noise_column:
        label_noise = lambda v: f"{v['overrides']['dataset.label_noise']:.0%}"
        columns.insert(0, ("label noise", label_noise))
    optional = {
        "warmup_test_error_rate": ("test error at warmup end (%)", _percent),
        "first_epoch_mean_sqrt_nu": ("Adam mean √ν̂ after epoch 1", _plain),
        "full_gradient_norm": ("final ‖∇L‖ (whole train set)", _plain),
    }
    for key, (title, render) in optional.items():
        if key in variants[0]:
            columns.append((title, lambda v, key=key, render=render: render(v[key])))
    columns += [
        ("last-epoch mean batch ‖∇L‖", lambda v: _plain(v["gradient_norm"])),
        ("last-epoch train loss", lambda v: _plain(v["train_loss"])),
        ("seeds", lambda v: str(v["test_error_rate"]["n"])),
    ]
    lines = [
        "| " + " | ".join(title for title, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for variant in variants:
        lines.append("| " + " | ".join(cell(variant) for _, cell in columns) + " |")
    return "\n".join(lines)


def plot_icml2022(variants: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Gradient norm and test error per epoch (mean over seeds), one figure per noise level."""
    paths = []
    for noise in LABEL_NOISE:
        curves = {
            v["label"]: v["curve"]
            for v in variants
            if v["overrides"]["dataset.label_noise"] == noise
        }
        if curves:
            path = out / f"icml2022_noise{round(100 * noise)}.png"
            title = f"digits, SmallCNN, r = 0.05, {noise:.0%} flipped labels (mean over seeds)"
            paths.append(plot_alpha_sweep(curves, path, title=title))
    return paths


def plot_icml2024(variants: Sequence[dict[str, Any]], warmup_epochs: int, out: Path) -> Path:
    """Test error, Adam's mean √ν̂ and the update norm per epoch, the warmup shaded."""
    figure = Figure(figsize=(16, 4.2), layout="constrained")
    error_axes, nu_axes, update_axes = figure.subplots(1, 3)
    for variant in variants:
        curve = variant["curve"]
        epochs = [row["epoch"] for row in curve]
        error_axes.plot(
            epochs, [100 * row["test_error_rate"] for row in curve], label=variant["label"]
        )
        update_axes.plot(epochs, [row["update_norm"] for row in curve], label=variant["label"])
        moments = variant["second_moment"]
        nu_axes.plot(
            [row["epoch"] for row in moments],
            [row["mean_sqrt_nu"] for row in moments],
            marker="o",
            label=variant["label"],
        )
    for axes, ylabel in (
        (error_axes, "test error (%)"),
        (nu_axes, "Adam: mean √ν̂ over parameters"),
        (update_axes, "update norm ‖Δθ‖ per step"),
    ):
        axes.axvspan(0, warmup_epochs, color="0.9", zorder=0)
        axes.set_xlabel("epoch (shaded: warmup)")
        axes.set_ylabel(ylabel)
        axes.legend(fontsize=7)
    update_axes.set_yscale("log")
    figure.suptitle("digits, ViT (4 blocks, width 64), AdamW, GR α = 1, r = 0.05 (mean over seeds)")
    path = out / "icml2024_adam_warmup.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    numbers = {
        v["label"]: {"curve": v["curve"], "second_moment": v["second_moment"]} for v in variants
    }
    path.with_suffix(".json").write_text(json.dumps(json_ready(numbers), indent=1) + "\n")
    return path


def run_part(part: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every seed of every selected variant of one part, its table and its figures."""
    epochs = args.epochs or DEFAULT_EPOCHS[part]
    base = icml2022_config(epochs) if part == "icml2022" else icml2024_config(epochs)
    variants = icml2022_variants() if part == "icml2022" else icml2024_variants()
    if args.variants:
        variants = [v for v in variants if v.key in args.variants or v.label in args.variants]
    if part == "icml2022":
        variants = [v for v in variants if v.overrides["dataset.label_noise"] in args.label_noise]
    seeds = list(range(args.seeds))
    results = [run_variant(variant, base, seeds, out) for variant in variants]
    summary: dict[str, Any] = {
        "epochs": epochs,
        "warmup_epochs": base.warmup_epochs,
        "config": {
            "model": base.model.model_name,
            "model_params": base.model.model_params.to_dict(),
            "optimizer": base.opt.opt_type,
            "base_lr": base.base_lr,
            "batch_size": base.batch_size,
            "r": base.gnp.r,
            "alpha": base.gnp.alpha,
        },
        "variants": results,
    }
    add_paired_differences(results, "dataset.label_noise" if part == "icml2022" else None)
    if part == "icml2022":
        summary["table"] = markdown_table(results, noise_column=True)
        summary["figures"] = [str(p) for p in plot_icml2022(results, out)]
    else:
        summary["table"] = markdown_table(results, noise_column=False)
        summary["figures"] = [str(plot_icml2024(results, base.warmup_epochs, out))]
    return summary


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gnp.study", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per variant")
    parser.add_argument("--epochs", type=int, default=0, help="0: 20 per run in both parts")
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--only", choices=PARTS, help="run one part only")
    parser.add_argument(
        "--variants",
        type=lambda text: text.split(","),
        default=[],
        help="comma-separated variant keys or labels (e.g. noise0_alpha0,SAM); all if empty",
    )
    parser.add_argument(
        "--label_noise",
        type=lambda text: [float(x) for x in text.split(",")],
        default=list(LABEL_NOISE),
        help="ICML 2022 label-noise levels to run, a subset of 0,0.2",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the study, write ``results.json`` and ``results.md`` under ``--out``, return them.

    A part not run this time (``--only``) keeps its results from an earlier invocation, so
    the parts can be run with different seeds into one ``--out``.
    """
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    for part in [args.only] if args.only else PARTS:
        started = time.perf_counter()
        results[part] = {"seeds": list(range(args.seeds))} | run_part(part, args, out)
        # Finished runs are skipped, so this is the time of what was left to do.
        results[part]["wall_seconds"] = time.perf_counter() - started
    path.write_text(json.dumps(json_ready(results), indent=1) + "\n")
    tables = [f"## {part}\n\n{results[part]['table']}\n" for part in PARTS if part in results]
    (out / "results.md").write_text("\n".join(tables))
    print("\n".join(tables))
    for part in PARTS:
        if part in results:
            print(f"{part}: {results[part]['wall_seconds']:.0f} s when last run")
    return results


if __name__ == "__main__":
    main()
