"""Time of gnp.efficient's reuse step: one program with a lax.cond, against two programs.

    PYTHONPATH=. .venv/bin/python benchmarks/reuse_cond.py [--model SmallCNN] [--batch 256]

The gradient of the digits model (8×8×1 inputs, 10 classes) through
``reuse_penalized_gradient`` with ``full=None`` (a ``lax.cond`` picks the branch at
run time; here the full branch runs, then the reuse branch), ``full=True`` and
``full=False`` (each branch compiled alone), and plain ``jax.value_and_grad``.
Medians of interleaved rounds (benchmarks/timing.py), ratios to the plain gradient.
"""

from __future__ import annotations

import argparse
import functools
import platform

import jax
import jax.numpy as jnp
import optax
from timing import interleaved_medians  # benchmarks/ is on the path

from gnp import efficient, models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SmallCNN")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    model = models.get_model(args.model, num_classes=10)
    images = jax.random.normal(jax.random.key(0), (args.batch, 8, 8, 1))
    labels = jax.nn.one_hot(jnp.arange(args.batch) % 10, 10)
    variables = model.init(jax.random.key(1), images, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})

    def loss(p):
        logits, _ = model.apply(
            {"params": p, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy(logits, labels).mean()

    clean = jax.value_and_grad(loss)
    plain = jax.jit(clean)

    @functools.partial(jax.jit, static_argnames="full")
    def reuse(p, state, full):
        return efficient.reuse_penalized_gradient(
            clean, jax.grad(loss), p, state, r=0.05, alpha=0.8, reuse_period=2, full=full
        )[1]

    state = efficient.reuse_init(params)
    reuse_state = state._replace(count=jnp.ones((), jnp.int32))  # count 1: the reuse branch
    candidates = {
        "plain jax.value_and_grad": lambda: plain(params)[1],
        "cond, full branch runs": lambda: reuse(params, state, None),
        "cond, reuse branch runs": lambda: reuse(params, reuse_state, None),
        "full step alone": lambda: reuse(params, state, True),
        "reuse step alone": lambda: reuse(params, reuse_state, False),
    }
    medians = interleaved_medians(candidates, args.rounds)
    base = medians["plain jax.value_and_grad"]
    print(f"{args.model}, batch {args.batch}, {platform.processor() or platform.machine()}")
    print("| gradient | ms | × plain |\n|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {1000 * seconds:.1f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
