"""Analysis of training runs: ``python -m gnp.analyze SUBCOMMAND --working_dir=RUN [...]``.

Also installed as ``gnp-analyze``. Each measuring subcommand reads a run's ``config.json``
and a checkpoint (``--step``, default the newest that restores: a damaged one is passed over
in one line), measures it with ``gnp.analysis`` and writes a PNG and a JSON of the same stem
(the numbers drawn, plus where they came from) to ``RUN/analysis/``, named by what tells two
analyses apart: ``<kind>_<split>_step<N>`` then, where they apply, ``_cross_entropy``,
``_batches<B>``, ``_seed<S>`` and ``_vs_<RUN2>_step<M>``.

  gradient-norm  ‖∇L(θ)‖ over a whole split, and the per-batch norms
  hessian        top-k Hessian eigenvalues (Lanczos) with their residuals ‖Hv − λv‖
                 and a converged flag, and the trace (Hutchinson) ± its standard
                 error; with --other, a second run on the same vectors and the
                 paired standard error of the trace difference
  landscape      the loss along 1 or 2 filter-normalized random directions
                 (attention kernels: one filter per projection and head)
  interpolate    the loss on the segment between two runs' checkpoints, BatchNorm
                 statistics re-estimated at each point (or blended: see --help);
                 the grid always holds t = 0 and t = 1, the two runs themselves
  curves         several runs' curves.png on one figure (RUN1 RUN2 ...)
  alpha-sweep    train one config per α (and r), then plot the clean mini-batch
                 gradient norm (an epoch mean, not ‖∇L(θ)‖) and the test error per
                 epoch for each (Figure 3 of the 2022 paper)

The loss measured is the run's training objective without its randomness:
mean cross-entropy (with the run's label smoothing) plus the run's L2 term
(``--loss=cross_entropy`` drops it; gradient-norm and landscape print both terms at θ),
BatchNorm in inference mode (its running statistics), no dropout, no
augmentation. A fixed function of θ is what a gradient norm, a Hessian or a
landscape is defined for; the per-step numbers in ``metrics.jsonl`` are not.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from gnp import analysis
from gnp.analysis.curves import plot_runs, read_run_records
from gnp.analysis.plots import clean_gradient_norm_key, json_ready
from gnp.files import read_json, write_json_atomically
from gnp.train import distributed
from gnp.train.config import normalize_argv, read_config
from gnp.train.loop import train_and_evaluate
from gnp.train.run import (
    LOSS_DEFINITION,
    Batch,
    PyTree,
    Run,
    RunError,
    batch_stats_update,
    load_run,
    params_loss,
    split_batches,
    variables_loss,
)
from gnp.train.stops import (
    NonFiniteError,
    Preempted,
    describe_stop,
    exit_at_once_on_interrupt,
)
from gnp.train.workdir import read_metrics

FILTER_RULE = (
    "filter-normalized (Li et al. 2018): one filter per conv output channel and per Dense "
    "output unit; attention q/k/v kernels one per projection and head; biases, norm "
    "parameters and embeddings not moved"
)
# What ``interpolate`` does with BatchNorm statistics, as its output says it.
BATCHNORM_MODES = {
    "recompute": "BatchNorm statistics re-estimated at each point on {n} training batches",
    "interpolate": "BatchNorm statistics interpolated between the two checkpoints' running ones",
    "none": "no BatchNorm statistics (the model has none)",
}
# What ``--loss`` measures.
LOSS_CHOICES = {
    "objective": LOSS_DEFINITION,
    "cross_entropy": LOSS_DEFINITION.replace(" + the run's L2 term", " (no L2 term)"),
}
# Interpolation goes this far past each run: the loss just outside shows whether a run sits
# at the bottom of its basin.
INTERPOLATION_MARGIN = 0.5


# Outputs.


def _output_dir(args: argparse.Namespace) -> Path:
    directory = Path(args.output_dir or Path(args.working_dir) / "analysis")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _output_path(args: argparse.Namespace, kind: str, run: Run, other: Run | None = None) -> Path:
    """``RUN/analysis/<kind>_<split>_step<N>[...].png``: named by everything that tells two
    analyses of a run apart (split, checkpoint, loss, batches, seed, the other run and its
    checkpoint), so that one never overwrites another."""
    parts = [kind, args.split, f"step{run.step}"]
    if args.loss != "objective":
        parts.append(args.loss)
    if args.max_batches is not None:
        parts.append(f"batches{args.max_batches}")
    if args.seed != 0:
        parts.append(f"seed{args.seed}")
    if other is not None:
        parts += ["vs", other.working_dir.resolve().name, f"step{other.step}"]
    return _output_dir(args) / ("_".join(parts) + ".png")


def _add_to_json(png: Path, results: dict[str, Any]) -> None:
    """Adds ``results`` to the JSON the plot wrote beside ``png``: one file per figure."""
    path = png.with_suffix(".json")
    numbers = read_json(path, "rerun the analysis to write it again")
    write_json_atomically(path, json_ready(numbers | results))


def _load(working_dir: str, step: int | None) -> Run:
    """The run at ``step`` (default: its newest readable checkpoint)."""
    print(f"reading {working_dir} ...", flush=True)
    run = load_run(working_dir, step)
    print(f"  checkpoint step {run.step} (epoch {run.epoch})", flush=True)
    return run


def _measured(run: Run, args: argparse.Namespace) -> Run:
    """``run`` with the loss the user chose: ``cross_entropy`` drops the L2 term."""
    if args.loss == "objective":
        return run
    config = run.config.copy_and_resolve_references()
    config.l2_regularization = 0.0
    return dataclasses.replace(run, config=config)


def _loss_terms(run: Run, batches: list[Batch]) -> dict[str, float]:
    """The cross-entropy and the L2 term of the run's objective apart, over ``batches``."""
    config = run.config.copy_and_resolve_references()
    l2 = config.l2_regularization
    config.l2_regularization = 0.0
    cross_entropy = analysis.mean_loss(
        params_loss(dataclasses.replace(run, config=config)), run.params, batches
    )
    config.l2_regularization = l2
    objective = analysis.mean_loss(
        params_loss(dataclasses.replace(run, config=config)), run.params, batches
    )
    return {"cross_entropy": cross_entropy, "l2_term": objective - cross_entropy}


def _print_loss_terms(run: Run, args: argparse.Namespace, batches: list[Batch]) -> dict[str, Any]:
    terms = _loss_terms(run, batches)
    print(
        f"at θ: cross-entropy {terms['cross_entropy']:.6g} + L2 term {terms['l2_term']:.6g} "
        f"over the {args.split} split; measured: {LOSS_CHOICES[args.loss]}",
        flush=True,
    )
    return {"loss_terms_at_theta": terms}


def _measurement(run: Run, args: argparse.Namespace, batches: list[Batch]) -> dict[str, Any]:
    examples = sum(analysis.default_weight(batch) for batch in batches)
    return {
        **run.provenance(),
        "split": args.split,
        "num_examples": int(examples),
        "num_batches": len(batches),
        "loss": args.loss,
        "loss_definition": LOSS_CHOICES[args.loss],
    }


def _batches(run: Run, args: argparse.Namespace) -> list[Batch]:
    batches = split_batches(run.pipeline, args.split, args.max_batches)
    print(f"  {len(batches)} batches of the {args.split} split", flush=True)
    return batches


# Subcommands.


def gradient_norm(args: argparse.Namespace) -> None:
    run = _load(args.working_dir, args.step)
    batches = _batches(run, args)
    terms = _print_loss_terms(run, args, batches)
    print("  the gradient over the whole split ...", flush=True)
    result = analysis.full_gradient_norm(params_loss(_measured(run, args)), run.params, batches)
    png = analysis.plot_batch_gradient_norms(
        result.batch_norms,
        result.norm,
        _output_path(args, "gradient_norm", run),
        title=f"{run.working_dir.name}, step {run.step}, {args.split} split",
    )
    _add_to_json(
        png,
        {
            **_measurement(run, args, batches),
            **terms,
            **result.summary(),
            "batch_sizes": result.batch_weights,
        },
    )
    print(f"‖∇L(θ)‖ = {result.norm:.6g}, L(θ) = {result.loss:.6g} over the {args.split} split")
    print(f"wrote {png} and {png.with_suffix('.json')}")


def _hessian_of(
    run: Run, args: argparse.Namespace, keys: tuple[jax.Array, jax.Array]
) -> tuple[list[Batch], analysis.Eigenpairs, analysis.TraceEstimate | None, int]:
    """Lanczos and Hutchinson on one run; the same ``keys`` give every run the same probes."""
    batches = _batches(run, args)
    operator = analysis.hessian_operator(params_loss(_measured(run, args)), run.params, batches)
    print(f"  Lanczos for the top {args.k} eigenvalues ...", flush=True)
    top = analysis.top_eigenvalues(
        operator,
        args.k,
        key=keys[0],
        num_iterations=args.lanczos_iterations,
        tolerance=args.tolerance,
    )
    if args.trace_probes:
        print(f"  Hutchinson trace with {args.trace_probes} probes ...", flush=True)
    trace = (
        analysis.hessian_trace(operator, key=keys[1], num_probes=args.trace_probes)
        if args.trace_probes
        else None
    )
    return batches, top, trace, operator.size


def _trace_numbers(trace: analysis.TraceEstimate | None) -> dict[str, Any]:
    if trace is None:
        return {}
    return {
        "trace": trace.mean,
        "trace_standard_error": trace.standard_error,
        "trace_samples": trace.samples,
    }


def _print_hessian(
    name: str, top: analysis.Eigenpairs, trace: analysis.TraceEstimate | None
) -> None:
    print(f"{name}top eigenvalues {np.array2string(top.eigenvalues, precision=5)}")
    flags = ", ".join("yes" if c else "NO" for c in top.converged)
    print(
        f"{name}residuals ‖Hv − λv‖ {np.array2string(top.residual_norms, precision=2)}; "
        f"converged (≤ {top.tolerance:g}·‖H‖): {flags}"
    )
    if trace is not None:
        print(f"{name}trace {trace.mean:.6g} ± {trace.standard_error:.2g}")


def hessian(args: argparse.Namespace) -> None:
    run = _load(args.working_dir, args.step)
    other = _load(args.other, args.other_step) if args.other else None
    if other is not None:
        _check_same_model(run, other)
    keys = tuple(jax.random.split(jax.random.key(args.seed)))
    batches, top, trace, size = _hessian_of(run, args, keys)
    results = {
        **_measurement(run, args, batches),
        "num_parameters": size,
        "lanczos_iterations": top.num_iterations,
        **_trace_numbers(trace),
    }
    title = f"top {args.k} Hessian eigenvalues"
    series: analysis.Eigenpairs | dict[str, analysis.Eigenpairs] = top
    if other is None:
        _print_hessian("", top, trace)
        if trace is not None:
            title += f"\ntrace ≈ {trace.mean:.4g} ± {trace.standard_error:.2g} (s.e.)"
    else:
        _, other_top, other_trace, _ = _hessian_of(other, args, keys)
        names = run.working_dir.name, other.working_dir.name
        series = {names[0]: top, names[1]: other_top}
        results["other"] = {**other.provenance(), **_trace_numbers(other_trace)}
        _print_hessian(f"{names[0]}: ", top, trace)
        _print_hessian(f"{names[1]}: ", other_top, other_trace)
        if trace is not None and other_trace is not None:
            difference = analysis.trace_difference(trace, other_trace)
            results["trace_difference"] = {
                "definition": "tr H(working_dir) − tr H(other), the same probes for both",
                "mean": difference.mean,
                "standard_error": difference.standard_error,
                "unpaired_standard_error": difference.unpaired_standard_error,
            }
            title += (
                f"\nΔ trace ≈ {difference.mean:.4g} ± {difference.standard_error:.2g} (paired s.e.)"
            )
            print(
                f"trace difference {difference.mean:.6g} ± {difference.standard_error:.2g} "
                f"(paired; {difference.unpaired_standard_error:.2g} with independent probes)"
            )
    png = analysis.plot_eigenvalues(series, _output_path(args, "hessian", run, other), title=title)
    _add_to_json(png, results)
    print(f"wrote {png} and {png.with_suffix('.json')}")


def interpolation_grid(points: int) -> np.ndarray:
    """About ``points`` values of t over [-margin, 1 + margin] that always hold t = 0 and
    t = 1 (the two runs themselves): 0 and 1 split the range's points in proportion, so the
    grid is even on each of its three pieces and exactly even when the counts allow."""
    low, high = -INTERPOLATION_MARGIN, 1 + INTERPOLATION_MARGIN
    step = (high - low) / max(points - 1, 1)
    inside = max(1, round(1 / step))  # intervals between 0 and 1
    outside = max(0, round(INTERPOLATION_MARGIN / step))  # intervals on each side
    middle = np.linspace(0.0, 1.0, inside + 1)
    if outside == 0:
        return middle
    before = np.linspace(low, 0.0, outside + 1)[:-1]
    after = np.linspace(1.0, high, outside + 1)[1:]
    return np.concatenate([before, middle, after])


def symmetric_grid(span: float, points: int) -> np.ndarray:
    """``points`` even steps over [-span, span]; an odd count puts exactly 0 in the middle."""
    half = (points - 1) / 2
    return span * (np.arange(points) - half) / half


def landscape(args: argparse.Namespace) -> None:
    run = _load(args.working_dir, args.step)
    batches = _batches(run, args)
    terms = _print_loss_terms(run, args, batches)
    loss = params_loss(_measured(run, args))
    coordinates = symmetric_grid(args.span, args.points)
    keys = jax.random.split(jax.random.key(args.seed), args.dims)
    images = jax.ShapeDtypeStruct(batches[0]["image"].shape, jnp.float32)
    filters = analysis.attention_filters(run.model, images)
    directions = [
        analysis.filter_normalized_direction(key, run.params, filters=filters) for key in keys
    ]
    png = _output_path(args, f"landscape_{args.dims}d", run)
    print(f"  the loss at {args.points**args.dims} points ...", flush=True)
    results = {
        **_measurement(run, args, batches),
        **terms,
        "seed": args.seed,
        "filters": FILTER_RULE,
    }
    if args.dims == 1:
        values = analysis.loss_slice_1d(
            loss, run.params, directions[0], batches, coordinates=coordinates
        )
        analysis.plot_loss_curve(
            coordinates,
            values,
            png,
            xlabel="t (along a filter-normalized random direction)",
            title=f"{run.working_dir.name}, step {run.step}",
            marks={"θ": 0.0},
        )
    else:
        values = analysis.loss_slice_2d(
            loss,
            run.params,
            tuple(directions),
            batches,
            coordinates_x=coordinates,
            coordinates_y=coordinates,
        )
        analysis.plot_loss_contour(coordinates, coordinates, values, png)
    _add_to_json(png, results)
    print(f"loss from {np.nanmin(values):.6g} to {np.nanmax(values):.6g} over the grid")
    print(f"wrote {png} and {png.with_suffix('.json')}")


def _check_same_model(run: Run, other: Run) -> None:
    """Interpolating needs the same parameter shapes and the same data set."""
    shapes = [jax.tree.map(np.shape, r.variables) for r in (run, other)]
    if shapes[0] != shapes[1]:
        raise RunError(
            f"{run.working_dir} ({run.config.model.model_name}) and {other.working_dir} "
            f"({other.config.model.model_name}) have different parameter shapes; "
            "interpolate between runs of one model"
        )
    if run.config.dataset.dataset_name != other.config.dataset.dataset_name:
        raise RunError(
            f"{run.working_dir} trained on {run.config.dataset.dataset_name} and "
            f"{other.working_dir} on {other.config.dataset.dataset_name}; use runs of one data set"
        )


def _batchnorm_mode(run: Run, requested: str | None) -> str:
    if not run.variables["batch_stats"]:
        return "none"
    return requested or "recompute"


def interpolate(args: argparse.Namespace) -> None:
    run = _load(args.working_dir, args.step)
    other = _load(args.other, args.other_step)
    _check_same_model(run, other)
    batches = _batches(run, args)
    coordinates = interpolation_grid(args.points)
    loss = variables_loss(_measured(run, args))
    mode = _batchnorm_mode(run, args.batchnorm_statistics)
    results: dict[str, Any] = {}
    at_point = None
    if mode == "recompute":
        # The trainer's own first batches (its augmentation): statistics as training made them.
        train_batches = jax.device_put(
            [run.pipeline.train_batch(step) for step in range(args.bn_batches)]
        )
        update = batch_stats_update(run, args.seed)

        def at_point(variables: dict[str, PyTree]) -> dict[str, PyTree]:
            stats = analysis.recompute_batch_stats(update, variables, train_batches)
            return {"params": variables["params"], "batch_stats": stats}

        results["endpoint_losses_with_saved_statistics"] = [
            analysis.mean_loss(loss, r.variables, batches) for r in (run, other)
        ]
    values = analysis.linear_interpolation(
        loss, run.variables, other.variables, batches, coordinates=coordinates, at_point=at_point
    )
    print(f"  the loss at {coordinates.size} points on the line ...", flush=True)
    png = _output_path(args, "interpolation", run, other)
    analysis.plot_loss_curve(
        coordinates,
        values,
        png,
        xlabel="t (θ = (1 − t)·θ₀ + t·θ₁)",
        title=BATCHNORM_MODES[mode].format(n=args.bn_batches),
        marks={run.working_dir.name: 0.0, other.working_dir.name: 1.0},
    )
    results |= {
        **_measurement(run, args, batches),
        "other": other.provenance(),
        "batchnorm_statistics": BATCHNORM_MODES[mode].format(n=args.bn_batches),
        "note": "t=0 is working_dir, t=1 is other; params interpolated; "
        "the objective (L2, label smoothing) is working_dir's",
    }
    _add_to_json(png, results)
    print(
        f"loss {values[0]:.6g} at t={coordinates[0]:g}, {values[-1]:.6g} at t={coordinates[-1]:g}"
    )
    print(f"BatchNorm statistics: {results['batchnorm_statistics']}")
    print(f"wrote {png} and {png.with_suffix('.json')}")


def alpha_sweep(args: argparse.Namespace) -> None:
    base = read_config(["gnp-analyze", f"--config={args.config}", *args.config_overrides])
    base.evaluate_every_n_epochs = 1  # A curve needs the test error at every epoch.
    rs = args.rs or [base.gnp.r]
    output = Path(args.working_dir)
    curves: dict[str, list[dict[str, Any]]] = {}
    for r, alpha in itertools.product(rs, args.alphas):
        config = base.copy_and_resolve_references()
        config.gnp.r, config.gnp.alpha = r, alpha
        run_dir = output / f"alpha_{alpha:g}_r_{r:g}"
        print(f"α={alpha:g}, r={r:g}: {run_dir}")
        try:
            train_and_evaluate(config, str(run_dir))
        except NonFiniteError as e:  # One diverging setting is a result, not the sweep's end.
            print(f"α={alpha:g}, r={r:g} diverged: {e}")
        rows = read_metrics(str(run_dir / "metrics.jsonl"))
        if rows:
            curves[f"α={alpha:g}" if len(rs) == 1 else f"α={alpha:g}, r={r:g}"] = rows
    if not curves:
        raise RunError(f"no run of the sweep in {output} finished an epoch; nothing to plot")
    png = analysis.plot_alpha_sweep(
        curves,
        output / "alpha_sweep.png",
        title=f"{base.model.model_name} on {base.dataset.dataset_name}",
    )
    for label, rows in curves.items():
        last, key = rows[-1], clean_gradient_norm_key(rows)
        print(
            f"{label}: epoch {last['epoch']}, {key} {last[key]:.4g} (epoch mean of mini-batch "
            f"norms), test error {last.get('test_error_rate', float('nan')):.4f}"
        )
    print(f"wrote {png} and {png.with_suffix('.json')}")


def curves(args: argparse.Namespace) -> None:
    runs = []
    for directory in args.runs:
        if not (Path(directory) / "metrics.jsonl").is_file():
            raise RunError(
                f"{Path(directory) / 'metrics.jsonl'} does not exist: {directory} is not a "
                "training run's --working_dir, or it has not finished an epoch"
            )
        print(f"reading {Path(directory) / 'metrics.jsonl'} ...", flush=True)
        runs.append(read_run_records(directory))
    if args.output:
        png = Path(args.output)
        png.parent.mkdir(parents=True, exist_ok=True)
    else:
        names = "_".join(run.name for run in runs)
        png = Path(args.runs[0]) / "analysis" / f"curves_{names}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
    plot_runs(runs, png)
    for run in runs:
        last = run.records[-1] if run.records else {}
        print(
            f"{run.name}: {len(run.records)} epochs, last test error "
            f"{last.get('test_error_rate', float('nan')):.4f}"
        )
    print(f"wrote {png} and {png.with_suffix('.json')}")


# The command line.


def _numbers(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value:g}")
    return value


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {minimum}, got {value}")
        return value

    return parse


def _measured_run_flags() -> argparse.ArgumentParser:
    """The flags every subcommand that measures one checkpoint takes."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--working_dir", required=True, help="the run's directory")
    parser.add_argument(
        "--split",
        choices=("train", "test"),
        default="train",
        help="data to measure the loss on, without augmentation (default: train)",
    )
    parser.add_argument(
        "--max_batches",
        type=_at_least(1),
        default=None,
        help="use only the first N eval batches of the split (default: all)",
    )
    parser.add_argument(
        "--output_dir", default=None, help="where outputs go (default: WORKING_DIR/analysis)"
    )
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed for random vectors")
    parser.add_argument(
        "--step",
        type=_at_least(0),
        default=None,
        help="the checkpoint's training step (default: the newest that restores); an unknown "
        "step is refused listing the kept ones",
    )
    parser.add_argument(
        "--loss",
        choices=tuple(LOSS_CHOICES),
        default="objective",
        help="what is measured: the training objective, cross-entropy + L2 term (the default), "
        "or the cross-entropy alone; gradient-norm and landscape print both terms at θ",
    )
    return parser


def _other_step_flag(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--other_step",
        type=_at_least(0),
        default=None,
        help="the other run's checkpoint step (default: its newest that restores)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnp-analyze",
        description=(__doc__ or "").replace("``", "'"),  # the docstring's markup is not help
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    common = _measured_run_flags()

    def add(name: str, handler: Callable, summary: str, **kwargs: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=summary, description=summary, allow_abbrev=False, **kwargs
        )
        sub.set_defaults(handler=handler)
        return sub

    add(
        "gradient-norm",
        gradient_norm,
        "‖∇L(θ)‖ of the latest checkpoint over a whole split, and the per-batch norms.",
        parents=[common],
    )
    sub = add(
        "hessian",
        hessian,
        "Top-k Hessian eigenvalues (Lanczos) with their residuals and the trace (Hutchinson) "
        "at the latest checkpoint; with --other, of two runs and their paired difference.",
        parents=[common],
    )
    sub.add_argument("--k", type=_at_least(1), default=5, help="eigenvalues to find (default: 5)")
    sub.add_argument(
        "--lanczos_iterations",
        type=_at_least(1),
        default=None,
        help="Lanczos steps (default: 3k + 20)",
    )
    sub.add_argument(
        "--tolerance",
        type=_positive,
        default=analysis.hessian.DEFAULT_TOLERANCE,
        help="an eigenpair is converged when ‖Hv − λv‖ ≤ tolerance·‖H‖ "
        f"(default: {analysis.hessian.DEFAULT_TOLERANCE:g})",
    )
    sub.add_argument(
        "--other",
        default=None,
        help="a second run of the same model, measured with the same vectors; adds the "
        "paired standard error of the trace difference",
    )
    _other_step_flag(sub)
    sub.add_argument(
        "--trace_probes",
        type=int,
        default=50,
        help="Hutchinson probes, at least 2; 0 skips the trace (default: 50)",
    )
    sub = add(
        "landscape",
        landscape,
        "The loss along 1 or 2 filter-normalized random directions from the latest checkpoint.",
        parents=[common],
    )
    sub.add_argument("--dims", type=int, choices=(1, 2), default=1, help="directions (default: 1)")
    sub.add_argument(
        "--points", type=_at_least(2), default=21, help="grid points per direction (default: 21)"
    )
    sub.add_argument("--span", type=float, default=1.0, help="grid from -span to span (default: 1)")
    sub = add(
        "interpolate",
        interpolate,
        f"The loss on the line from this run's checkpoint (t=0) to another's (t=1), "
        f"t in [-{INTERPOLATION_MARGIN:g}, {1 + INTERPOLATION_MARGIN:g}].",
        parents=[common],
    )
    sub.add_argument("--other", required=True, help="the other run's directory (t=1)")
    _other_step_flag(sub)
    sub.add_argument(
        "--points", type=_at_least(2), default=21, help="points on the line (default: 21)"
    )
    sub.add_argument(
        "--batchnorm_statistics",
        choices=("recompute", "interpolate"),
        default=None,
        help="BatchNorm models: re-estimate the statistics at each point on training batches "
        "(the default), or blend the two checkpoints' saved ones",
    )
    sub.add_argument(
        "--bn_batches",
        type=_at_least(1),
        default=8,
        help="training batches to re-estimate BatchNorm statistics on (default: 8)",
    )
    sub = add(
        "curves",
        curves,
        "Several runs' curves.png on one figure (SAM against GNP, one α against another): "
        "loss, error rate, gradient norms and the sharpness diagnostics, one colour per run.",
    )
    sub.add_argument("runs", nargs="+", metavar="RUN", help="training runs' working directories")
    sub.add_argument(
        "--output",
        default=None,
        metavar="PNG",
        help="where the figure goes, its JSON beside it "
        "(default: RUN1/analysis/curves_<RUN1>_<RUN2>...png)",
    )
    sub = add(
        "alpha-sweep",
        alpha_sweep,
        "Train a config once per α (and r) into WORKING_DIR/alpha_<a>_r_<r>/ (finished runs are "
        "skipped, interrupted ones resume), then plot the clean mini-batch gradient norm (epoch "
        "mean) and test error per epoch. "
        "Further --config.KEY=VALUE flags override the config as in gnp-train; "
        "evaluate_every_n_epochs is set to 1.",
    )
    sub.add_argument("--config", required=True, metavar="PATH", help="a config file")
    sub.add_argument("--working_dir", required=True, help="the sweep's directory")
    sub.add_argument(
        "--alphas", type=_numbers, required=True, help="comma-separated α values, e.g. 0,0.5,0.8,1"
    )
    sub.add_argument(
        "--rs", type=_numbers, default=None, help="comma-separated r values (default: the config's)"
    )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The subcommand and its flags; ``--config.KEY=VALUE`` (alpha-sweep only) are kept as
    ``config_overrides``. A usage error exits with status 2."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(normalize_argv(list(argv)))
    overrides = [arg for arg in unknown if arg.startswith("--config.")]
    if len(overrides) < len(unknown) or (overrides and args.command != "alpha-sweep"):
        parser.error(
            f"unrecognized arguments: {' '.join(unknown)} "
            "(only alpha-sweep takes --config.KEY=VALUE)"
        )
    args.config_overrides = overrides
    return args


def main(argv: Sequence[str]) -> None:
    """Runs one subcommand; a bad run directory or config exits with ``error: ...``."""
    args = parse_args(argv)
    try:
        distributed.check_platforms()
        args.handler(args)
    except ValueError as e:  # RunError, and the trainer's config errors
        raise SystemExit(f"error: {e}") from None
    except (Preempted, KeyboardInterrupt) as e:  # alpha-sweep's runs resume; others rerun
        code, line = describe_stop(e) or (1, str(e))
        print(line, file=sys.stderr)
        raise SystemExit(code) from None


def run() -> None:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it reads at INFO
    try:
        main(sys.argv[1:])
    finally:  # the last line is said: a Ctrl-C now must not print a traceback after it
        exit_at_once_on_interrupt()


if __name__ == "__main__":
    run()
