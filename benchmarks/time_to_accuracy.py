"""Test error against cost for plain, SAM, GNP and its cheaper variants, several seeds.

    PYTHONPATH=. .venv/bin/python benchmarks/time_to_accuracy.py [--dataset digits]
        [--model SmallCNN] [--epochs 12] [--seeds 0,1,2] [--label_noise 0]
        [--out runs/time_to_accuracy]

Each variant trains with the trainer itself (``gnp.train.loop.train_and_evaluate``),
evaluated every epoch, one run per seed:

  plain      α = 0                                      1 gradient pass a step
  SAM        α = 1                                      2
  GNP        α = 0.8                                    2
  hybrid     α = 0.8, a GNP step with p = 0.5           1.5 on average
  LookSAM    α = 0.8, gnp.reuse_period = 5              1.2
  MSAM       α = 1 along −momentum                      1

Cost is counted two ways: gradient passes (exact, from the passes a step takes and the
GNP steps actually drawn) and training seconds (from the logged images per second;
epoch 1 counts as the median epoch, so that compilation is not charged). The plot draws
the mean test error over seeds against both; the table gives each variant's final error
with a 95% interval over seeds and its cost against plain training's, for the whole run
and to first reach GNP's final mean error.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from gnp.analysis import statistics
from gnp.configs import default
from gnp.train.loop import train_and_evaluate

# name: (config overrides, extra passes a GNP step takes beyond the clean one)
VARIANTS: dict[str, tuple[dict[str, Any], float]] = {
    "plain": ({"gnp.alpha": 0.0}, 0.0),
    "SAM": ({"gnp.alpha": 1.0}, 1.0),
    "GNP": ({"gnp.alpha": 0.8}, 1.0),
    "hybrid p=0.5": ({"gnp.alpha": 0.8, "use_hybrid_training": True, "hybrid_config.p": 0.5}, 1.0),
    "LookSAM k=5": ({"gnp.alpha": 0.8, "gnp.reuse_period": 5}, 0.2),
    "MSAM": ({"gnp.alpha": 1.0, "gnp.perturbation_direction": "momentum"}, 0.0),
}


def configure(args: argparse.Namespace, overrides: dict[str, Any], seed: int) -> Any:
    config = default.get_config()
    config.dataset.dataset_name = args.dataset
    config.model.model_name = args.model
    config.total_epochs = args.epochs
    config.warmup_epochs = min(config.warmup_epochs, args.epochs)
    config.evaluate_every_n_epochs = 1
    config.save_ckpt_every_n_epochs = args.epochs
    config.seeds = config.init_seeds = seed
    config.dataset.label_noise = args.label_noise
    config.update_from_flattened_dict(overrides)
    return config


def curve(working_dir: str, extra_passes: float, batch_size: int) -> dict[str, list[float]]:
    """Per epoch: test error, cumulative gradient passes and training seconds."""
    with open(os.path.join(working_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    steps = np.diff([0] + [m["step"] for m in lines])
    passes = steps * (1 + extra_passes * np.array([m["gnp_step_fraction"] for m in lines]))
    seconds = steps * batch_size / np.array([m["images_per_second"] for m in lines])
    seconds[0] = np.median(seconds)  # the first epoch includes compilation
    return {
        "error": [m["test_error_rate"] for m in lines],
        "passes": np.cumsum(passes).tolist(),
        "seconds": np.cumsum(seconds).tolist(),
    }


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval (NaN for one seed)."""
    low, high = statistics.t_interval(values)
    return float(np.mean(values)), (high - low) / 2


def summarize(results: dict[str, list[dict]]) -> list[dict[str, Any]]:
    def mean_curve(name: str, key: str) -> np.ndarray:
        return np.mean([run[key] for run in results[name]], axis=0)

    target = mean_curve("GNP", "error")[-1]
    plain_passes, plain_seconds = (
        mean_curve("plain", "passes")[-1],
        mean_curve("plain", "seconds")[-1],
    )
    rows = []
    for name in results:
        error, half = interval([run["error"][-1] for run in results[name]])
        # With noisy labels the test error falls, then rises as the noise is memorized: the
        # lowest error over the epochs (per seed, read on the test set, so optimistic for every
        # variant alike) says what each variant had before that.
        best, best_half = interval([min(run["error"]) for run in results[name]])
        errors, passes = mean_curve(name, "error"), mean_curve(name, "passes")
        reached = np.nonzero(errors <= target)[0]
        rows.append(
            {
                "variant": name,
                "final_test_error": error,
                "ci95": half,
                "best_test_error": best,
                "best_ci95": best_half,
                "passes_x_plain": mean_curve(name, "passes")[-1] / plain_passes,
                "seconds_x_plain": mean_curve(name, "seconds")[-1] / plain_seconds,
                "passes_to_gnp_error_x_plain": (
                    float(passes[reached[0]] / plain_passes) if len(reached) else None
                ),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | final test error (95% CI) | lowest test error over epochs (95% CI) "
        "| passes × plain | seconds × plain | passes to GNP's error × plain run |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        reach = row["passes_to_gnp_error_x_plain"]
        lines.append(
            f"| {row['variant']} | {100 * row['final_test_error']:.2f}% ± "
            f"{100 * row['ci95']:.2f} | {100 * row['best_test_error']:.2f}% ± "
            f"{100 * row['best_ci95']:.2f} | {row['passes_x_plain']:.2f} | "
            f"{row['seconds_x_plain']:.2f} | {'not reached' if reach is None else f'{reach:.2f}'} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, key, label in zip(
        axes, ("passes", "seconds"), ("gradient passes", "training seconds"), strict=True
    ):
        for name, runs in results.items():
            x = np.mean([run[key] for run in runs], axis=0)
            errors = np.array([run["error"] for run in runs])
            ax.plot(x, 100 * errors.mean(0), marker=".", label=name)
            ax.fill_between(x, 100 * errors.min(0), 100 * errors.max(0), alpha=0.15)
        ax.set_xlabel(label)
        ax.set_yscale("log")
    axes[0].set_ylabel("test error (%), mean and range over seeds")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="SmallCNN")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--label_noise", type=float, default=0.0, help="fraction of training labels flipped"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default="runs/time_to_accuracy")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS) - {""})
    if unknown or "plain" not in names or "GNP" not in names:
        parser.error(f"--variants takes plain, GNP and any of {list(VARIANTS)}; got {unknown}")
    results: dict[str, list[dict]] = {}
    for name in names:
        overrides, extra = VARIANTS[name]
        for seed in (int(s) for s in args.seeds.split(",")):
            config = configure(args, overrides, seed)
            working_dir = os.path.join(args.out, name.replace(" ", "_"), f"seed{seed}")
            train_and_evaluate(config, working_dir)
            results.setdefault(name, []).append(curve(working_dir, extra, config.batch_size))
    rows = summarize(results)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "curves": results, "summary": rows}, f, indent=1)
    plot(results, os.path.join(args.out, "time_to_accuracy.png"))
    print(table(rows))


if __name__ == "__main__":
    main()
