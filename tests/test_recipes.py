"""Every shipped config resolves, builds its model and data source (``--dry_run``)."""

import logging
import os
import pathlib
import re
import shlex
import subprocess
import sys

import optax
import pytest
from absl import flags
from ml_collections import config_flags
from test_data_sources import write_cifar, write_imagefolder

from gnp.data import cifar
from gnp.main import main
from gnp.train.config import load_config_file, normalize_argv

ROOT = pathlib.Path(__file__).parents[1]
CONFIGS = sorted(
    p
    for p in (ROOT / "gnp" / "configs").glob("*.py")
    if p.stem not in ("__init__", "base", "recipes")
)
RECIPES = sorted((ROOT / "recipes").glob("*.sh"))


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar(root / "cifar", cifar.CIFAR10, as_archive=True)
    write_imagefolder(root / "imagenet")
    return root


def point_at(config, data_dirs):
    config.dataset.data_dir = str(data_dirs / "cifar")
    config.imagenet_train_dir = str(data_dirs / "imagenet" / "train")
    config.imagenet_val_dir = str(data_dirs / "imagenet" / "val")
    config.dataset.strict = False
    return config


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_dry_run_of_every_config(path, data_dirs, capsys):
    config = point_at(load_config_file(str(path)), data_dirs)
    config.batch_size = 4  # the tiny data sets written here hold few images
    main.dry_run(config)
    out = capsys.readouterr().out
    assert f"model: {config.model.model_name}" in out and "parameters" in out
    assert "optimizer: " in out and "model fields: num_classes: " in out
    assert "state: parameters and optimizer state replicated: " in out  # no recipe shards


def test_every_released_script_has_a_recipe():
    names = {p.stem for p in RECIPES}
    assert names == {
        "wideresnet-cifar",
        "wideresnet-ss-cifar",
        "pyramidnet-sd-cifar",
        "resnet-cifar",
        "resnet-imagenet",
        "vggbn-imagenet",
        "vit-cifar-basic",
        "vit-cifar-basic-grwarmup",
        "vit_cifar_heavy",
    }


def test_recipe_script_runs_with_the_released_spaced_flag(data_dirs):
    # The released scripts write `--config.opt.opt_params.weight_decay = X`; ours take it.
    env = dict(os.environ, PYTHON=sys.executable, DATA_DIR=str(data_dirs / "cifar"))
    result = subprocess.run(
        [
            str(ROOT / "recipes" / "vit-cifar-basic.sh"),
            "--dry_run",
            "--config.batch_size=4",
            "--config.opt.opt_params.weight_decay",
            "=",
            "0.05",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weight_decay: 0.05" in result.stdout
    assert "model: ViT_S16" in result.stdout
    # The optimizer and the model as built, every setting in force.
    assert "optax.adamw(b1: 0.9, b2: 0.999, eps: 1e-08, weight_decay: 0.05" in result.stdout
    assert "model fields: num_classes: 10, hidden_size: 384" in result.stdout


# --- The released scripts, resolved ---------------------------------------------------------
# Copied from the released repository (GitHub zhaoyang-0204/gnp, recipes/*.sh): each script's
# hyper-parameter block, verbatim, and its command line (the Momentum scripts share one; the
# Adam scripts add the spaced weight-decay flag, and the grwarmup script two warmup flags).

RELEASED_BLOCKS = {
    "wideresnet-cifar": """MODEL_NAME=WideResNet_28_10
INIT_SEEDS=0
SEEDS=0
BATCH_SIZE=256
BASE_LR=0.1
TOTAL_EPOCH=200
L2_REG=1e-3
DATASET_NAME=cifar10
DATASET_IMAGE_LEVEL_AUG=basic
DATASET_BATCH_LEVEL_AUG=none
OPT_TYPE=Momentum
GNP_R=0.1
GNP_ALPHA=0.8""",
    "wideresnet-ss-cifar": """MODEL_NAME=WideResNet_2_96_ShakeShake
INIT_SEEDS=0
SEEDS=0
BATCH_SIZE=256
BASE_LR=0.1
TOTAL_EPOCH=1800
L2_REG=1e-3
DATASET_NAME=cifar10
DATASET_IMAGE_LEVEL_AUG=basic
DATASET_BATCH_LEVEL_AUG=none
OPT_TYPE=Momentum
GNP_R=0.1
GNP_ALPHA=0.8""",
    "pyramidnet-sd-cifar": """MODEL_NAME=PyramidNet_272_200_ShakeDrop
INIT_SEEDS=0
SEEDS=0
BATCH_SIZE=128
BASE_LR=0.05
TOTAL_EPOCH=1800
L2_REG=5e-4
DATASET_NAME=cifar10
DATASET_IMAGE_LEVEL_AUG=autoaugment
DATASET_BATCH_LEVEL_AUG=mixcut
OPT_TYPE=Momentum
GNP_R=0.1
GNP_ALPHA=0.8""",
    "resnet-cifar": """MODEL_NAME=ResNet50
INIT_SEEDS=0
SEEDS=0
BATCH_SIZE=256
BASE_LR=0.1
TOTAL_EPOCH=200
L2_REG=1e-3
DATASET_NAME=cifar10
DATASET_IMAGE_LEVEL_AUG=basic
DATASET_BATCH_LEVEL_AUG=none
OPT_TYPE=Momentum
GNP_R=0.1
GNP_ALPHA=0.8""",
    "resnet-imagenet": """MODEL_NAME=ResNet50
INIT_SEEDS=0
SEEDS=0
BATCH_SIZE=512
BASE_LR=0.2
TOTAL_EPOCH=100
L2_REG=1e-4
DATASET_NAME=imagenet
DATASET_IMAGE_LEVEL_AUG=none
DATASET_BATCH_LEVEL_AUG=none
OPT_TYPE=Momentum
GNP_R=0.05
GNP_ALPHA=0.8""",
    "vggbn-imagenet": """MODEL_NAME=VGG16BN
INIT_SEEDS=0
SEEDS=0
BATCH_SIZE=256
BASE_LR=0.1
TOTAL_EPOCH=100
L2_REG=1e-4
DATASET_NAME=imagenet
DATASET_IMAGE_LEVEL_AUG=none
DATASET_BATCH_LEVEL_AUG=none
OPT_TYPE=Momentum
GNP_R=0.05
GNP_ALPHA=0.8""",
    "vit-cifar-basic": """MODEL_NAME=ViT_S16
INIT_SEEDS=0
SEEDS=0
BATCH_SIZE=256
BASE_LR=1e-3
TOTAL_EPOCH=300
L2_REG=0
DATASET_NAME=cifar10
DATASET_IMAGE_LEVEL_AUG=basic
DATASET_BATCH_LEVEL_AUG=none
OPT_TYPE=Adam
OPT_WEIGHT_DECAY=0.3
GNP_R=0.1
GNP_ALPHA=0.8""",
    "vit-cifar-basic-grwarmup": """MODEL_NAME=ViT_S16
INIT_SEEDS=0
SEEDS=0
BATCH_SIZE=256
BASE_LR=1e-3
TOTAL_EPOCH=300
L2_REG=0
DATASET_NAME=cifar10
DATASET_IMAGE_LEVEL_AUG=basic
DATASET_BATCH_LEVEL_AUG=none
OPT_TYPE=Adam
OPT_WEIGHT_DECAY=0.3
GNP_R=0.1
GNP_ALPHA=1.0
WARM_UP=40
GR_WARMUP_STRATEGY=zero""",
    "vit_cifar_heavy": """MODEL_NAME=ViT_S16
INIT_SEEDS=0
SEEDS=0
BATCH_SIZE=256
BASE_LR=5e-4
TOTAL_EPOCH=1200
L2_REG=0
DATASET_NAME=cifar10
DATASET_IMAGE_LEVEL_AUG=basic
DATASET_BATCH_LEVEL_AUG=mixup
OPT_TYPE=Adam
OPT_WEIGHT_DECAY=0.03
GNP_R=0.1
GNP_ALPHA=0.8""",
}

_COMMAND_HEAD = r"""python3 -m gnp.main.main --config=${TRAIN_CONFIG_DIR} \
                         --working_dir=${WORKING_DIR} \
                         --config.init_seeds=$INIT_SEEDS \
                         --config.seeds=$SEEDS \
                         --config.batch_size=$BATCH_SIZE \
                         --config.base_lr=$BASE_LR \
"""
_COMMAND_TAIL = r"""                         --config.l2_regularization=$L2_REG \
                         --config.total_epochs=$TOTAL_EPOCH \
                         --config.dataset.dataset_name=$DATASET_NAME \
                         --config.dataset.batch_level_augmentations=$DATASET_BATCH_LEVEL_AUG \
                         --config.dataset.image_level_augmentations=$DATASET_IMAGE_LEVEL_AUG \
                         --config.opt.opt_type=$OPT_TYPE \
"""
_ADAM_FLAG = r"""                         --config.opt.opt_params.weight_decay = $OPT_WEIGHT_DECAY \
"""
_WARMUP_FLAGS = r"""                         --config.warmup_epochs=$WARM_UP \
                         --config.gr_warmup_strategy=$GR_WARMUP_STRATEGY \
"""
_COMMAND_END = r"""                         --config.gnp.alpha=$GNP_ALPHA \
                         --config.gnp.r=$GNP_R \
                         --config.model.model_name=$MODEL_NAME \

"""


def released_command(name: str) -> str:
    """The released script's python command line, as its text reads."""
    block = RELEASED_BLOCKS[name]
    warmup = _WARMUP_FLAGS if "WARM_UP" in block else ""
    adam = _ADAM_FLAG if "OPT_WEIGHT_DECAY" in block else ""
    return _COMMAND_HEAD + warmup + _COMMAND_TAIL + adam + _COMMAND_END


def released_argv(name: str, config_path: str, working_dir: str) -> list[str]:
    """The command's flags after the shell's work: variables expanded, lines joined, words split."""
    variables = dict(line.split("=", 1) for line in RELEASED_BLOCKS[name].splitlines())
    variables.update(TRAIN_CONFIG_DIR=config_path, WORKING_DIR=working_dir)
    text = re.sub(r"\$\{?(\w+)\}?", lambda m: variables[m.group(1)], released_command(name))
    words = shlex.split(text.replace("\\\n", " "))
    assert words[:3] == ["python3", "-m", "gnp.main.main"]
    return words[3:]  # the interpreter and module are the test's (the module name unchanged)


def resolve(argv: list[str]):
    """The config our command line builds from ``argv`` (its own flag parsing, in process)."""
    argv = ["gnp-train", *normalize_argv(argv)]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
    flags.DEFINE_string("working_dir", None, "", flag_values=values)
    values(argv)
    return values.config


# What the released code ran for each script, read off its scripts, its base config
# (config/base_config.py), optimizer/get_optimizer.py, training/lr_schedule.py and
# ds_pipeline/ (see the test below for which value comes from where).
RELEASED = {
    name: dict(line.split("=", 1) for line in block.splitlines() if not line.startswith("#"))
    for name, block in RELEASED_BLOCKS.items()
}
RELEASED_MODEL_FIELDS = {  # models/available_models/*.py, the registered constructors
    "WideResNet_28_10": {"depth": 6 * 4 + 4, "widen_factor": 10},  # block_per_group 4
    "WideResNet_2_96_ShakeShake": {"depth": 6 * 4 + 2, "widen_factor": 6},  # 16 * 6 = 96
    "PyramidNet_272_200_ShakeDrop": {"depth": 272, "alpha": 200},
    "ResNet50": {"stage_sizes": (3, 4, 6, 3), "block_cls": "Bottleneck"},
    "VGG16BN": {"stage_sizes": (2, 2, 3, 3, 3), "batch_norm": True},
    "ViT_S16": {"hidden_size": 384, "mlp_dim": 1536, "num_heads": 6, "depth": 12},
}
TRAINING_KEYS = (
    "batch_size", "base_lr", "total_epochs", "warmup_epochs", "lr_schedule_type",
    "l2_regularization", "no_weight_decay_on_bn", "gradient_clipping", "label_smoothing",
    "seeds", "init_seeds", "gr_warmup_strategy", "use_hybrid_training", "use_test_set",
    "use_additional_skip_connections_in_wrn",
)  # fmt: skip


@pytest.mark.parametrize("name", sorted(RELEASED_BLOCKS))
def test_released_script_resolves_to_the_released_run_and_to_our_recipe(name, tmp_path):
    from gnp.optim import learning_rate_schedule, optimizer_kwargs
    from gnp.train.build import build_model

    want = RELEASED[name]
    argv = released_argv(name, str(ROOT / "gnp" / "configs" / "train_config.py"), str(tmp_path))
    config = resolve(argv)

    # Optimizer: Momentum -> optax.sgd(momentum=0.9, nesterov=True); Adam -> optax.adamw with
    # the script's weight decay and optax's b1, b2, eps. Clipping 5.0 and no label smoothing
    # from the base config; L2 from the script.
    assert config.opt.opt_type == want["OPT_TYPE"]
    released_optimizer = (
        {"momentum": 0.9, "nesterov": True}
        if want["OPT_TYPE"] == "Momentum"
        else {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": float(want["OPT_WEIGHT_DECAY"])}
    )
    assert optimizer_kwargs(config.opt.opt_type, config.opt.opt_params) == released_optimizer
    assert config.gradient_clipping == 5.0 and config.label_smoothing == 0.0
    assert config.l2_regularization == float(want["L2_REG"])
    assert not config.no_weight_decay_on_bn

    # Schedule: optax.warmup_cosine_decay_schedule(0, base_lr, epochs·spe, warmup·spe), spe
    # floor(50,000 / batch) for CIFAR (training/lr_schedule.py, get_lr_schedule).
    spe = 50_000 // int(want["BATCH_SIZE"])
    epochs, warmup = int(want["TOTAL_EPOCH"]), int(want.get("WARM_UP", 0))
    released = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(want["BASE_LR"]),
        warmup_steps=warmup * spe,
        decay_steps=epochs * spe,
    )
    ours = learning_rate_schedule(config, spe)
    for step in (0, 1, warmup * spe // 2, warmup * spe, epochs * spe // 3, epochs * spe - 1):
        assert float(ours(step)) == pytest.approx(float(released(step)), rel=1e-5, abs=1e-9)
    assert config.batch_size == int(want["BATCH_SIZE"])

    # Augmentation: the script's levels; cutout one 16 px window per batch
    # (augmentation.cutout, --cutout_length 16); mixup alpha 1.
    assert config.dataset.dataset_name == want["DATASET_NAME"]
    assert config.dataset.image_level_augmentations == want["DATASET_IMAGE_LEVEL_AUG"]
    assert config.dataset.batch_level_augmentations == want["DATASET_BATCH_LEVEL_AUG"]
    assert config.dataset.cutout_mode == "batch" and config.dataset.mixup_alpha == 1.0
    assert config.dataset.cutout_size in (0, 16)  # 0: 16 px at 32 px
    assert config.dataset.randaug_num_layers == 2 and config.dataset.randaug_magnitude == 9
    assert config.use_test_set

    # GNP: the script's r and alpha, the released normalized variant, local perturbations.
    assert (config.gnp.r, config.gnp.alpha) == (float(want["GNP_R"]), float(want["GNP_ALPHA"]))
    assert config.gnp.norm_perturbations and not config.gnp.sync_perturbations
    assert config.gr_warmup_strategy == want.get("GR_WARMUP_STRATEGY", "none")
    assert config.warmup_epochs == warmup and not config.use_hybrid_training

    # Model: the registered constructor's fields.
    assert config.model.model_name == want["MODEL_NAME"]
    classes = 1000 if want["DATASET_NAME"] == "imagenet" else 10
    fields = main.model_fields(build_model(config, classes))
    expected = RELEASED_MODEL_FIELDS[want["MODEL_NAME"]]
    assert {k: fields[k] for k in expected} == expected

    # Our recipe file (what recipes/<name>.sh runs) trains the same.
    recipe = load_config_file(str(ROOT / "gnp" / "configs" / f"{name.replace('-', '_')}.py"))
    for key in TRAINING_KEYS:
        assert recipe[key] == config[key], key
    for section in ("opt", "gnp", "model", "dataset"):
        assert recipe[section].to_dict() == config[section].to_dict(), section


def test_released_command_line_runs_unchanged(data_dirs, tmp_path):
    # The released vit-cifar-basic line verbatim (spaced flag included), with our train_config.py
    # as TRAIN_CONFIG_DIR, plus --dry_run and the batch and data folder the tiny files here need.
    # Its module too: `python3 -m gnp.main.main`, with this interpreter.
    argv = released_argv(
        "vit-cifar-basic", str(ROOT / "gnp" / "configs" / "train_config.py"), str(tmp_path)
    )
    extra = [
        "--dry_run",
        "--config.batch_size=4",
        f"--config.dataset.data_dir={data_dirs / 'cifar'}",
        "--config.tfds_dir=/raid/zy/datasets/tensorflow_datasets",
        "--cutout_length=8",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "gnp.main.main", *argv, *extra],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "optax.adamw(b1: 0.9, b2: 0.999, eps: 1e-08, weight_decay: 0.3" in result.stdout
    assert "cutout_size: 8" in result.stdout
    assert "notice: tfds_dir = '/raid/zy/datasets/tensorflow_datasets' has no effect" in (
        result.stderr
    )


def test_imagenet_mixup_flag_turns_mixup_on_for_imagenet_only(data_dirs):
    base = [
        sys.executable,
        "-m",
        "gnp.main",
        "--config=gnp/configs/resnet_imagenet.py",
        "--dry_run",
        "--config.batch_size=4",
        f"--config.imagenet_train_dir={data_dirs / 'imagenet' / 'train'}",
        f"--config.imagenet_val_dir={data_dirs / 'imagenet' / 'val'}",
        "--imagenet_mixup_alpha=0.2",
        "--randaug_magnitude=5",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(base, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "batch_level_augmentations: mixup" in result.stdout
    assert "mixup_alpha: 0.2" in result.stdout and "randaug_magnitude: 5" in result.stdout


def test_released_keys_without_meaning_are_accepted_with_a_notice(caplog):
    from gnp.train.config import validate_config

    config = load_config_file(str(ROOT / "gnp" / "configs" / "train_config.py"))
    config.model_folder = "/raid/zy/models"
    config.logging.basic_logger_level = "info"
    config.dataset.num_classes = 10
    with caplog.at_level(logging.WARNING, logger="gnp"):
        validate_config(config)
    notices = [r.getMessage() for r in caplog.records if r.getMessage().startswith("notice:")]
    assert len(notices) == 3
    assert any("model_folder" in n and "--working_dir" in n for n in notices)


def test_wrn_skip_option_is_refused_for_models_without_it():
    from gnp.train.config import validate_config

    config = load_config_file(str(ROOT / "gnp" / "configs" / "vit_cifar_basic.py"))
    config.use_additional_skip_connections_in_wrn = True
    with pytest.raises(ValueError, match="WideResNet models only"):
        validate_config(config)
