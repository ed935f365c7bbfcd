"""``python -m gnp.study``: its numbers are the runs' own, it resumes, and it reports honestly.

The end-to-end cases use ``--mode=smoke`` (digits, two epochs) and a few variants; the
statistics themselves are tested by hand in ``test_study_stats.py``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from gnp.files import DamagedFile
from gnp.optim import learning_rate_schedule
from gnp.provenance import gnp_version
from gnp.study import main as study_main
from gnp.study import measure, plan
from gnp.study import report as study_report
from gnp.study import run as study_run
from gnp.train.checkpoint import Checkpoints
from gnp.train.run import load_run
from gnp.train.workdir import read_metrics

LABELS = {
    "icml2022": {v.key: v.label for v in plan.ICML2022_VARIANTS},
    "icml2024": {v.key: v.label for v in plan.ICML2024_VARIANTS},
}


@pytest.fixture(scope="module")
def smoke_2022(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    argv = ["--mode=smoke", "--only=icml2022", "--variants=sgd,sam", f"--out={out}"]
    return out, study_main.main(argv)


@pytest.mark.slow
def test_numbers_come_from_the_runs(smoke_2022):
    out, results = smoke_2022
    assert json.loads((out / "results.json").read_text()) == results
    figures = {"icml2022_errors.png", "icml2022_gradient_norms.png"}
    assert {path.rsplit("/", 1)[-1] for path in results["figures"]} == figures
    assert all((out / name).stat().st_size > 0 for name in figures)
    # Two epochs cannot memorize flipped labels: the smoke mode says so instead of "FAILED".
    if not results["gate"]["passed"]:
        assert "not reached, as expected of the smoke mode" in (out / "results.md").read_text()
    runs = results["icml2022"]["runs"]
    assert [(run["variant"], run["group"], run["seed"]) for run in runs] == [
        ("sgd", "noise0.3", 0),
        ("sam", "noise0.3", 0),
    ]
    for run in runs:
        directory = out / "icml2022" / "final" / "noise0.3" / run["variant"] / "r0.05" / "seed0"
        final = read_metrics(str(directory / "metrics.jsonl"))[-1]
        assert run["error_rate"] == final["test_error_rate"] and final["epoch"] == 2
        assert run["use_test_set"] is True
        config = json.loads((directory / "config.json").read_text())
        assert config["dataset"]["label_noise"] == 0.3
        assert config["gnp"]["alpha"] == {"sgd": 0.0, "sam": 1.0}[run["variant"]]
        # ‖g1‖ per epoch: ``clean_gradient_norm`` where the trainer logs it, else gradient_norm.
        clean = final.get("clean_gradient_norm", final["gradient_norm"])
        assert run["curve"][-1]["clean_gradient_norm"] == clean
        # ‖g2‖ where there is one (SAM's GNP steps), None for SGD's plain steps.
        perturbed = run["curve"][-1]["perturbed_gradient_norm"]
        assert perturbed == final.get("perturbed_gradient_norm")
        assert (perturbed is None) == (run["variant"] == "sgd")
    assert "figure3" not in results["icml2022"]  # the first study's scales have no Figure 3 runs


@pytest.mark.slow
def test_train_errors_on_flipped_labels_by_hand(smoke_2022):
    out, results = smoke_2022
    run = results["icml2022"]["runs"][0]
    loaded = load_run(out / "icml2022" / "final" / "noise0.3" / "sgd" / "r0.05" / "seed0")
    images = loaded.pipeline.normalize(np.stack(loaded.pipeline.source.train.split.images))
    logits = loaded.model.apply(loaded.variables, images, train=False)
    predicted = np.argmax(np.asarray(logits), -1)
    noisy = loaded.pipeline.source.train.labels
    flipped = noisy != loaded.pipeline.source.train.split.labels
    assert flipped.sum() == round(0.3 * 1437)
    expected = (predicted[flipped] != noisy[flipped]).mean()
    assert run["flipped_train_error_rate"] == pytest.approx(expected)
    assert run["train_error_rate_eval"] == pytest.approx((predicted != noisy).mean())


@pytest.mark.slow
def test_shared_trace_probes_pair_the_runs(smoke_2022):
    _, results = smoke_2022
    sgd, sam = results["icml2022"]["runs"]
    assert len(sgd["trace_samples"]) == plan.SCALES["smoke"].trace_probes
    assert sgd["trace"] == pytest.approx(np.mean(sgd["trace_samples"]))
    assert sam["trace_samples"] != sgd["trace_samples"]
    assert results["contrasts"] == []  # no declared pair ran (GNP did not): none is made up


@pytest.mark.slow
def test_finished_runs_are_skipped_and_the_report_rebuilt(smoke_2022):
    out, results = smoke_2022
    metrics = out / "icml2022" / "final" / "noise0.3" / "sgd" / "r0.05" / "seed0" / "metrics.jsonl"
    written = metrics.stat().st_mtime_ns
    again = study_main.main(["--mode=smoke", "--only=icml2022", "--variants=sgd", f"--out={out}"])
    assert metrics.stat().st_mtime_ns == written
    assert again["icml2022"]["runs"][0] == results["icml2022"]["runs"][0]
    assert results["plan_commit"] == again["plan_commit"] == plan.plan_commit()
    assert results["gnp_version"] == gnp_version()


def test_a_torn_results_file_is_refused_naming_it_and_the_fix(tmp_path):
    (tmp_path / "results.json").write_text('{"mode": "sm')
    argv = ["--mode=smoke", "--only=icml2022", "--variants=sgd", f"--out={tmp_path}"]
    with pytest.raises(DamagedFile, match=r"results\.json is damaged .*delete it"):
        study_main.main(argv)


@pytest.mark.slow
def test_one_seed_tables_show_no_zero_spread(smoke_2022):
    out, _ = smoke_2022
    text = (out / "results.md").read_text()
    assert "| noise0.3 | SAM | 0.05 | 1 |" in text
    assert "± 0.00" not in text and "mean ± 95 % CI" in text


def test_help_describes_the_study_not_an_issue(capsys):
    with pytest.raises(SystemExit):
        study_main.main(["--help"])
    text = capsys.readouterr().out
    assert "issue" not in text.lower() and "MNIST-1D" in text and "--mode" in text


def test_unknown_variant_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit):
        study_main.main(["--variants=sgd,nope"])
    assert "unknown --variants nope" in capsys.readouterr().err


@pytest.mark.slow
def test_adam_moments_are_the_optax_state_by_hand(tmp_path):
    """The last recorded step's √ν̂ and lr/(√ν̂+ε) statistics, recomputed in float64 from the
    final checkpoint (the smoke run has fewer than 300 steps, so its last step is recorded)."""
    argv = ["--mode=smoke", "--only=icml2024", "--variants=adam", f"--out={tmp_path}"]
    (run,) = study_main.main(argv)["icml2024"]["runs"]
    directory = tmp_path / "icml2024" / "final" / "width16" / "adam" / "r0.1" / "seed0"
    rows = read_metrics(str(directory / "metrics.jsonl"))
    assert [entry["step"] for entry in run["adam"]] == list(range(1, rows[-1]["step"] + 1))
    state, _ = Checkpoints(str(directory / "checkpoints")).load_latest()
    adam = state["opt_state"][0]
    count = int(adam["count"])
    nu = np.concatenate([np.ravel(v) for v in jax.tree.leaves(adam["nu"])]).astype(np.float64)
    sqrt_nu = np.sqrt(nu / (1 - 0.999**count))
    config = ml_collections.ConfigDict(json.loads((directory / "config.json").read_text()))
    learning_rate = float(learning_rate_schedule(config, 1437 // 128)(count - 1))
    step_size = learning_rate / (sqrt_nu + 1e-8)
    last = run["adam"][-1]
    np.testing.assert_allclose(last["mean_sqrt_nu"], sqrt_nu.mean(), rtol=1e-4)
    np.testing.assert_allclose(last["cv_sqrt_nu"], sqrt_nu.std() / sqrt_nu.mean(), rtol=1e-4)
    np.testing.assert_allclose(last["mean_step_size"], step_size.mean(), rtol=1e-4)
    np.testing.assert_allclose(last["cv_step_size"], step_size.std() / step_size.mean(), rtol=1e-4)


def synthetic_runs(part, group, errors):
    """Final runs with given test errors per variant (one per seed) and fixed curvature."""
    return [
        {
            "part": part,
            "group": group,
            "variant": variant,
            "seed": seed,
            "r": 0.1,
            "error_rate": error,
            "trace": 10.0 + seed,
            "trace_samples": [10.0 + seed, 10.0 + seed + (variant == "sgd")],
            "top_eigenvalue": 1.0,
            "full_gradient_norm": 0.1,
        }
        for variant, values in errors.items()
        for seed, error in enumerate(values)
    ]


def test_contrasts_pair_by_seed_and_are_holm_corrected():
    errors = {
        "sgd": [0.20, 0.22, 0.21, 0.25],
        "sam": [0.19, 0.20, 0.20, 0.21],
        "gnp_paper": [0.18, 0.21, 0.19, 0.20],
        "gnp_released": [0.19, 0.20, 0.21, 0.22],
    }
    results = {"icml2022": {"runs": synthetic_runs("icml2022", "noise0", errors)}}
    rows = study_report.contrasts(results, plan.DECLARED, LABELS)
    assert [(row["a"], row["b"]) for row in rows] == [
        ("gnp_paper", "sam"),
        ("gnp_paper", "sgd"),
        ("gnp_released", "sam"),
        ("gnp_released", "sgd"),
    ]
    paper_sgd = rows[1]["test_error_difference"]
    np.testing.assert_allclose(paper_sgd["differences"], [-0.02, -0.01, -0.02, -0.05], atol=1e-12)
    assert (paper_sgd["positive"], paper_sgd["negative"]) == (0, 4)
    assert paper_sgd["sign_test_p"] == pytest.approx(2 / 16)
    # Sign tests: gnp_paper−sam 1 worse / 3 better → 2·5/16; gnp_released−sam 2 / 0 with two
    # ties → 2·1/4; gnp_released−sgd 0 / 3 with one tie → 2/8. Holm: sorted 0.125·4 = 0.5,
    # 0.25·3 = 0.75, 0.5·2 = 1, 0.625·1 → kept monotone at 1.
    p = [row["test_error_difference"]["sign_test_p"] for row in rows]
    assert p == pytest.approx([0.625, 0.125, 0.5, 0.25])
    assert [row["holm_p"] for row in rows] == pytest.approx([1.0, 0.5, 1.0, 0.75])
    # Shared probes: per seed, the probe-wise trace differences are (0, −1): SE = 0.5.
    assert rows[1]["trace_difference_paired_standard_error"] == pytest.approx([0.5] * 4)


def test_estimate_says_nothing_about_spread_for_one_seed():
    assert study_report.estimate([0.1234], 100) == "12.34"
    # Two values 0.1 and 0.3: mean 0.2, sd √0.02, t(0.975, 1) = 12.7062.
    assert study_report.estimate([0.1, 0.3]) == f"0.20 ± {12.706204736174707 * 0.1:.2f}"


def test_gate_reads_the_noisiest_groups_sgd_runs():
    runs = [
        {"variant": "sgd", "group": g, "seed": s, "flipped_train_error_rate": v}
        for g, s, v in (("noise0.3", 0, 0.0), ("noise0.3", 1, 0.05), ("noise0.1", 0, 0.5))
    ]
    result = study_report.gate({"runs": runs})
    assert result["group"] == "noise0.3" and result["flipped_train_error_rate"] == [0.0, 0.05]
    assert not result["passed"]


def test_r_is_chosen_by_mean_validation_error_ties_to_the_smaller():
    tuning = [
        {"group": "noise0", "variant": "sam", "r": r, "error_rate": e}
        for r, e in ((0.05, 0.20), (0.1, 0.10), (0.05, 0.10), (0.1, 0.20))
    ] + [{"group": "noise0.3", "variant": "sam", "r": r, "error_rate": 0.3} for r in (0.1, 0.05)]
    assert plan.choose_r(tuning) == {("noise0", "sam"): 0.05, ("noise0.3", "sam"): 0.05}
    tuning[2]["error_rate"] = 0.2
    assert plan.choose_r(tuning)[("noise0", "sam")] == 0.1


def test_plan_sizes_and_progress_line(tmp_path):
    scale = plan.SCALES["full"]
    tuning = plan.tuning_runs(scale)
    assert len(tuning) == 2 * 4 * 4 * 1  # noise levels × tuned variants × r grid × seeds
    assert {spec.config.use_test_set for spec in tuning} == {False}
    finals = plan.final_runs(scale, "icml2022", lambda group, key: 0.1)
    assert len(finals) == 2 * 5 * 10 and {s.config.use_test_set for s in finals} == {True}
    assert {s.seed for s in finals[:10]} == {0} and len({s.group for s in finals[:10]}) == 2
    vits = plan.final_runs(scale, "icml2024", lambda group, key: 0.1)
    assert len(vits) == 2 * 7 * 3  # the first study's variants: decoupled GR is the confirm's
    assert {s.config.gnp.decoupled for s in vits} == {False}
    assert {s.config.model.model_name for s in vits} == {"ViT1D_32", "ViT1D_64"}
    no_warmup = [s for s in vits if s.variant.key == "gr_no_lr_warmup"]
    assert {s.config.warmup_epochs for s in no_warmup} == {0}
    sgd, sam, adam, gr = finals[0], finals[1], vits[0], vits[1]
    assert (sgd.variant.key, sam.variant.key, adam.variant.key, gr.variant.key) == (
        "sgd",
        "sam",
        "adam",
        "gr",
    )
    progress = study_run.Progress([sgd, sam, adam, gr], tmp_path)
    assert progress.line() == "[0/4 runs done]"
    progress.last -= 600  # SGD "took" 10 min for 60 units: 10 s per unit
    progress.finished(sgd)
    # Left: SAM 120 units, Adam 40 and GR 80 (ViT not measured: the overall 10 s) → 40 min.
    assert progress.line() == "[1/4 runs done] ETA 40 min"
    progress.last -= 800  # Adam "took" 800 s for 40 units: 20 s per unit in its part
    progress.finished(adam)
    assert progress.line() == "[2/4 runs done] ETA 47 min"  # 120 · 10 + 80 · 20 = 2,800 s
    # SAM planned at a placeholder r whose run another study finished; chosen at another r.
    placeholder = dataclasses.replace(sam, r=0.05)
    at_chosen = dataclasses.replace(sam, r=0.2)
    (placeholder.directory(tmp_path) / plan.RUN_FILE).parent.mkdir(parents=True)
    (placeholder.directory(tmp_path) / plan.RUN_FILE).write_text("{}")
    replanned = study_run.Progress([placeholder], tmp_path)
    assert replanned.line() == "[1/1 runs done]"
    replanned.replan([placeholder], [at_chosen])
    assert (replanned.done, replanned.total, replanned.remaining) == (0, 1, {"icml2022": 120})
    assert study_run.format_duration(2.5 * 3600) == "2 h 30 min"


def test_shards_split_the_plan_and_variants_filter_it():
    scale = plan.SCALES["full"]
    runs = plan.tuning_runs(scale)
    shards = [
        study_run.select(
            runs, study_main.parse_args([f"--shard={k}/3", "--variants=sam,gnp_paper"])
        )
        for k in range(3)
    ]
    everything = [spec.directory(Path("x")) for shard in shards for spec in shard]
    assert len(everything) == len(set(everything)) == 2 * 2 * 4 * 1  # noise · variants · r · seeds
    assert {spec.variant.key for shard in shards for spec in shard} == {"sam", "gnp_paper"}
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2"])
def test_bad_shard_is_a_one_line_error(capsys, text):
    with pytest.raises(SystemExit):
        study_main.parse_args([f"--shard={text}"])
    assert "--shard takes K/N with 0 <= K < N" in capsys.readouterr().err


def test_gradient_norm_table_averages_the_last_epoch_over_seeds():
    def run(seed, clean, combined):
        curve = [{"clean_gradient_norm": 9.0, "combined_gradient_norm": 9.0}]
        curve.append({"clean_gradient_norm": clean, "combined_gradient_norm": combined})
        return {"group": "noise0", "variant": "gnp", "seed": seed, "curve": curve}

    results = {"runs": [run(0, 0.1, 0.3), run(1, 0.2, 0.5)]}
    table = study_report.gradient_norm_table(results, {"gnp": "GNP", "sam": "SAM"})
    assert table.splitlines()[2:] == ["| noise0 | GNP | 0.150 | 0.400 |"]


def test_a_diverged_run_is_finished_with_the_worst_error(tmp_path, monkeypatch):
    """A NaN loss ends the run, not the study: error rate 1, so tuning never picks its r."""

    def blow_up(spec, directory):
        directory.mkdir(parents=True)
        raise measure.NonFiniteError("loss is nan at step 7")

    monkeypatch.setattr(measure, "train_with_adam_trace", blow_up)
    scale = plan.SCALES["smoke"]
    spec = plan.tuning_runs(dataclasses.replace(scale, r_grid=(0.05, 5.0)))[1]
    result = measure.execute(spec, tmp_path, scale)
    assert result["error_rate"] == 1.0 and result["diverged"] == "loss is nan at step 7"
    assert result["gnp_version"] == gnp_version()  # its format: tests/test_gnp_version.py
    assert json.loads((spec.directory(tmp_path) / plan.RUN_FILE).read_text()) == result
    assert plan.choose_r([result, {**result, "r": 0.05, "error_rate": 0.9}]) == {
        (spec.group, spec.variant.key): 0.05
    }


# follow-up: (the scale whose runs it reuses, its label noise, its new r)
FOLLOW_UPS = {
    "wide_r": ("full", 0.3, [0.3, 0.5]),
    "wider_r": ("wide_r", 0.3, [0.7, 1.0, 1.4]),
    "widest_r": ("wider_r", 0.3, [2.0, 2.8]),
    "wider_r_clean": ("full", 0.0, [0.3, 0.5, 0.7, 1.0]),
}


@pytest.mark.parametrize("mode", FOLLOW_UPS)
def test_each_follow_up_reuses_the_runs_of_the_one_before(mode):
    before, noise, new_r = FOLLOW_UPS[mode]
    base, scale = plan.SCALES[before], plan.SCALES[mode]
    assert scale.parts == ("icml2022",) and scale.label_noise == (noise,)
    if mode == "widest_r":
        assert scale.r_grid[: len(base.r_grid)] == base.r_grid
    reused = {s.directory(Path("x")) for s in plan.tuning_runs(base)}
    new = [s for s in plan.tuning_runs(scale) if s.directory(Path("x")) not in reused]
    assert sorted({s.r for s in new}) == new_r and len(new) == 4 * len(new_r)


def test_tuning_table_lists_each_r_per_variant():
    tuning = [
        {"group": "noise0.3", "variant": "sam", "r": 0.2, "error_rate": 0.106},
        {"group": "noise0.3", "variant": "sam", "r": 0.5, "error_rate": 0.036},
        {"group": "noise0.3", "variant": "sam", "r": 0.5, "error_rate": 0.040},
        {"group": "noise0.3", "variant": "gnp", "r": 0.2, "error_rate": 1.0},
    ]
    table = study_report.tuning_table({"tuning": tuning}, {"sam": "SAM", "gnp": "GNP"})
    assert table.splitlines() == [
        "| group | variant | r = 0.2 | r = 0.5 |",
        "|---|---|---|---|",
        "| noise0.3 | SAM | 10.60 | 3.80 |",
        "| noise0.3 | GNP | 100.00 | — |",
    ]
