"""docs/first_study.md's result tables are the committed first study's results, not hand copies.

The tables are rebuilt here from ``docs/study/results.json`` (the study's own output,
committed) with the functions that wrote them, and must appear in the doc as they are; the
doc's quoted numbers in prose are checked against the same file.
"""

import json
import re
from pathlib import Path

import pytest

from gnp.study import plan
from gnp.study import report as study_report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = json.loads((ROOT / "docs" / "study" / "results.json").read_text())
DOC = (ROOT / "docs" / "first_study.md").read_text()
LABELS = {
    "icml2022": {v.key: v.label for v in plan.ICML2022_VARIANTS},
    "icml2024": {v.key: v.label for v in plan.ICML2024_VARIANTS},
}


def test_the_results_are_the_full_study():
    assert RESULTS["mode"] == "full"
    assert RESULTS["scale"]["seeds_2022"] == list(range(10))
    for part in plan.PARTS:
        assert RESULTS[part]["runs"], part


@pytest.mark.parametrize("part", plan.PARTS)
def test_variant_table_is_the_results(part):
    table = study_report.variant_table(RESULTS[part], LABELS[part])
    assert table in DOC, f"docs/first_study.md's {part} table differs from results.json"


def test_tuning_table_is_the_results():
    assert study_report.tuning_table(RESULTS["icml2022"], LABELS["icml2022"]) in DOC


def test_gradient_norm_table_is_the_results():
    table = study_report.gradient_norm_table(RESULTS["icml2022"], LABELS["icml2022"])
    assert table.count("\n") == 2 + 2 * 5 - 1  # header, rule, 5 variants × 2 noise levels
    assert table in DOC


def test_contrast_table_is_the_results():
    rows = study_report.contrasts(RESULTS, plan.DECLARED, LABELS)
    assert len(rows) == 4 * 2 + 2 * 2  # four contrasts × 2 noise levels, two × 2 widths
    assert study_report.contrast_table(rows) in DOC


def test_the_stored_report_is_what_the_results_give():
    """results.json's own contrasts (written by the study) equal a recomputation (to the
    committed copy's 6 significant digits)."""
    rows = study_report.contrasts(RESULTS, plan.DECLARED, LABELS)
    stored = {(r["part"], r["group"], r["a"], r["b"]): r for r in RESULTS["contrasts"]}
    for row in rows:
        twin = stored[(row["part"], row["group"], row["a"], row["b"])]
        assert twin["holm_p"] == pytest.approx(row["holm_p"], rel=1e-5)
        assert twin["test_error_difference"]["mean"] == pytest.approx(
            row["test_error_difference"]["mean"], rel=1e-5
        )


def test_chosen_r_in_the_doc():
    """Every 'r = X chosen for VARIANT (GROUP)' sentence in the doc matches results.json."""
    chosen = RESULTS["icml2022"]["chosen_r"]
    found = re.findall(
        r"(?<!follow-up chose )(?<!grid chose )`(noise[\d.]+/[\w.]+)`\s+r = ([\d.]+)", DOC
    )
    assert found, "the doc lists no chosen r"
    for key, r in found:
        assert chosen[key] == float(r), key


FOLLOW_UP = json.loads((ROOT / "docs" / "study" / "wide_r_results.json").read_text())


def test_the_follow_up_tables_are_its_results():
    """The wide_r follow-up (noisy labels, r up to 0.5): its own results file and tables."""
    assert FOLLOW_UP["mode"] == "wide_r" and FOLLOW_UP["scale"]["r_grid"] == [0.1, 0.2, 0.3, 0.5]
    table = study_report.variant_table(FOLLOW_UP["icml2022"], LABELS["icml2022"])
    assert table in DOC
    rows = study_report.contrasts(FOLLOW_UP, plan.DECLARED, LABELS)
    assert len(rows) == 4 and {row["group"] for row in rows} == {"noise0.3"}
    assert study_report.contrast_table(rows) in DOC
    assert study_report.tuning_table(FOLLOW_UP["icml2022"], LABELS["icml2022"]) in DOC
    chosen = FOLLOW_UP["icml2022"]["chosen_r"]
    for key, r in re.findall(r"follow-up chose `(noise0\.3/[\w.]+)`\s+r = ([\d.]+)", DOC):
        assert chosen[key] == float(r), key
    assert len(re.findall(r"follow-up chose `", DOC)) == 4


LATER_FOLLOW_UPS = {
    "wider_r": ("noise0.3", [0.3, 0.5, 0.7, 1.0, 1.4], "wider grid chose"),
    "wider_r_clean": ("noise0", [0.2, 0.3, 0.5, 0.7, 1.0], "clean grid chose"),
}


def test_the_widest_grid_confirms_the_second_follow_ups_choices():
    """r up to 2.8 (widest_r): its tuning table, the same chosen r, the same final runs."""
    results = json.loads((ROOT / "docs" / "study" / "widest_r_results.json").read_text())
    wider = json.loads((ROOT / "docs" / "study" / "wider_r_results.json").read_text())
    assert results["scale"]["r_grid"] == [0.3, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8]
    assert study_report.tuning_table(results["icml2022"], LABELS["icml2022"]) in DOC
    chosen = results["icml2022"]["chosen_r"]
    assert chosen == wider["icml2022"]["chosen_r"]
    found = re.findall(r"widest grid chose\s+`(noise0\.3/[\w.]+)`\s+r = ([\d.]+)", DOC)
    assert len(found) == 4 and all(chosen[key] == float(r) for key, r in found)
    assert results["icml2022"]["runs"] == wider["icml2022"]["runs"]


@pytest.mark.parametrize("mode", LATER_FOLLOW_UPS)
def test_the_later_follow_up_tables_are_their_results(mode):
    """The follow-ups with r up to 1.4 (flipped labels) and 1.0 (clean): their own results
    files, tables and chosen r."""
    group, grid, phrase = LATER_FOLLOW_UPS[mode]
    results = json.loads((ROOT / "docs" / "study" / f"{mode}_results.json").read_text())
    assert results["mode"] == mode and results["scale"]["r_grid"] == grid
    assert study_report.variant_table(results["icml2022"], LABELS["icml2022"]) in DOC
    rows = study_report.contrasts(results, plan.DECLARED, LABELS)
    assert len(rows) == 4 and {row["group"] for row in rows} == {group}
    assert study_report.contrast_table(rows) in DOC
    assert study_report.tuning_table(results["icml2022"], LABELS["icml2022"]) in DOC
    chosen = results["icml2022"]["chosen_r"]
    found = re.findall(rf"{phrase}\s+`({group}/[\w.]+)`\s+r = ([\d.]+)", DOC)
    assert len(found) == 4
    for key, r in found:
        assert chosen[key] == float(r), key


def _sqrt_nu_ratio(group, variant):
    """Per step, the seed mean of a variant's mean √ν̂ over Adam's (the doc's ratios)."""

    def seed_mean(name):
        runs = [
            r["adam"]
            for r in RESULTS["icml2024"]["runs"]
            if r["stage"] == "final" and r["group"] == group and r["variant"] == name
        ]
        steps = zip(*([s["mean_sqrt_nu"] for s in run] for run in runs), strict=True)
        return [sum(values) / len(values) for values in steps]

    return [v / a for v, a in zip(seed_mean(variant), seed_mean("adam"), strict=True)]


def _quoted(number, places):
    return f"{number:.{places}f}"


def test_the_prose_numbers_the_review_found_wrong_are_the_results():
    """Issue 26's four prose numbers, recomputed from results.json: the doc must quote these."""
    groups = ("width32", "width64")
    warmups = [
        q for g in groups for v in ("gr_warmup_r", "gr_warmup_lambda") for q in _sqrt_nu_ratio(g, v)
    ]
    gr = [q for g in groups for q in _sqrt_nu_ratio(g, "gr")]
    phrase = (
        f"within {_quoted(min(warmups), 2)}–{_quoted(max(warmups), 2)}× of Adam's over\n"
        f"  the 300 steps (GR: {_quoted(min(gr) + 1e-9, 2)}–{_quoted(max(gr), 2)}×)"
    )
    assert phrase in DOC, phrase

    zero = [_sqrt_nu_ratio(g, "gr_warmup_zero") for g in groups]
    identical = min(next(i for i, q in enumerate(ratios) if q != 1.0) for ratios in zero)
    after = max(max(ratios) for ratios in zero)
    assert f"Adam itself until step {identical}" in DOC
    assert f"within {_quoted(after, 2)}× after" in DOC

    holm = sorted({row["holm_p"] for row in RESULTS["contrasts"]})[0]
    assert holm == pytest.approx(len(RESULTS["contrasts"]) * 2 / 1024)
    assert f"({_quoted(holm, 4)} after Holm over\ntwelve)" in DOC

    clean = [
        r for r in RESULTS["icml2022"]["runs"] if r["stage"] == "final" and r["group"] == "noise0"
    ]
    sgd = min(r["full_gradient_norm"] for r in clean if r["variant"] == "sgd")
    penalized = max(r["full_gradient_norm"] for r in clean if r["variant"] != "sgd")
    assert penalized > sgd  # so "lower for every penalized run" would be wrong
    assert f"run's is\n  {_quoted(penalized, 3)}, SGD's smallest {_quoted(sgd, 3)})" in DOC
