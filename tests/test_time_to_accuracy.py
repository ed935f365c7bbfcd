"""benchmarks/time_to_accuracy.py: its choice of a knob, its accounting of steps and passes,
its statistics against numbers worked by hand, a --smoke run end to end (resumed without
training again), and docs/benchmarks.md's tables against the JSON they come from."""

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import time_to_accuracy as tta  # noqa: E402

from gnp.files import read_json  # noqa: E402
from gnp.provenance import gnp_version  # noqa: E402


def test_the_lowest_mean_validation_error_wins_and_a_tie_goes_to_the_cheaper_value():
    results = [
        {"value": 0.5, "error": 0.10},
        {"value": 0.5, "error": 0.20},  # mean 0.15
        {"value": 0.2, "error": 0.16},
        {"value": 0.2, "error": 0.14},  # mean 0.15: a tie, and p = 0.2 is cheaper
        {"value": 0.35, "error": 0.30},
    ]
    assert tta.choose(results, (0.2, 0.35, 0.5)) == 0.2
    assert tta.choose(results[:2] + results[4:], (0.35, 0.5)) == 0.5


def test_the_window_is_the_first_or_the_second_half_of_the_steps():
    window = tta.BY_KEY["window"]
    early = tta.knob_overrides(window, "early", 1860)
    late = tta.knob_overrides(window, "late", 1860)
    assert (early["hybrid_config.start_step"], early["hybrid_config.stop_step"]) == (0, 930)
    assert (late["hybrid_config.start_step"], late["hybrid_config.stop_step"]) == (930, 1860)
    assert tta.knob_overrides(tta.BY_KEY["RST"], 0.35, 1860) == {"hybrid_config.p": 0.35}


def test_run_folders_keep_their_names():
    """The full run resumes from these folders across sessions: their names must not change."""
    out = Path("out")
    esam = tta.RunSpec("tune", tta.BY_KEY["ESAM"], 0.7, 0.125, 101)
    assert esam.directory(out) == out / "tune/ESAM/r0.7_perturbed_fraction0.125/seed101"
    window = tta.RunSpec("final", tta.BY_KEY["window"], 0.7, "late", 3)
    assert window.directory(out) == out / "final/window/r0.7_late/seed3"
    gnp = tta.RunSpec("tune", tta.BY_KEY["GNP"], 0.3, 0.3, 100)
    assert gnp.directory(out) == out / "tune/GNP/r0.3/seed100"


def variant_config(key: str, value):
    spec = tta.RunSpec("final", tta.BY_KEY[key], 0.5, value, 0)
    return spec.config(tta.SCALES["smoke"], 11)


def test_steps_and_passes_of_each_variant():
    """Digits: 11 steps an epoch, 1 epoch. Reuse k = 5: GNP steps 0, 5 and 10 full (2 passes),
    8 reuse steps (1); the window: steps 0–4 GNP; a subset f = 0.25: 1.25 passes a step."""
    reuse = variant_config("reuse_k5", 0.5)
    assert tta.step_kinds(reuse, 11) == {"gnp": 3, "gnp_reuse": 8}
    assert tta.kind_passes("gnp", reuse.gnp) == 2.0
    assert tta.kind_passes("gnp_reuse", reuse.gnp) == 1.0
    window = variant_config("window", "early")
    assert tta.step_kinds(window, 11) == {"gnp": 5, "plain": 6}
    assert tta.kind_passes("gnp", variant_config("ESAM", 0.25).gnp) == 1.25
    assert tta.kind_passes("gnp", variant_config("MSAM", 0.5).gnp) == 1.0
    assert tta.step_kinds(variant_config("plain", None), 11) == {"plain": 11}


def test_retention_and_the_target_test_against_hand_numbers():
    plain, gnp = [0.20, 0.22, 0.18], [0.04, 0.02, 0.03]
    variant = [0.056, 0.04, 0.045]  # keeps (0.144/0.16, 0.18/0.20, 0.135/0.15) = 0.9 each
    summary = tta.retention_summary(variant, plain, gnp)
    assert summary["retention_per_seed"] == pytest.approx([0.9, 0.9, 0.9])
    ratios = np.array([0.95, 0.99, 0.92, 0.97])
    t = (ratios.mean() - 0.9) / (ratios.std(ddof=1) / 2)  # n = 4
    assert tta.above_target_p(ratios) == pytest.approx(student_t.sf(t, 3))
    assert math.isnan(tta.above_target_p([0.95]))


def hand_runs():
    """Three seeds of plain, GNP and two cheap variants; the step time of each kind."""
    errors = {
        "plain": [0.20, 0.22, 0.18],
        "GNP": [0.04, 0.02, 0.03],
        "reuse_k5": [0.05, 0.03, 0.04],  # retention (15/16, 19/20, 14/15)
        "RST": [0.12, 0.12, 0.12],  # retention (0.5, 0.5, 0.4)
    }
    kinds = {
        "plain": {"plain": 10},
        "GNP": {"gnp": 10},
        "reuse_k5": {"gnp": 2, "gnp_reuse": 8},
        "RST": {"gnp": 2, "plain": 8},
    }
    passes = {"plain": 10, "GNP": 20, "reuse_k5": 12, "RST": 12}
    finals = {
        key: [
            {"error": e, "step_kinds": kinds[key], "passes": passes[key], "cpu_seconds": 1.0}
            for e in seed_errors
        ]
        for key, seed_errors in errors.items()
    }
    chosen = {key: {"r": 0.7, "value": None} for key in errors}
    chosen["plain"]["r"] = 0.0
    runs = {"finals": finals, "chosen": chosen, "tuning": {"GNP": []}, "steps_per_epoch": 10}
    seconds = {"plain": 0.010, "GNP": 0.020, "reuse_k5": 0.012, "RST": 0.014}
    return runs, {"seconds_per_step": seconds}


def test_step_seconds_weigh_each_kind_by_its_share_of_the_steps():
    finals = {
        "reuse_k5": [{"step_kinds": {"gnp": 2, "gnp_reuse": 8}}] * 2,
        "RST": [{"step_kinds": {"gnp": 3, "plain": 7}}, {"step_kinds": {"gnp": 1, "plain": 9}}],
    }
    medians = {
        ("reuse_k5", "gnp"): 0.020,
        ("reuse_k5", "gnp_reuse"): 0.010,
        ("RST", "gnp"): 0.020,
        ("RST", "plain"): 0.010,
    }
    seconds = tta.weighted_seconds(finals, medians)
    assert seconds["reuse_k5"] == pytest.approx(0.2 * 0.020 + 0.8 * 0.010)
    assert seconds["RST"] == pytest.approx(0.2 * 0.020 + 0.8 * 0.010)  # 4 GNP steps of 20


def test_summary_costs_retention_and_holm_by_hand():
    runs, timing = hand_runs()
    summary = tta.summarize(runs, timing, tta.SCALES["full"])
    rows = summary["variants"]
    assert summary["args"]["r_tuned"] is True and summary["args"]["seeds"] == list(range(10))
    assert summary["args"]["gnp_version"] == gnp_version()  # the gnp that summarized the runs
    assert rows["reuse_k5"]["passes_x_plain"] == pytest.approx(1.2)
    assert rows["reuse_k5"]["seconds_x_plain"] == pytest.approx(1.2)
    assert rows["RST"]["seconds_x_plain"] == pytest.approx(1.4)
    want = np.array([15 / 16, 19 / 20, 14 / 15])
    assert rows["reuse_k5"]["retention_per_seed"] == pytest.approx(want)
    assert rows["reuse_k5"]["retention_mean"] == pytest.approx(want.mean())
    # Holm over the two cheap variants: the smaller p doubled, the larger kept (if larger).
    p_reuse = tta.above_target_p(want)
    p_rst = tta.above_target_p([0.5, 0.5, 0.4])
    assert rows["reuse_k5"]["holm_p"] == pytest.approx(min(1.0, 2 * p_reuse))
    assert rows["RST"]["holm_p"] == pytest.approx(max(min(1.0, 2 * p_reuse), p_rst))
    assert rows["reuse_k5"]["meets_target_point"] and rows["reuse_k5"]["cost_within_target"]
    assert not rows["RST"]["meets_target_point"]  # 1.4× plain's seconds, and 47 % kept
    assert "holm_p" not in rows["GNP"] and "holm_p" not in rows["plain"]


@pytest.mark.slow  # two trainings and the step timing: about 40 s
def test_smoke_run_end_to_end_then_resumed_without_training(tmp_path, monkeypatch, capsys):
    out, json_path = tmp_path / "runs", tmp_path / "smoke.json"
    argv = ["--smoke", f"--out={out}", "--variants=plain,GNP", f"--json={json_path}"]
    tta.main(argv)
    summary = read_json(json_path, "")
    assert summary["args"]["dataset"] == "digits" and summary["args"]["r_tuned"] is True
    assert set(summary["variants"]) == {"plain", "GNP"}
    assert len(summary["tuning"]["GNP"]) == 2  # r ∈ {0.1, 0.3}, one tuning seed
    gnp = summary["variants"]["GNP"]
    assert len(gnp["per_seed_final_test_error"]) == len(summary["args"]["seeds"]) == 1
    assert gnp["passes_x_plain"] == 2.0 and gnp["retention_per_seed"] == [1.0]
    assert gnp["r"] == summary["args"]["tuned_knobs"]["GNP"]["r"] in (0.1, 0.3)
    assert set(summary["timing"]["kind_median_seconds"]) == {"plain/plain", "GNP/gnp"}
    assert json_path.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    for result in out.glob("*/*/*/seed*/result.json"):
        assert read_json(result, "")["split"] == (
            "test" if "final" in str(result) else "validation"
        )

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(tta, "train_and_evaluate", no_training)
    monkeypatch.setattr(tta, "interleaved_medians", no_training)
    tta.main(argv)
    assert read_json(json_path, "") == summary
    assert tta.table(summary) in capsys.readouterr().out


def test_write_doc_replaces_only_the_table(tmp_path):
    runs, timing = hand_runs()
    json_path = tmp_path / "time_to_accuracy_x.json"
    summary = tta.json_ready(tta.summarize(runs, timing, tta.SCALES["full"]))
    json_path.write_text(json.dumps(summary))
    start, end = tta.markers(json_path.name)
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"before\n{start}\nold table\n{end}\nafter\n")
    tta.write_doc(json_path, doc)
    assert doc.read_text() == f"before\n{start}\n{tta.table(summary)}\n{end}\nafter\n"
    assert "| reuse_k5 | r = 0.7 | 4.00 ± " in tta.table(summary)


def test_docs_tables_match_their_json():
    """Each table in docs/benchmarks.md is the one --write_doc writes from its JSON; the
    table of a JSON not written yet (a run still going) is empty."""
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    blocks = re.findall(
        r"<!-- table from docs/figures/(\S+) -->\n(.*?)<!-- end of table -->", doc, re.S
    )
    assert blocks, "docs/benchmarks.md holds no time-to-accuracy table"
    for name, block in blocks:
        path = ROOT / "docs" / "figures" / name
        want = tta.table(read_json(path, "")) + "\n" if path.exists() else ""
        assert block == want, f"run: benchmarks/time_to_accuracy.py --write_doc --json={path}"


def test_write_doc_before_the_json_exists_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tta.main(["--write_doc", f"--json={tmp_path / 'none.json'}"])
    err = capsys.readouterr().err
    assert "error: " in err and "does not exist yet: run the benchmark" in err


def test_the_prose_numbers_of_the_tuned_run_come_from_its_json():
    """Every number in docs/benchmarks.md's list under the tuned table, recomputed from the
    committed JSON: a rerun that changes one fails here until the prose follows."""
    summary = read_json(
        ROOT / "docs" / "figures" / "time_to_accuracy_mnist1d_noise30_tuned.json", ""
    )
    rows, timing = summary["variants"], summary["timing"]
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    prose = doc[doc.index("What it shows, for this one task") : doc.index("### Before the plan")]
    prose = " ".join(prose.split())
    head = doc[doc.index("**Measured 2026-12-03**") : doc.index("<!-- table from")]

    def pct(value: float) -> str:
        return f"{100 * value:.1f}"

    def kept(key: str) -> str:
        low, high = rows[key]["retention_ci95"]
        return f"{pct(rows[key]['retention_mean'])} % ({pct(low)} to {pct(high)} %)"

    cheap = [k for k, row in rows.items() if row.get("meets_target_tested")]
    assert sorted(cheap) == ["ESAM", "reuse_k10", "reuse_k5"]
    assert "Three cheap variants" in prose and max(rows[k]["holm_p"] for k in cheap) < 1e-9
    esam = rows["ESAM"]
    assert esam["knob_value"] == 0.25 and (
        esam["passes_x_plain"],
        round(esam["seconds_x_plain"], 2),
    ) == (1.25, 1.21)
    assert "keeps 99.6 % (95 % CI 99.3 to 100.0 %)" in prose and kept("ESAM").endswith(
        "(99.3 to 100.0 %)"
    )
    assert pct(esam["retention_mean"]) == "99.6"
    errors = {k: f"{100 * rows[k]['mean_test_error']:.2f} %" for k in ("ESAM", "GNP", "plain")}
    assert (
        f"{errors['ESAM']} test error against GNP's {errors['GNP']} and plain's {errors['plain']}"
        in prose
    )
    for key in ("reuse_k5", "reuse_k10", "RST", "window", "MSAM"):
        assert kept(key) in prose, key
    for key, cost in (("reuse_k5", "(1.20×, 1.19×)"), ("reuse_k10", "(1.10×, 1.10×)")):
        row = rows[key]
        assert (
            f"({row['passes_x_plain']:.2f}×, {row['seconds_x_plain']:.2f}×)" == cost
            and cost in prose
        )
        assert row["r"] == 0.5 and rows["GNP"]["r"] == 0.7
    gap = max(abs(row["passes_x_plain"] - row["seconds_x_plain"]) for row in rows.values())
    assert 0.05 < gap <= 0.06 and "within 0.06×" in prose
    assert f"k = 2 keeps {pct(rows['reuse_k2']['retention_mean'])} % but costs 1.50×" in prose
    assert rows["reuse_k2"]["passes_x_plain"] == 1.5
    assert rows["RST"]["knob_value"] == 0.5 == max(run["value"] for run in summary["tuning"]["RST"])
    assert rows["MSAM"]["r"] == max(summary["args"]["r_grid"]) == 1.0
    msam = {}
    for run in summary["tuning"]["MSAM"]:
        msam.setdefault(run["r"], []).append(run["error"])
    means = {r: f"{100 * float(np.mean(e)):.2f} %" for r, e in msam.items()}
    assert f"({means[0.7]} at r = 0.7, {means[1.0]} at r = 1)" in prose

    def listed(items: list[str]) -> str:
        return ", ".join(items[:-1]) + " and " + items[-1]

    for key, unit in (("ESAM", "f"), ("RST", "p")):
        by_value: dict = {}
        for run in summary["tuning"][key]:
            by_value.setdefault(run["value"], []).append(run["error"])
        errors = listed([f"{100 * float(np.mean(e)):.2f}" for e in by_value.values()])
        values = listed([f"{value:g}" for value in by_value])
        assert f"{key} {errors} % at {unit} = {values}" in prose, key
    before, after = (timing[f"load_average_{when}"][0] for when in ("before", "after"))
    assert f"load average {before:.2f} before the step timing, {after:.2f} after" in " ".join(
        head.split()
    )
    assert f"{summary['cpu_seconds']:,.0f} s of CPU" in head
    n_tuning = sum(len(runs) for runs in summary["tuning"].values())
    n_final = sum(len(row["per_seed_final_test_error"]) for row in rows.values())
    assert f"{n_tuning + n_final} runs, {n_tuning} tuning and {n_final} final" in head
