"""The confirmatory page's words (gnp/study/wording.py) and its flatness table, by hand."""

from __future__ import annotations

import math

import pytest

from gnp.study import report as study_report
from gnp.study import wording

LABELS = {"gnp_paper": "GNP α=0.8 (paper)", "sam": "SAM", "sgd": "SGD", "gr": "GR"}


def row(mean, holm, *, name="GNP α=0.8 (paper) − SAM", bootstrap=(-0.01, 0.02), **extra):
    """A family row as `report.contrasts` writes it (differences as fractions, not pp)."""
    record = {
        "part": "icml2022",
        "group": "noise0.3",
        "a": "gnp_paper",
        "b": "sam",
        "name": name,
        "seeds": list(range(10)),
        "test_error_difference": {
            "mean": mean,
            "ci_low": mean - 0.001,
            "ci_high": mean + 0.001,
            "positive": 2,
            "negative": 8,
        },
        "holm_p": holm,
        "holm_family_size": 19,
        "test_signal_bootstrap": {"ci_low": bootstrap[0], "ci_high": bootstrap[1]},
    }
    return record | extra


BRACKETED = {"noise0.3/gnp_paper": {"bracketed": True}, "noise0.3/sam": {"bracketed": True}}


def test_a_row_over_holms_threshold_is_not_detected_whatever_its_mean():
    text = wording.verdict(row(-0.0123, 0.0501), BRACKETED, LABELS)
    assert text == (
        "- **GNP α=0.8 (paper) − SAM** (noise0.3): -1.23 pp, 95 % t CI [-1.33, -1.13], 2 of 10 "
        "seeds positive and 8 negative, Holm p 0.0501 (of 19), test-signal bootstrap "
        "[-1.00, +2.00]. No difference detected."
    )


def test_a_detected_row_says_its_direction_and_the_test_sets_doubt():
    crossing = wording.verdict(row(-0.0123, 0.0499), BRACKETED, LABELS)
    assert crossing.endswith(
        "Detected: GNP α=0.8 (paper) has a lower test error than SAM on these seeds, within "
        "the test set's own sampling uncertainty."
    )
    clear = wording.verdict(row(0.02, 0.001, bootstrap=(0.01, 0.03)), BRACKETED, LABELS)
    assert clear.endswith("Detected: GNP α=0.8 (paper) has a higher test error than SAM.")


def test_a_grid_edge_is_said_for_the_variant_at_it():
    chosen = BRACKETED | {"noise0.3/sam": {"bracketed": False}}
    text = wording.verdict(row(0.0, 0.9), chosen, LABELS)
    assert text.endswith(
        "No difference detected (SAM: chosen at its grid's edge, optimum not bracketed)."
    )
    # The 2024 part tunes GR's r once: an edge there is said for every row with a GR variant.
    gr = row(0.01, 0.2, name="GR − Adam", part="icml2024", group="width128", a="gr", b="adam")
    edge = {"width64/gr": {"bracketed": False}}
    assert "(GR: chosen at its grid's edge" in wording.verdict(gr, edge, LABELS)
    assert "grid" not in wording.verdict(gr, {"width64/gr": {"bracketed": True}}, LABELS)


@pytest.mark.parametrize(
    ("mean", "words"), [(0.03, "the larger model is hurt more"), (-0.03, "hurt less")]
)
def test_the_width_interaction_reads_as_the_paper_claim(mean, words):
    interaction = row(
        mean,
        0.01,
        name="(GR − Adam) width128 − width32",
        part="icml2024",
        group="width128",
        versus="width32",
        a="gr",
        b="adam",
        bootstrap=(0.01, 0.05) if mean > 0 else (-0.05, -0.01),
    )
    text = wording.verdict(interaction, {}, LABELS)
    assert "(width128 vs width32)" in text
    assert f"Detected: GR − Adam is {'larger' if mean > 0 else 'smaller'} at width128" in text
    assert text.endswith(f"{words}.")


def test_a_null_interval_from_json_reads_as_none():
    one_seed = row(0.01, 1.0)
    one_seed["test_error_difference"] |= {"ci_low": None, "ci_high": None}
    assert "pp, no interval, " in wording.verdict(one_seed, BRACKETED, LABELS)


def final(variant, seed, error, eigenvalue, directory=None):
    return {
        "group": "noise0",
        "variant": variant,
        "seed": seed,
        "error_rate": error,
        "top_eigenvalue": eigenvalue,
        "trace": 10 * eigenvalue,
        "directory": directory or f"{variant}/{seed}",
    }


def test_flatness_within_and_between_variants_by_hand():
    # Within SGD the flatter seed errs more (ρ = −1); within SAM less (ρ = +1). Between the
    # variant means: SGD (λ₁ 10, error 0.2) is sharper and worse than SAM (2, 0.1), and GNP
    # (4, 0.15) lies between: ρ = +1 over the three means.
    runs = [
        final("sgd", 0, 0.19, 11),
        final("sgd", 1, 0.20, 10),
        final("sgd", 2, 0.21, 9),
        final("sam", 0, 0.09, 1),
        final("sam", 1, 0.10, 2),
        final("sam", 2, 0.11, 3),
        final("gnp_paper", 0, 0.15, 4),
        final("gnp_paper", 1, 0.16, 4),
        final("gnp_paper", 2, 0.14, 4),
        # Matched SAM shares SAM's runs here: counted once in the means.
        *(final("sam_matched", s, 0.1, 2, directory=f"sam/{s}") for s in range(3)),
    ]
    table = study_report.flatness({"runs": runs})["noise0"]["top_eigenvalue"]
    assert table["within"]["sgd"]["rho"] == pytest.approx(-1.0)
    assert table["within"]["sam"]["rho"] == pytest.approx(1.0)
    assert math.isnan(table["within"]["gnp_paper"]["rho"])  # one λ₁ for every seed
    assert "sam_matched" not in table["within"]
    assert table["between"]["all"]["rho"] == pytest.approx(1.0)
    assert table["between"]["all"]["n"] == 3
    # Without SGD: SAM (2, 0.1) and GNP (4, 0.15), two points, ρ = +1.
    assert table["between"]["without sgd"]["rho"] == pytest.approx(1.0)
    text = study_report.flatness_table(study_report.flatness({"runs": runs}), LABELS)
    assert "| noise0 | seeds of SGD | -1.00 (p " in text
    assert "| noise0 | seeds of GNP α=0.8 (paper) | — (n 3) | — (n 3) |" in text
    assert "| noise0 | variant means, without SGD | +1.00 (p " in text


def test_cost_counts_a_shared_run_once_by_hand():
    def run(directory, seconds):
        return {"directory": directory, "cpu_seconds": seconds}

    results = {
        "icml2022": {
            "tuning": [run("t/a", 60.0), run("t/b", 90.0)],
            # Matched SAM's record names SAM's folder: one run, 100 s, not two.
            "runs": [run("f/sam/0", 100.0), run("f/sam/0", 100.0), run("f/sgd/0", 50.0)],
        },
        "icml2024": {"runs": [run("v/0", 3600.0)]},
    }
    table = study_report.cost(results)
    assert table["icml2022"]["tuning"] == {"runs": 2, "cpu_hours": 150 / 3600, "mean_seconds": 75}
    assert table["icml2022"]["final"]["runs"] == 2
    assert table["icml2022"]["final"]["cpu_hours"] == pytest.approx(150 / 3600)
    text = study_report.cost_table(table, 6)
    assert text.splitlines()[-1] == "| all | | 5 | 1.08 (budget 6) | |"  # (150+150+3600)/3600
