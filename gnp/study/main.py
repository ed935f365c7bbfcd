"""The study's command line: ``python -m gnp.study`` (the design is ``gnp.study``'s docstring)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from gnp.analysis.plots import json_ready
from gnp.files import read_json, write_json_atomically, write_text_atomically
from gnp.provenance import gnp_version
from gnp.study import __doc__ as study_doc
from gnp.study.budget import BUDGET_FILE, LR_KEPT_BY_CUT, SHARD_SECONDS, cut_rule, decide
from gnp.study.plan import (
    CONFIRMATORY,
    DECLARED,
    ICML2022_VARIANTS,
    ICML2024_VARIANTS,
    PARTS,
    SCALES,
    VARIANTS_2022,
    VARIANTS_2024,
    RunSpec,
    Scale,
    bracketed,
    choose_r,
    default_r,
    distinct,
    family_size,
    figure3_runs,
    final_runs,
    lr_ablation_runs,
    part_tuning_runs,
    plan_commit,
    r_grid,
    tidy,
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
        "docs/first_study.md); pilot: every step on fewer runs (about 25 min of CPU); smoke: "
        "the digits set, a check of the machinery (2 min on an idle 2-core machine, 7 on a shared "
        "one); wide_r: the follow-up with r up "
        "to 0.5 on flipped labels (icml2022 only); wider_r: the second, r up to 1.4; "
        "widest_r: r up to 2.8; wider_r_clean: r up to 1.0 on "
        "clean labels; confirm: the confirmatory study of docs/study/plan.md (its shard 1 is "
        "--only=icml2022, shard 2 --only=icml2024); confirm_smoke: its machinery on digits",
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
    parser.add_argument(
        "--publish",
        default="",
        help="also write the results here, compact and every number to 6 significant digits "
        "(the copy committed under docs/study/)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - set(keys))
    if unknown:
        parser.error(f"unknown --variants {', '.join(unknown)}; choose from {', '.join(keys)}")
    if args.only and args.only not in SCALES[args.mode].parts:
        parts = ", ".join(SCALES[args.mode].parts)
        parser.error(f"--mode={args.mode} has no part {args.only}; --only takes {parts}")
    return args


def published(value: Any, digits: int = 6) -> Any:
    """JSON-ready results with every float to ``digits`` significant digits: the committed
    copy, half the size, and its numbers still far finer than any table quotes."""
    if isinstance(value, dict):
        return {key: published(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [published(item, digits) for item in value]
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    return value


def chosen_settings(scale: Scale, chosen: dict[tuple[str, str], float]) -> dict[str, Any]:
    """Per tuned variant: its chosen r, the λ = α·r it stands for, and whether the grid
    brackets it (the grid is never extended: an edge is reported as such)."""
    settings = {}
    for (group, key), r in sorted(chosen.items()):
        if group.startswith("width"):  # the 2024 part tunes GR alone
            variant, grid = VARIANTS_2024[key], scale.r_grid_2024
        elif VARIANTS_2022[key].tuned:
            variant = VARIANTS_2022[key]
            grid = r_grid(scale, variant)
        else:
            continue
        settings[f"{group}/{key}"] = {
            "r": r,
            "lambda": tidy(variant.alpha * r),
            "bracketed": bracketed(grid, r),
        }
    return settings


def tune(
    scale: Scale, args: argparse.Namespace, out: Path, progress: Progress, part: str
) -> tuple[Any, dict[str, Any]]:
    """A part's tuning runs (this shard's; then waits for every shard's): the
    ``pick(group, key)`` of the final runs' r and the results' record of the choice."""
    run_all(select(part_tuning_runs(scale, part), args), out, scale, progress)
    wait_for(select(part_tuning_runs(scale, part), args, sharded=False), out)
    # The report covers every finished run of the part, not only this invocation's.
    tuned = finished_runs(part_tuning_runs(scale, part), out)
    chosen = choose_r(tuned, scale.tie_tolerance)
    pick = lambda group, key, chosen=chosen: chosen.get((group, key), default_r(scale))
    record = {
        "tuning": [strip(run) for run in tuned],
        "chosen_r": {f"{group}/{key}": r for (group, key), r in sorted(chosen.items())},
    }
    if scale.lambda_grid:
        record["chosen"] = chosen_settings(scale, chosen)
    return pick, record


def run_with_cuts(
    scale: Scale,
    args: argparse.Namespace,
    out: Path,
    progress: Progress,
    part: str,
    runs: tuple[list[RunSpec], dict[int, list[RunSpec]]],
) -> dict[str, Any] | None:
    """The runs no cut drops, then the plan's budget decision (once, from the shard's
    measured cpu_seconds), then the runs of every cut it did not make, in the cuts' order
    (with ``--variants``, every run it selects: the budget is the whole plan's)."""
    core, cuts = runs
    if args.variants:  # a hand-picked subset is outside the plan's budget: all of it runs
        core, cuts = core + [s for rule in cuts.values() for s in rule], {}
    run_all(select(core, args), out, scale, progress)
    if not cuts:
        return None
    wait_for(select(core, args, sharded=False), out)
    shard = part_tuning_runs(scale, part) + core + [s for rule in cuts.values() for s in rule]
    decision = decide(shard, cuts, out, out / part / BUDGET_FILE)
    for rule in sorted(cuts):
        if rule not in decision["cuts"]:
            run_all(select(cuts[rule], args), out, scale, progress)
    return decision


def icml2022_runs(
    scale: Scale, pick: Any, out: Path
) -> tuple[list[RunSpec], dict[int, list[RunSpec]]]:
    """The final runs and the lr ablation's runs the plan's cut 3 keeps; the rest, cut 3's."""
    finals = distinct(final_runs(scale, "icml2022", pick), out)
    kept = lr_ablation_runs(scale, pick, [k for k in scale.lr_variants if k in LR_KEPT_BY_CUT])
    rest = lr_ablation_runs(scale, pick, [k for k in scale.lr_variants if k not in LR_KEPT_BY_CUT])
    return finals + kept, ({3: rest} if scale.lr_grid else {})


def icml2024_runs(
    scale: Scale, pick: Any, out: Path
) -> tuple[list[RunSpec], dict[int, list[RunSpec]]]:
    """The ViT final runs, split by the plan's cuts 1 and 2 where the scale has its design."""
    finals = final_runs(scale, "icml2024", pick)
    if not scale.design_2024:
        return finals, {}
    rules = [cut_rule(spec) for spec in finals]
    cuts = {rule: [s for s, r in zip(finals, rules, strict=True) if r == rule] for rule in (1, 2)}
    return [s for s, rule in zip(finals, rules, strict=True) if not rule], cuts


def descriptive_runs(scale: Scale, pick: Any, part: str) -> list[RunSpec]:
    """The part's runs outside the family and the budget cuts (Figure 3's), run last so that
    they never delay a run the family needs."""
    return figure3_runs(scale, pick) if part == "icml2022" else []


def figure3_records(specs: list[RunSpec], out: Path) -> list[dict[str, Any]]:
    """Figure 3's finished runs with their curves, each with the α and mix that its (1 − α)
    term's norm needs (``report.mix_term_norms``)."""
    variants = {spec.variant.key: spec.variant for spec in specs}
    return [
        run
        | {
            "alpha": variants[run["variant"]].alpha,
            "norm_perturbations": variants[run["variant"]].overrides["gnp.norm_perturbations"],
        }
        for run in finished_runs(specs, out)
    ]


def run_part(
    scale: Scale,
    args: argparse.Namespace,
    out: Path,
    progress: Progress,
    part: str,
    planned: list[RunSpec],
) -> dict[str, Any]:
    """Tuning (every shard's), then the final runs at the chosen r (for 2022 with the lr
    ablation, on the tuning seeds) as the plan's budget rule allows, then the descriptive
    runs (Figure 3's)."""
    pick, result = tune(scale, args, out, progress, part)
    split = (icml2022_runs if part == "icml2022" else icml2024_runs)(scale, pick, out)
    core, cuts = split
    extra = descriptive_runs(scale, pick, part)
    every = core + [s for rule in cuts.values() for s in rule] + extra
    progress.replan(planned, select(every, args))
    decision = run_with_cuts(scale, args, out, progress, part, split)
    run_all(select(extra, args), out, scale, progress)
    if part == "icml2022" and scale.lr_grid:
        ablation = finished_runs(lr_ablation_runs(scale, pick), out)
        result["lr_ablation"] = [strip(run) for run in ablation]
    if decision is not None:
        result["budget"] = decision
    result["runs"] = finished_runs(final_runs(scale, part, pick), out)
    if extra:
        result["figure3"] = figure3_records(extra, out)
    return result


def planned_runs(scale: Scale, args: argparse.Namespace, out: Path, part: str) -> list[RunSpec]:
    """A part's runs after its tuning as far as known before it (see ``planned_r``)."""
    pick = planned_r(select(part_tuning_runs(scale, part), args, sharded=False), out, scale)
    core, cuts = (icml2022_runs if part == "icml2022" else icml2024_runs)(scale, pick, out)
    extra = descriptive_runs(scale, pick, part)
    return select(core + [s for rule in cuts.values() for s in rule] + extra, args)


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

    tuning = [spec for part in parts for spec in select(part_tuning_runs(scale, part), args)]
    planned = {part: planned_runs(scale, args, out, part) for part in parts}
    progress = Progress(tuning + [spec for runs in planned.values() for spec in runs], out)
    print(f"{args.mode} study: {progress.total} runs in {out} ({progress.done} done before)")
    path = out / "results.json"
    fix = "delete it: the study rebuilds it from the finished runs"
    results: dict[str, Any] = read_json(path, fix) if path.exists() else {}
    results["mode"] = args.mode
    results["plan_commit"] = plan_commit()
    results["gnp_version"] = gnp_version()  # the gnp that wrote the report (each run: its own)
    results["scale"] = dataclasses.asdict(scale)
    for part in parts:
        started = time.perf_counter()
        results[part] = run_part(scale, args, out, progress, part, planned[part])
        results[part]["wall_seconds_this_invocation"] = time.perf_counter() - started
    labels = {
        "icml2022": {v.key: v.label for v in ICML2022_VARIANTS},
        "icml2024": {v.key: v.label for v in ICML2024_VARIANTS},
    }
    if scale.contrasts == "confirmatory":
        confirmatory = {
            "holm_on": scale.holm_on,
            "family_size": family_size(CONFIRMATORY, scale),
            "alphas": {v.key: v.alpha for v in (*ICML2022_VARIANTS, *ICML2024_VARIANTS)},
            "lr_grid": scale.lr_grid,
            "budget_hours": 2 * SHARD_SECONDS / 3600,  # the plan's two shards
        }
        report = write_report(
            results, out, declared=CONFIRMATORY, labels=labels, confirmatory=confirmatory
        )
    else:
        report = write_report(results, out, declared=DECLARED, labels=labels)
    written = json_ready(results | report)
    write_json_atomically(path, written)
    if args.publish:
        text = json.dumps(published(written), separators=(",", ":"))
        write_text_atomically(args.publish, text + "\n")
    print(report["markdown"])
    return read_json(path, fix)
