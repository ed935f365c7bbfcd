"""Time per training step of plain, SAM and GNP: the framework, a minimal JAX step, PyTorch.

    .venv/bin/python benchmarks/step_time.py [--models WideResNet_16_4,ResNet18,ViT_TI16]
        [--batch 128] [--steps 10] [--dtype float32|bfloat16] [--torch]

For each model (32×32×3 inputs, 10 classes, SGD-momentum, L2 in the loss):
  framework  the trainer's step (gnp.train.build.train_steps) on a one-device mesh;
  minimal    a hand-written jax.jit step doing the same math, the floor of the framework;
  torch      (with --torch, WideResNet_16_4 only) the same step in PyTorch, the common
             two-backward SAM implementation, on the same cores.
Times are medians over interleaved rounds (each round times every candidate once, so a slow
spell of a shared machine hits all alike); ratios are to the plain step of the same kind.
Memory is XLA's account of the compiled program (arguments + outputs + temporaries).
"""

from __future__ import annotations

import argparse
import functools
import platform
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from timing import interleaved_medians, program_mib  # benchmarks/ is on the path

from gnp import models
from gnp.configs.base import get_base_config
from gnp.optim import l2_penalty
from gnp.train import build
from gnp.train.steps import create_train_state, replicate, shard_batch

R, L2, LR = 0.05, 5e-4, 0.1
VARIANTS = {"plain": 0.0, "SAM": 1.0, "GNP": 0.8}  # α


def framework_step(model: Any, alpha: float, state: Any, optimizer: Any, batch: dict) -> tuple:
    """(run, compiled): the trainer's own step, inputs sharded as the trainer shards them."""
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    config = get_base_config()  # no warm-up, no clipping, no label smoothing: the plain math
    config.l2_regularization, config.gnp.r, config.gnp.alpha = L2, R, alpha
    steps = build.train_steps(
        config,
        model=model,
        optimizer=optimizer,
        schedule=optax.constant_schedule(LR),
        mesh=mesh,
        gr=build.gr_schedule(config, steps_per_epoch=1),
    )
    step = steps[alpha > 0, True]  # (GNP step?, full step?); only this one is compiled
    state, batch = replicate(state, mesh), shard_batch(batch, mesh)
    compiled = step.lower(state, batch["image"], batch["label"]).compile()

    def run() -> Any:
        nonlocal state
        state, metrics = step(state, batch["image"], batch["label"])
        return metrics["train_loss"]

    return run, compiled


def minimal_step(model: Any, alpha: float, state: Any, optimizer: Any, batch: dict) -> tuple:
    """(run, compiled): the same math written directly, with nothing of the framework."""

    def loss_fn(params, batch_stats, images, labels):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy(logits, labels).mean()
        return loss + l2_penalty(params, L2, skip_vectors=False), updates["batch_stats"]

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(params, batch_stats, opt_state, images, labels):
        (loss, new_stats), g1 = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, images, labels
        )
        grads = g1
        if alpha > 0:
            scale = R / jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(g1)))
            perturbed = jax.tree.map(lambda p, g: p + scale * g, params, g1)
            g2 = jax.grad(loss_fn, has_aux=True)(perturbed, batch_stats, images, labels)[0]
            grads = jax.tree.map(lambda a, b: (1 - alpha) * a + alpha * b, g1, g2)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    carry = (state.params, state.batch_stats, state.opt_state)
    images, labels = jnp.asarray(batch["image"]), jnp.asarray(batch["label"])
    compiled = step.lower(*carry, images, labels).compile()

    def run() -> Any:
        nonlocal carry
        *new, loss = step(*carry, images, labels)
        carry = tuple(new)
        return loss

    return run, compiled


def torch_wrn_16_4_steps(batch: int, steps: int) -> dict[str, float]:
    """PyTorch's common two-backward SAM/GNP step on WRN-16-4 (same math, same cores)."""
    from torch_peer import time_torch_steps  # benchmarks/ is on the path when run as a script

    return time_torch_steps(batch=batch, steps=steps, r=R, l2=L2, lr=LR, variants=VARIANTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="WideResNet_16_4,ResNet18,ViT_TI16")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--torch", action="store_true", help="add the PyTorch peer (WRN-16-4)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    batch = {
        "image": rng.standard_normal((args.batch, 32, 32, 3), dtype=np.float32),
        "label": np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.batch)],
    }
    optimizer = optax.sgd(LR, momentum=0.9)
    print(
        f"batch {args.batch}, 32x32x3, {args.dtype} compute, {jax.devices()[0].device_kind} "
        f"({platform.machine()}), jax {jax.__version__}, median of {args.steps} steps"
    )
    print("| model | step | kind | ms/step | × plain | program MiB | × plain |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = models.get_model(name, num_classes=10, dtype=jnp.dtype(args.dtype))
        runs, memory = {}, {}
        for kind, make_step in (("framework", framework_step), ("minimal", minimal_step)):
            for variant, alpha in VARIANTS.items():
                state, _ = create_train_state(
                    model, lambda p: optimizer, (32, 32, 3), init_seed=0, seed=0
                )
                run, compiled = make_step(model, alpha, state, optimizer, batch)
                runs[(kind, variant)] = run
                memory[(kind, variant)] = program_mib(compiled)
        seconds = interleaved_medians(runs, args.steps)
        for kind, variant in runs:
            base = (kind, "plain")
            print(
                f"| {name} | {variant} | {kind} | {seconds[(kind, variant)] * 1e3:.0f} | "
                f"{seconds[(kind, variant)] / seconds[base]:.2f} | "
                f"{memory[(kind, variant)]:.0f} | {memory[(kind, variant)] / memory[base]:.2f} |"
            )
        for variant in VARIANTS:
            ratio = seconds[("framework", variant)] / seconds[("minimal", variant)]
            print(f"| {name} | {variant} | framework / minimal | | {ratio:.2f} | | |")
        if args.torch and name == "WideResNet_16_4":
            torch_seconds = torch_wrn_16_4_steps(args.batch, args.steps)
            for variant, value in torch_seconds.items():
                print(
                    f"| {name} | {variant} | torch | {value * 1e3:.0f} | "
                    f"{value / torch_seconds['plain']:.2f} | | |"
                )
            for variant in VARIANTS:
                ratio = torch_seconds[variant] / seconds[("framework", variant)]
                print(f"| {name} | {variant} | torch / framework | | {ratio:.2f} | | |")


if __name__ == "__main__":
    main()
