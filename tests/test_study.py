"""``python -m gnp.study`` on a tiny setting: its tables are the runs' own metrics."""

import json

import jax
import numpy as np
import pytest

from gnp import analyze, study
from gnp.train.checkpoint import Checkpoints


def last_line(working_dir):
    with open(f"{working_dir}/metrics.jsonl") as f:
        return json.loads(f.readlines()[-1])


def tiny_argv(out, variants):
    """One seed, one epoch, clean labels: two SmallCNN runs of a few seconds each."""
    common = ["--seeds=1", "--epochs=1", "--only=icml2022", "--label_noise=0"]
    return [*common, f"--out={out}", f"--variants={variants}"]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return out, study.main(tiny_argv(out, "SGD,SAM"))


def test_results_json_structure(tiny_study):
    out, results = tiny_study
    assert json.loads((out / "results.json").read_text()) == results
    assert "icml2024" not in results
    part = results["icml2022"]
    assert part["seeds"] == [0] and part["wall_seconds"] > 0
    assert part["epochs"] == 1
    assert [v["label"] for v in part["variants"]] == ["SGD", "SAM"]
    assert [v["overrides"]["gnp.alpha"] for v in part["variants"]] == [0.0, 1.0]
    for variant in part["variants"]:
        assert set(variant["test_error_rate"]) == {"mean", "std", "n"}
        assert [run["seed"] for run in variant["runs"]] == [0]
    assert (out / "icml2022_noise0.png").exists() and (out / "results.md").exists()
    assert "| 0% | SAM |" in (out / "results.md").read_text()


def test_numbers_come_from_the_runs_metrics(tiny_study):
    _, results = tiny_study
    for variant in results["icml2022"]["variants"]:
        (run,) = variant["runs"]
        final = last_line(run["working_dir"])
        assert final["epoch"] == 1
        for key in ("test_error_rate", "gradient_norm", "train_loss"):
            assert run[key] == final[key]
            assert variant[key]["mean"] == final[key] and variant[key]["std"] == 0.0
    sgd, sam = results["icml2022"]["variants"]
    assert last_line(sgd["runs"][0]["working_dir"])["alpha"] == 0.0
    assert last_line(sam["runs"][0]["working_dir"])["alpha"] == 1.0
    delta = sam["paired_delta_test_error_rate"]
    assert delta["baseline"] == "SGD" and sgd["paired_delta_test_error_rate"]["mean"] == 0.0
    assert delta["mean"] == sam["runs"][0]["test_error_rate"] - sgd["runs"][0]["test_error_rate"]


def test_full_gradient_norm_is_what_gnp_analyze_measures(tiny_study, tmp_path):
    _, results = tiny_study
    sam = results["icml2022"]["variants"][1]
    (run,) = sam["runs"]
    analyze.main(
        ["gradient-norm", f"--working_dir={run['working_dir']}", f"--output_dir={tmp_path}"]
    )
    measured = json.loads((tmp_path / "gradient_norm.json").read_text())
    assert measured["split"] == "train" and measured["num_examples"] == 1437
    np.testing.assert_allclose(run["full_gradient_norm"], measured["gradient_norm"], rtol=1e-6)
    assert sam["full_gradient_norm"]["mean"] == run["full_gradient_norm"]


def test_finished_runs_are_skipped(tiny_study):
    out, results = tiny_study
    metrics = out / "icml2022" / "noise0_alpha0" / "seed0" / "metrics.jsonl"
    written = metrics.stat().st_mtime_ns
    again = study.main(tiny_argv(out, "SGD"))
    assert metrics.stat().st_mtime_ns == written
    assert again["icml2022"]["variants"][0]["runs"] == results["icml2022"]["variants"][0]["runs"]


def test_second_moment_is_adams_bias_corrected_nu(tmp_path, monkeypatch):
    """Mean √ν̂ read per epoch equals the one computed by hand from the final checkpoint."""
    monkeypatch.chdir(tmp_path)  # a relative --out, which orbax alone would refuse
    results = study.main(
        ["--seeds=1", "--epochs=2", "--out=study", "--only=icml2024", "--variants=adam"]
    )
    (variant,) = results["icml2024"]["variants"]
    (run,) = variant["runs"]
    assert [row["epoch"] for row in run["second_moment"]] == [1, 2]
    assert results["icml2024"]["warmup_epochs"] == 1
    with open(f"{run['working_dir']}/metrics.jsonl") as f:
        first_epoch = json.loads(f.readline())
    assert run["warmup_test_error_rate"] == first_epoch["test_error_rate"]
    assert run["first_epoch_mean_sqrt_nu"] == run["second_moment"][0]["mean_sqrt_nu"]
    assert "| Adam mean √ν̂ after epoch 1 |" in results["icml2024"]["table"]
    state, _ = Checkpoints(f"{run['working_dir']}/checkpoints").load_latest()
    adam = state["opt_state"][0]
    correction = 1 - 0.999 ** int(adam["count"])
    nu = np.concatenate([np.ravel(v) for v in jax.tree.leaves(adam["nu"])])
    np.testing.assert_allclose(
        run["second_moment"][-1]["mean_sqrt_nu"], np.sqrt(nu / correction).mean(), rtol=1e-6
    )
