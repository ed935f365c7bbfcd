"""``gnp.r_schedule``: r constant (as before) or proportional to the learning rate (GSAM's ρ_t),
against the formula computed by hand in float64, alone, under the r warmup, through the config
checks, in a short training run's logs, and on resuming a run that predates the keys."""

import json
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import read_jsonl, tiny_config

from gnp.configs import default
from gnp.gr_schedule import GRSchedule
from gnp.main.main import describe_failure
from gnp.optim import learning_rate_schedule
from gnp.train import build, loop, workdir
from gnp.train.config import validate_config
from gnp.train.loop import train_and_evaluate
from gnp.train.workdir import ConfigChanged

R, ALPHA, R_MIN = 0.1, 0.8, 0.02
BASE_LR, STEPS_PER_EPOCH, WARMUP_EPOCHS, EPOCHS = 0.4, 10, 1, 4


def cosine_with_warmup(step, *, base=BASE_LR, warmup=10, total=40):
    """The learning rate by hand: linear from 0 over ``warmup`` steps, then cosine to 0."""
    if step < warmup:
        return base * step / warmup
    return (
        base * 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / (total - warmup)))
    )


def gsam_r(step, *, r=R, r_min=R_MIN, **schedule):
    """GSAM's ρ_t in float64: lr_max and lr_min over the run's steps 0 … total − 1."""
    rates = np.array([cosine_with_warmup(t, **schedule) for t in range(schedule.get("total", 40))])
    lr_min, lr_max = rates.min(), rates.max()
    return r_min + (r - r_min) * (cosine_with_warmup(step, **schedule) - lr_min) / (lr_max - lr_min)


def lr_config(**overrides):
    config = default.get_config()
    config.update_from_flattened_dict(
        {
            "base_lr": BASE_LR,
            "total_epochs": EPOCHS,
            "warmup_epochs": WARMUP_EPOCHS,
            "lr_schedule_type": "cosine",
            "gnp.r": R,
            "gnp.alpha": ALPHA,
            "gnp.r_schedule": "lr_proportional",
            "gnp.r_min": R_MIN,
            **overrides,
        }
    )
    return validate_config(config)


def proportional(**fields):
    config = lr_config()
    return GRSchedule(
        r=R,
        alpha=ALPHA,
        r_schedule="lr_proportional",
        r_min=fields.pop("r_min", R_MIN),
        learning_rate=learning_rate_schedule(config, STEPS_PER_EPOCH),
        total_steps=EPOCHS * STEPS_PER_EPOCH,
        **fields,
    )


def test_the_hand_schedule_is_the_optimizers():
    """The truth below rests on this: the run's learning rate is the hand-written one."""
    schedule = learning_rate_schedule(lr_config(), STEPS_PER_EPOCH)
    for step in range(40):
        assert float(schedule(step)) == pytest.approx(cosine_with_warmup(step), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("step", [0, 1, 5, 9, 10, 11, 25, 39, 60])
def test_r_follows_the_learning_rate_from_r_min_to_r(step):
    gr = proportional()
    r, alpha = gr.values(step)
    assert alpha == ALPHA
    assert float(r) == pytest.approx(gsam_r(min(step, 40)), rel=1e-6)
    traced_r = jax.jit(lambda s: gr.values(s)[0])(jnp.int32(step))  # as in the compiled step
    assert float(traced_r) == pytest.approx(gsam_r(min(step, 40)), rel=1e-6)


def test_r_min_at_the_smallest_rate_and_r_at_the_peak():
    gr = proportional()
    assert float(gr.values(0)[0]) == pytest.approx(R_MIN, rel=1e-6)  # lr = 0 at the first step
    assert float(gr.values(10)[0]) == pytest.approx(R, rel=1e-6)  # the warmup's end: base_lr
    end = gr.values(39)[0]  # cosine's last step, not yet at 0: just above r_min
    assert R_MIN < float(end) < R_MIN + 0.001
    assert float(proportional(r_min=0.0).values(0)[0]) == 0.0


def test_a_constant_learning_rate_keeps_r():
    config = lr_config(lr_schedule_type="constant", warmup_epochs=0)
    gr = build.gr_schedule(config, STEPS_PER_EPOCH)
    assert gr.lr_range == pytest.approx((BASE_LR, BASE_LR))
    assert gr.values(7) == (R, ALPHA) and type(gr.values(7)[0]) is float


@pytest.mark.parametrize("step", [0, 3, 5, 9, 10, 20, 39])
def test_the_r_warmup_ramps_the_scheduled_r(step):
    gr = proportional(strategy="r", warmup_steps=10)
    r, alpha = gr.values(step)
    assert alpha == ALPHA
    assert float(r) == pytest.approx(gsam_r(step) * min(step / 10, 1.0), rel=1e-6, abs=1e-12)
    # λ warmup ramps α and leaves the scheduled r as it is; zero warmup: plain steps, then r_t.
    gr = proportional(strategy="lambda", warmup_steps=10)
    r, alpha = gr.values(step)
    assert float(r) == pytest.approx(gsam_r(step), rel=1e-6)
    assert float(alpha) == pytest.approx(ALPHA * min(step / 10, 1.0), rel=1e-6)
    gr = proportional(strategy="zero", warmup_steps=10)
    assert gr.is_gnp_step(step) == (step >= 10)


def test_constant_is_todays_schedule_with_concrete_floats():
    """The default builds the same GRSchedule as before the keys, whose values are the
    configured Python floats: the step compiles with constants, as before."""
    config = validate_config(default.get_config())
    assert config.gnp.r_schedule == "constant" and config.gnp.r_min == 0.0
    gr = build.gr_schedule(config, STEPS_PER_EPOCH)
    assert gr == GRSchedule(r=0.05, alpha=0.8, warmup_steps=20, seed=config.seeds)
    assert gr.learning_rate is None and gr.lr_range is None
    for step in (0, 5, 1000):
        r, alpha = gr.values(step)
        assert (r, alpha) == (0.05, 0.8) and type(r) is float and type(alpha) is float
    warm = GRSchedule(r=0.1, alpha=0.8, strategy="lambda", warmup_steps=10)
    r, alpha = warm.values(5)
    assert r == 0.1 and type(r) is float and float(alpha) == pytest.approx(0.4)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"gnp.r_min": -0.01}, "gnp.r_min must lie in [0, gnp.r] = [0, 0.05], got -0.01"),
        ({"gnp.r_min": 0.06}, "gnp.r_min must lie in [0, gnp.r] = [0, 0.05], got 0.06"),
        (
            {"gnp.r_schedule": "lr_proportionl"},
            "unknown gnp.r_schedule 'lr_proportionl' (did you mean 'lr_proportional'?)",
        ),
    ],
)
def test_a_bad_r_schedule_or_r_min_is_a_one_line_error_naming_the_key(changes, message):
    config = default.get_config()
    config.update_from_flattened_dict({"gnp.r_schedule": "lr_proportional", **changes})
    with pytest.raises(ValueError) as caught:
        validate_config(config)
    code, line = describe_failure(caught.value)
    assert code == 1 and "\n" not in line and line.startswith("error: ")
    assert message in line
    if "r_min" in message:
        assert "set gnp.r_min between 0 and gnp.r" in line


def test_r_min_at_its_edges_passes():
    for r_min in (0.0, 0.05):
        config = default.get_config()
        config.update_from_flattened_dict({"gnp.r_schedule": "lr_proportional", "gnp.r_min": r_min})
        validate_config(config)


def tiny_gsam_r(step, *, r=0.05, r_min=0.01):
    """tiny_config's run by hand: 5 steps an epoch, 2 epochs, warmup 1 epoch, cosine, base 0.1;
    lr_min = 0 (step 0) and lr_max = 0.1 (step 5)."""
    lr = cosine_with_warmup(step, base=0.1, warmup=5, total=10)
    return r_min + (r - r_min) * lr / 0.1, lr


@pytest.mark.slow  # a whole training run: about 11 s
def test_the_logged_r_of_a_run_follows_the_learning_rate(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "plot_training_curves", lambda *args: None)  # not tested here
    config = tiny_config(
        total_epochs=2,
        save_ckpt_every_n_epochs=2,
        gr_warmup_strategy="r",
        **{"gnp.r_schedule": "lr_proportional", "gnp.r_min": 0.01},
    )
    train_and_evaluate(config, str(tmp_path))
    steps = [json.loads(line) for line in (tmp_path / "step_metrics.jsonl").open()]
    assert [s["step"] for s in steps] == [2, 4, 7, 9]
    for line in steps:
        taken = line["step"] - 1  # the line after k steps holds step k − 1's metrics
        r, lr = tiny_gsam_r(taken)
        ramp = min(taken / 5, 1.0)  # the r warmup over the first epoch's 5 steps
        assert line["learning_rate"] == pytest.approx(lr, rel=1e-5)
        assert line["r"] == pytest.approx(r * ramp, rel=1e-5)
        assert line["alpha"] == pytest.approx(0.8)
    epochs = [line for line in read_jsonl(tmp_path) if "train_loss" in line]
    # An epoch logs the r of its last GNP step: steps 4 and 9.
    assert [e["r"] for e in epochs] == pytest.approx(
        [tiny_gsam_r(4)[0] * 0.8, tiny_gsam_r(9)[0]], rel=1e-5
    )


# --- Runs from before the keys ---------------------------------------------------------

OLD_RUN = Path(__file__).parent / "fixtures" / "old_runs" / "main_42edb18"


def test_a_run_from_before_the_keys_trained_with_constant_r(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    saved = json.loads((run / "config.json").read_text())
    assert "r_schedule" not in saved["gnp"] and "r_min" not in saved["gnp"]
    current = validate_config(tiny_config(total_epochs=2, save_ckpt_every_n_epochs=2)).to_dict()
    assert workdir.check_resume(str(run), current, epochs_done=2) == {}
    changed = validate_config(
        tiny_config(
            total_epochs=2, save_ckpt_every_n_epochs=2, **{"gnp.r_schedule": "lr_proportional"}
        )
    ).to_dict()
    with pytest.raises(ConfigChanged) as caught:
        workdir.check_resume(str(run), changed, epochs_done=2)
    assert (
        "gnp.r_schedule: 'constant' (the default: not in its config.json) -> 'lr_proportional'"
        in str(caught.value)
    )


def test_a_run_from_before_the_keys_resumes_with_constant_r(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loop, "plot_training_curves", lambda *args: None)
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    config = tiny_config(total_epochs=3, save_ckpt_every_n_epochs=2)
    train_and_evaluate(config, str(run), allow_config_change=["total_epochs"])
    assert "resuming at step 10 (epoch 3)" in capsys.readouterr().out
    epochs = [line for line in read_jsonl(run) if "train_loss" in line]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[2]["r"] == pytest.approx(0.05) and epochs[2]["alpha"] == pytest.approx(0.8)


def test_the_dry_run_names_the_r_schedule():
    from gnp.main import main

    config = default.get_config()
    config.update_from_flattened_dict({"gnp.r_schedule": "lr_proportional", "gnp.r_min": 0.01})
    assert main.describe_gradient(validate_config(config)) == (
        "r = 0.05, α = 0.8 (λ = α·r = 0.04), r ∝ learning rate (GSAM), from gnp.r_min = 0.01 to r"
    )
