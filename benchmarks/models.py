"""Forward+backward time and XLA buffer memory of one small model per family.

    python benchmarks/models.py [--batch_size 16] [--steps 5]

Each model is a reduced or small named variant on 32×32 inputs, so that the whole run stays
short on a CPU. A step is the training-mode gradient of the cross-entropy (BatchNorm statistics
updated, dropout/shake noise on). Time: median over ``--steps`` compiled steps after two warm-up
steps. Memory: the compiled step's argument + output + temporary buffers, as XLA's memory
analysis reports them (CPU has no allocator statistics).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from gnp import models

# family -> (registered name, kwargs); small enough for a CPU.
BENCHMARKS = {
    "VGG": ("VGG16BN", dict(width=16, hidden_size=512)),
    "ResNet": ("ResNet18", dict(width=16)),
    "WideResNet": ("WideResNet_16_4", {}),
    "Shake-Shake": ("WideResNet_2_96_ShakeShake", dict(depth=14, widen_factor=2)),
    "PyramidNet+ShakeDrop": ("PyramidNet_164_48_ShakeDrop", dict(depth=29)),
    "ViT": ("ViT_TI16", {}),
    "Swin": ("Swin_Tiny_Patch4", {}),
    "CaiT": ("CaiT_XXS12", {}),
}
NUM_CLASSES = 10


def benchmark(name: str, kwargs: dict, batch_size: int, steps: int) -> dict[str, float]:
    module = models.get_model(name, num_classes=NUM_CLASSES, **kwargs)
    images = jax.random.normal(jax.random.key(0), (batch_size, 32, 32, 3))
    labels = jnp.arange(batch_size) % NUM_CLASSES
    # The "rbg" generator compiles much faster than threefry; initialization is not measured.
    init_key = jax.random.key(0, impl="rbg")
    variables = jax.jit(lambda x: module.init(init_key, x, train=False))(images)
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    streams = ("dropout", "drop_path", "shake")
    keys = dict(zip(streams, jax.random.split(jax.random.key(1), 3), strict=True))

    def loss_fn(params, state, images, labels):
        logits, updates = module.apply(
            {"params": params, **state}, images, train=True, rngs=keys, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    start = time.perf_counter()
    compiled = grad_fn.lower(params, state, images, labels).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    buffers = memory.argument_size_in_bytes + memory.output_size_in_bytes
    buffers += memory.temp_size_in_bytes - memory.alias_size_in_bytes
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, state, images, labels))
        if step >= 2:
            times.append(time.perf_counter() - start)
    return dict(
        params_m=sum(p.size for p in jax.tree.leaves(params)) / 1e6,
        compile_s=compile_s,
        step_ms=1e3 * statistics.median(times),
        memory_mib=buffers / 2**20,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    print(f"devices: {jax.devices()}; batch {args.batch_size} of 32×32×3")
    header = f"| {'family':<21}| {'model (kwargs)':<60}| params | compile s | fwd+bwd ms | MiB |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for family, (name, kwargs) in BENCHMARKS.items():
        r = benchmark(name, kwargs, args.batch_size, args.steps)
        described = name + (f" {kwargs}" if kwargs else "")
        print(
            f"| {family:<21}| {described:<60}| {r['params_m']:5.2f}M | {r['compile_s']:9.1f} "
            f"| {r['step_ms']:10.1f} | {r['memory_mib']:3.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
