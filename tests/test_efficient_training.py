"""The trainer's cheaper GNP steps (gnp.reuse_period, gnp.perturbation_direction).

Their cost is counted in the compiled program (convolutions of the digits SmallCNN),
and a reuse run interrupted and resumed equals the uninterrupted one bit for bit.
"""

import re

import jax
import numpy as np
import pytest
from test_train import assert_trees_equal, read_jsonl, tiny_config

from gnp.train import build, loop
from gnp.train.checkpoint import Checkpoints
from gnp.train.config import validate_config
from gnp.train.distributed import replicate, shard_batch
from gnp.train.steps import step_kind


def compiled_convolutions(*, penalized: bool = True, full: bool = True, **gnp: object) -> int:
    """Convolutions in the compiled train step on one device (the model's 2 conv layers:
    forward, and backward for the weights and inputs), the step built as the trainer builds
    it from the config with ``gnp.KEY=VALUE``."""
    config = validate_config(tiny_config(**{f"gnp.{key}": value for key, value in gnp.items()}))
    pipeline = loop.build_input_pipeline(config)
    model = build.build_model(config, 10)
    state, optimizer, schedule = build.train_state(config, model, pipeline.info.image_shape, 5)
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    steps = build.train_steps(
        config,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        mesh=mesh,
        gr=build.gr_schedule(config, 5),
    )
    step = steps[step_kind(penalized, full)]
    batch = shard_batch(next(pipeline.train_iterator()), mesh)
    text = step.lower(replicate(state, mesh), batch["image"], batch["label"]).compile().as_text()
    return len(re.findall(r"= \S+ convolution\(", text))


@pytest.mark.slow
def test_gradient_passes_in_the_compiled_trainer_step():
    plain = compiled_convolutions(alpha=0.8, penalized=False)
    assert plain > 0
    assert compiled_convolutions(alpha=0.8) == 2 * plain
    # MSAM at α = 1: one pass, as a plain step.
    assert compiled_convolutions(alpha=1.0, perturbation_direction="momentum") == plain
    # Reuse: the full step takes 2 passes, the reuse step 1.
    assert compiled_convolutions(alpha=0.8, reuse_period=5) == 2 * plain
    assert compiled_convolutions(alpha=0.8, reuse_period=5, full=False) == plain


@pytest.mark.slow  # three 4-epoch runs, about a minute
def test_reuse_run_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    """5 steps an epoch, period 3, checkpoint at step 10: mid-period, so the resumed run
    needs the reuse state from the checkpoint to continue identically."""
    config = tiny_config(total_epochs=4, save_ckpt_every_n_epochs=2, **{"gnp.reuse_period": 3})
    loop.train_and_evaluate(config, str(tmp_path / "straight"))
    real_evaluate, calls = loop.evaluate, []

    def crash_in_epoch_three(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", crash_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        loop.train_and_evaluate(config, str(tmp_path / "resumed"))
    monkeypatch.setattr(loop, "evaluate", real_evaluate)
    loop.train_and_evaluate(config, str(tmp_path / "resumed"))

    straight = Checkpoints(str(tmp_path / "straight" / "checkpoints")).load_latest()[0]
    resumed = Checkpoints(str(tmp_path / "resumed" / "checkpoints")).load_latest()[0]
    assert int(resumed["reuse"]["count"]) == 20 and float(resumed["reuse"]["scale"]) > 0
    assert_trees_equal(resumed, straight)
    lines = read_jsonl(tmp_path / "resumed")
    assert [m["train_loss"] for m in lines] == [
        m["train_loss"] for m in read_jsonl(tmp_path / "straight")
    ]


def test_momentum_direction_run_logs_no_clean_gradient_at_alpha_one(tmp_path):
    config = tiny_config(
        total_epochs=2, **{"gnp.alpha": 1.0, "gnp.perturbation_direction": "momentum"}
    )
    loop.train_and_evaluate(config, str(tmp_path))
    lines = read_jsonl(tmp_path)
    assert all("clean_gradient_norm" not in m for m in lines)
    assert all(np.isfinite(m["gradient_norm"]) for m in lines)
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"gnp.reuse_period": 0}, "gnp.reuse_period must be an integer ≥ 1"),
        ({"gnp.orthogonal_scale": -0.5}, "gnp.orthogonal_scale must be ≥ 0"),
        ({"gnp.perturbation_direction": "adam"}, "gradient"),
        ({"gnp.reuse_period": 2, "gnp.method": "exact"}, "finite_difference"),
        ({"gnp.perturbation_direction": "momentum", "opt.opt_type": "SGD"}, "with momentum"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        validate_config(tiny_config(**overrides))
