"""Time per training step of plain, SAM and GNP: the framework, a minimal JAX step, PyTorch.

    .venv/bin/python benchmarks/step_time.py [--models WideResNet_16_4,ResNet18,ViT_TI16]
        [--batch 128] [--steps 10] [--dtypes float32,bfloat16] [--torch] [--out PATH]

For each model (32×32×3 inputs, 10 classes, SGD-momentum, L2 in the loss) and each compute
dtype:
  framework  the trainer's step (gnp.train.build.train_steps) on a one-device mesh;
  minimal    a hand-written jax.jit step doing the same math, the floor of the framework;
  torch      (with --torch, WideResNets only) the same step in PyTorch, the common
             two-backward SAM implementation (benchmarks/torch_peer.py), on the same device:
             ``cuda`` where PyTorch sees a GPU, else the same cores.
Times are medians over interleaved rounds (each round times every candidate once, so a slow
spell of a shared machine hits all alike); ratios are to the plain step of the same kind.
Memory is XLA's account of the compiled program (arguments + outputs + temporaries).

The markdown table goes to stdout and, row by row, to ``--out`` (by default
benchmarks/results/step_time-DEVICE-DATE.md), under a header that names the device, the
software, the settings and the machine's load, so that tables of different machines never mix.
"""

from __future__ import annotations

import os

# JAX reserves 75 % of a GPU's memory when it starts; the PyTorch peer shares the GPU with it.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse
import datetime
import functools
import re
import shlex
import sys
from pathlib import Path
from typing import Any, TextIO

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from timing import interleaved_medians, program_mib  # benchmarks/ is on the path

from gnp import models
from gnp.config_keys import get_base_config
from gnp.optim import l2_penalty
from gnp.train import build
from gnp.train.distributed import replicate, shard_batch
from gnp.train.objective import rng_streams
from gnp.train.state import create_train_state

R, L2, LR = 0.05, 5e-4, 0.1
VARIANTS = {"plain": 0.0, "SAM": 1.0, "GNP": 0.8}  # α
DTYPES = ("float32", "bfloat16")
RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = (
    "| model | dtype | step | kind | ms/step | images/s | time ratio | program MiB "
    "| memory ratio |\n|---|---|---|---|---|---|---|---|---|"
)


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
    step = steps["gnp" if alpha > 0 else "plain"]  # only this one is compiled
    state, batch = replicate(state, mesh), shard_batch(batch, mesh)
    compiled = step.lower(state, batch["image"], batch["label"]).compile()

    def run() -> Any:
        nonlocal state
        state, metrics = step(state, batch["image"], batch["label"])
        return metrics["train_loss"]

    return run, compiled


def minimal_step(model: Any, alpha: float, state: Any, optimizer: Any, batch: dict) -> tuple:
    """(run, compiled): the same math written directly, with nothing of the framework. Both
    passes of a step see the same dropout and drop-path draws, as the trainer's."""

    def loss_fn(params, batch_stats, images, labels, rngs):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            rngs=rngs,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy(logits, labels).mean()
        loss += l2_penalty(params, L2, skip_vectors=False)
        return loss, updates.get("batch_stats", batch_stats)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(params, batch_stats, opt_state, number, images, labels):
        rngs = rng_streams(jax.random.fold_in(jax.random.PRNGKey(0), number))
        (loss, new_stats), g1 = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, images, labels, rngs
        )
        grads = g1
        if alpha > 0:
            scale = R / jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(g1)))
            perturbed = jax.tree.map(lambda p, g: p + scale * g, params, g1)
            g2 = jax.grad(loss_fn, has_aux=True)(perturbed, batch_stats, images, labels, rngs)[0]
            grads = jax.tree.map(lambda a, b: (1 - alpha) * a + alpha * b, g1, g2)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, number + 1, loss

    carry = (state.params, state.batch_stats, state.opt_state, jnp.zeros((), jnp.int32))
    images, labels = jnp.asarray(batch["image"]), jnp.asarray(batch["label"])
    compiled = step.lower(*carry, images, labels).compile()

    def run() -> Any:
        nonlocal carry
        *new, loss = step(*carry, images, labels)
        carry = tuple(new)
        return loss

    return run, compiled


def wide_resnet_size(name: str) -> tuple[int, int] | None:
    """(depth, widen factor) of a plain WideResNet name, the networks the PyTorch peer builds."""
    match = re.fullmatch(r"WideResNet_(\d+)_(\d+)", name)
    return (int(match[1]), int(match[2])) if match else None


def device_name() -> str:
    """The accelerator's name, or the CPU's model and core count."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        return device.device_kind
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return f"CPU: {model[1].strip() if model else 'unknown'}, {os.cpu_count()} cores"


def default_out() -> Path:
    device = jax.devices()[0]
    kind = device.device_kind if device.platform != "cpu" else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")
    return RESULTS / f"step_time-{slug}-{datetime.datetime.now():%Y%m%d-%H%M%S}.md"


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def header(args: argparse.Namespace, torch_description: str) -> str:
    device = jax.devices()[0]
    now = datetime.datetime.now(datetime.UTC)
    lines = [
        f"# Training step time on {device_name()}",
        "",
        f"- device: {device_name()} (jax platform {device.platform}, "
        f"{len(jax.devices())} device(s), the first used)",
        f"- software: Python {sys.version.split()[0]}, jax {jax.__version__}, "
        f"jaxlib {jax.lib.__version__}, flax {flax.__version__}; {torch_description}",
        f"- batch {args.batch}, 32×32×3 random images, 10 classes, compute dtypes "
        f"{', '.join(args.dtypes)} (float32 parameters), SGD-momentum 0.9, lr {LR}, "
        f"L2 {L2}, r {R}; SAM α = 1, GNP α = {VARIANTS['GNP']}",
        f"- median of {args.steps} steps per candidate in interleaved rounds, after 2 warm-up "
        "steps",
        f"- date {now:%Y-%m-%d %H:%M} UTC; load average at start {load()}",
        f"- command: {shlex.join(['benchmarks/step_time.py', *sys.argv[1:]])}",
        "",
        COLUMNS,
    ]
    return "\n".join(lines)


def measure(
    name: str, dtype: str, args: argparse.Namespace, batch: dict, peer: Any | None
) -> list[str]:
    """The table's rows for one model in one compute dtype."""
    optimizer = optax.sgd(LR, momentum=0.9)
    model = models.get_model(name, num_classes=10, dtype=jnp.dtype(dtype))
    runs, memory, jax_parameters = {}, {}, 0
    for kind, make_step in (("framework", framework_step), ("minimal", minimal_step)):
        for variant, alpha in VARIANTS.items():
            state, _ = create_train_state(
                model, lambda p: optimizer, (32, 32, 3), init_seed=0, seed=0
            )
            jax_parameters = sum(p.size for p in jax.tree.leaves(state.params))
            run, compiled = make_step(model, alpha, state, optimizer, batch)
            runs[(kind, variant)] = run
            memory[(kind, variant)] = program_mib(compiled)
    size = wide_resnet_size(name)
    if peer is not None and size is not None:
        torch_runs, torch_parameters = peer.wide_resnet_runs(
            depth=size[0],
            widen_factor=size[1],
            images=batch["image"],
            labels=batch["label"].argmax(-1),
            dtype=dtype,
            r=R,
            l2=L2,
            lr=LR,
            variants=VARIANTS,
        )
        if torch_parameters != jax_parameters:
            raise RuntimeError(
                f"the PyTorch peer of {name} has {torch_parameters:,} parameters, "
                f"gnp's {jax_parameters:,}: not the same network"
            )
        runs |= {("torch", variant): run for variant, run in torch_runs.items()}
    seconds = interleaved_medians(runs, args.steps)
    rows = []
    for kind, variant in runs:
        time, base = seconds[(kind, variant)], seconds[(kind, "plain")]
        mib = memory.get((kind, variant))
        mib_cells = f"{mib:.0f} | {mib / memory[(kind, 'plain')]:.2f}" if mib is not None else " | "
        rows.append(
            f"| {name} | {dtype} | {variant} | {kind} | {time * 1e3:.1f} | "
            f"{args.batch / time:.0f} | {time / base:.2f} | {mib_cells} |"
        )
    for numerator, denominator in (("framework", "minimal"), ("torch", "framework")):
        if (numerator, "plain") in seconds:
            for variant in VARIANTS:
                ratio = seconds[(numerator, variant)] / seconds[(denominator, variant)]
                rows.append(
                    f"| {name} | {dtype} | {variant} | {numerator} / {denominator} | | | "
                    f"{ratio:.2f} | | |"
                )
    return rows


def emit(text: str, file: TextIO) -> None:
    print(text, flush=True)
    file.write(text + "\n")
    file.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="WideResNet_16_4,ResNet18,ViT_TI16")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--dtypes",
        "--dtype",
        default="float32",
        help="compute dtypes, comma-separated: float32, bfloat16 or both",
    )
    parser.add_argument(
        "--torch", action="store_true", help="add the PyTorch peer (WideResNets; needs torch)"
    )
    parser.add_argument(
        "--out", type=Path, help="markdown file (default benchmarks/results/step_time-DEVICE-DATE)"
    )
    args = parser.parse_args()
    args.dtypes = args.dtypes.split(",")
    if unknown := set(args.dtypes) - set(DTYPES):
        parser.error(f"unknown --dtypes {sorted(unknown)}: choose from {', '.join(DTYPES)}")
    peer, torch_description = None, "PyTorch peer not run"
    if args.torch:
        try:
            import torch_peer  # benchmarks/ is on the path when run as a script
        except ImportError as error:
            parser.error(f"--torch needs PyTorch ({error}): pip install torch")
        peer, torch_description = torch_peer, f"PyTorch peer: {torch_peer.describe()}"

    rng = np.random.default_rng(0)
    batch = {
        "image": rng.standard_normal((args.batch, 32, 32, 3), dtype=np.float32),
        "label": np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.batch)],
    }
    out = args.out or default_out()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as file:
        emit(header(args, torch_description), file)
        for name in args.models.split(","):
            for dtype in args.dtypes:
                for row in measure(name, dtype, args, batch, peer):
                    emit(row, file)
        emit(f"\nLoad average at the end: {load()}.", file)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
