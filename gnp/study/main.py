"""The study's command line: ``python -m gnp.study`` (the design is ``gnp.study``'s docstring)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from gnp.analysis.plots import json_ready
from gnp.files import read_json, write_json_atomically
from gnp.study import __doc__ as study_doc
from gnp.study.budget import BUDGET_FILE, decide
from gnp.study.plan import (
    DECLARED,
    ICML2022_VARIANTS,
    ICML2024_VARIANTS,
    PARTS,
    SCALES,
    VARIANTS_2022,
    RunSpec,
    Scale,
    bracketed,
    choose_r,
    default_r,
    distinct,
    final_runs,
    lr_ablation_runs,
    plan_commit,
    tidy,
    tuning_runs,
)
from gnp.study.report import write_report
from gnp.study.run import Progress, finished_runs, planned_r, run_all, select, strip, wait_for


def shard(text: str) -> tuple[int, int]:
    """``K/N`` with 0 ≤ K < N."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"--shard takes K/N with 0 <= K < N, got {text!r}")
    return int(index), int(count)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gnp.study",
        description=study_doc.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(study_doc.split("\n")[1:6]),
    )
    parser.add_argument(
        "--mode",
        choices=sorted(SCALES),
        default="full",
        help="full: the study (2.5 h of CPU; two --shard processes on 2 cores took 1 h 26 min, "
        "docs/reproduction.md); pilot: every step on fewer runs (about 25 min of CPU); smoke: "
        "the digits set, a check of the machinery (2 min on an idle 2-core machine, 7 on a shared "
        "one); wide_r: the follow-up with r up "
        "to 0.5 on flipped labels (icml2022 only); wider_r: the second, r up to 1.4; "
        "widest_r: r up to 2.8; wider_r_clean: r up to 1.0 on "
        "clean labels",
    )
    parser.add_argument("--out", default="", help="output folder (default: runs/study_<mode>)")
    parser.add_argument("--only", choices=PARTS, help="run one part only")
    parser.add_argument("--data_dir", default="", help="dataset.data_dir (MNIST-1D's cache)")
    keys = [v.key for v in (*ICML2022_VARIANTS, *ICML2024_VARIANTS)]
    parser.add_argument(
        "--variants",
        type=lambda text: text.split(","),
        default=[],
        help=f"comma-separated variant keys to run (default: all): {', '.join(keys)}",
    )
    parser.add_argument(
        "--shard",
        type=shard,
        default=(0, 1),
        help="K/N: run every N-th run from the K-th (0-based), so that N processes share the "
        "study (e.g. 0/2 and 1/2 on 2 cores); the finals wait for every shard's tuning runs",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - set(keys))
    if unknown:
        parser.error(f"unknown --variants {', '.join(unknown)}; choose from {', '.join(keys)}")
    if args.only and args.only not in SCALES[args.mode].parts:
        parts = ", ".join(SCALES[args.mode].parts)
        parser.error(f"--mode={args.mode} has no part {args.only}; --only takes {parts}")
    return args


# The lr ablation's runs the plan's cut 3 keeps (the rest are dropped if shard 1 overruns).
LR_KEPT_BY_CUT = ("sgd", "gnp_released")


def chosen_settings(scale: Scale, chosen: dict[tuple[str, str], float]) -> dict[str, Any]:
    """Per tuned variant: its chosen r, the λ = α·r it stands for, and whether the grid
    brackets it (the grid is never extended: an edge is reported as such)."""
    settings = {}
    for (group, key), r in sorted(chosen.items()):
        variant = VARIANTS_2022[key]
        if variant.tuned:
            settings[f"{group}/{key}"] = {
                "r": r,
                "lambda": tidy(variant.alpha * r),
                "bracketed": bracketed(scale, variant, r),
            }
    return settings


def run_icml2022(
    scale: Scale, args: argparse.Namespace, out: Path, progress: Progress, planned: list
) -> dict[str, Any]:
    """Tuning (every shard's), the final runs at the chosen r, then the lr ablation: first the
    runs the plan's cut 3 keeps, then, unless the shard's projection (decided before any run
    the cut drops) overruns its budget, the rest."""
    run_all(select(tuning_runs(scale), args), out, scale, progress)
    wait_for(select(tuning_runs(scale), args, sharded=False), out)
    # The report covers every finished run of the part, not only this invocation's.
    tuned = finished_runs(tuning_runs(scale), out)
    chosen = choose_r(tuned, scale.tie_tolerance)
    pick = lambda group, key, chosen=chosen: chosen.get((group, key), default_r(scale))
    finals = distinct(final_runs(scale, "icml2022", pick), out)
    kept = lr_ablation_runs(scale, pick, [k for k in scale.lr_variants if k in LR_KEPT_BY_CUT])
    rest = lr_ablation_runs(scale, pick, [k for k in scale.lr_variants if k not in LR_KEPT_BY_CUT])
    progress.replan(planned, select(finals + kept + rest, args))
    run_all(select(finals + kept, args), out, scale, progress)
    result = {
        "tuning": [strip(run) for run in tuned],
        "chosen_r": {f"{group}/{key}": r for (group, key), r in sorted(chosen.items())},
    }
    if scale.lr_grid:
        wait_for(select(finals + kept, args, sharded=False), out)
        shard = tuning_runs(scale) + finals + kept + rest
        decision = decide(shard, {3: rest}, out, out / "icml2022" / BUDGET_FILE)
        if 3 not in decision["cuts"]:
            run_all(select(rest, args), out, scale, progress)
        result["chosen"] = chosen_settings(scale, chosen)
        result["lr_ablation"] = [strip(run) for run in finished_runs(kept + rest, out)]
        result["budget"] = decision
    result["runs"] = finished_runs(final_runs(scale, "icml2022", pick), out)
    return result


def run_icml2024(
    scale: Scale, args: argparse.Namespace, out: Path, progress: Progress, planned: list
) -> dict[str, Any]:
    """The ViT runs (GR at r = 0.1)."""
    pick = lambda group, key: default_r(scale)
    finals = select(final_runs(scale, "icml2024", pick), args)
    progress.replan(planned, finals)
    run_all(finals, out, scale, progress)
    runs = finished_runs(final_runs(scale, "icml2024", pick), out)
    return {"tuning": [], "chosen_r": {}, "runs": runs}


def planned_runs(scale: Scale, args: argparse.Namespace, out: Path, part: str) -> list[RunSpec]:
    """A part's runs after its tuning as far as known before it (see ``planned_r``)."""
    pick = planned_r(select(tuning_runs(scale), args, sharded=False), out, scale)
    runs = final_runs(scale, part, pick)
    if part == "icml2022":
        runs = distinct(runs, out) + lr_ablation_runs(scale, pick)
    return select(runs, args)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) the study and write its report; returns ``results.json``'s content."""
    args = parse_args(argv)
    scale = SCALES[args.mode]
    out = Path(args.out or f"runs/study_{args.mode}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Seeds of one variant compile the same programs: keep them across runs (unless the
    # caller has a compilation cache of its own).
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(out / ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    parts = [args.only] if args.only else list(scale.parts)

    tuning = select(tuning_runs(scale), args) if "icml2022" in parts else []
    planned = {part: planned_runs(scale, args, out, part) for part in parts}
    progress = Progress(tuning + [s for runs in planned.values() for s in runs], out)
    print(f"{args.mode} study: {progress.total} runs in {out} ({progress.done} done before)")
    path = out / "results.json"
    fix = "delete it: the study rebuilds it from the finished runs"
    results: dict[str, Any] = read_json(path, fix) if path.exists() else {}
    results["mode"] = args.mode
    results["plan_commit"] = plan_commit()
    results["scale"] = dataclasses.asdict(scale)
    for part in parts:
        started = time.perf_counter()
        run_part = run_icml2022 if part == "icml2022" else run_icml2024
        results[part] = run_part(scale, args, out, progress, planned[part])
        results[part]["wall_seconds_this_invocation"] = time.perf_counter() - started
    labels = {
        "icml2022": {v.key: v.label for v in ICML2022_VARIANTS},
        "icml2024": {v.key: v.label for v in ICML2024_VARIANTS},
    }
    report = write_report(results, out, declared=DECLARED, labels=labels)
    write_json_atomically(path, json_ready(results | report))
    print(report["markdown"])
    return read_json(path, fix)
