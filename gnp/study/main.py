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
from gnp.study.plan import (
    DECLARED,
    ICML2022_VARIANTS,
    ICML2024_VARIANTS,
    PARTS,
    SCALES,
    choose_r,
    default_r,
    final_runs,
    plan_commit,
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
    return args


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
    all_tuning = select(tuning_runs(scale), args, sharded=False)
    planned_finals = {
        part: select(final_runs(scale, part, planned_r(all_tuning, out, scale)), args)
        for part in parts
    }
    progress = Progress(tuning + [s for finals in planned_finals.values() for s in finals], out)
    print(f"{args.mode} study: {progress.total} runs in {out} ({progress.done} done before)")
    path = out / "results.json"
    fix = "delete it: the study rebuilds it from the finished runs"
    results: dict[str, Any] = read_json(path, fix) if path.exists() else {}
    results["mode"] = args.mode
    results["plan_commit"] = plan_commit()
    results["scale"] = dataclasses.asdict(scale)
    for part in parts:
        started = time.perf_counter()
        if part == "icml2022":
            run_all(tuning, out, scale, progress)
            wait_for(all_tuning, out)
        # The report covers every finished run of the part, not only this invocation's.
        tuned = finished_runs(tuning_runs(scale) if part == "icml2022" else [], out)
        chosen = choose_r(tuned)
        pick = lambda group, key, chosen=chosen: chosen.get((group, key), default_r(scale))
        final_specs = select(final_runs(scale, part, pick), args)
        progress.replan(planned_finals[part], final_specs)
        run_all(final_specs, out, scale, progress)
        finals = finished_runs(final_runs(scale, part, pick), out)
        results[part] = {
            "tuning": [strip(run) for run in tuned],
            "chosen_r": {f"{group}/{key}": r for (group, key), r in sorted(chosen.items())},
            "runs": finals,
            "wall_seconds_this_invocation": time.perf_counter() - started,
        }
    labels = {
        "icml2022": {v.key: v.label for v in ICML2022_VARIANTS},
        "icml2024": {v.key: v.label for v in ICML2024_VARIANTS},
    }
    report = write_report(results, out, declared=DECLARED, labels=labels)
    write_json_atomically(path, json_ready(results | report))
    print(report["markdown"])
    return read_json(path, fix)
