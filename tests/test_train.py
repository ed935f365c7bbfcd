"""The training loop end to end on the digits set: metrics, eval, resume, NaN, warmups."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from gnp.configs import default
from gnp.train import build, loop
from gnp.train.checkpoint import Checkpoints
from gnp.train.loop import train_and_evaluate
from gnp.train.stops import NonFiniteError, Preempted

pytestmark = pytest.mark.compile_bound  # conftest: its compiles skip XLA's expensive passes


def tiny_config(**overrides):
    config = default.get_config()
    config.total_epochs = 3
    config.warmup_epochs = 1
    config.batch_size = 256
    config.evaluate_every_n_epochs = 1
    config.save_ckpt_every_n_epochs = 1
    config.log_every_n_steps = 2
    config.update_from_flattened_dict(overrides)
    return config


def final_params(working_dir):
    state, _ = Checkpoints(os.path.join(working_dir, "checkpoints")).load_latest()
    return state["params"]


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def read_jsonl(working_dir):
    with open(os.path.join(working_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_run_writes_every_output(tmp_path, capsys):
    record = train_and_evaluate(tiny_config(), str(tmp_path))
    # Off a terminal (as here) progress is plain lines: no bar's \r fragments; the compile is
    # announced before the first step and each epoch's line ends with the whole run's ETA.
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    lines = out.splitlines()
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    assert len(epochs) == 3 and lines[epochs[-1]].endswith("eta 0:00:00")
    assert all(" eta " in lines[i] for i in epochs)
    assert any(line.startswith("compiling") for line in lines[: epochs[0]])
    # A line every log_every_n_steps = 2 steps of each 5-step epoch (1437 // 256), at the
    # epoch's steps 2 and 4; the first one's rate leaves out the step that compiled.
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split(":")[0] for line in steps[:3]] == [
        "step 2 (epoch 1)",
        "step 4 (epoch 1)",
        "step 7 (epoch 2)",
    ]
    assert len(steps) == 6 and all("loss=" in line and "img_s=" in line for line in steps)
    # The same steps' metrics are recorded (TensorBoard's step/ points come from them; the
    # resume test of test_run_safety reads those back from the event files).
    logged = [json.loads(line) for line in (tmp_path / "step_metrics.jsonl").open()]
    assert [(m["epoch"], m["step"]) for m in logged] == [
        (1, 2),
        (1, 4),
        (2, 7),
        (2, 9),
        (3, 12),
        (3, 14),
    ]
    assert all({"train_loss", "learning_rate", "sharpness"} <= set(m) for m in logged)
    lines = read_jsonl(tmp_path)
    # Compilation is timed apart: only the first epoch compiles the train step.
    assert lines[0]["compile_seconds"] > 0
    assert [m["compile_seconds"] for m in lines[1:]] == [0.0, 0.0]
    assert all(m["images_per_second"] > 0 for m in lines)
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    for m in lines:
        for key in (
            "epoch",
            "step",
            "train_loss",
            "train_error_rate",
            "learning_rate",
            "r",
            "alpha",
            "gradient_norm",
            "clean_gradient_norm",
            "update_norm",
            "param_norm",
            "sharpness",
            "gradient_cosine",
            "perturbed_gradient_norm",
            "test_loss",
            "test_error_rate",
        ):
            assert key in m
        assert 0 <= m["train_error_rate"] <= 1 and 0 <= m["test_error_rate"] <= 1
        # A GNP run (r = 0.05, α = 0.8): L rises along the ascent direction, g turns a little.
        assert 0 < m["sharpness"] < 0.05 * m["clean_gradient_norm"] * 1.5
        assert 0.5 < m["gradient_cosine"] <= 1
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert record["test_samples"] == 360
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["model_name"] == "SmallCNN"
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "tensorboard"))
    assert not (tmp_path / "run.lock").exists()  # a run that ended names no process


@pytest.mark.slow
def test_evaluation_counts_every_test_sample_once(tmp_path):
    # 360 test images, an eval batch of 52 (a multiple of 4 devices that does not divide 360).
    record = train_and_evaluate(tiny_config(total_epochs=1, eval_batch_size=52), str(tmp_path))
    assert record["test_samples"] == 360
    # The error rate equals a direct computation over the whole test set.
    state, _ = Checkpoints(str(tmp_path / "checkpoints")).load_latest()
    config = loop.validate_config(tiny_config())
    pipeline = loop.build_input_pipeline(config)
    model = build.build_model(config, 10)
    images = np.concatenate([b["image"][b["mask"]] for b in pipeline.eval_batches()])
    labels = np.concatenate([b["label"][b["mask"]] for b in pipeline.eval_batches()])
    logits = model.apply(
        {"params": state["params"], "batch_stats": state["batch_stats"]}, images, train=False
    )
    assert record["test_error_rate"] == pytest.approx(np.mean(np.argmax(logits, -1) != labels))


@pytest.mark.slow
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, capsys):
    config = tiny_config(total_epochs=4, save_ckpt_every_n_epochs=2)
    train_and_evaluate(config, str(tmp_path / "straight"))

    real_evaluate, calls = loop.evaluate, []

    def crash_in_epoch_three(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed after epoch 3's training, before its checkpoint
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", crash_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(config, str(tmp_path / "resumed"))
    monkeypatch.setattr(loop, "evaluate", real_evaluate)
    capsys.readouterr()
    train_and_evaluate(config, str(tmp_path / "resumed"))
    # From the checkpoint of epoch 2's end (5 steps an epoch): epoch 3 begins at step 10.
    assert "resuming at step 10 (epoch 3)\n" in capsys.readouterr().out

    assert_trees_equal(final_params(tmp_path / "resumed"), final_params(tmp_path / "straight"))
    straight, resumed = read_jsonl(tmp_path / "straight"), read_jsonl(tmp_path / "resumed")
    assert [m["epoch"] for m in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight, resumed, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["test_loss"] == b["test_loss"]


def test_finished_run_says_so_and_exits(tmp_path, capsys):
    config = tiny_config(total_epochs=1)
    first = train_and_evaluate(config, str(tmp_path))
    capsys.readouterr()
    second = train_and_evaluate(config, str(tmp_path))
    assert "finished already" in capsys.readouterr().out
    assert second["test_loss"] == first["test_loss"]


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(total_epochs=3)
    steps_per_epoch = 1437 // 256
    real_shard, calls = loop.shard_batch, []

    def poison_in_epoch_two(batch, mesh):
        if "mask" not in batch:
            calls.append(1)
            if len(calls) == steps_per_epoch + 2:  # the third step of epoch 2
                batch = dict(batch, image=np.full_like(batch["image"], np.nan))
        return real_shard(batch, mesh)

    monkeypatch.setattr(loop, "shard_batch", poison_in_epoch_two)
    with pytest.raises(NonFiniteError) as error:
        train_and_evaluate(config, str(tmp_path))
    message = str(error.value)
    assert f"at step {steps_per_epoch + 1}" in message
    assert str(tmp_path / "checkpoints" / str(steps_per_epoch)) in message
    checkpoints = Checkpoints(str(tmp_path / "checkpoints"))
    assert checkpoints.latest_step() == steps_per_epoch
    state, progress = checkpoints.load_latest()
    assert progress["epoch"] == 1
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))


@pytest.mark.slow
def test_zero_warmup_trains_plain_during_warmup(tmp_path):
    lines = read_jsonl_after(
        tiny_config(gr_warmup_strategy="zero", warmup_epochs=2, evaluate_every_n_epochs=3), tmp_path
    )
    assert [m["gnp_step_fraction"] for m in lines] == [0.0, 0.0, 1.0]
    assert [(m["r"], m["alpha"]) for m in lines] == [(0.0, 0.0), (0.0, 0.0), (0.05, 0.8)]


def read_jsonl_after(config, working_dir):
    train_and_evaluate(config, str(working_dir))
    return read_jsonl(working_dir)


@pytest.mark.slow
def test_hybrid_p_zero_is_plain_training_and_p_one_is_gnp(tmp_path):
    base = dict(total_epochs=2, evaluate_every_n_epochs=2, save_ckpt_every_n_epochs=2)
    train_and_evaluate(tiny_config(**base, **{"gnp.alpha": 0.0}), str(tmp_path / "plain"))
    train_and_evaluate(tiny_config(**base), str(tmp_path / "gnp"))
    hybrid = {"use_hybrid_training": True}
    train_and_evaluate(
        tiny_config(**base, **hybrid, **{"hybrid_config.p": 0.0}), str(tmp_path / "p0")
    )
    train_and_evaluate(
        tiny_config(**base, **hybrid, **{"hybrid_config.p": 1.0}), str(tmp_path / "p1")
    )
    assert_trees_equal(final_params(tmp_path / "p0"), final_params(tmp_path / "plain"))
    assert_trees_equal(final_params(tmp_path / "p1"), final_params(tmp_path / "gnp"))
    assert [m["probability"] for m in read_jsonl(tmp_path / "p0")] == [0.0, 0.0]
    assert "probability" not in read_jsonl(tmp_path / "gnp")[0]
    diff = jax.tree.map(
        lambda a, b: np.max(np.abs(a - b)),
        final_params(tmp_path / "p0"),
        final_params(tmp_path / "p1"),
    )
    assert max(jax.tree.leaves(diff)) > 1e-4  # GNP really changes the result


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("opt.opt_type", "LBFGS", "Momentum"),
        ("lr_schedule_type", "linear", "cosine"),
        ("gr_warmup_strategy", "linear", "lambda"),
        ("model.model_name", "ResNet7", "SmallCNN"),
        ("dataset.dataset_name", "mnist", "digits"),
        ("batch_size", 130, "divide by the 4 devices"),
        ("model.dtype", "float16", "bfloat16"),
        ("gnp.r", -0.05, "gnp.r must be a finite number ≥ 0"),
        ("gnp.asam_leaves", "biases", "weights"),
    ],
)
def test_config_errors_name_the_valid_choices(tmp_path, key, value, match):
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(tiny_config(**{key: value}), str(tmp_path))


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_and_the_resumed_run_equals_the_uninterrupted(
    tmp_path, monkeypatch
):
    config = tiny_config(total_epochs=3, save_ckpt_every_n_epochs=3)
    train_and_evaluate(config, str(tmp_path / "straight"))

    real_shard, calls = loop.shard_batch, []

    def preempt_in_epoch_two(batch, mesh):
        if "mask" not in batch:
            calls.append(1)
            if len(calls) == 7:  # SIGTERM arrives while step 6 (epoch 2's second) runs
                os.kill(os.getpid(), signal.SIGTERM)
        return real_shard(batch, mesh)

    monkeypatch.setattr(loop, "shard_batch", preempt_in_epoch_two)
    with pytest.raises(Preempted, match="stopped at step 7"):
        train_and_evaluate(config, str(tmp_path / "preempted"))
    assert Checkpoints(str(tmp_path / "preempted" / "checkpoints")).latest_step() == 7
    monkeypatch.setattr(loop, "shard_batch", real_shard)
    train_and_evaluate(config, str(tmp_path / "preempted"))
    assert_trees_equal(final_params(tmp_path / "preempted"), final_params(tmp_path / "straight"))


def test_stop_and_resume_name_a_step_and_its_epoch_alike():
    # Stopped before step 98 of 11-step epochs (8 done), the resume begins at step 98: both
    # say "step 98 (epoch 9)".
    assert loop.position(98, 11) == "step 98 (epoch 9)"
    assert loop.position(88, 11) == "step 88 (epoch 9)"  # epoch 9's first step


def test_eta_uses_the_median_epoch_after_the_compiling_one():
    from gnp.train.loop import _clock, _remaining_seconds

    assert _remaining_seconds([30.0, 10.0, 12.0, 11.0], 5) == 55.0  # median of 10, 12, 11
    assert _remaining_seconds([30.0], 2) == 60.0  # only the first epoch measured so far
    assert _clock(3725.4) == "1:02:05" and _clock(0.0) == "0:00:00"


def test_throughput_counts_only_the_steps_that_did_not_compile():
    from gnp.train.loop import throughput

    assert throughput(batch_size=128, steps=4, seconds=2.0) == 256.0
    assert throughput(batch_size=128, steps=0, seconds=0.0) is None  # every step compiled


def test_curves_title_gives_r_and_alpha_and_the_range_of_a_warmup():
    from gnp.analysis.curves import _coefficients_title

    warmup = [{"r": 0.0, "alpha": 0.8}, {"r": 0.025, "alpha": 0.8}, {"r": 0.05, "alpha": 0.8}]
    assert _coefficients_title(warmup) == "r = 0.05 (from 0), α = 0.8"
    assert _coefficients_title([{"epoch": 1}]) == "curves"
