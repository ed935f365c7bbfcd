"""Cost of gnp.value_and_grad against jax.value_and_grad, measured as ratios in one run.

    .venv/bin/python benchmarks/gradient_cost.py [--batch 128] [--size 32] [--steps 20]

A GNP gradient needs two forward+backward passes, so 2.0 is the floor of the
time ratio. Memory is XLA's own account of the compiled program (arguments,
outputs and temporaries), which is exact and repeatable, unlike a sampled peak.
"""

from __future__ import annotations

import argparse
import functools
import platform

import jax
import optax
from timing import interleaved_medians, program_mib  # benchmarks/ is on the path

import gnp
from gnp import models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    model = models.get_model("SmallCNN", num_classes=10, width=args.width)
    key = jax.random.PRNGKey(0)
    images = jax.random.normal(key, (args.batch, args.size, args.size, 3))
    labels = jax.random.randint(key, (args.batch,), 0, 10)
    variables = model.init(key, images[:1], train=False)

    def loss_fn(params, batch_stats, images, labels):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates["batch_stats"]

    inputs = (variables["params"], variables["batch_stats"], images, labels)
    candidates = {
        "jax.value_and_grad": jax.jit(jax.value_and_grad(loss_fn, has_aux=True)),
        "gnp (finite difference)": jax.jit(
            gnp.value_and_grad(loss_fn, r=0.05, alpha=0.8, has_aux=True)
        ),
        "gnp (exact, HVP)": jax.jit(
            gnp.value_and_grad(loss_fn, r=0.05, alpha=0.8, has_aux=True, method="exact")
        ),
    }
    seconds = interleaved_medians(
        {name: functools.partial(fn, *inputs) for name, fn in candidates.items()}, args.steps
    )
    results = {
        name: (seconds[name], program_mib(fn.lower(*inputs).compile()))
        for name, fn in candidates.items()
    }
    base_time, base_bytes = results["jax.value_and_grad"]
    print(
        f"SmallCNN(width={args.width}) with BatchNorm, batch {args.batch}, "
        f"{args.size}x{args.size}x3, {jax.devices()[0].platform} "
        f"({platform.processor() or platform.machine()}, {jax.device_count()} device(s)), "
        f"jax {jax.__version__}, median of {args.steps} steps"
    )
    print("| gradient | ms/step | time ratio | program MiB | memory ratio |")
    print("|---|---|---|---|---|")
    for name, (seconds, nbytes) in results.items():
        print(
            f"| {name} | {seconds * 1e3:.2f} | {seconds / base_time:.2f} | "
            f"{nbytes:.1f} | {nbytes / base_bytes:.2f} |"
        )


if __name__ == "__main__":
    main()
