"""The confirmatory scale (``--mode=confirm``) is the plan of docs/study/plan.md: its runs,
their configs, the choice of λ, the matched-λ control and the budget rule."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gnp.analysis import statistics
from gnp.study import budget, measure, plan
from gnp.study import main as study_main
from gnp.study import report as study_report
from gnp.train.run import load_run
from gnp.train.workdir import read_metrics

CONFIRM = plan.SCALES["confirm"]


def chosen_at(r_by_key):
    return lambda group, key: r_by_key.get(key, plan.default_r(CONFIRM))


def test_tuning_runs_are_one_lambda_grid_on_three_seeds_of_flipped_validation():
    runs = plan.tuning_runs(CONFIRM)
    # (3 tuned variants × 6 λ + SGD) × 3 seeds × 2 noise levels: the plan's 114.
    assert len(runs) == 114
    assert Counter(s.variant.key for s in runs) == {
        "sam": 36,
        "gnp_paper": 36,
        "gnp_released": 36,
        "sgd": 6,
    }
    radii = {
        key: sorted({s.r for s in runs if s.variant.key == key}) for key in ("sam", "gnp_paper")
    }
    assert radii["sam"] == [0.1, 0.2, 0.4, 0.56, 0.8, 1.12]  # r = λ at α = 1
    assert radii["gnp_paper"] == [0.125, 0.25, 0.5, 0.7, 1.0, 1.4]  # r = λ / 0.8
    assert {s.seed for s in runs} == {100, 101, 102}
    for spec in runs:
        config = spec.config
        assert config.use_test_set is False and config.dataset.flip_validation_labels is True
        assert config.dataset.mnist1d_validation_size == 4000
        assert config.model.model_name == "CNN1D_64" and config.total_epochs == 60
    assert {s.config.dataset.label_noise for s in runs} == {0.0, 0.3}


def test_final_runs_hold_the_matched_lambda_control_and_the_released_term():
    # GNP α = 0.8 chose r = 0.7 (λ 0.56): matched SAM runs at r = 0.56; SAM itself chose 0.4.
    finals = plan.final_runs(CONFIRM, "icml2022", chosen_at({"gnp_paper": 0.7, "sam": 0.4}))
    assert len(finals) == 6 * 10 * 2
    by_key = {s.variant.key: s for s in finals if s.seed == 0 and s.group == "noise0.3"}
    assert by_key["sam_matched"].r == 0.56 and by_key["sam_matched"].config.gnp.alpha == 1.0
    assert by_key["released_term"].r == 1e-4
    assert by_key["released_term"].config.gnp.norm_perturbations is True
    assert by_key["released_term"].config.gnp.alpha == 0.8
    assert {s.config.use_test_set for s in finals} == {True}
    assert {s.config.dataset.flip_validation_labels for s in finals} == {False}
    assert len(plan.distinct(finals, Path("x"))) == 120
    # Where SAM chose GNP's λ itself, the matched runs are SAM's: one set of 20 runs.
    same = plan.final_runs(CONFIRM, "icml2022", chosen_at({"gnp_paper": 0.7, "sam": 0.56}))
    distinct = plan.distinct(same, Path("x"))
    assert len(distinct) == 100
    assert by_key["sam_matched"].directory(Path("x")).parts[-3] == "sam"


def test_lr_ablation_is_at_each_variants_chosen_r_on_the_tuning_seeds():
    runs = plan.lr_ablation_runs(CONFIRM, chosen_at({"sam": 0.4, "gnp_released": 1.4}))
    assert len(runs) == 4 * 2 * 3 * 2  # variants × lr × seeds × noise levels: the plan's 48
    assert {s.config.base_lr for s in runs} == {0.05, 0.2}
    assert {s.seed for s in runs} == {100, 101, 102}
    released = [s for s in runs if s.variant.key.startswith("gnp_released")]
    assert {s.r for s in released} == {1.4} and {s.stage for s in runs} == {"lr"}
    assert {s.config.use_test_set for s in runs} == {False}


def test_ties_within_a_hundredth_of_a_point_go_to_the_smaller_lambda():
    def tuning(errors):
        return [
            {"group": "noise0.3", "variant": "sam", "r": r, "error_rate": e}
            for r, values in errors.items()
            for e in values
        ]

    # Means over 3 seeds: r 0.4 → 0.05000, r 0.56 → 0.04993 (0.0067 pp lower): a tie.
    near = {0.4: [0.05, 0.05, 0.05], 0.56: [0.0498, 0.05, 0.05]}
    assert plan.choose_r(tuning(near), CONFIRM.tie_tolerance) == {("noise0.3", "sam"): 0.4}
    # 0.0133 pp lower is not.
    apart = {0.4: [0.05, 0.05, 0.05], 0.56: [0.0496, 0.05, 0.05]}
    assert plan.choose_r(tuning(apart), CONFIRM.tie_tolerance) == {("noise0.3", "sam"): 0.56}
    assert plan.choose_r(tuning(near)) == {("noise0.3", "sam"): 0.56}  # the first study's rule


def test_an_optimum_at_the_grids_edge_is_not_bracketed():
    sam, gnp = plan.VARIANTS_2022["sam"], plan.VARIANTS_2022["gnp_paper"]
    sam_grid, gnp_grid = plan.r_grid(CONFIRM, sam), plan.r_grid(CONFIRM, gnp)
    assert not plan.bracketed(sam_grid, 0.1) and not plan.bracketed(sam_grid, 1.12)
    assert plan.bracketed(sam_grid, 0.56) and plan.bracketed(gnp_grid, 0.7)
    assert not plan.bracketed(gnp_grid, 1.4)
    chosen = {("noise0", "sam"): 1.12, ("noise0", "sgd"): 0.05, ("width64", "gr"): 0.1}
    assert study_main.chosen_settings(CONFIRM, chosen) == {
        "noise0/sam": {"r": 1.12, "lambda": 1.12, "bracketed": False},
        "width64/gr": {"r": 0.1, "lambda": 0.1, "bracketed": True},
    }


def finish(spec, out, cpu_seconds):
    path = spec.directory(out) / plan.RUN_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"cpu_seconds": cpu_seconds}))


def test_the_budget_rule_projects_from_measured_cpu_seconds_and_cuts_once(tmp_path):
    pick = chosen_at({})
    tuning = plan.tuning_runs(CONFIRM)
    finals = plan.distinct(plan.final_runs(CONFIRM, "icml2022", pick), tmp_path)
    kept = plan.lr_ablation_runs(CONFIRM, pick, ["sgd", "gnp_released"])
    rest = plan.lr_ablation_runs(CONFIRM, pick, ["sam", "gnp_paper"])
    shard = tuning + finals + kept + rest
    # Nothing measured: the plan's estimates, 35 s a tuning or ablation run, 44 s a final one.
    assert budget.projected_seconds(shard, tmp_path) == 114 * 35 + 120 * 44 + 48 * 35
    # Penalized tuning runs measured at 40 s, plain ones at 20 s: the others of their kind
    # are projected at those means.
    penalized = [s for s in tuning if s.variant.key != "sgd"]
    for spec in penalized[:2]:
        finish(spec, tmp_path, 40.0)
    finish(next(s for s in tuning if s.variant.key == "sgd"), tmp_path, 20.0)
    projected = 108 * 40 + 6 * 20 + 120 * 44 + 48 * 35
    assert budget.projected_seconds(shard, tmp_path) == pytest.approx(projected)
    path = tmp_path / "budget.json"
    decision = budget.decide(shard, {3: rest}, tmp_path, path, budget=projected - 1)
    assert decision["cuts"] == [3] and decision["projected_seconds"] == pytest.approx(projected)
    assert decision["projected_seconds_after_cuts"] == pytest.approx(projected - 24 * 35)
    assert decision["measured_cpu_seconds"]["icml2022/tune/CNN1D_64/penalized"] == {
        "runs": 2,
        "mean": 40.0,
    }
    # Decided once: a later, cheaper projection does not undo it.
    assert budget.decide(shard, {3: rest}, tmp_path, path, budget=1e9) == decision
    other = tmp_path / "other.json"
    assert budget.decide(shard, {3: rest}, tmp_path, other, budget=projected)["cuts"] == []


def test_the_2024_part_tunes_gr_at_width_64_and_runs_the_plans_seeds():
    tuning = plan.tuning_runs_2024(CONFIRM)
    assert len(tuning) == 9 and {s.variant.key for s in tuning} == {"gr"}
    assert sorted({s.r for s in tuning}) == [0.05, 0.1, 0.2]
    assert {s.group for s in tuning} == {"width64"} and {s.seed for s in tuning} == {100, 101, 102}
    assert {s.config.use_test_set for s in tuning} == {False}
    assert {s.config.dataset.mnist1d_validation_size for s in tuning} == {4000}
    finals = plan.final_runs(CONFIRM, "icml2024", lambda group, key: {"gr": 0.2}[key])
    assert len(finals) == 140  # with the 9 tuning runs, the plan's 129 and decoupled GR's 20
    seeds = Counter((s.group, s.variant.key) for s in finals)
    assert seeds == {
        ("width64", "adam"): 20,
        ("width64", "gr"): 20,
        ("width64", "gr_warmup_zero"): 20,
        ("width64", "gr_warmup_r"): 10,
        ("width64", "gr_warmup_lambda"): 10,
        ("width64", "gr_decoupled"): 20,
        ("width32", "adam"): 10,
        ("width32", "gr"): 10,
        ("width128", "adam"): 10,
        ("width128", "gr"): 10,
    }
    # GR's tuned r at every width; Adam's r (unused) stays 0.1, so its runs never move.
    assert {s.r for s in finals if s.variant.key != "adam"} == {0.2}
    assert {s.r for s in finals if s.variant.key == "adam"} == {0.1}
    assert {s.config.model.model_name for s in finals} == {"ViT1D_32", "ViT1D_64", "ViT1D_128"}
    decoupled = {(s.variant.key == "gr_decoupled", s.config.gnp.decoupled) for s in finals}
    assert decoupled == {(True, True), (False, False)}
    # The plan's cuts: 1 drops the warmups' seeds 5–9, 2 the small and large widths' 6–9.
    rules = Counter(budget.cut_rule(s) for s in finals)
    assert rules == {0: 140 - 10 - 16, 1: 10, 2: 16}


def test_figure3_runs_are_five_settings_at_gnp_papers_r_on_clean_labels(tmp_path):
    # GNP (paper) chose r = 0.7 on clean labels, 1.4 on flipped ones; SAM chose 0.4.
    chosen = {("noise0", "gnp_paper"): 0.7, ("noise0.3", "gnp_paper"): 1.4, ("noise0", "sam"): 0.4}
    pick = lambda group, key: chosen.get((group, key), 0.05)
    runs = plan.figure3_runs(CONFIRM, pick)
    assert len(runs) == 5 * 3
    settings = {s.variant.key: (s.config.gnp.alpha, s.config.gnp.norm_perturbations) for s in runs}
    assert settings == {
        "fig3_a0.5_paper": (0.5, False),
        "fig3_a0.5_released": (0.5, True),
        "fig3_a0.8_paper": (0.8, False),
        "fig3_a0.8_released": (0.8, True),
        "fig3_a1": (1.0, False),  # α = 1: the (1 − α) term is zero under either mix
    }
    assert Counter(s.seed for s in runs) == {0: 5, 1: 5, 2: 5}
    assert {s.r for s in runs} == {0.7} and {s.group for s in runs} == {"noise0"}
    assert {s.config.gnp.r for s in runs} == {0.7}
    assert {s.config.dataset.label_noise for s in runs} == {0.0}
    # Held out: validation split, never the test set (and no curvature: not "final").
    assert {s.stage for s in runs} == {"figure3"}
    assert {s.config.use_test_set for s in runs} == {False}
    assert {(s.config.model.model_name, s.config.total_epochs) for s in runs} == {("CNN1D_64", 60)}
    assert runs[1].directory(Path("OUT")) == Path(
        "OUT/icml2022/figure3/noise0/fig3_a0.5_released/r0.7/seed0"
    )
    family = {key for c in plan.CONFIRMATORY for key in (c.a, c.b)}
    assert not family & set(settings)
    # Outside the budget's cuts and projection, inside the plan's run count (the ETA).
    core, cuts = study_main.icml2022_runs(CONFIRM, pick, tmp_path)
    assert "figure3" not in {s.stage for s in core + cuts[3]}
    args = study_main.parse_args(["--mode=confirm"])
    planned = study_main.planned_runs(CONFIRM, args, tmp_path, "icml2022")
    assert Counter(s.stage for s in planned) == {"final": 120, "lr": 48, "figure3": 15}
    # The smoke scale's first (only) noise level and its one final seed.
    smoke = plan.figure3_runs(plan.SCALES["confirm_smoke"], pick)
    assert {(s.group, s.r, s.seed) for s in smoke} == {("noise0.3", 1.4, 0)} and len(smoke) == 5
    # The first study's scales start no Figure 3 runs.
    for mode in ("full", "smoke", "pilot", "wide_r", "wider_r", "widest_r", "wider_r_clean"):
        assert plan.figure3_runs(plan.SCALES[mode], pick) == []


def test_figure3_mix_term_and_table_by_hand(tmp_path):
    curve = [{"clean_gradient_norm": 2.0}, {"clean_gradient_norm": 0.5}]
    # Paper mix: ‖(1 − α)·g1‖ = (1 − α)·‖g1‖; released: ‖(1 − α)·g1/‖g1‖‖ = 1 − α.
    assert study_report.mix_term_norms(curve, 0.8, False) == pytest.approx([0.4, 0.1])
    assert study_report.mix_term_norms(curve, 0.5, False) == pytest.approx([1.0, 0.25])
    assert study_report.mix_term_norms(curve, 0.8, True) == pytest.approx([0.2, 0.2])
    assert study_report.mix_term_norms(curve, 1.0, False) == [0.0, 0.0]

    def run(variant, seed, clean, perturbed, combined, normalized):
        rows = [
            {"epoch": 1, "clean_gradient_norm": 9.0, "combined_gradient_norm": 9.0},
            {"epoch": 2, "clean_gradient_norm": clean, "combined_gradient_norm": combined},
        ]
        for row in rows:
            if perturbed is not None:  # an older run's curve lacks the key
                row["perturbed_gradient_norm"] = perturbed
        mix = {"alpha": 0.8, "norm_perturbations": normalized}
        named = {"group": "noise0", "variant": variant, "label": f"{variant} label"}
        return named | {"seed": seed, "r": 0.7, "curve": rows} | mix

    runs = [
        run("paper", 1, 0.3, 1.0, 0.5, False),
        run("paper", 0, 0.1, 2.0, 0.3, False),
        run("released", 0, 0.1, None, 0.4, True),
    ]
    # Paper: ‖g1‖ (0.1 + 0.3)/2 = 0.2, ‖g2‖ 1.5, term 0.2·0.2 = 0.04, combined 0.4.
    assert study_report.figure3_table(runs).splitlines()[2:] == [
        "| noise0 | paper label | 0.7 | 2 | 0.200 | 1.500 | 0.040 | 0.400 |",
        "| noise0 | released label | 0.7 | 1 | 0.100 | — | 0.200 | 0.400 |",
    ]
    assert study_report.plot_figure3(runs, tmp_path / "f.png").stat().st_size > 0


def test_epoch_curve_reads_the_perturbed_norm_where_logged(tmp_path):
    rows = [
        {"epoch": 1, "gradient_norm": 0.5, "clean_gradient_norm": 0.2, "train_loss": 1.0},
        {"epoch": 2, "gradient_norm": 0.4, "clean_gradient_norm": 0.1, "train_loss": 0.5},
    ]
    rows[1]["perturbed_gradient_norm"] = 0.3  # epoch 1 had no GNP step
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(row | {"train_error_rate": 0.1}) + "\n" for row in rows)
    )
    curve = measure.epoch_curve(tmp_path)
    assert [row["perturbed_gradient_norm"] for row in curve] == [None, 0.3]
    assert [row["combined_gradient_norm"] for row in curve] == [0.5, 0.4]


def test_the_confirmatory_family_has_the_plans_19_rows():
    assert plan.family_size(plan.CONFIRMATORY, CONFIRM) == 19  # with decoupled GR's row 13
    assert plan.family_size(plan.DECLARED, plan.SCALES["full"]) == 4 * 2 + 2 * 2


def final_run(out, group, variant, seed, wrong):
    """A final run's record and its saved per-signal correctness (``wrong``: 1 = misclassified)."""
    directory = Path("icml2024") / "final" / group / variant / f"seed{seed}"
    (out / directory).mkdir(parents=True)
    np.save(out / directory / "test_correct.npy", np.asarray(wrong) == 0)
    error = float(np.mean(wrong))
    return {
        "part": "icml2024",
        "group": group,
        "variant": variant,
        "seed": seed,
        "error_rate": error,
        "trace": 1.0,
        "trace_samples": [1.0, 1.0],
        "directory": str(directory),
    }


def test_family_rows_by_hand_with_the_test_signal_bootstrap(tmp_path):
    wrong = {  # (group, variant): per seed, which of 4 test signals the model gets wrong
        ("width64", "gr"): [[1, 0, 0, 0], [1, 1, 0, 0]],
        ("width64", "adam"): [[0, 0, 0, 0], [0, 0, 0, 0]],
        ("width128", "gr"): [[1, 1, 1, 0], [1, 1, 0, 0]],
        ("width128", "adam"): [[1, 0, 0, 0], [0, 0, 0, 0]],
        ("width32", "gr"): [[1, 0, 0, 0], [0, 0, 0, 0]],
        ("width32", "adam"): [[0, 0, 0, 0], [0, 0, 0, 0]],
    }
    runs = [
        final_run(tmp_path, group, variant, seed, values)
        for (group, variant), per_seed in wrong.items()
        for seed, values in enumerate(per_seed)
    ]
    declared = [c for c in plan.CONFIRMATORY if c.part == "icml2024" and c.a == "gr"]
    labels = {"icml2024": {v.key: v.label for v in plan.ICML2024_VARIANTS}}
    rows = study_report.contrasts(
        {"icml2024": {"runs": runs}},
        declared,
        labels,
        holm_on="t_test_p",
        family_size=4,
        out=tmp_path,
        resamples=2_000,
    )
    assert [(row["group"], row.get("versus")) for row in rows] == [
        ("width64", None),
        ("width128", "width32"),
    ]
    gr, interaction = rows
    # GR − Adam at width 64: per seed 0.25, 0.5; t = 0.375 / (0.1768/√2) = 3 on 1 degree of
    # freedom (Cauchy): p = 1 − 2·atan(3)/π.
    error = gr["test_error_difference"]
    np.testing.assert_allclose(error["differences"], [0.25, 0.5])
    assert error["t_test_p"] == pytest.approx(1 - 2 * math.atan(3) / math.pi)
    # Per signal, mean over seeds of (wrong GR − wrong Adam): (1, 0.5, 0, 0).
    low, high = statistics.bootstrap_interval(np.array([1.0, 0.5, 0.0, 0.0]), 2_000)
    assert gr["test_signal_bootstrap"] == {
        "resamples": 2_000,
        "mean": 0.375,
        "ci_low": low,
        "ci_high": high,
    }
    # Interaction: (0.75 − 0.25) − (0.25 − 0) = 0.25 on seed 0, (0.5 − 0) − 0 = 0.5 on seed 1.
    np.testing.assert_allclose(interaction["test_error_difference"]["differences"], [0.25, 0.5])
    assert interaction["name"] == "(GR − Adam) width128 − width32"
    per_signal = np.array([[0, 1, 1, 0], [1, 1, 0, 0]]) - np.array([[1, 0, 0, 0], [0, 0, 0, 0]])
    assert interaction["test_signal_bootstrap"]["mean"] == pytest.approx(per_signal.mean())
    # Holm over a family of 4 of which 2 ran: both p equal, the two missing count as 1.
    p = error["t_test_p"]
    assert [row["holm_p"] for row in rows] == pytest.approx([4 * p, 4 * p])
    assert {row["holm_family_size"] for row in rows} == {4}


@pytest.mark.slow
def test_confirm_smoke_end_to_end(tmp_path):
    """The confirm scale's machinery on digits (one epoch, one seed): flipped validation with
    the clean error beside it, matched SAM, the lr ablation after the budget decision, and the
    saved per-signal test correctness that the bootstrap resamples."""
    published = tmp_path / "published.json"
    results = study_main.main(
        ["--mode=confirm_smoke", f"--out={tmp_path}", f"--publish={published}"]
    )
    assert json.loads(published.read_text()) == study_main.published(results)
    part = results["icml2022"]
    assert set(part["chosen"]) == {"noise0.3/sam", "noise0.3/gnp_paper"}
    assert results["plan_commit"] == plan.plan_commit()
    tuned = {(run["variant"], run["r"]): run for run in part["tuning"]}
    assert set(tuned) == {("sgd", 0.05), ("sam", 0.04), ("sam", 0.08)} | {
        ("gnp_paper", 0.05),
        ("gnp_paper", 0.1),
    }
    # The tuning run's validation error is on labels flipped at 30 %; by hand, both errors.
    run = tuned[("sam", 0.04)]
    loaded = load_run(tmp_path / "icml2022" / "tune" / "noise0.3" / "sam" / "r0.04" / "seed100")
    validation = loaded.pipeline.source.test
    images = loaded.pipeline.normalize(
        np.stack([validation.split.split.images[i] for i in validation.split.indices])
    )
    predicted = np.argmax(np.asarray(loaded.model.apply(loaded.variables, images, train=False)), -1)
    assert (validation.labels != validation.split.labels).sum() == round(0.3 * 143)
    assert run["error_rate"] == pytest.approx((predicted != validation.labels).mean())
    clean = (predicted != validation.split.labels).mean()
    assert run["clean_validation_error_rate"] == pytest.approx(clean)
    # The final runs: matched SAM at GNP's λ; every run's saved correctness gives its error.
    finals = {run["variant"]: run for run in part["runs"]}
    gnp_lambda = part["chosen"]["noise0.3/gnp_paper"]["lambda"]
    assert finals["sam_matched"]["r"] == gnp_lambda and finals["released_term"]["r"] == 1e-4
    for run in part["runs"]:
        correct = np.load(tmp_path / run["directory"] / "test_correct.npy")
        assert correct.shape == (360,) and correct.dtype == bool
        assert run["error_rate"] == pytest.approx(1 - correct.mean())
    assert {run["variant"] for run in part["lr_ablation"]} == {"sgd_lr0.05", "sam_lr0.05"}
    assert part["budget"]["cuts"] == []  # a few seconds of CPU: nothing to cut
    rows = results["contrasts"]
    assert {row["holm_family_size"] for row in rows} == {
        plan.family_size(plan.CONFIRMATORY, plan.SCALES["confirm_smoke"])
    }
    assert all(row["test_signal_bootstrap"]["resamples"] == 10_000 for row in rows)
    # Figure 3: five settings at GNP (paper)'s chosen r in the first noise level, held out.
    figure3 = part["figure3"]
    mixes = {f"fig3_a{alpha}_{mix}" for alpha in (0.5, 0.8) for mix in ("paper", "released")}
    assert {run["variant"] for run in figure3} == mixes | {"fig3_a1"} and len(figure3) == 5
    assert {run["r"] for run in figure3} == {part["chosen"]["noise0.3/gnp_paper"]["r"]}
    assert {run["use_test_set"] for run in figure3} == {False}
    assert not any("trace" in run for run in figure3)  # no curvature measured
    for run in figure3:  # every setting is penalized: ‖g2‖ in every epoch
        metrics = read_metrics(str(tmp_path / run["directory"] / "metrics.jsonl"))
        perturbed = [row["perturbed_gradient_norm"] for row in run["curve"]]
        assert perturbed == [row["perturbed_gradient_norm"] for row in metrics]
        assert min(perturbed) > 0
    assert (tmp_path / "icml2022_figure3.png").stat().st_size > 0


def test_tables_in_lambda_and_the_lr_ablation_by_hand():
    def run(variant, r, error, clean=None, group="noise0.3"):
        entry = {"group": group, "variant": variant, "r": r, "error_rate": error}
        return entry | ({} if clean is None else {"clean_validation_error_rate": clean})

    tuning = [
        run("sam", 0.56, 0.04, 0.02),
        run("sam", 0.56, 0.06, 0.03),
        run("gnp_paper", 0.7, 0.05, 0.01),
        run("gnp_paper", 1.4, 0.07, 0.02),
        run("sgd", 0.05, 0.10, 0.08),
    ]
    labels = {"sgd": "SGD", "sam": "SAM", "gnp_paper": "GNP"}
    alphas = {v.key: v.alpha for v in plan.ICML2022_VARIANTS}
    # GNP's r 0.7 and SAM's 0.56 are one λ (0.56); GNP's 1.4 is λ 1.12; SGD has no λ.
    assert study_report.lambda_tuning_table(tuning, labels, alphas).splitlines() == [
        "| group | variant | λ = 0.56 | λ = 1.12 |",
        "|---|---|---|---|",
        "| noise0.3 | SAM | 5.00 (2.50) | — |",
        "| noise0.3 | GNP | 5.00 (1.00) | 7.00 (2.00) |",
    ]
    results = {
        "chosen_r": {"noise0.3/sam": 0.56, "noise0.3/sgd": 0.05},
        "tuning": tuning,
        "lr_ablation": [run("sam_lr0.05", 0.56, 0.08), run("sgd_lr0.2", 0.05, 0.2)],
    }
    assert study_report.lr_table(results, labels, (0.05, 0.2)).splitlines() == [
        "| group | variant | lr 0.05 | lr 0.1 | lr 0.2 |",
        "|---|---|---|---|---|",
        "| noise0.3 | SGD | — | 10.00 (1) | 20.00 (1) |",
        "| noise0.3 | SAM | 8.00 (1) | 5.00 (2) | — |",
    ]


def test_the_published_copy_keeps_six_significant_digits():
    value = {"a": [0.123456789, 2, None, "x"], "b": {"c": 1234567.89, "d": -1.0000004e-7}}
    assert study_main.published(value) == {
        "a": [0.123457, 2, None, "x"],
        "b": {"c": 1234570.0, "d": -1e-7},
    }


@pytest.mark.slow
def test_the_2024_part_runs_end_to_end_on_digits(tmp_path, monkeypatch):
    """Shard 2's path (GR's r tuned at width 64, every shard's tuning awaited, the finals of
    ``design_2024`` with decoupled GR, the budget decision, the family's 2024 rows with their
    bootstrap and verdicts) on digits, two epochs and two seeds: the plan's shard 2 runs for
    hours, so its path is checked before, not found broken after."""
    design = ((64, "adam", 2), (64, "gr", 2), (64, "gr_decoupled", 2))
    design += ((32, "adam", 2), (32, "gr", 2), (128, "adam", 2), (128, "gr", 2))
    scale = plan.SCALES["confirm_smoke"]
    scale = plan.dataclasses.replace(
        scale, parts=("icml2024",), epochs_2024=2, warmup_2024=1, design_2024=design
    )
    monkeypatch.setitem(plan.SCALES, "confirm_smoke", scale)
    results = study_main.main(["--mode=confirm_smoke", "--only=icml2024", f"--out={tmp_path}"])
    part = results["icml2024"]
    assert {(run["r"], run["seed"]) for run in part["tuning"]} == {
        (r, 100) for r in (0.05, 0.1, 0.2)
    }
    chosen = part["chosen"]["width64/gr"]["r"]
    finals = Counter((run["group"], run["variant"]) for run in part["runs"])
    assert finals == {(f"width{w}", key): n for w, key, n in design}
    assert {run["r"] for run in part["runs"] if run["variant"] != "adam"} == {chosen}
    assert part["budget"]["cuts"] == []
    rows = {row["name"]: row for row in results["contrasts"]}
    assert set(rows) == {"GR − Adam", "(GR − Adam) width128 − width32", "GR, decoupled − GR"}
    assert {row["holm_family_size"] for row in rows.values()} == {13}  # one noise level: 6 + 7
    assert all(row["test_signal_bootstrap"]["resamples"] == 10_000 for row in rows.values())
    assert "- **(GR − Adam) width128 − width32** (width128 vs width32): " in results["markdown"]
    # Adam's moments recorded for every step of the (short) run, decoupled GR's too.
    decoupled = [run for run in part["runs"] if run["variant"] == "gr_decoupled"]
    assert all(len(run["adam"]) == len(decoupled[0]["adam"]) > 0 for run in decoupled)
