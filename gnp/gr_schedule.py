"""Which steps use GNP, and with which r and α (ICML 2024 GR warmups, hybrid training).

Over the first ``warmup_steps`` (the learning-rate warmup):
  ``r``      r rises linearly from 0, α fixed (so λ = α·r rises too);
  ``lambda`` α rises linearly from 0, r fixed;
  ``zero``   plain steps, no gradient regularization at all;
  ``none``   GNP with the configured r and α from the first step.
The r a warmup ramps is itself scheduled (``r_schedule``): ``constant`` is the configured r at
every step; ``lr_proportional`` is GSAM's ρ_t (Zhuang et al., "Surrogate Gap Guided
Sharpness-Aware Minimization", ICLR 2022), r proportional to the learning rate between
``r_min`` and r:

    r_t = r_min + (r − r_min) · (lr_t − lr_min) / (lr_max − lr_min)     (r_t = r if lr_max = lr_min)

lr_t the step's learning rate, lr_max and lr_min the largest and smallest over the run's steps
(the formula and the lr_max = lr_min case as in big_vision's ``gsam_gradient``,
``big_vision/trainers/proj/gsam/gsam.py``, checked 2026-12-04; there lr_max and lr_min are
config values, here they are read off the schedule once on the host). The r warmup's ramp
multiplies r_t.
Hybrid training makes each step a GNP step with probability ``p(step)``, else a
plain one. As in the released code, the config's ``schedule_function`` is called
with the keys of ``hybrid_config`` and returns ``step ↦ p``; the released (and
default) one is ``constant_probability``: p at every step. ``penalty_window`` gives p
inside a window of steps and 0 outside it (p = 1: the penalty only early or only late).
``config.json`` stores the function by its import path
(``gnp.gr_schedule.constant_probability``), which is also accepted in its place, so a run
reads back and resumes with it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnp.choices import check_choice
from gnp.options import GNPOptions

WARMUP_STRATEGIES = ("none", "r", "lambda", "zero")
R_SCHEDULES = ("constant", "lr_proportional")
Probability = Callable[[int], float]
# Where this module lived before 2026-12 (``config.json`` files of older runs name functions there).
MOVED_FROM = {"gnp.train.gr_schedule.": "gnp.gr_schedule."}


def constant_probability(p: float) -> Probability:
    """The released ``schedule_function``: every step is a GNP step with probability p."""
    return lambda step: p


def penalty_window(p: float, start_step: int, stop_step: int) -> Probability:
    """p for ``start_step <= step < stop_step``, 0 elsewhere: with p = 1 the penalty is on in
    exactly those steps (only early or only late in training), with p < 1 hybrid training
    inside them. Set ``hybrid_config.start_step`` and ``stop_step`` beside ``p``."""
    if not 0 <= start_step <= stop_step:
        raise ValueError(
            f"penalty_window needs 0 <= start_step <= stop_step, got {start_step} and "
            f"{stop_step}; set hybrid_config.start_step and hybrid_config.stop_step"
        )
    return lambda step: p if start_step <= step < stop_step else 0.0


def function_path(function: Callable[..., Any]) -> str:
    """A function's import path, the form in which ``config.json`` stores it (its repr holds a
    memory address, which differs in every process)."""
    return f"{function.__module__}.{function.__qualname__}"


def current_path(path: str) -> str:
    """An import path as it is now, for one saved before the function moved (``MOVED_FROM``)."""
    for old, new in MOVED_FROM.items():
        if path.startswith(old):
            return new + path[len(old) :]
    return path


def _imported(path: str) -> Any:
    module, _, name = current_path(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(
            f"schedule_function {path!r} cannot be imported; give a function or its import "
            "path, e.g. 'gnp.gr_schedule.constant_probability'"
        ) from None


def hybrid_probability(
    schedule_function: Callable[..., Probability] | str, hybrid_config: Any
) -> Probability:
    """``schedule_function(**hybrid_config)``, checked: a callable giving p in [0, 1] at step 0.
    ``schedule_function`` may also be the function's import path (as ``config.json`` has it)."""
    if isinstance(schedule_function, str):
        schedule_function = _imported(schedule_function)
    if not callable(schedule_function):
        raise ValueError(
            f"schedule_function must be a function of the hybrid_config keys returning "
            f"step ↦ probability (e.g. gnp.gr_schedule.constant_probability), got "
            f"{schedule_function!r}"
        )
    probability = schedule_function(**dict(hybrid_config))
    _checked(probability, 0)
    return probability


def _checked(probability: Probability, step: int) -> float:
    p = float(probability(step))
    if not 0.0 <= p <= 1.0:
        raise ValueError(
            f"the hybrid GNP probability must lie in [0, 1], got {p} at step {step}; "
            "check hybrid_config.p (and schedule_function, if set)"
        )
    return p


def learning_rate_range(
    learning_rate: Callable[[Any], Any], total_steps: int
) -> tuple[float, float]:
    """(lr_min, lr_max) of ``learning_rate`` over the steps 0 … total_steps − 1, evaluated once
    on the host (as float32, the values the step computes)."""
    rates = np.asarray(jax.vmap(learning_rate)(jnp.arange(total_steps)), np.float32)
    return float(rates.min()), float(rates.max())


@dataclasses.dataclass(frozen=True)
class GRSchedule:
    r: float
    alpha: float
    strategy: str = "none"
    warmup_steps: int = 0
    hybrid_p: float | Probability | None = None  # None: no hybrid training
    seed: int = 0
    r_schedule: str = "constant"
    r_min: float = 0.0
    # lr_proportional: step ↦ learning rate (the optimizer's schedule) and the run's step count.
    learning_rate: Callable[[Any], Any] | None = None
    total_steps: int = 0
    lr_range: tuple[float, float] | None = dataclasses.field(init=False, default=None)

    def __post_init__(self) -> None:
        check_choice(self.strategy, WARMUP_STRATEGIES, "gr_warmup_strategy")
        check_choice(self.r_schedule, R_SCHEDULES, "gnp.r_schedule")
        GNPOptions(r=self.r, alpha=self.alpha)  # r and α checked where every GNP option is
        if not 0 <= self.r_min <= self.r:
            raise ValueError(
                f"gnp.r_min must lie in [0, gnp.r] = [0, {self.r}], got {self.r_min}; set "
                "gnp.r_min between 0 and gnp.r (or raise gnp.r)"
            )
        if self.r_schedule == "lr_proportional":
            if self.learning_rate is None or self.total_steps < 1:
                raise ValueError(
                    "gnp.r_schedule='lr_proportional' needs the learning-rate schedule and the "
                    "run's step count (GRSchedule learning_rate= and total_steps=)"
                )
            object.__setattr__(
                self, "lr_range", learning_rate_range(self.learning_rate, self.total_steps)
            )
        if self.hybrid_p is not None:
            _checked(self.probability, 0)

    @property
    def probability(self) -> Probability:
        """``step ↦ p``: 1 without hybrid training."""
        if self.hybrid_p is None:
            return constant_probability(1.0)
        return self.hybrid_p if callable(self.hybrid_p) else constant_probability(self.hybrid_p)

    @property
    def penalized(self) -> bool:
        """False when no step can ever use GNP (r = 0, α = 0 or a constant p = 0)."""
        return self.r != 0 and self.alpha != 0 and self.hybrid_p != 0

    def is_gnp_step(self, step: int) -> bool:
        """Host-side choice between the GNP and the plain compiled step (deterministic)."""
        if not self.penalized:
            return False
        if self.strategy == "zero" and step < self.warmup_steps:
            return False
        if self.hybrid_p is None:
            return True
        p = _checked(self.probability, step)
        return bool(np.random.default_rng([self.seed, step]).random() < p)

    def _warms_up(self) -> bool:
        return self.warmup_steps > 0 and self.strategy in ("r", "lambda")

    def scheduled_r(self, step: jax.Array | int) -> float | jax.Array:
        """r at ``step`` before any warmup: the configured r (``constant``, a Python float) or
        GSAM's r_t (``lr_proportional``, traced: the learning rate is computed in the step)."""
        if self.lr_range is None:
            return self.r
        lr_min, lr_max = self.lr_range
        if lr_max == lr_min:
            return self.r
        lr = jnp.asarray(self.learning_rate(step), jnp.float32)
        return self.r_min + (self.r - self.r_min) * (lr - lr_min) / (lr_max - lr_min)

    def values(self, step: jax.Array | int) -> tuple[float | jax.Array, float | jax.Array]:
        """(r, α) of a GNP step at ``step``: traced while ``r`` or ``lambda`` warms up or r
        follows the learning rate (neither ever recompiles), else the configured numbers,
        concrete; zeros when no step can use GNP. The step logs the values it used (a plain
        step: zeros)."""
        if not self.penalized:
            return 0.0, 0.0
        r = self.scheduled_r(step)
        if not self._warms_up():
            return r, self.alpha
        ramp = jnp.minimum(jnp.asarray(step, jnp.float32) / self.warmup_steps, 1.0)
        r = r * ramp if self.strategy == "r" else r
        alpha = self.alpha * ramp if self.strategy == "lambda" else self.alpha
        return r, alpha
