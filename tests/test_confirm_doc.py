"""docs/study/confirm.md's cost of shard 1: its table and budget numbers are the committed
run records (docs/study/confirm_runs/), recomputed as the command beside the table does."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = " ".join((ROOT / "docs" / "study" / "confirm.md").read_text().split())
RECORDS = ROOT / "docs" / "study" / "confirm_runs" / "icml2022"
ROWS = {  # the table's row label: (stage, whether the variant is SGD)
    "2022 tuning, penalized (SAM, GNP)": ("tune", False),
    "2022 tuning, plain (SGD; the first includes generating MNIST-1D)": ("tune", True),
    "2022 finals, penalized (with λ₁, trace, ‖∇L‖)": ("final", False),
    "2022 finals, SGD": ("final", True),
    "lr ablation (SGD and the released form, after cut 3)": ("lr", False),
    "Figure 3 (descriptive)": ("figure3", False),
}


def test_shard_1s_cost_table_is_its_records():
    runs = [json.loads(p.read_text()) for p in RECORDS.glob("*/*/*/*/*/study_run.json")]
    kinds: dict[tuple[str, bool], list[float]] = {}
    for run in runs:
        kinds.setdefault((run["stage"], run["variant"] == "sgd"), []).append(run["cpu_seconds"])
    assert set(kinds) == set(ROWS.values())
    for label, kind in ROWS.items():
        v = kinds[kind]
        cells = [len(v), round(statistics.mean(v), 1), round(min(v), 1), round(max(v), 1)]
        row = f"| {label} | " + " | ".join(str(c) for c in cells) + f" | {sum(v) / 3600:.2f} |"
        assert row in DOC, row
    total = sum(sum(v) for v in kinds.values()) / 3600
    assert f"Shard 1: {len(runs)} runs, {total:.1f} h of CPU against its 3 h" in DOC
    finals = len(kinds[("final", False)]) + len(kinds[("final", True)])
    assert f"The 120 planned finals are {finals} runs" in DOC


def test_the_budget_decision_the_page_states_is_budget_json():
    decision = json.loads((RECORDS / "budget.json").read_text())
    assert decision["cuts"] == [3]
    stated = (
        f"had finished ({decision['runs_finished_at_decision']} runs): projected "
        f"{decision['projected_seconds'] / 3600:.2f} h for the shard, "
        f"{decision['projected_seconds_after_cuts'] / 3600:.2f} h after cut 3"
    )
    assert stated in DOC, stated
