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
from gnp.provenance import git
from gnp.study.report import tidy, validation_errors

PARTS = ("icml2022", "icml2024")
# The first study's 2022 variants (the confirmatory scale drops α = 0.5 and adds controls).
FIRST_2022 = ("sgd", "sam", "gnp_paper", "gnp_released", "gnp_alpha0.5")
# The first study's 2024 variants, at every width of a scale without a ``design_2024`` (the
# confirmatory design adds decoupled GR, so rerunning the first study starts no new runs).
FIRST_2024 = (
    "adam",
    "gr",
    "gr_warmup_r",
    "gr_warmup_lambda",
    "gr_warmup_zero",
    "adam_no_lr_warmup",
    "gr_no_lr_warmup",
)
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
    variants_2022: tuple[str, ...] = FIRST_2022
    # One grid in λ = α·r for every tuned variant (a variant's r grid is λ/α); empty: r_grid.
    lambda_grid: tuple[float, ...] = ()
    # Mean validation errors within this of the lowest are ties, which go to the smaller r.
    tie_tolerance: float = 0.0
    validation_size: int = 0  # MNIST-1D's validation split (0: the source's default, 2,000)
    flip_validation: bool = False  # tune on validation labels flipped at the training rate
    # The learning-rate ablation (tuning seeds, each variant at its r chosen at base lr 0.1).
    lr_grid: tuple[float, ...] = ()
    lr_variants: tuple[str, ...] = ()
    holm_on: str = "sign_test_p"  # the p-value the Holm correction adjusts
    contrasts: str = "declared"  # the family: DECLARED (the first study) or CONFIRMATORY
    # The 2024 part: GR's r tuned over this grid at width ``tune_width_2024`` (empty: r = 0.1)
    # and, where given, the final runs as (width, variant, seeds 0..n−1) instead of every
    # variant at every width on ``seeds_2024``.
    r_grid_2024: tuple[float, ...] = ()
    tune_width_2024: int = 64
    design_2024: tuple[tuple[int, str, int], ...] = ()
    # Figure 3 of the 2022 paper (descriptive: outside the family and the budget cuts): these
    # α at one r on the first noise level and the first ``figure3_seeds`` final seeds (empty:
    # no such runs, as in the first study's scales).
    figure3_alphas: tuple[float, ...] = ()
    figure3_seeds: int = 3

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
        # wrong); CNN1D_64 does (0 %), for the cost of CNN1D_32 in 100 (docs/first_study.md).
        model_2022="CNN1D_64",
        epochs_2022=60,
        epochs_2024=40,
        warmup_2024=8,
        label_noise=(0.0, 0.3),
        r_grid=(0.02, 0.05, 0.1, 0.2),
        # One tuning seed and three ViT seeds: what fits 2.5 h on 2 cores (docs/first_study.md).
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
# runs, which it reuses (docs/first_study.md).
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

# The confirmatory study, declared in docs/study/plan.md before any of its runs; its plan
# shard 1 is ``--only=icml2022``, shard 2 ``--only=icml2024``.
SCALES["confirm"] = dataclasses.replace(
    SCALES["full"],
    r_grid=(),
    lambda_grid=(0.1, 0.2, 0.4, 0.56, 0.8, 1.12),
    tie_tolerance=1e-4,  # 0.01 pp
    tune_seeds=(100, 101, 102),
    validation_size=4000,
    flip_validation=True,
    variants_2022=(
        "sgd",
        "sam",
        "sam_matched",
        "gnp_paper",
        "gnp_released",
        "released_term",
    ),
    lr_grid=(0.05, 0.2),
    lr_variants=("sgd", "sam", "gnp_paper", "gnp_released"),
    holm_on="t_test_p",
    contrasts="confirmatory",
    widths=(32, 64, 128),
    seeds_2024=tuple(range(20)),
    r_grid_2024=(0.05, 0.1, 0.2),
    design_2024=(
        (64, "adam", 20),
        (64, "gr", 20),
        (64, "gr_warmup_zero", 20),
        (64, "gr_warmup_r", 10),
        (64, "gr_warmup_lambda", 10),
        (64, "gr_decoupled", 20),
        (32, "adam", 10),
        (32, "gr", 10),
        (128, "adam", 10),
        (128, "gr", 10),
    ),
    figure3_alphas=(0.5, 0.8, 1.0),
)
# The confirmatory scale's machinery on the digits set (a test's size).
SCALES["confirm_smoke"] = dataclasses.replace(
    SCALES["confirm"],
    dataset="digits",
    model_2022="SmallCNN",
    epochs_2022=1,
    label_noise=(0.3,),
    lambda_grid=(0.04, 0.08),
    tune_seeds=(100,),
    seeds_2022=(0,),
    validation_size=0,
    variants_2022=("sgd", "sam", "sam_matched", "gnp_paper", "released_term"),
    lr_grid=(0.05,),
    lr_variants=("sgd", "sam"),  # one the plan's cut 3 keeps, one it drops
    lanczos_iterations=3,
    trace_probes=2,
    parts=("icml2022",),
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One training setting of a part; ``tuned`` variants get their r from the validation."""

    key: str
    label: str
    overrides: dict[str, Any]
    tuned: bool = False
    # Its final runs at the λ another (tuned) variant chose, in the runs' folder of ``folder``
    # (so that they are one set of runs where both r coincide).
    matched_to: str = ""
    folder: str = ""
    fixed_r: float | None = None  # a final-only variant at one r

    @property
    def alpha(self) -> float:
        return self.overrides.get("gnp.alpha", 1.0)


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
    # The confirmatory study's controls (final runs only).
    Variant(
        "sam_matched",
        "SAM at GNP α=0.8's λ",
        {"gnp.alpha": 1.0},
        matched_to="gnp_paper",
        folder="sam",
    ),
    Variant(
        "released_term",
        "released form, r=1e-4 (its (1−α)·g1/‖g1‖ term)",
        {"gnp.alpha": 0.8, "gnp.norm_perturbations": True},
        fixed_r=1e-4,
    ),
)
VARIANTS_2022 = {variant.key: variant for variant in ICML2022_VARIANTS}
ICML2024_VARIANTS = (
    Variant("adam", "Adam", {"gnp.alpha": 0.0}),
    Variant("gr", "GR", {}),
    Variant("gr_warmup_r", "GR, r-warmup", {"gr_warmup_strategy": "r"}),
    Variant("gr_warmup_lambda", "GR, λ-warmup", {"gr_warmup_strategy": "lambda"}),
    Variant("gr_warmup_zero", "GR, zero-warmup", {"gr_warmup_strategy": "zero"}),
    Variant("adam_no_lr_warmup", "Adam, no lr warmup", {"gnp.alpha": 0.0, "warmup_epochs": 0}),
    Variant("gr_no_lr_warmup", "GR, no lr warmup", {"warmup_epochs": 0}),
    Variant("gr_decoupled", "GR, decoupled", {"gnp.decoupled": True}),
)
VARIANTS_2024 = {variant.key: variant for variant in ICML2024_VARIANTS}


@dataclasses.dataclass(frozen=True)
class Contrast:
    """A declared comparison: test error of ``a`` minus ``b``, paired by seed, in each of
    ``groups`` (empty: every group of the part); with ``versus``, the interaction
    (a − b in group ``groups[0]``) − (a − b in group ``versus``)."""

    part: str
    a: str
    b: str
    groups: tuple[str, ...] = ()
    versus: str = ""


# Declared before any run: every group (label-noise level, width) of its part gets each.
DECLARED = (
    Contrast("icml2022", "gnp_paper", "sam"),
    Contrast("icml2022", "gnp_paper", "sgd"),
    Contrast("icml2022", "gnp_released", "sam"),
    Contrast("icml2022", "gnp_released", "sgd"),
    Contrast("icml2024", "gr", "adam"),
    Contrast("icml2024", "gr_warmup_zero", "gr"),
)
# The confirmatory study's one Holm family (docs/study/plan.md, rows 1–13: 19 in all).
# Decoupled GR (row 13) joined before shard 2 started, as the plan allows.
CONFIRMATORY = (
    Contrast("icml2022", "gnp_paper", "sgd"),
    Contrast("icml2022", "gnp_released", "sgd"),
    Contrast("icml2022", "gnp_paper", "sam"),
    Contrast("icml2022", "gnp_paper", "sam_matched"),
    Contrast("icml2022", "gnp_released", "gnp_paper"),
    Contrast("icml2022", "released_term", "sgd"),
    Contrast("icml2024", "gr", "adam", ("width64",)),
    Contrast("icml2024", "gr_warmup_zero", "gr", ("width64",)),
    Contrast("icml2024", "gr_warmup_r", "gr", ("width64",)),
    Contrast("icml2024", "gr_warmup_lambda", "gr", ("width64",)),
    Contrast("icml2024", "gr_warmup_zero", "adam", ("width64",)),
    Contrast("icml2024", "gr", "adam", ("width128",), versus="width32"),
    Contrast("icml2024", "gr_decoupled", "gr", ("width64",)),
)


def family_size(declared: Sequence[Contrast], scale: Scale) -> int:
    """The rows a declared family has once every part ran: a contrast with no groups of its
    own has one per label-noise level (2022) or width (2024)."""
    every = {"icml2022": len(scale.label_noise), "icml2024": len(scale.widths)}
    return sum(len(c.groups) or every[c.part] for c in declared)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: where it lives and the config it trains."""

    part: str
    # "tune", "lr" (the lr ablation), "figure3" (Figure 3's norms; these three on validation)
    # or "final" (on test)
    stage: str
    group: str  # "noise0.3", "width64"
    variant: Variant
    r: float
    seed: int
    config: Any
    cost: float  # relative compute: epochs × (2 for a penalized run, 1 for plain)

    def directory(self, out: Path) -> Path:
        path = out / self.part / self.stage / self.group / (self.variant.folder or self.variant.key)
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
    if scale.validation_size:
        config.dataset.mnist1d_validation_size = scale.validation_size
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
    """``stage`` "final" is evaluated on the test split, every other stage on validation."""
    config = base.copy_and_resolve_references()
    overrides = {**variant.overrides, "gnp.r": r, "seeds": seed, "init_seeds": seed}
    held_out = stage != "final"  # tuning, ablation and Figure 3 runs never see the test set
    overrides["use_test_set"] = not held_out
    # Only validation labels are ever flipped (the base says whether this scale does).
    overrides["dataset.flip_validation_labels"] = held_out and base.dataset.flip_validation_labels
    config.update_from_flattened_dict(overrides)
    penalized = config.gnp.alpha > 0 and r > 0
    cost = config.total_epochs * (2.0 if penalized else 1.0)
    return RunSpec(part, stage, group, variant, r, seed, config, cost)


def icml2022_groups(scale: Scale) -> dict[str, Any]:
    groups = {}
    for noise in scale.label_noise:
        config = icml2022_config(scale)
        config.dataset.label_noise = noise
        config.dataset.flip_validation_labels = scale.flip_validation
        groups[f"noise{noise:g}"] = config
    return groups


def r_grid(scale: Scale, variant: Variant) -> tuple[float, ...]:
    """The r a tuned variant is tuned over: λ/α on the scale's λ grid, else its r grid."""
    if scale.lambda_grid:
        return tuple(tidy(lam / variant.alpha) for lam in scale.lambda_grid)
    return scale.r_grid


def variants_2022(scale: Scale) -> list[Variant]:
    return [VARIANTS_2022[key] for key in scale.variants_2022]


def tuning_runs(scale: Scale) -> list[RunSpec]:
    """Every tuned variant over its grid; with an lr ablation also SGD (its lr-0.1 point)."""
    runs = []
    for group, base in icml2022_groups(scale).items():
        for variant in variants_2022(scale):
            if variant.tuned and len(r_grid(scale, variant)) > 1:
                radii = r_grid(scale, variant)
            elif variant.key in scale.lr_variants:
                radii = (default_r(scale),)
            else:
                continue
            for r in radii:
                runs += [
                    make_run("icml2022", "tune", group, variant, r, s, base)
                    for s in scale.tune_seeds
                ]
    return runs


def part_tuning_runs(scale: Scale, part: str) -> list[RunSpec]:
    return tuning_runs(scale) if part == "icml2022" else tuning_runs_2024(scale)


def final_r(variant: Variant, group: str, chosen_r: Callable[[str, str], float]) -> float:
    """A final run's r: the tuned one, one fixed, or the λ that ``matched_to`` chose."""
    if variant.fixed_r is not None:
        return variant.fixed_r
    if variant.matched_to:
        target = VARIANTS_2022[variant.matched_to]
        return tidy(target.alpha * chosen_r(group, target.key) / variant.alpha)
    return chosen_r(group, variant.key)


def final_runs(scale: Scale, part: str, chosen_r: Callable[[str, str], float]) -> list[RunSpec]:
    """The final runs of ``part``; ``chosen_r(group, variant key)`` is the tuned r.

    Seed-major: a study stopped part-way has every variant of every group for the seeds it
    finished, so its paired contrasts hold on fewer seeds instead of missing a group.
    """
    if part == "icml2022":
        return [
            make_run(
                "icml2022", "final", group, variant, final_r(variant, group, chosen_r), seed, base
            )
            for seed in scale.seeds_2022
            for group, base in icml2022_groups(scale).items()
            for variant in variants_2022(scale)
        ]
    bases = {width: icml2024_config(scale, width) for width in scale.widths}
    design = scale.design_2024 or [
        (width, key, len(scale.seeds_2024)) for width in scale.widths for key in FIRST_2024
    ]
    tuned_group = f"width{scale.tune_width_2024}"
    return [
        make_run("icml2024", "final", f"width{width}", variant, r, seed, bases[width])
        for seed in scale.seeds_2024
        for width, key, count in design
        if seed < count
        for variant in (VARIANTS_2024[key],)
        # GR's r, tuned at one width, serves every width (untuned: 0.1); Adam's is not used.
        for r in (chosen_r(tuned_group, "gr") if scale.r_grid_2024 and variant.alpha else 0.1,)
    ]


def tuning_runs_2024(scale: Scale) -> list[RunSpec]:
    """GR over ``r_grid_2024`` at one width on the tuning seeds (none without a grid)."""
    base = icml2024_config(scale, scale.tune_width_2024)
    group, gr = f"width{scale.tune_width_2024}", VARIANTS_2024["gr"]
    return [
        make_run("icml2024", "tune", group, gr, r, seed, base)
        for r in scale.r_grid_2024
        for seed in scale.tune_seeds
    ]


def lr_variant(variant: Variant, lr: float) -> Variant:
    """``variant`` at base learning rate ``lr``, in a folder of its own."""
    overrides = variant.overrides | {"base_lr": lr}
    return Variant(f"{variant.key}_lr{lr:g}", f"{variant.label}, lr {lr:g}", overrides)


def lr_ablation_runs(
    scale: Scale, chosen_r: Callable[[str, str], float], keys: Sequence[str] | None = None
) -> list[RunSpec]:
    """The lr ablation of ``keys`` (default: the scale's) on the tuning seeds, each variant at
    the r it chose at the base lr (whose runs are the tuning runs)."""
    return [
        make_run("icml2022", "lr", group, lr_variant(VARIANTS_2022[key], lr), r, seed, base)
        for group, base in icml2022_groups(scale).items()
        for key in (scale.lr_variants if keys is None else keys)
        for r in (chosen_r(group, key),)
        for lr in scale.lr_grid
        for seed in scale.tune_seeds
    ]


# Figure 3's two ways of mixing g1 into the gradient (``gnp.norm_perturbations``).
MIXES = {"paper": False, "released": True}


def figure3_variants(alphas: Sequence[float]) -> list[Variant]:
    """Each α < 1 under both mixes, α = 1 once: its (1 − α) term is zero, so the mixes are one
    (SAM)."""
    variants = []
    for alpha in alphas:
        if alpha >= 1:
            overrides = {"gnp.alpha": alpha, "gnp.norm_perturbations": False}
            label = f"α={alpha:g} (SAM: both mixes)"
            variants.append(Variant(f"fig3_a{alpha:g}", label, overrides))
            continue
        for mix, normalized in MIXES.items():
            overrides = {"gnp.alpha": alpha, "gnp.norm_perturbations": normalized}
            term = "(1−α)·g1/‖g1‖" if normalized else "(1−α)·g1"
            label = f"α={alpha:g}, {mix} mix {term} + α·g2"
            variants.append(Variant(f"fig3_a{alpha:g}_{mix}", label, overrides))
    return variants


def figure3_runs(scale: Scale, chosen_r: Callable[[str, str], float]) -> list[RunSpec]:
    """Figure 3's runs (descriptive): every setting at GNP paper's chosen r in the scale's first
    noise level (the confirmatory scale's 0 %: the paper's clean labels), so that their norms
    differ by α and mix alone; seed-major, on validation (a stage other than "final")."""
    if not scale.figure3_alphas:
        return []
    group = f"noise{scale.label_noise[0]:g}"
    base, r = icml2022_groups(scale)[group], chosen_r(group, "gnp_paper")
    return [
        make_run("icml2022", "figure3", group, variant, r, seed, base)
        for seed in scale.seeds_2022[: scale.figure3_seeds]
        for variant in figure3_variants(scale.figure3_alphas)
    ]


def distinct(specs: Sequence[RunSpec], out: Path) -> list[RunSpec]:
    """``specs`` without a second run of one folder (matched SAM where it is tuned SAM)."""
    seen: dict[Path, RunSpec] = {}
    for spec in specs:
        seen.setdefault(spec.directory(out), spec)
    return list(seen.values())


# Choosing r.


def choose_r(
    tuning: Sequence[dict[str, Any]], tolerance: float = 0.0
) -> dict[tuple[str, str], float]:
    """Per (group, variant): the smallest r whose mean validation error is within
    ``tolerance`` of the lowest (so exact ties, too, go to the smaller r)."""
    chosen = {}
    for key, by_r in validation_errors(tuning).items():
        best = min(by_r.values())
        # 1e-12: a mean that equals best + tolerance in decimal but not in binary is a tie.
        chosen[key] = min(r for r, error in by_r.items() if error <= best + tolerance + 1e-12)
    return chosen


def bracketed(grid: Sequence[float], r: float) -> bool:
    """Whether a chosen r lies inside its grid: at an edge the optimum may lie beyond it
    (reported as "not bracketed"; the grid is not extended)."""
    return min(grid) < r < max(grid)


def default_r(scale: Scale) -> float:
    """The r of a variant that is not tuned (SGD: irrelevant) or of a one-value grid."""
    return scale.r_grid[0] if len(scale.r_grid) == 1 else 0.05


def plan_commit(plan_file: Path = PLAN_FILE) -> str | None:
    """The git commit that last changed ``docs/study/plan.md`` (recorded in the results, so
    they show which declared plan they ran); None outside a git checkout."""
    try:
        return (
            git(plan_file.parent, "log", "-1", "--format=%H", "--", plan_file.name).strip() or None
        )
    except (OSError, subprocess.SubprocessError):
        return None
