"""The study's design: scales (seeds, grids, epochs), variants, declared contrasts, the runs
they make and how a variant's r is chosen from its tuning runs (see ``gnp.study``).
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from gnp.configs.default import get_config as default_config
from gnp.study.report import validation_errors

PARTS = ("icml2022", "icml2024")
# The confirmatory study's plan (issue 26), committed before any of its runs.
PLAN_FILE = Path(__file__).resolve().parents[2] / "docs" / "study" / "plan.md"
RUN_FILE = "study_run.json"


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much of the study to run: seeds, r grid, epochs, data, models."""

    dataset: str
    model_2022: str
    epochs_2022: int
    epochs_2024: int
    warmup_2024: int
    label_noise: tuple[float, ...]
    r_grid: tuple[float, ...]
    tune_seeds: tuple[int, ...]
    seeds_2022: tuple[int, ...]
    seeds_2024: tuple[int, ...]
    widths: tuple[int, ...]
    lanczos_iterations: int
    trace_probes: int
    parts: tuple[str, ...] = PARTS  # the parts the scale runs (``--only`` picks one of them)

    def vit(self, width: int) -> tuple[str, dict[str, Any]]:
        """The 2024 part's model name and ``model_params`` at ``width``."""
        if self.dataset == "mnist1d":
            return f"ViT1D_{width}", {}
        # 8×8 digits: 2×2 patches, two blocks; only a smoke test.
        params = {"hidden_size": width, "depth": 2, "num_heads": 2, "mlp_dim": 2 * width}
        return "ViT_TI16", params | {"patch_size": 2}


SCALES = {
    "full": Scale(
        dataset="mnist1d",
        # CNN1D_32 does not memorize 30 % flipped labels in 60 epochs (35 % of them still
        # wrong); CNN1D_64 does (0 %), for the cost of CNN1D_32 in 100 (docs/reproduction.md).
        model_2022="CNN1D_64",
        epochs_2022=60,
        epochs_2024=40,
        warmup_2024=8,
        label_noise=(0.0, 0.3),
        r_grid=(0.02, 0.05, 0.1, 0.2),
        # One tuning seed and three ViT seeds: what fits 2.5 h on 2 cores (docs/reproduction.md).
        tune_seeds=(100,),
        seeds_2022=tuple(range(10)),
        seeds_2024=tuple(range(3)),
        widths=(32, 64),
        lanczos_iterations=20,
        trace_probes=10,
    ),
    "smoke": Scale(
        dataset="digits",
        model_2022="SmallCNN",
        epochs_2022=2,
        epochs_2024=2,
        warmup_2024=1,
        label_noise=(0.3,),
        r_grid=(0.05,),
        tune_seeds=(100,),
        seeds_2022=(0,),
        seeds_2024=(0,),
        widths=(16,),
        lanczos_iterations=5,
        trace_probes=2,
    ),
}
# A follow-up, not declared before the full study: with 30 % flipped labels every variant
# chose the grid's largest r (0.2), so GNP against SAM was compared at the grid's edge. The
# same runs with r up to 0.5; run with --out pointing at a copy of the full study's icml2022
# runs, which it reuses (docs/reproduction.md).
SCALES["wide_r"] = dataclasses.replace(
    SCALES["full"], label_noise=(0.3,), r_grid=(0.1, 0.2, 0.3, 0.5), parts=("icml2022",)
)
# The second follow-up, declared after the first: at r = 0.5 every variant's validation error
# was still falling, so the optimum of each lay beyond the grid. r up to 1.4 (λ = α·r up to 1.4
# for SAM, 1.12 for GNP α = 0.8), reusing the first follow-up's runs at 0.3 and 0.5.
SCALES["wider_r"] = dataclasses.replace(SCALES["wide_r"], r_grid=(0.3, 0.5, 0.7, 1.0, 1.4))
# Declared after the second, which left two variants (the released form and α = 0.5) at its
# edge: r up to 2.8, reusing the second's runs.
SCALES["widest_r"] = dataclasses.replace(
    SCALES["wider_r"], r_grid=(0.3, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8)
)
# The same question on clean labels, declared after the second follow-up: the study's clean
# variants also chose its largest r (0.2). Reuses the full study's clean runs at 0.2.
SCALES["wider_r_clean"] = dataclasses.replace(
    SCALES["wider_r"], label_noise=(0.0,), r_grid=(0.2, 0.3, 0.5, 0.7, 1.0)
)
# Every step of the full study on less (about 25 min of CPU): one noise level, two r values,
# two seeds (2022), one seed and width (2024); its runs are configured as the full study's.
SCALES["pilot"] = dataclasses.replace(
    SCALES["full"],
    label_noise=(0.3,),
    r_grid=(0.05, 0.1),
    tune_seeds=(100,),
    seeds_2022=(0, 1),
    seeds_2024=(0,),
    widths=(32,),
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One training setting of a part; ``tuned`` variants get their r from the validation."""

    key: str
    label: str
    overrides: dict[str, Any]
    tuned: bool = False


ICML2022_VARIANTS = (
    Variant("sgd", "SGD", {"gnp.alpha": 0.0}),
    Variant("sam", "SAM", {"gnp.alpha": 1.0}, tuned=True),
    Variant("gnp_paper", "GNP α=0.8 (paper)", {"gnp.alpha": 0.8}, tuned=True),
    Variant(
        "gnp_released",
        "GNP α=0.8 (released, normalized)",
        {"gnp.alpha": 0.8, "gnp.norm_perturbations": True},
        tuned=True,
    ),
    Variant("gnp_alpha0.5", "GNP α=0.5 (paper)", {"gnp.alpha": 0.5}, tuned=True),
)
ICML2024_VARIANTS = (
    Variant("adam", "Adam", {"gnp.alpha": 0.0}),
    Variant("gr", "GR", {}),
    Variant("gr_warmup_r", "GR, r-warmup", {"gr_warmup_strategy": "r"}),
    Variant("gr_warmup_lambda", "GR, λ-warmup", {"gr_warmup_strategy": "lambda"}),
    Variant("gr_warmup_zero", "GR, zero-warmup", {"gr_warmup_strategy": "zero"}),
    Variant("adam_no_lr_warmup", "Adam, no lr warmup", {"gnp.alpha": 0.0, "warmup_epochs": 0}),
    Variant("gr_no_lr_warmup", "GR, no lr warmup", {"warmup_epochs": 0}),
)


@dataclasses.dataclass(frozen=True)
class Contrast:
    """A declared comparison: test error of ``a`` minus ``b``, paired by seed, in one group."""

    part: str
    a: str
    b: str


# Declared before any run: every group (label-noise level, width) of its part gets each.
DECLARED = (
    Contrast("icml2022", "gnp_paper", "sam"),
    Contrast("icml2022", "gnp_paper", "sgd"),
    Contrast("icml2022", "gnp_released", "sam"),
    Contrast("icml2022", "gnp_released", "sgd"),
    Contrast("icml2024", "gr", "adam"),
    Contrast("icml2024", "gr_warmup_zero", "gr"),
)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: where it lives and the config it trains."""

    part: str
    stage: str  # "tune" (evaluated on validation) or "final" (on test)
    group: str  # "noise0.3", "width64"
    variant: Variant
    r: float
    seed: int
    config: Any
    cost: float  # relative compute: epochs × (2 for a penalized run, 1 for plain)

    def directory(self, out: Path) -> Path:
        path = out / self.part / self.stage / self.group / self.variant.key
        return path / f"r{self.r:g}" / f"seed{self.seed}"


# Configs.


def base_config(scale: Scale, epochs: int) -> ml_collections.ConfigDict:
    """The default run (SGD-momentum 0.9, lr 0.1 cosine, L2 5e-4, batch 128) on the scale's
    data, evaluated and checkpointed only at the end (the study reads nothing in between)."""
    config = default_config()
    config.dataset.dataset_name = scale.dataset
    config.total_epochs = epochs
    config.warmup_epochs = min(config.warmup_epochs, epochs)
    config.evaluate_every_n_epochs = epochs
    config.save_ckpt_every_n_epochs = epochs
    config.keep_checkpoints = 1
    config.eval_batch_size = 1000
    config.log_every_n_steps = 1000
    return config


def icml2022_config(scale: Scale) -> ml_collections.ConfigDict:
    config = base_config(scale, scale.epochs_2022)
    config.model.model_name = scale.model_2022
    return config


def icml2024_config(scale: Scale, width: int) -> ml_collections.ConfigDict:
    """AdamW (weight decay 0.05, lr 1e-3) after a linear warmup; GR α = 1, r = 0.1."""
    config = base_config(scale, scale.epochs_2024)
    config.model.model_name, params = scale.vit(width)
    config.model.model_params = ml_collections.ConfigDict(params)
    config.opt.opt_type = "Adam"
    config.opt.opt_params.weight_decay = 0.05
    config.l2_regularization = 0.0
    config.base_lr = 1e-3
    config.warmup_epochs = scale.warmup_2024
    config.gnp.alpha = 1.0
    config.gnp.r = 0.1
    return config


def make_run(
    part: str, stage: str, group: str, variant: Variant, r: float, seed: int, base: Any
) -> RunSpec:
    config = base.copy_and_resolve_references()
    overrides = {**variant.overrides, "gnp.r": r, "seeds": seed, "init_seeds": seed}
    overrides["use_test_set"] = stage != "tune"  # tuning runs never see the test set
    config.update_from_flattened_dict(overrides)
    penalized = config.gnp.alpha > 0 and r > 0
    cost = config.total_epochs * (2.0 if penalized else 1.0)
    return RunSpec(part, stage, group, variant, r, seed, config, cost)


def icml2022_groups(scale: Scale) -> dict[str, Any]:
    groups = {}
    for noise in scale.label_noise:
        config = icml2022_config(scale)
        config.dataset.label_noise = noise
        groups[f"noise{noise:g}"] = config
    return groups


def tuning_runs(scale: Scale) -> list[RunSpec]:
    return [
        make_run("icml2022", "tune", group, variant, r, seed, base)
        for group, base in icml2022_groups(scale).items()
        for variant in ICML2022_VARIANTS
        if variant.tuned and len(scale.r_grid) > 1
        for r in scale.r_grid
        for seed in scale.tune_seeds
    ]


def final_runs(scale: Scale, part: str, chosen_r: Callable[[str, str], float]) -> list[RunSpec]:
    """The final runs of ``part``; ``chosen_r(group, variant key)`` is the tuned r.

    Seed-major: a study stopped part-way has every variant of every group for the seeds it
    finished, so its paired contrasts hold on fewer seeds instead of missing a group.
    """
    if part == "icml2022":
        return [
            make_run("icml2022", "final", group, variant, chosen_r(group, variant.key), seed, base)
            for seed in scale.seeds_2022
            for group, base in icml2022_groups(scale).items()
            for variant in ICML2022_VARIANTS
        ]
    bases = {width: icml2024_config(scale, width) for width in scale.widths}
    return [
        make_run("icml2024", "final", f"width{width}", variant, 0.1, seed, bases[width])
        for seed in scale.seeds_2024
        for width in scale.widths
        for variant in ICML2024_VARIANTS
    ]


# Choosing r.


def choose_r(tuning: Sequence[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Per (group, variant): the r of lowest mean validation error (ties: the smaller r)."""
    return {
        key: min(by_r, key=lambda r, by_r=by_r: (by_r[r], r))
        for key, by_r in validation_errors(tuning).items()
    }


def default_r(scale: Scale) -> float:
    """The r of a variant that is not tuned (SGD: irrelevant) or of a one-value grid."""
    return scale.r_grid[0] if len(scale.r_grid) == 1 else 0.05


def plan_commit(plan_file: Path = PLAN_FILE) -> str | None:
    """The git commit that last changed ``docs/study/plan.md`` (recorded in the results, so
    they show which declared plan they ran); None outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "log", "-1", "--format=%H", "--", plan_file.name],
            cwd=plan_file.parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip() or None
