"""Does a cheap GR variant keep GNP's gain? Test error, passes and seconds against plain SGD.

    PYTHONPATH=. .venv/bin/python benchmarks/time_to_accuracy.py --out=runs/tta
    PYTHONPATH=. .venv/bin/python benchmarks/time_to_accuracy.py --smoke --out=runs/tta_smoke
    PYTHONPATH=. .venv/bin/python benchmarks/time_to_accuracy.py --write_doc

The measurement declared in docs/cheap_gr_plan.md (issue 27), written before any run:
MNIST-1D with 30 % of the training labels flipped, CNN1D_64, the study's 60-epoch schedule
(``gnp.study.plan.icml2022_config``). Each variant's knob is tuned on the validation split
(3 tuning seeds, the lowest mean validation error; ties to the cheaper value), then trained
with 10 evaluation seeds and evaluated on the test split:

  plain     α = 0                                        no knob
  GNP       α = 0.8                                      r
  SAM       α = 1                                        r
  reuse_kK  α = 0.8, gnp.reuse_period = K (LookSAM)      r
  MSAM      α = 1 along −momentum (one pass)             r
  ESAM      α = 0.8, the second pass on a fraction f     f, at GNP's tuned r
  RST       α = 0.8, a GNP step with probability p       p, at GNP's tuned r
  window    α = 0.8, GNP only in the first or last half  early | late, at GNP's tuned r

Every run is a working directory under ``--out`` with its ``result.json`` (written
atomically): a finished run is read back, an interrupted one resumes from its checkpoint,
so the command can be stopped and started again. Cost: ``passes_x_plain`` from the steps each
run took (exact), ``seconds_x_plain`` from each variant's compiled steps timed in interleaved
rounds in this process (medians, weighted by the share of steps of each kind). Retention is
(plain − variant)/(plain − GNP) per seed; the target (retention ≥ 90 % at ≤ 1.3× plain's
passes and seconds) is a one-sided t test of mean retention > 0.9, Holm-corrected over the
cheap variants. ``--write_doc`` writes the table of the JSON into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from scipy.stats import ttest_1samp
from timing import interleaved_medians  # benchmarks/ is on the path

from gnp import efficient
from gnp.analysis import statistics
from gnp.analysis.plots import json_ready
from gnp.data import build_input_pipeline
from gnp.files import read_json, write_json_atomically, write_text_atomically
from gnp.gr_schedule import penalty_window
from gnp.provenance import gnp_version
from gnp.study import plan
from gnp.train import build
from gnp.train.config import validate_config
from gnp.train.distributed import replicate, shard_batch
from gnp.train.loop import train_and_evaluate
from gnp.train.steps import step_kind
from gnp.train.stops import NonFiniteError
from gnp.train.workdir import read_metrics

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
FIGURES = ROOT / "docs" / "figures"
RESULT_FILE = "result.json"
R_GRID = (0.1, 0.3, 0.5, 0.7, 1.0)
TARGET_RETENTION, TARGET_COST = 0.9, 1.3


@dataclasses.dataclass(frozen=True)
class Variant:
    """A training setting; ``knob`` (a config key, or ``window``) is tuned over ``grid``,
    listed cheapest first; ``gnp_r``: r is GNP's tuned one, not a knob of its own."""

    key: str
    overrides: dict[str, Any]
    knob: str | None = None
    grid: tuple[Any, ...] = ()
    gnp_r: bool = False
    cheap: bool = True  # in the family the target is tested on


VARIANTS = (
    Variant("plain", {"gnp.alpha": 0.0}, cheap=False),
    Variant("GNP", {"gnp.alpha": 0.8}, "gnp.r", R_GRID, cheap=False),
    Variant("SAM", {"gnp.alpha": 1.0}, "gnp.r", R_GRID, cheap=False),
    *(
        Variant(f"reuse_k{k}", {"gnp.alpha": 0.8, "gnp.reuse_period": k}, "gnp.r", R_GRID)
        for k in (2, 5, 10)
    ),
    Variant("MSAM", {"gnp.alpha": 1.0, "gnp.perturbation_direction": "momentum"}, "gnp.r", R_GRID),
    Variant("ESAM", {"gnp.alpha": 0.8}, "gnp.perturbed_fraction", (0.125, 0.25, 0.5), gnp_r=True),
    Variant(
        "RST",
        {"gnp.alpha": 0.8, "use_hybrid_training": True},
        "hybrid_config.p",
        (0.2, 0.35, 0.5),
        gnp_r=True,
    ),
    Variant(
        "window",
        {"gnp.alpha": 0.8, "use_hybrid_training": True, "hybrid_config.p": 1.0},
        "window",
        ("early", "late"),
        gnp_r=True,
    ),
)
BY_KEY = {variant.key: variant for variant in VARIANTS}


@dataclasses.dataclass(frozen=True)
class Scale:
    """What one invocation measures: the data, the model, the epochs, the seeds."""

    name: str
    dataset: str
    model: str
    epochs: int
    tune_seeds: tuple[int, ...]
    eval_seeds: tuple[int, ...]
    grid_size: int | None = None  # the smoke run keeps the first values of each grid
    timing_rounds: int = 30


SCALES = {
    "full": Scale(
        "mnist1d_noise30_tuned", "mnist1d", "CNN1D_64", 60, (100, 101, 102), tuple(range(10))
    ),
    # Every stage on the embedded digits for 1 epoch: says nothing about the variants.
    "smoke": Scale("smoke", "digits", "SmallCNN", 1, (100,), (0,), grid_size=2, timing_rounds=3),
}


# Configs.


def base_config(scale: Scale) -> Any:
    """The study's ICML 2022 run (SGD-momentum, cosine lr, L2, batch 128) with 30 % flipped
    labels, evaluated and checkpointed at the end only."""
    study = dataclasses.replace(
        plan.SCALES["full"],
        dataset=scale.dataset,
        model_2022=scale.model,
        epochs_2022=scale.epochs,
    )
    config = plan.icml2022_config(study)
    config.dataset.label_noise = 0.3
    return config


def steps_per_epoch(config: Any) -> int:
    """The run's steps an epoch: the window's steps are counted from it."""
    return build_input_pipeline(config).steps_per_epoch


def knob_overrides(variant: Variant, value: Any, total_steps: int) -> dict[str, Any]:
    """The config keys of ``variant``'s knob at ``value`` (the window's steps from the run's
    length: early = the first half of the steps, late = the second)."""
    if variant.knob is None:
        return {}
    if variant.knob != "window":
        return {variant.knob: value}
    half = total_steps // 2
    start, stop = (0, half) if value == "early" else (half, total_steps)
    return {
        "schedule_function": penalty_window,
        "hybrid_config.start_step": start,
        "hybrid_config.stop_step": stop,
    }


@dataclasses.dataclass(frozen=True)
class RunSpec:
    stage: str  # "tune" (validation) or "final" (test)
    variant: Variant
    r: float
    value: Any  # the knob's value (None: no knob)
    seed: int

    @property
    def setting(self) -> str:
        """The run's folder name: r, and the knob's value when it is not r."""
        name = f"r{self.r:g}"
        if self.variant.knob not in (None, "gnp.r"):
            short = self.variant.knob.rsplit(".", 1)[-1]
            name += f"_{short}{self.value:g}" if isinstance(self.value, float) else f"_{self.value}"
        return name

    def directory(self, out: Path) -> Path:
        return out / self.stage / self.variant.key / self.setting / f"seed{self.seed}"

    def config(self, scale: Scale, per_epoch: int) -> Any:
        config = base_config(scale)
        overrides = {**self.variant.overrides, "gnp.r": self.r}
        overrides |= knob_overrides(self.variant, self.value, scale.epochs * per_epoch)
        overrides |= {"seeds": self.seed, "init_seeds": self.seed}
        overrides["use_test_set"] = self.stage == "final"  # tuning never sees the test set
        config.update_from_flattened_dict(overrides)
        return config


# Running.


def step_kinds(config: Any, per_epoch: int) -> dict[str, int]:
    """How many steps of each compiled kind the run takes, picked as the training loop
    picks them (``gr.is_gnp_step``, then every ``reuse_period``-th GNP step a full one)."""
    config = validate_config(config)
    gr, taken, counts = build.gr_schedule(config, per_epoch), 0, collections.Counter()
    for step in range(config.total_epochs * per_epoch):
        kind = step_kind(
            gr.is_gnp_step(step), efficient.is_full_step(taken, config.gnp.reuse_period)
        )
        taken += kind != "plain"
        counts[kind] += 1
    return dict(counts)


def kind_passes(kind: str, gnp: Any) -> float:
    """Forward-and-backward passes of a batch that a step of ``kind`` takes: a plain or reuse
    step one; a GNP step two, or 1 + f with the second pass on a fraction f; MSAM at α = 1
    one (its only pass is the perturbed one)."""
    if kind in ("plain", "gnp_reuse"):
        return 1.0
    if gnp.perturbation_direction == "momentum" and gnp.alpha == 1.0:
        return 1.0
    return 1.0 + gnp.perturbed_fraction


def execute(spec: RunSpec, scale: Scale, out: Path, per_epoch: int) -> dict[str, Any]:
    """Train one run (or resume it) and record its final error and cost; a finished run is
    read back. A run whose loss turns non-finite counts as error 1 (never chosen)."""
    directory = spec.directory(out)
    path = directory / RESULT_FILE
    if path.exists():
        return read_json(path, "delete it to train that run again")
    config = spec.config(scale, per_epoch)
    print(f"{spec.stage} {spec.variant.key} {spec.setting} seed {spec.seed}", flush=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        train_and_evaluate(config, str(directory))
        final = read_metrics(str(directory / "metrics.jsonl"))[-1]  # also of a run found done
        error, diverged = float(final["test_error_rate"]), None
    except NonFiniteError as stopped:
        error, diverged = 1.0, str(stopped)
    kinds = step_kinds(config, per_epoch)
    result = {
        "stage": spec.stage,
        "variant": spec.variant.key,
        "r": spec.r,
        "value": spec.value,
        "seed": spec.seed,
        "split": "test" if config.use_test_set else "validation",
        "error": error,
        "diverged": diverged,
        "step_kinds": kinds,
        "passes": sum(n * kind_passes(kind, config.gnp) for kind, n in kinds.items()),
        # Wall time depends on what else runs; CPU time (all threads) is what to plan with.
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
    }
    write_json_atomically(path, result)
    print(f"done: error {error:.4f}, {result['cpu_seconds']:.0f} s CPU", flush=True)
    return result


def tuning_specs(variant: Variant, scale: Scale, gnp_r: float | None) -> list[RunSpec]:
    """The tuning runs of ``variant``: every grid value × tuning seed (none for one value)."""
    grid = variant.grid[: scale.grid_size]
    if len(grid) < 2:
        return []
    return [
        RunSpec("tune", variant, value if variant.knob == "gnp.r" else gnp_r, value, seed)
        for value in grid
        for seed in scale.tune_seeds
    ]


def choose(results: Sequence[dict[str, Any]], grid: Sequence[Any]) -> Any:
    """The grid value of lowest mean validation error; a tie goes to the cheaper (earlier)."""
    errors: dict[Any, list[float]] = collections.defaultdict(list)
    for result in results:
        errors[result["value"]].append(result["error"])
    means = {value: float(np.mean(errors[value])) for value in grid}
    return min(grid, key=lambda value: (means[value], grid.index(value)))


def tuned(variant: Variant, scale: Scale, out: Path, per_epoch: int, gnp_r: float | None):
    """(r, knob value, the tuning results) of ``variant``, running what is not finished."""
    specs = tuning_specs(variant, scale, gnp_r)
    results = [execute(spec, scale, out, per_epoch) for spec in specs]
    grid = variant.grid[: scale.grid_size]
    value = choose(results, grid) if results else (grid[0] if grid else None)
    r = value if variant.knob == "gnp.r" else (gnp_r if variant.gnp_r else 0.0)
    return r, value, results


def run_all(names: Sequence[str], scale: Scale, out: Path) -> dict[str, Any]:
    """Tune every variant (GNP's r first: three variants take it), then the final runs,
    seed-major so that a stop part-way leaves every variant with the same seeds."""
    per_epoch = steps_per_epoch(base_config(scale))
    variants = [BY_KEY[name] for name in names]
    chosen, tuning = {}, {}
    gnp_r, _, tuning["GNP"] = tuned(BY_KEY["GNP"], scale, out, per_epoch, None)
    for variant in variants:
        r, value, tuning[variant.key] = tuned(variant, scale, out, per_epoch, gnp_r)
        chosen[variant.key] = {"r": r, "value": value}
        print(f"tuned {variant.key}: r={r:g} {variant.knob or ''}={value}", flush=True)
    finals: dict[str, list[dict]] = {variant.key: [] for variant in variants}
    for seed in scale.eval_seeds:
        for variant in variants:
            spec = RunSpec(
                "final", variant, chosen[variant.key]["r"], chosen[variant.key]["value"], seed
            )
            finals[variant.key].append(execute(spec, scale, out, per_epoch))
    return {"chosen": chosen, "tuning": tuning, "finals": finals, "steps_per_epoch": per_epoch}


# Seconds: every variant's compiled steps, timed in interleaved rounds.


def kind_runs(config: Any, kinds: Sequence[str]) -> dict[str, Callable[[], Any]]:
    """One callable per step kind: the trainer's own compiled step on one device, on one
    training batch, each with its own copy of the state (the steps donate it)."""
    config = validate_config(config)
    pipeline = build_input_pipeline(config)
    per_epoch = pipeline.steps_per_epoch
    model = build.build_model(config, pipeline.info.num_classes)
    state, optimizer, schedule = build.train_state(
        config, model, pipeline.info.image_shape, per_epoch
    )
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    steps = build.train_steps(
        config,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        mesh=mesh,
        gr=build.gr_schedule(config, per_epoch),
    )
    batch = shard_batch(next(pipeline.train_iterator()), mesh)

    def make(kind: str) -> Callable[[], Any]:
        current = replicate(jax.tree.map(jnp.copy, state), mesh)

        def run() -> Any:
            nonlocal current
            current, metrics = steps[kind](current, batch["image"], batch["label"])
            return metrics["train_loss"]

        return run

    return {kind: make(kind) for kind in kinds}


def weighted_seconds(
    finals: dict[str, list[dict]], medians: dict[tuple[str, str], float]
) -> dict[str, float]:
    """Per variant, the mean seconds a step: each kind's median weighted by its share of the
    steps all of the variant's final runs took."""
    seconds = {}
    for key, results in finals.items():
        counts: collections.Counter[str] = collections.Counter()
        for result in results:
            counts.update(result["step_kinds"])
        total = sum(counts.values())
        seconds[key] = sum(medians[(key, kind)] * n / total for kind, n in counts.items())
    return seconds


def step_seconds(runs: dict[str, Any], scale: Scale) -> dict[str, Any]:
    """Per variant, the mean seconds of its steps: each kind's median over interleaved rounds
    (all variants' kinds in one process, so a slow spell hits all alike), weighted by the share
    of that kind in its final runs; with the load average before and after."""
    finals, chosen, calls = runs["finals"], runs["chosen"], {}
    for key, results in finals.items():
        spec = RunSpec("final", BY_KEY[key], chosen[key]["r"], chosen[key]["value"], 0)
        config = spec.config(scale, runs["steps_per_epoch"])
        for kind, run in kind_runs(config, sorted(results[0]["step_kinds"])).items():
            calls[(key, kind)] = run
    load_before = os.getloadavg()
    medians = interleaved_medians(calls, scale.timing_rounds)
    load_after = os.getloadavg()
    return {
        "seconds_per_step": weighted_seconds(finals, medians),
        "kind_median_seconds": {f"{key}/{kind}": s for (key, kind), s in medians.items()},
        "rounds": scale.timing_rounds,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
    }


# Summary.


def retention_summary(
    variant: Sequence[float], plain: Sequence[float], gnp: Sequence[float]
) -> dict[str, Any]:
    """Per seed (plain − variant)/(plain − GNP), paired by seed; its mean, 95 % t interval and
    a bootstrap interval of the mean (a check on the t interval)."""
    per_seed = (np.asarray(plain) - np.asarray(variant)) / (np.asarray(plain) - np.asarray(gnp))
    low, high = statistics.t_interval(per_seed)
    resampled = np.random.default_rng(0).choice(per_seed, (10_000, len(per_seed))).mean(1)
    return {
        "retention_per_seed": per_seed.tolist(),
        "retention_mean": float(per_seed.mean()),
        "retention_ci95": [low, high],
        "retention_bootstrap_ci95": np.percentile(resampled, [2.5, 97.5]).tolist(),
    }


def above_target_p(retention: Sequence[float]) -> float:
    """One-sided t test of mean retention > 0.9: small when the data show the target kept
    (NaN for one seed, or when every seed's retention is the same)."""
    if len(retention) < 2 or np.ptp(retention) == 0:
        return float("nan")
    return float(ttest_1samp(retention, TARGET_RETENTION, alternative="greater").pvalue)


def summarize(runs: dict[str, Any], timing: dict[str, Any], scale: Scale) -> dict[str, Any]:
    """The JSON the benchmark commits: ``args`` and, per variant, the per-seed test errors
    (aligned with ``args.seeds``), the costs against plain, retention and the target test."""
    finals, chosen = runs["finals"], runs["chosen"]
    error = {key: [r["error"] for r in results] for key, results in finals.items()}
    passes = {key: np.mean([r["passes"] for r in results]) for key, results in finals.items()}
    seconds = timing["seconds_per_step"]
    variants = {}
    for key in finals:
        variant = BY_KEY[key]
        row = {
            "r": chosen[key]["r"] if variant.overrides.get("gnp.alpha") else None,
            "knob": variant.knob,
            "knob_value": chosen[key]["value"],
            "per_seed_final_test_error": error[key],
            "mean_test_error": float(np.mean(error[key])),
            "passes_x_plain": float(passes[key] / passes["plain"]),
            "seconds_x_plain": float(seconds[key] / seconds["plain"]),
            "cheap": variant.cheap,
        }
        row |= retention_summary(error[key], error["plain"], error["GNP"])
        row["cost_within_target"] = (
            row["passes_x_plain"] <= TARGET_COST and row["seconds_x_plain"] <= TARGET_COST
        )
        variants[key] = row
    family = [key for key, row in variants.items() if row["cheap"]]
    for key in family:
        retention = variants[key]["retention_per_seed"]
        variants[key]["retention_above_target_p"] = above_target_p(retention)
    adjusted = statistics.holm([variants[key]["retention_above_target_p"] for key in family])
    for key, p in zip(family, adjusted, strict=True):
        row = variants[key]
        row["holm_p"] = p
        point = row["retention_mean"] >= TARGET_RETENTION
        row["meets_target_point"] = row["cost_within_target"] and point
        row["meets_target_tested"] = row["cost_within_target"] and p < 0.05
    return {
        "args": {
            "dataset": scale.dataset,
            "model": scale.model,
            "epochs": scale.epochs,
            "label_noise": 0.3,
            "seeds": list(scale.eval_seeds),
            "tune_seeds": list(scale.tune_seeds),
            "tuned_knobs": {key: chosen[key] for key in finals},
            "r_tuned": True,
            "r_grid": list(R_GRID[: scale.grid_size]),
            "plan": "docs/cheap_gr_plan.md",
            "gnp_version": gnp_version(),  # the gnp that summarized (and timed) the runs
            "target": f"retention >= {TARGET_RETENTION} at <= {TARGET_COST}x plain's passes "
            "and seconds, one-sided t test Holm-corrected over the cheap variants at 5 %",
        },
        "timing": timing,
        "variants": variants,
        "tuning": {
            key: [{k: r[k] for k in ("r", "value", "seed", "error")} for r in results]
            for key, results in runs["tuning"].items()
        },
        "cpu_seconds": sum(r["cpu_seconds"] for results in finals.values() for r in results)
        + sum(r["cpu_seconds"] for results in runs["tuning"].values() for r in results),
    }


# The docs table.


def table(summary: dict[str, Any]) -> str:
    """The markdown table of a summary as the JSON holds it (an undefined number is None):
    error, costs, retention and the target per variant."""
    lines = [
        "| variant | tuned | test error % (95 % CI) | passes × plain | seconds × plain "
        "| retention % (95 % CI) | Holm p (retention > 90 %) | target met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, row in summary["variants"].items():
        knob = [] if row["r"] is None else [f"r = {row['r']:g}"]
        if row["knob"] not in (None, "gnp.r"):
            knob.append(f"{row['knob'].rsplit('.', 1)[-1]} = {row['knob_value']}")
        error = 100 * np.asarray(row["per_seed_final_test_error"])
        error_cell = f"{error.mean():.2f}"
        if len(error) > 1:
            low, high = statistics.t_interval(error)
            error_cell += f" ± {(high - low) / 2:.2f}"
        retention = f"{100 * row['retention_mean']:.0f}"
        if key in ("plain", "GNP"):
            retention = "— (0 and 100 by definition)"
        elif row["retention_ci95"][0] is not None:
            low, high = row["retention_ci95"]
            retention += f" ({100 * low:.0f} to {100 * high:.0f})"
        holm, met = "—", "—"
        if "holm_p" in row:
            holm = "—" if row["holm_p"] is None else f"{row['holm_p']:.3g}"
            met = "no"
            if row["meets_target_point"]:
                met = "yes" if row["meets_target_tested"] else "mean only"
        lines.append(
            f"| {key} | {', '.join(knob) or '—'} | {error_cell} | {row['passes_x_plain']:.2f} "
            f"| {row['seconds_x_plain']:.2f} | {retention} | {holm} | {met} |"
        )
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Test error of every seed (dots) and the mean (a bar) against passes and against
    seconds, both as multiples of plain's; the 1.3× line and GNP's mean for the target."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    gnp_mean = 100 * summary["variants"]["GNP"]["mean_test_error"]
    for ax, cost in zip(axes, ("passes_x_plain", "seconds_x_plain"), strict=True):
        for key, row in summary["variants"].items():
            errors = 100 * np.asarray(row["per_seed_final_test_error"])
            (dots,) = ax.plot([row[cost]] * len(errors), errors, ".", alpha=0.5, label=key)
            ax.plot(row[cost], errors.mean(), "_", markersize=16, color=dots.get_color())
        ax.axvline(TARGET_COST, color="grey", linestyle=":")
        ax.axhline(gnp_mean, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel(cost.replace("_x_plain", " × plain"))
    axes[0].set_ylabel("final test error (%) per seed, bar: mean")
    axes[1].legend(fontsize=7, ncol=2)
    figure.savefig(path, dpi=110)


def markers(json_name: str) -> tuple[str, str]:
    return (f"<!-- table from docs/figures/{json_name} -->", "<!-- end of table -->")


def with_table(doc: str, json_name: str, summary: dict[str, Any]) -> str:
    """``doc`` with the table between the markers of ``json_name`` replaced by the summary's."""
    start, end = markers(json_name)
    pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(end), re.S)
    if not pattern.search(doc):
        raise ValueError(f"{DOC} has no lines {start!r} … {end!r} to hold the table")
    return pattern.sub(lambda _: f"{start}\n{table(summary)}\n{end}", doc)


def write_doc(json_path: Path, doc_path: Path = DOC) -> None:
    summary = read_json(json_path, "run the benchmark again to write it")
    write_text_atomically(doc_path, with_table(doc_path.read_text(), json_path.name, summary))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/time_to_accuracy"))
    parser.add_argument(
        "--smoke", action="store_true", help="digits, 1 epoch, 1 seed, 2 values a grid"
    )
    parser.add_argument("--variants", default=",".join(BY_KEY), help="comma-separated subset")
    parser.add_argument("--json", type=Path, help="default docs/figures/time_to_accuracy_NAME.json")
    parser.add_argument(
        "--write_doc",
        action="store_true",
        help="only write the JSON's table into docs/benchmarks.md",
    )
    args = parser.parse_args(argv)
    scale = SCALES["smoke" if args.smoke else "full"]
    json_path = args.json or FIGURES / f"time_to_accuracy_{scale.name}.json"
    if args.write_doc:
        if not json_path.exists():
            parser.error(f"{json_path} does not exist yet: run the benchmark to the end first")
        try:
            write_doc(json_path)
        except (ValueError, KeyError) as error:  # a damaged JSON, or a doc without the markers
            parser.exit(2, f"error: {error}\n")
        return
    names = [name for name in args.variants.split(",") if name]
    if unknown := sorted(set(names) - set(BY_KEY)):
        parser.error(f"unknown --variants {unknown}: choose from {', '.join(BY_KEY)}")
    if not {"plain", "GNP"} <= set(names):
        parser.error("--variants needs plain and GNP (retention is measured between them)")
    args.out.mkdir(parents=True, exist_ok=True)
    runs = run_all(names, scale, args.out)
    timing_path = args.out / "timing.json"
    # Timed once, after the runs; a restarted command keeps it unless variants were added.
    timing = (
        read_json(timing_path, "delete it to time the steps again") if timing_path.exists() else {}
    )
    if not set(names) <= set(timing.get("seconds_per_step", {})):
        timing = step_seconds(runs, scale)
        write_json_atomically(timing_path, timing)
    summary = summarize(runs, timing, scale)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    summary = json_ready(summary)
    write_json_atomically(json_path, summary)
    plot(summary, json_path.with_suffix(".png"))
    print(table(summary))
    print(f"wrote {json_path} and {json_path.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
