"""The confirmatory plan's budget rule (docs/study/plan.md): a shard's CPU time projected from
the measured ``cpu_seconds`` of the runs of each kind that finished (never their errors); past
its 3 h, the plan's cuts apply in their order, before the runs they drop. The decision is
written once (``budget.json``) and read back on resume, so it never moves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gnp.files import read_json, write_json_atomically
from gnp.study.plan import RUN_FILE, RunSpec

SHARD_SECONDS = 3 * 3600.0
CUT_RULES = {
    1: "gr_warmup_r and gr_warmup_lambda to 5 seeds",
    2: "widths 32 and 128 to 6 seeds",
    3: "the lr ablation to lr ∈ {0.05, 0.2} for SGD and the released form only",
}
# The lr ablation's variants cut 3 keeps (with lr ∈ {0.05, 0.2}, the ablation's own grid).
LR_KEPT_BY_CUT = ("sgd", "gnp_released")
# The plan's cpu_seconds per run for a kind none of whose runs has finished yet.
ESTIMATES = {"ViT1D_32": 60.0, "ViT1D_64": 110.0, "ViT1D_128": 250.0}
CNN_ESTIMATES = {"final": 44.0, "tune": 35.0, "lr": 35.0}
BUDGET_FILE = "budget.json"


def cut_rule(spec: RunSpec) -> int:
    """The plan's cut that drops this ICML 2024 final run (0: none): cut 1 keeps seeds 0–4 of
    the r- and λ-warmups, cut 2 seeds 0–5 of widths 32 and 128."""
    if spec.variant.key in ("gr_warmup_r", "gr_warmup_lambda") and spec.seed >= 5:
        return 1
    if spec.group in ("width32", "width128") and spec.seed >= 6:
        return 2
    return 0


def kind(spec: RunSpec) -> str:
    """Runs that cost alike: part, stage, model and whether the penalty doubles the passes."""
    penalized = spec.cost > spec.config.total_epochs
    plain = "penalized" if penalized else "plain"
    return f"{spec.part}/{spec.stage}/{spec.config.model.model_name}/{plain}"


def estimate(spec: RunSpec) -> float:
    model = spec.config.model.model_name
    return ESTIMATES.get(model, CNN_ESTIMATES.get(spec.stage, 35.0))


def measured(specs: Sequence[RunSpec], out: Path) -> dict[str, list[float]]:
    """``cpu_seconds`` of the finished runs among ``specs``, by kind."""
    seconds: dict[str, list[float]] = {}
    for spec in specs:
        path = spec.directory(out) / RUN_FILE
        if path.exists():
            seconds.setdefault(kind(spec), []).append(json.loads(path.read_text())["cpu_seconds"])
    return seconds


def projected_seconds(specs: Sequence[RunSpec], out: Path) -> float:
    """Finished runs at their measured CPU time, the rest at their kind's measured mean (the
    plan's estimate for a kind not measured yet)."""
    seconds = measured(specs, out)
    total = 0.0
    for spec in specs:
        path = spec.directory(out) / RUN_FILE
        if path.exists():
            total += json.loads(path.read_text())["cpu_seconds"]
        else:
            values = seconds.get(kind(spec))
            total += float(np.mean(values)) if values else estimate(spec)
    return total


def decide(
    shard: Sequence[RunSpec],
    cuts: dict[int, Sequence[RunSpec]],
    out: Path,
    path: Path,
    budget: float = SHARD_SECONDS,
) -> dict[str, Any]:
    """The shard's cuts (rule numbers, in the plan's order) and the projection they came
    from; made once, before the first run a cut would drop, and read back afterwards."""
    if path.exists():
        return read_json(path, "delete it only if no run it cut has been skipped yet")
    kept = list(shard)
    before = projected_seconds(kept, out)
    applied = []
    for rule in sorted(cuts):
        if projected_seconds(kept, out) <= budget:
            break
        dropped = {spec.directory(out) for spec in cuts[rule]}
        kept = [spec for spec in kept if spec.directory(out) not in dropped]
        applied.append(rule)
    seconds = measured(shard, out)
    decision = {
        "budget_seconds": budget,
        "projected_seconds": before,
        "projected_seconds_after_cuts": projected_seconds(kept, out),
        "cuts": applied,
        "cut_rules": {str(rule): CUT_RULES[rule] for rule in applied},
        "runs_finished_at_decision": sum(map(len, seconds.values())),
        "measured_cpu_seconds": {
            name: {"runs": len(values), "mean": float(np.mean(values))}
            for name, values in sorted(seconds.items())
        },
    }
    write_json_atomically(path, decision)
    return decision
