"""Every shipped config resolves, builds its model and data source (``--dry_run``)."""

import os
import pathlib
import subprocess
import sys

import pytest
from test_data_sources import write_cifar, write_imagefolder

from gnp import main
from gnp.data import cifar

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
    config.dataset.imagenet_train_dir = str(data_dirs / "imagenet" / "train")
    config.dataset.imagenet_val_dir = str(data_dirs / "imagenet" / "val")
    config.dataset.strict = False
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_dry_run_of_every_config(path, data_dirs, capsys):
    config = point_at(main._load_config_file(str(path)), data_dirs)
    config.batch_size = 4  # the tiny data sets written here hold few images
    main.dry_run(config)
    out = capsys.readouterr().out
    assert f"model: {config.model.model_name}" in out and "parameters" in out


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
