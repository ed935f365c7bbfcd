"""curves.png and ``gnp-analyze curves``: what the figure says about a run, on hand-written
run directories (records, config, start history) whose answers are known."""

import json

import pytest

from gnp import analyze
from gnp.analysis import curves

STEPS_PER_EPOCH = 5


def record(epoch, **extra):
    return {
        "epoch": epoch,
        "step": epoch * STEPS_PER_EPOCH,
        "train_loss": 2.0 / epoch,
        "train_error_rate": 0.5 / epoch,
        "gradient_norm": 1.0 / epoch,
        "clean_gradient_norm": 1.1 / epoch,
        "r": 0.05,
        "alpha": 0.8,
        "test_loss": 2.1 / epoch,
        "test_error_rate": 0.6 / epoch,
        **extra,
    }


def write_run(directory, records, *, clipping=0.0, starts=(0,), extended_at=None):
    """A working directory; ``starts`` are the start steps of config_history.jsonl, the one
    ``extended_at`` changing total_epochs 3 → 4."""
    directory.mkdir()
    config = {
        "model": {"model_name": "SmallCNN"},
        "dataset": {"dataset_name": "digits"},
        "gradient_clipping": clipping,
    }
    (directory / "config.json").write_text(json.dumps(config))
    with open(directory / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with open(directory / "config_history.jsonl", "w") as f:
        for step in starts:
            changes = {"total_epochs": {"from": 3, "to": 4}} if step == extended_at else {}
            f.write(json.dumps({"start_step": step, "changes": changes}) + "\n")
    return directory


def test_the_title_names_run_model_data_set_r_and_alpha(tmp_path):
    run = curves.read_run_records(write_run(tmp_path / "gnp_run", [record(1), record(2)]))
    assert curves._title(run) == "gnp_run: SmallCNN on digits, r = 0.05, α = 0.8"


def test_the_legend_says_after_clipping_only_when_clipping_is_on():
    assert curves.clipping_label({"gradient_clipping": 0.0}) == "to the optimizer (no clipping)"
    assert curves.clipping_label({"gradient_clipping": 5.0}) == (
        "to the optimizer (after clipping at 5)"
    )


def test_resumes_and_extensions_are_placed_and_a_partial_epoch_is_known(tmp_path):
    """Started at 0, resumed at step 7 (inside epoch 2: its means cover steps 8-10 only),
    extended at step 15 (the end of epoch 3)."""
    records = [record(e) for e in (1, 2, 3, 4)]
    run = curves.read_run_records(
        write_run(tmp_path / "run", records, starts=(0, 7, 15), extended_at=15)
    )
    assert curves.steps_per_epoch(run.records) == STEPS_PER_EPOCH
    assert curves.resumes(run) == [(1.4, "resumed"), (3.0, "extended (3 → 4 epochs)")]
    assert curves.partial_epochs(run) == {2}


def test_overlay_draws_each_run_with_partial_epochs_off_the_line(tmp_path, capsys):
    diagnostics = {"train_sharpness": 0.01, "train_gradient_cosine": 0.9}
    sam = write_run(
        tmp_path / "sam",
        [record(e, **diagnostics) for e in (1, 2, 3)],
        starts=(0, 7),
        clipping=1.0,
    )
    sgd = write_run(tmp_path / "sgd", [record(e) for e in (1, 2, 3)])
    out = tmp_path / "figs" / "both.png"
    analyze.main(["curves", str(sam), str(sgd), f"--output={out}"])
    assert "wrote" in capsys.readouterr().out and out.stat().st_size > 0
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert numbers["title"].splitlines() == [
        "sam: SmallCNN on digits, r = 0.05, α = 0.8",
        "sgd: SmallCNN on digits, r = 0.05, α = 0.8",
    ]
    sam_numbers = numbers["runs"]["sam"]
    # Epoch 2 was resumed at step 7: its train mean is off the line, its test error is not.
    assert sam_numbers["train_loss"]["points"] == [[1, 2.0], [3, pytest.approx(2.0 / 3)]]
    assert sam_numbers["train_loss"]["partial_epoch_points"] == [[2, 1.0]]
    assert [p[0] for p in sam_numbers["test_error_rate"]["points"]] == [1, 2, 3]
    assert sam_numbers["resumes"] == [[1.4, "resumed"]]
    # The diagnostics, logged with a train_ prefix, get their panels; ‖g₂‖ was not logged.
    assert sam_numbers["train_sharpness"]["points"][0] == [1, 0.01]
    assert "perturbed_gradient_norm" not in sam_numbers
    assert numbers["runs"]["sgd"]["sharpness"]["points"] == []


def test_curves_of_a_directory_without_metrics_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .*metrics\.jsonl does not exist"):
        analyze.main(["curves", str(tmp_path)])


def test_curves_png_of_a_run_draws_without_a_json(tmp_path):
    run = write_run(tmp_path / "run", [record(e, sharpness=0.02) for e in (1, 2)])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    png = curves.plot_training_curves(records, run / "curves.png")
    assert png.stat().st_size > 0 and not (run / "curves.json").exists()
