"""Every config value that cannot mean anything is refused up front, naming the key."""

import math
from pathlib import Path

import pytest

from gnp.configs import default
from gnp.train.config import RANGES, validate_config


def config_with(key, value):
    config = default.get_config()
    config.update_from_flattened_dict({key: value})
    return config


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("gnp.r", -0.05, r"gnp.r must be a finite number ≥ 0 \(.*\), got -0.05"),
        ("gnp.alpha", -1.0, r"gnp.alpha must be a finite number ≥ 0 \(.*\), got -1.0"),
        ("base_lr", -0.1, r"base_lr must be at least 0"),
        ("label_smoothing", 1.0, r"label_smoothing must be in \[0, 1\), got 1.0"),
        ("label_smoothing", -0.1, r"label_smoothing must be in \[0, 1\)"),
        ("l2_regularization", -5e-4, r"l2_regularization must be at least 0"),
        ("dataset.cutout_size", -8, r"dataset.cutout_size must be at least 0, got -8"),
        ("gradient_clipping", -1.0, r"gradient_clipping must be at least 0"),
        ("gnp.eta", -0.01, r"gnp.eta must be a finite number ≥ 0"),
        ("dataset.num_workers", -2, r"dataset.num_workers must be at least -1, got -2"),
        ("dataset.image_size", -32, r"dataset.image_size must be at least 0"),
        ("hybrid_config.p", 1.5, r"hybrid_config.p must be in \[0, 1\], got 1.5"),
        ("dataset.label_noise", 2.0, r"dataset.label_noise must be in \[0, 1\]"),
        ("batch_size", 0, r"batch_size must be at least 1"),
        ("gnp.r", math.nan, r"gnp.r is nan; it must be a finite number"),
        ("base_lr", math.inf, r"base_lr is inf; it must be a finite number"),
        ("gnp.alpha", -math.inf, r"gnp.alpha is -inf"),
        ("stepped_lr_boundaries", (0.3, math.nan), r"stepped_lr_boundaries is \(0.3, nan\)"),
        ("model.sync_batch_norm", None, r"model.sync_batch_norm must be True or False, got None"),
        ("shard_params", None, r"shard_params must be True or False, got None"),
    ],
)
def test_meaningless_values_are_refused_naming_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        validate_config(config_with(key, value))


@pytest.mark.parametrize(
    "key,value",
    [("gnp.alpha", 1.5), ("gnp.r", 0.0), ("label_smoothing", 0.0), ("dataset.num_workers", -1)],
)
def test_values_at_the_edges_of_their_range_pass(key, value):
    assert lookup(validate_config(config_with(key, value)), key) == value


def lookup(config, key):
    for part in key.split("."):
        config = config[part]  # a KeyError for a key the config lacks
    return config


def test_every_ranged_key_exists_in_the_base_config():
    config = default.get_config()
    for key in RANGES:
        lookup(config, key)


def test_sync_batch_norm_defaults_off_and_is_the_only_way_to_set_the_batch_norm_axis():
    assert validate_config(default.get_config()).model.sync_batch_norm is False
    assert validate_config(config_with("model.sync_batch_norm", True)).model.sync_batch_norm
    old = default.get_config()  # a config.json written before these keys existed
    del old.model["sync_batch_norm"], old["shard_params"]
    assert validate_config(old).model.sync_batch_norm is False
    assert validate_config(old).shard_params is False
    config = default.get_config()
    config.model.model_params.batch_norm_axis_name = "data"
    with pytest.raises(ValueError, match=r"use model\.sync_batch_norm=True"):
        validate_config(config)


def test_a_typo_in_a_config_file_is_refused_with_the_key_it_meant(tmp_path):
    # The case: `c.gnp.alfa = 0.5` in a config file trained at α = 0.8 silently.
    path = tmp_path / "typo.py"
    path.write_text(
        "from gnp.configs import default\n\n"
        "def get_config():\n"
        "    c = default.get_config()\n"
        "    c.gnp.alfa = 0.5\n"
        "    return c\n"
    )
    from gnp.train.config import load_config_file

    with pytest.raises(ValueError, match=r"unknown config key 'gnp.alfa'.*did you mean 'alpha'"):
        validate_config(load_config_file(str(path)))


def test_a_models_fields_and_the_schedule_arguments_are_the_users_own():
    config = default.get_config()
    config.hybrid_config.warm_steps = 10  # a keyword of the user's own schedule_function
    config.model.model_params.width = 8
    validate_config(config)
    config.top_level_typo = 1
    with pytest.raises(ValueError, match=r"unknown config key 'top_level_typo'"):
        validate_config(config)


DEFAULT_ARGV = ["gnp-train", "--config=gnp/configs/default.py"]


def test_a_models_field_is_set_from_the_command_line_as_its_type():
    from gnp.train.build import build_model
    from gnp.train.config import read_config

    config = validate_config(read_config([*DEFAULT_ARGV, "--config.model.model_params.width=8"]))
    assert config.model.model_params.width == 8
    assert build_model(config, num_classes=10).width == 8


@pytest.mark.parametrize(
    "flag,message",
    [
        ("widht=8", r"widht is not a field of SmallCNN \(did you mean 'width'\?\); its fields"),
        ("width=8.5", r"width=8.5: the field needs an integer \(its default is 32\)"),
    ],
)
def test_a_misspelt_or_mistyped_model_field_is_the_users_error(flag, message):
    from gnp.train.config import read_config

    with pytest.raises(ValueError, match=message):
        validate_config(read_config([*DEFAULT_ARGV, f"--config.model.model_params.{flag}"]))


def test_an_unknown_model_name_suggests_the_registered_one_case_aside():
    with pytest.raises(ValueError, match=r"'resnet18' \(did you mean 'ResNet18'\?\); choose one"):
        validate_config(config_with("model.model_name", "resnet18"))


@pytest.mark.parametrize(
    "changes,line",
    [
        ({}, "r = 0.05, α = 0.8 (λ = α·r = 0.04)"),
        (
            {"gnp.r": 0.5, "gnp.alpha": 1.0, "gnp.norm_perturbations": True},
            "r = 0.5, α = 1.0 (λ = α·r = 0.5), gnp.norm_perturbations: True",
        ),
        ({"gnp.alpha": 0.0}, "plain (r = 0 or α = 0: one pass, no penalty)"),
    ],
)
def test_the_dry_runs_gradient_line_names_r_alpha_and_each_changed_option(changes, line):
    from gnp.main import main

    config = default.get_config()
    config.update_from_flattened_dict(changes)
    assert main.describe_gradient(validate_config(config)) == line


def test_the_parameter_counts_docs_training_md_gives_for_model_params_width():
    import jax
    import jax.numpy as jnp

    from gnp.train.build import build_model
    from gnp.train.config import read_config

    def count(argv):
        model = build_model(validate_config(read_config([*DEFAULT_ARGV, *argv])), num_classes=10)
        images = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)
        shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), images)
        return sum(x.size for x in jax.tree.leaves(shapes["params"]))

    small, default_count = count(["--config.model.model_params.width=8"]), count([])
    text = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    assert f"SmallCNN {small:,} parameters instead of\n  {default_count:,}" in text
