"""Optimizers, learning-rate schedules and the L2 term, all from optax and the config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gnp.choices import check_choice

PyTree = Any

# Per optimizer: config name -> (optax keyword, default). The defaults are what the released code
# ran: its base config sets ``opt_params`` nesterov=True, momentum=0.9, weight_decay=0.3, and
# ``optimizer/get_optimizer.py`` keeps of those only the names each optimizer lists, so its
# ``Momentum`` is ``optax.sgd(lr, momentum=0.9, nesterov=True)`` and its ``Adam`` is
# ``optax.adamw(lr, weight_decay=0.3)`` with optax's b1, b2 and eps. Its ``SGD`` passed
# grad_norm_clip and weight_decay to ``optax.sgd``, which takes neither (a TypeError), and it has
# no ``RMSProp``: here both are plain optax.
OPTIMIZER_PARAMS: dict[str, dict[str, tuple[str, Any]]] = {
    "SGD": {"momentum": ("momentum", None), "nesterov": ("nesterov", False)},
    "Momentum": {"momentum": ("momentum", 0.9), "nesterov": ("nesterov", True)},
    "Adam": {
        "beta1": ("b1", 0.9),
        "beta2": ("b2", 0.999),
        "eps": ("eps", 1e-8),
        "weight_decay": ("weight_decay", 0.3),
    },
    "RMSProp": {
        "decay": ("decay", 0.9),
        "eps": ("eps", 1e-8),
        "momentum": ("momentum", None),
        "centered": ("centered", False),
    },
}
# The optax function behind each name (Adam is AdamW: decoupled weight decay, as released).
FACTORIES: dict[str, Callable[..., optax.GradientTransformation]] = {
    "SGD": optax.sgd,
    "Momentum": optax.sgd,
    "Adam": optax.adamw,
    "RMSProp": optax.rmsprop,
}
# Released ``opt_params`` that no released optimizer used: accepted, dropped (see gnp.configs.base).
IGNORED_PARAMS = ("grad_norm_clip",)
SCHEDULES = ("constant", "stepped", "cosine", "exponential")
MOMENTUM_NAMES = ("trace", "mu")  # optax's SGD momentum and Adam's first moment


def has_momentum(opt_type: str, opt_params: Any) -> bool:
    """Whether the optimizer keeps a momentum (what MSAM perturbs along)."""
    return opt_type in ("Momentum", "Adam") or bool(
        opt_type == "SGD" and dict(opt_params).get("momentum")
    )


def momentum_of(opt_state: PyTree) -> PyTree:
    """The optimizer's momentum (SGD's ``trace`` or Adam's ``mu``) inside ``opt_state``."""
    for name in MOMENTUM_NAMES:
        found = optax.tree_utils.tree_get(opt_state, name)
        if found is not None:
            return found
    raise ValueError(
        "gnp.perturbation_direction='momentum' needs an optimizer with momentum "
        "(opt.opt_type Momentum, SGD with momentum, or Adam)"
    )


def decay_mask(params: PyTree, *, skip_vectors: bool) -> PyTree:
    """True for the leaves L2/weight decay applies to; 1-D leaves (BN, biases) skipped if asked."""
    return jax.tree.map(lambda p: not (skip_vectors and p.ndim <= 1), params)


def l2_penalty(params: PyTree, coefficient: float, *, skip_vectors: bool) -> jax.Array:
    """½·coefficient·‖θ‖² over the decayed leaves."""
    if coefficient == 0:
        return jnp.zeros((), jnp.float32)
    mask = decay_mask(params, skip_vectors=skip_vectors)
    squares = [
        jnp.sum(jnp.square(p.astype(jnp.float32)))
        for p, keep in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True)
        if keep
    ]
    return 0.5 * coefficient * sum(squares, jnp.zeros((), jnp.float32))


def learning_rate_schedule(config: Any, steps_per_epoch: int) -> optax.Schedule:
    """``lr_schedule_type`` after a linear warmup from 0 over ``warmup_epochs``."""
    kind = check_choice(config.lr_schedule_type, SCHEDULES, "lr_schedule_type")
    base = config.base_lr
    total_steps = config.total_epochs * steps_per_epoch
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    decay_steps = max(total_steps - warmup_steps, 1)
    if kind == "constant":
        main = optax.constant_schedule(base)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(base, decay_steps)
    elif kind == "exponential":
        main = optax.exponential_decay(base, steps_per_epoch, config.exponential_decay_rate)
    else:  # stepped
        boundaries, scales = config.stepped_lr_boundaries, config.stepped_lr_scales
        if len(boundaries) != len(scales):
            raise ValueError(
                f"stepped_lr_boundaries {tuple(boundaries)} and stepped_lr_scales "
                f"{tuple(scales)} must have the same length"
            )
        # optax multiplies factors cumulatively; the config gives absolute scales.
        factors, previous = {}, 1.0
        for fraction, scale in zip(boundaries, scales, strict=True):
            step = int(fraction * total_steps) - warmup_steps
            factors[max(step, 0)] = scale / previous
            previous = scale
        main = optax.piecewise_constant_schedule(base, factors)
    if warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, base, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def optimizer_kwargs(opt_type: str, opt_params: Any) -> dict[str, Any]:
    """The optax keywords for ``opt_type``, every default filled in; a parameter it does not
    take is an error (the released code dropped it silently)."""
    check_choice(opt_type, OPTIMIZER_PARAMS, "opt.opt_type")
    accepted = OPTIMIZER_PARAMS[opt_type]
    given = {k: v for k, v in dict(opt_params).items() if v is not None and k not in IGNORED_PARAMS}
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ValueError(
            f"opt.opt_params {unknown} do not apply to {opt_type}; it takes {sorted(accepted)}"
        )
    return {kw: given.get(name, default) for name, (kw, default) in accepted.items()}


def describe_optimizer(config: Any) -> str:
    """The optimizer as ``build_optimizer`` builds it, every hyper-parameter in force spelled out
    (what ``--dry_run`` prints, so a recipe can be checked without reading code)."""
    kwargs = optimizer_kwargs(config.opt.opt_type, config.opt.opt_params)
    if config.opt.opt_type == "Adam":
        skip = config.no_weight_decay_on_bn
        kwargs["mask"] = "not 1-D (BatchNorm, biases)" if skip else "all"
    factory = FACTORIES[config.opt.opt_type]
    arguments = ", ".join(f"{k}: {v}" for k, v in kwargs.items())
    clip = config.gradient_clipping
    clipping = f"clip_by_global_norm({clip}), then " if clip > 0 else ""
    schedule = (
        f"{config.lr_schedule_type} from {config.base_lr} over {config.total_epochs} epochs, "
        f"linear warmup {config.warmup_epochs}"
    )
    return f"{clipping}optax.{factory.__name__}({arguments}); learning rate: {schedule}"


def build_optimizer(
    config: Any, schedule: optax.Schedule, params: PyTree
) -> optax.GradientTransformation:
    """Clip the combined gradient (if asked), then the configured optimizer."""
    kwargs = optimizer_kwargs(config.opt.opt_type, config.opt.opt_params)
    if config.opt.opt_type == "Adam":
        kwargs["mask"] = decay_mask(params, skip_vectors=config.no_weight_decay_on_bn)
    optimizer = FACTORIES[config.opt.opt_type](schedule, **kwargs)
    if config.gradient_clipping > 0:
        optimizer = optax.chain(optax.clip_by_global_norm(config.gradient_clipping), optimizer)
    return optimizer
