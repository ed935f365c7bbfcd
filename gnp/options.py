"""How a GNP step computes its gradient: one object, checked once, passed whole.

``gnp.value_and_grad``'s keywords, the cheaper variants of ``gnp.efficient`` and the trainer
(``gnp.train.build.gnp_options`` reads the config's ``gnp`` block into it) all describe a GNP
step with a ``GNPOptions``. Its checks are the only ones: a function that receives one trusts
it. r and α may be traced arrays (a warmup changes them every step): then only their concrete
values are checked, and a function may take the values of one step beside the options.

An error is an ``OptionError`` whose message is a template over the field names, so the trainer
can name its config keys (``gnp.norm_perturbations``) where the library names its fields
(``normalize_reference``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import jax
import numpy as np

Method = Literal["finite_difference", "exact"]
Perturbation = Literal["sam", "asam"]
AsamLeaves = Literal["weights", "all"]
Direction = Literal["gradient", "momentum"]

METHODS = ("finite_difference", "exact")
PERTURBATIONS = ("sam", "asam")
ASAM_LEAVES = ("weights", "all")
DIRECTIONS = ("gradient", "momentum")


class OptionError(ValueError):
    """A GNP option out of its range or in a combination that does not exist.

    ``template`` holds field names in braces (``{r}``); ``named(names)`` fills them with other
    names (a field missing from ``names`` keeps its own), ``str()`` with the fields' own.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        super().__init__(self.named({}))

    def named(self, names: Mapping[str, str]) -> str:
        fields = {field.name: names.get(field.name, field.name) for field in _FIELDS}
        return self.template.format_map(fields)


def _shown(value: Any) -> str:
    """``repr(value)`` safe inside a template (its braces doubled)."""
    return repr(value).replace("{", "{{").replace("}", "}}")


def concrete(value: Any) -> float | None:
    """``value`` as a float when it is known at trace time, None when it is traced."""
    try:
        return float(np.asarray(value))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _check_choice(value: Any, choices: Iterable[Any], field: str) -> None:
    choices = list(choices)
    if value not in choices:
        raise OptionError(f"unknown {{{field}}} {_shown(value)}; choose one of {_shown(choices)}")


# (field, what it is): each a finite number ≥ 0 where it is concrete. A negative r or α makes
# λ = α·r negative: the step would reward a large gradient norm instead of penalizing it.
_COEFFICIENTS = (
    ("r", "the perturbation radius, e.g. 0.05"),
    ("alpha", "α = λ/r, 0 for plain training, 1 for SAM"),
    ("eta", "ASAM's η in T = |θ| + η, e.g. 0.01"),
)


@dataclasses.dataclass(frozen=True)
class GNPOptions:
    """A GNP step (``gnp.value_and_grad`` documents each field).

    r, alpha: the radius and mixing weight (λ = α·r); traced arrays allowed.
    method, perturbation, eta, asam_leaves, normalize_reference: the gradient's form.
    axis_name: perturb with the gradient averaged over this ``shard_map`` axis (synced).
    reuse_period, orthogonal_scale: ``gnp.efficient``'s reuse (after LookSAM); 1 = every step.
    direction: ``"momentum"`` perturbs along the direction the caller passes (after MSAM).
    perturbed_fraction: the share of each batch's rows the second pass sees (after ESAM's
      stochastic data selection; g1 stays the whole batch's); 1 = GNP. The trainer builds the
      passes (``gnp.train.objective.gradient_passes``); the functions of this library take the
      passes as given.
    """

    r: float | jax.Array = 0.05
    alpha: float | jax.Array = 0.8
    method: Method = "finite_difference"
    perturbation: Perturbation = "sam"
    eta: float = 0.01
    asam_leaves: AsamLeaves = "weights"
    normalize_reference: bool = False
    axis_name: str | None = None
    reuse_period: int = 1
    orthogonal_scale: float | None = None
    direction: Direction = "gradient"
    perturbed_fraction: float = 1.0

    def __post_init__(self) -> None:
        for field, meaning in _COEFFICIENTS:
            number = concrete(getattr(self, field))
            if number is not None and not (math.isfinite(number) and number >= 0):
                raise OptionError(
                    f"{{{field}}} must be a finite number ≥ 0 ({meaning}), got {number}"
                )
        _check_choice(self.method, METHODS, "method")
        _check_choice(self.perturbation, PERTURBATIONS, "perturbation")
        _check_choice(self.asam_leaves, ASAM_LEAVES, "asam_leaves")
        _check_choice(self.direction, DIRECTIONS, "direction")
        if self.method == "exact" and (self.perturbation != "sam" or self.normalize_reference):
            raise OptionError(
                "{method}='exact' is the gradient of L + λ‖∇L‖ and takes {perturbation}='sam' "
                "with {normalize_reference}=False; use {method}='finite_difference' for the others"
            )
        period = self.reuse_period
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise OptionError(
                f"{{reuse_period}} must be an integer ≥ 1 (1: plain GNP), got {_shown(period)}"
            )
        scale = self.orthogonal_scale
        if scale is not None and not scale >= 0:
            raise OptionError(
                f"{{orthogonal_scale}} must be ≥ 0 (LookSAM's α, e.g. 0.7), got {_shown(scale)}"
            )
        if self.cheaper and self.method != "finite_difference":
            raise OptionError(
                "{reuse_period} > 1 and {direction}='momentum' take {method}='finite_difference'"
            )
        if period > 1 and self.direction != "gradient":
            raise OptionError("choose one of {reuse_period} > 1 and {direction}='momentum'")
        fraction = self.perturbed_fraction
        if isinstance(fraction, bool) or not (
            isinstance(fraction, int | float) and 0 < fraction <= 1
        ):
            raise OptionError(
                f"{{perturbed_fraction}} must lie in (0, 1] (the share of the batch the second "
                f"pass sees; 1: GNP), got {_shown(fraction)}"
            )
        if fraction < 1 and self.direction != "gradient":
            raise OptionError(
                "{perturbed_fraction} < 1 takes {direction}='gradient' (along the momentum, "
                "MSAM's one pass is the perturbed one)"
            )

    def replace(self, **changes: Any) -> GNPOptions:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    @property
    def cheaper(self) -> bool:
        """A variant of ``gnp.efficient`` (reuse, or a given direction): it needs its own code
        path, where the fraction of rows only changes the passes."""
        return self.reuse_period > 1 or self.direction != "gradient"

    @property
    def measures_sharpness(self) -> bool:
        """Whether a step's two passes give the sharpness diagnostics (``gnp.diagnostics``):
        GNP's finite difference on the whole batch. The exact method visits no perturbed point;
        the cheaper variants and a perturbed subset of the rows have no L(θ + ε) of the batch
        whose L(θ) the clean pass took."""
        return (
            self.method == "finite_difference" and not self.cheaper and self.perturbed_fraction == 1
        )

    @property
    def penalized(self) -> bool | None:
        """False when r or α is a concrete 0 (the step is plain), True when both are concrete
        and positive, None when either is traced."""
        numbers = concrete(self.r), concrete(self.alpha)
        if 0.0 in numbers:
            return False
        return None if None in numbers else True

    @property
    def one_pass(self) -> bool:
        """Along a given direction with a concrete α = 1 (MSAM), the clean gradient is not needed:
        one gradient pass, at the perturbed point."""
        return (
            self.direction == "momentum"
            and concrete(self.alpha) == 1.0
            and not self.normalize_reference
            and self.reuse_period == 1
        )


_FIELDS = dataclasses.fields(GNPOptions)
