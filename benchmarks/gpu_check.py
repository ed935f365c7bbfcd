"""One GPU acceptance run in under 8 minutes: step table, short training, loader, largest batch.

    make gpu-check                                  # on a GPU machine (wheels: docs/benchmarks.md)
    python benchmarks/gpu_check.py --smoke          # the same procedure on CPU, tiny sizes

Writes benchmarks/results/gpu-check-DEVICE-DATE/ (``--out`` to choose): ``summary.md``, headed
by the device, driver/CUDA, software, host cores and load and the command, and
``results.json`` with every number. Each part runs in its own process under its own time box
(``--box_*`` seconds): a part past its box is recorded as timed out and the others still run.

  table    benchmarks/step_time.py as ``make benchmark-gpu`` runs it (its markdown file is kept);
  train    WRN-16-4 on CIFAR-format archives written here, float32 and bfloat16: the loss
           falls, every logged norm is finite, bfloat16's first-epoch norms lie within
           BF16_TOLERANCE of float32's, and a run stopped by SIGTERM and resumed ends with the
           uninterrupted run's parameters (with --xla_gpu_deterministic_ops on a GPU);
  speed    the float32 run again without that flag: what determinism costs;
  loader   CIFAR basic and autoaugment, 224-px JPEG folders: images/s with the host's cores
           against the step rates of ``table``, loader-bound or not;
  memory   the largest WRN-28-10 GNP batch whose compiled step fits the device (XLA's
           memory account of compile-only probes, nothing run).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # parts share the GPU in turn

import argparse
import dataclasses
import datetime
import json
import math
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BF16_TOLERANCE = 0.1  # relative, on the first epoch's mean norms (bfloat16 has 8 mantissa bits)
NORMS = ("gradient_norm", "clean_gradient_norm", "param_norm", "update_norm")
DETERMINISTIC = "--xla_gpu_deterministic_ops=true"


@dataclasses.dataclass
class Sizes:
    """Everything that makes the run long; ``--smoke`` swaps in SMOKE."""

    table_models: str = "WideResNet_28_10,ViT_S16"
    table_batch: int = 128
    table_steps: int = 20
    table_dtypes: str = "float32,bfloat16"
    train_model: str = "WideResNet_16_4"
    train_batch: int = 128
    train_per_file: int = 2_560  # 5 files: 12,800 images, 100 steps an epoch at batch 128
    train_epochs: int = 3
    train_workers: int = -1  # grain workers; -1: from the CPU count
    loader_per_file: int = 10_000
    loader_seconds: float = 5.0
    loader_workers: int = -1  # -1: one per host core
    imagenet_per_class: int = 40
    probe_model: str = "WideResNet_28_10"
    probe_start: int = 1024  # a guess at the H200 scale; the probes measure
    probes: int = 4  # compiles per dtype
    memory_gib: float = 0.0  # 0: the device's own limit
    box_table: float = 170.0
    box_train: float = 120.0
    box_speed: float = 40.0
    box_loader: float = 50.0
    box_memory: float = 90.0


SMOKE = Sizes(
    table_models="SmallCNN",
    table_batch=8,
    table_steps=2,
    table_dtypes="float32",
    train_model="SmallCNN",
    train_batch=16,
    train_per_file=32,
    train_epochs=2,
    train_workers=0,
    loader_per_file=64,
    loader_seconds=0.3,
    loader_workers=0,
    imagenet_per_class=2,
    probe_model="SmallCNN",
    probe_start=8,
    probes=2,
    memory_gib=0.01,
    box_table=75.0,
    box_train=80.0,
    box_speed=40.0,
    box_loader=30.0,
    box_memory=40.0,
)
PARTS = ("table", "train", "speed", "loader", "memory")


# --- table: the step table of `make benchmark-gpu` ---------------------------------------


def table_command(sizes: Sizes, out: Path) -> list[str]:
    """step_time.py with ``make benchmark-gpu``'s arguments, PyTorch where it finds CUDA."""
    torch = subprocess.run(
        [sys.executable, "-c", "import torch, sys; sys.exit(not torch.cuda.is_available())"],
        capture_output=True,
    )
    return [
        sys.executable,
        str(HERE / "step_time.py"),
        f"--models={sizes.table_models}",
        f"--dtypes={sizes.table_dtypes}",
        f"--batch={sizes.table_batch}",
        f"--steps={sizes.table_steps}",
        f"--out={out / 'step_time.md'}",
        *(["--torch"] if torch.returncode == 0 else []),
    ]


def table_rows(markdown: Path) -> list[dict[str, Any]]:
    """The measured rows of step_time.py's table (as far as it got)."""
    rows = []
    text = markdown.read_text() if markdown.exists() else ""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and cells[4] and re.fullmatch(r"[\d.]+", cells[4]):
            model, dtype, step, kind, ms, images = cells[:6]
            rows.append(
                {
                    "model": model,
                    "dtype": dtype,
                    "step": step,
                    "kind": kind,
                    "ms_per_step": float(ms),
                    "images_per_second": float(images),
                    "program_mib": float(cells[7]) if cells[7] else None,
                }
            )
    return rows


# --- train: short real training, resume, bfloat16 -----------------------------------------


def train_config(sizes: Sizes, data_dir: str, dtype: str) -> Any:
    from gnp.config_keys import get_base_config

    config = get_base_config()
    config.dataset.dataset_name, config.dataset.data_dir = "cifar10", data_dir
    config.dataset.image_level_augmentations, config.dataset.num_workers = (
        "basic",
        sizes.train_workers,
    )
    config.model.model_name, config.model.dtype = sizes.train_model, dtype
    config.batch_size, config.total_epochs = sizes.train_batch, sizes.train_epochs
    config.warmup_epochs = 0
    config.base_lr, config.l2_regularization, config.gnp.r, config.gnp.alpha = 0.1, 5e-4, 0.05, 0.8
    config.evaluate_every_n_epochs = config.save_ckpt_every_n_epochs = 1
    config.log_every_n_steps = 10
    return config


def run_training(config: Any, working_dir: Path, stop_at: int | None = None) -> dict[str, Any]:
    """One training; ``stop_at``: SIGTERM to itself after that step (the trainer saves and
    stops), then the same call again resumes it. Returns its records and final parameters."""
    import jax

    from gnp.train.checkpoint import Checkpoints
    from gnp.train.loop import train_and_evaluate
    from gnp.train.stops import Preempted
    from gnp.train.workdir import read_metrics

    def on_step(step: int, state: Any) -> None:
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)

    started = time.perf_counter()
    try:
        train_and_evaluate(config, str(working_dir), on_step=on_step if stop_at else None)
    except Preempted:
        train_and_evaluate(config, str(working_dir))
    checkpoints = Checkpoints(str(working_dir / "checkpoints"))
    params = jax.tree.leaves(checkpoints.load_latest()[0]["params"])
    checkpoints.close()
    records = read_metrics(str(working_dir / "metrics.jsonl"))
    return {"records": records, "params": params, "seconds": time.perf_counter() - started}


def part_train(sizes: Sizes, out: Path, only_float32: bool = False) -> dict[str, Any]:
    """Training checks (the ``speed`` part: the float32 run only, timed)."""
    import numpy as np
    from input_pipeline import write_cifar10

    with tempfile.TemporaryDirectory() as tmp:
        write_cifar10(Path(tmp), per_file=sizes.train_per_file, learnable=True)
        runs = {"float32": run_training(train_config(sizes, tmp, "float32"), Path(tmp, "f32"))}
        result: dict[str, Any] = {
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "images_per_second_last_epoch": runs["float32"]["records"][-1]["images_per_second"],
        }
        if only_float32:
            return result
        steps = runs["float32"]["records"][0]["step"] * sizes.train_epochs
        runs["resumed"] = run_training(
            train_config(sizes, tmp, "float32"), Path(tmp, "resumed"), stop_at=steps // 2
        )
        runs["bfloat16"] = run_training(train_config(sizes, tmp, "bfloat16"), Path(tmp, "bf16"))
    straight, resumed = runs["float32"]["params"], runs["resumed"]["params"]
    differences = [
        float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(straight, resumed, strict=True)
    ]
    first = {name: runs[name]["records"][0] for name in ("float32", "bfloat16")}
    relative = {
        k: abs(first["bfloat16"][k] - first["float32"][k]) / abs(first["float32"][k])
        for k in NORMS
        if k in first["float32"]
    }
    return result | {
        "steps": steps,
        "loss": {n: [r["train_loss"] for r in runs[n]["records"]] for n in ("float32", "bfloat16")},
        "loss_falls": all(
            runs[n]["records"][-1]["train_loss"] < runs[n]["records"][0]["train_loss"]
            for n in ("float32", "bfloat16")
        ),
        "norms_finite": all(
            math.isfinite(r[k])
            for run in runs.values()
            for r in run["records"]
            for k in NORMS
            if k in r
        ),
        "bf16_first_epoch_relative_difference": relative,
        "bf16_within_tolerance": all(v <= BF16_TOLERANCE for v in relative.values()),
        "resume_stopped_at_step": steps // 2,
        "resume_max_abs_difference": max(differences),
        "resume_bit_identical": max(differences) == 0.0,
        "run_seconds": {n: run["seconds"] for n, run in runs.items()},
    }


# --- loader: images/s against the step rates ----------------------------------------------


def part_loader(sizes: Sizes, out: Path) -> dict[str, Any]:
    from input_pipeline import config, images_per_second, write_cifar10, write_imagenet

    from gnp.data import build_input_pipeline

    workers = len(os.sched_getaffinity(0)) if sizes.loader_workers < 0 else sizes.loader_workers
    cases = {
        "CIFAR-10 basic, batch 128": ({"image_level_augmentations": "basic"}, 128),
        "CIFAR-10 autoaugment, batch 128": ({"image_level_augmentations": "autoaugment"}, 128),
        "ImageNet 224 basic, batch 64": (
            {"dataset_name": "imagenet", "image_level_augmentations": "basic"},
            64,
        ),
    }
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar10(Path(tmp), per_file=sizes.loader_per_file)
        write_imagenet(Path(tmp, "imagenet"), per_class=sizes.imagenet_per_class)
        for name, (dataset, batch) in cases.items():
            batch = min(batch, 8 * sizes.imagenet_per_class) if "ImageNet" in name else batch
            cfg = config({"dataset_name": "cifar10", "data_dir": tmp, **dataset}, batch)
            pipeline = build_input_pipeline(cfg)
            rates[name] = images_per_second(pipeline, workers, sizes.loader_seconds)
    return {"workers": workers, "images_per_second": rates}


def loader_verdicts(loader: dict[str, Any], table: list[dict[str, Any]]) -> list[str]:
    """Per loader and measured step: loader-bound (fewer images/s than the step) or not."""
    lines = []
    steps = [r for r in table if r["kind"] == "framework" and r["step"] in ("plain", "GNP")]
    for name, rate in loader.get("images_per_second", {}).items():
        if "ImageNet" in name:
            lines.append(f"{name}: {rate:,.0f} img/s (no 224-px step in the table to set it by)")
            continue
        for row in steps:
            bound = "loader-bound" if rate < row["images_per_second"] else "not loader-bound"
            lines.append(
                f"{name}: {rate:,.0f} img/s vs {row['model']} {row['dtype']} {row['step']} "
                f"{row['images_per_second']:,.0f} img/s: {bound}"
            )
    return lines


# --- memory: the largest batch whose step fits --------------------------------------------


def program_bytes(model_name: str, dtype: str, batch: int) -> float:
    """XLA's account of the trainer's compiled GNP step (compiled, never run)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P
    from timing import program_mib

    from gnp.config_keys import get_base_config
    from gnp.optim import build_optimizer, learning_rate_schedule
    from gnp.train import build

    config = get_base_config()
    config.model.model_name, config.model.dtype = model_name, dtype
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    model = build.build_model(config, num_classes=10)
    state = jax.eval_shape(
        lambda: build.train_state(config, model, (32, 32, 3), steps_per_epoch=1)[0]
    )
    replicated = NamedSharding(mesh, P())
    state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state
    )
    schedule = learning_rate_schedule(config, steps_per_epoch=1)
    step = build.train_steps(
        config,
        model=model,
        optimizer=build_optimizer(config, schedule, state.params),
        schedule=schedule,
        mesh=mesh,
        gr=build.gr_schedule(config, steps_per_epoch=1),
    )["gnp"]
    sharded = NamedSharding(mesh, P("data"))
    images = jax.ShapeDtypeStruct((batch, 32, 32, 3), jnp.float32, sharding=sharded)
    labels = jax.ShapeDtypeStruct((batch, 10), jnp.float32, sharding=sharded)
    return program_mib(step.lower(state, images, labels).compile()) * 2**20


def part_memory(sizes: Sizes, out: Path) -> dict[str, Any]:
    """Doubling from probe_start while it fits, then halving the gap, ``probes`` compiles per
    dtype; the device's memory limit (or --memory_gib) is the budget."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    limit = sizes.memory_gib * 2**30 or stats.get("bytes_limit")
    if not limit:
        return {"error": "the device reports no memory limit: pass --memory_gib"}
    result: dict[str, Any] = {"limit_bytes": limit, "model": sizes.probe_model}
    for dtype in ("float32", "bfloat16"):
        fits, fails, probes = 0, None, []
        batch = sizes.probe_start
        for _ in range(sizes.probes):
            used = program_bytes(sizes.probe_model, dtype, batch)
            probes.append({"batch": batch, "bytes": used})
            fits, fails = (batch, fails) if used <= limit else (fits, batch)
            result[dtype] = {"largest_fitting": fits, "smallest_failing": fails, "probes": probes}
            (out / "memory.json").write_text(json.dumps(result, indent=1))  # kept if timed out
            batch = 2 * fits if fails is None else (fits + fails) // 2 // 8 * 8
            if batch <= fits:
                break
    return result


# --- the run: parts in their own processes, under their boxes -------------------------------


def run_part(
    part: str, args: argparse.Namespace, out: Path, box: float, cache: str
) -> dict[str, Any]:
    """Runs one part in a fresh process (its own XLA flags, its memory given back after). The
    parts share a compilation cache: the train part's resumed run compiles nothing again."""
    env = {"JAX_COMPILATION_CACHE_DIR": cache, **os.environ}
    if part == "train" and args.gpu:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {DETERMINISTIC}".strip()
    if part == "table":
        command = table_command(args.sizes, out)
    else:
        command = [sys.executable, __file__, f"--part={part}", f"--out={out}", *args.size_argv]
    started = time.perf_counter()
    with (out / f"{part}.log").open("w") as log:
        # A session of its own, so that a part past its box goes with its grain workers.
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            code = process.wait(timeout=box)
            status = "ok" if code == 0 else f"failed (exit {code}; see {part}.log)"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = f"timed out after {box:.0f} s"
    record: dict[str, Any] = {"status": status, "seconds": time.perf_counter() - started}
    if part == "table":
        record["rows"] = table_rows(out / "step_time.md")
    elif (out / f"{part}.json").exists():
        record |= json.loads((out / f"{part}.json").read_text())
    return record


def header(args: argparse.Namespace) -> dict[str, str]:
    """What the numbers were measured on."""
    import flax
    import jax
    from step_time import device_name, load

    smi = shutil.which("nvidia-smi")
    text = subprocess.run([smi], capture_output=True, text=True).stdout if smi else ""
    driver = re.search(r"Driver Version:\s*(\S+)", text)
    cuda = re.search(r"CUDA Version:\s*(\S+)", text)
    return {
        "device": device_name(),
        "driver": driver[1] if driver else "none",
        "cuda": f"{cuda[1] if cuda else 'none'} (compute capability "
        f"{getattr(jax.devices()[0], 'compute_capability', 'none')})",
        "software": f"Python {sys.version.split()[0]}, jax {jax.__version__}, jaxlib "
        f"{jax.lib.__version__}, flax {flax.__version__}",
        "host": f"{len(os.sched_getaffinity(0))} cores, load average {load()}",
        "date": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        "command": shlex.join(["benchmarks/gpu_check.py", *sys.argv[1:]]),
    }


def summary(head: dict[str, str], parts: dict[str, dict[str, Any]]) -> str:
    """The markdown summary; every number is also in results.json."""
    lines = ["# GPU check", "", *(f"- {k}: {v}" for k, v in head.items()), ""]
    for part, record in parts.items():
        lines += [f"## {part}: {record['status']} ({record['seconds']:.0f} s)", ""]
        if part == "table":
            lines.append("Full table: step_time.md.")
            lines += [
                f"- {r['model']} {r['dtype']} {r['step']} {r['kind']}: {r['ms_per_step']} ms, "
                f"{r['images_per_second']:.0f} img/s"
                for r in record["rows"]
            ]
        elif part == "loader":
            lines += [f"- {v}" for v in loader_verdicts(record, parts["table"]["rows"])]
        else:
            lines += [
                f"- {k}: {json.dumps(v)}"
                for k, v in record.items()
                if k not in ("status", "seconds")
            ]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (< 3 min)")
    parser.add_argument("--out", type=Path, help="result folder (default: by device and date)")
    parser.add_argument("--part", choices=PARTS[1:], help=argparse.SUPPRESS)  # one part's process
    for field in dataclasses.fields(Sizes):
        parser.add_argument(f"--{field.name}", type=type(field.default), default=None)
    args = parser.parse_args(argv)
    base = SMOKE if args.smoke else Sizes()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Sizes)}
    args.sizes = dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
    args.size_argv = [f"--{k}={v}" for k, v in dataclasses.asdict(args.sizes).items()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, str(HERE))  # step_time, timing, input_pipeline
    if args.part:
        work = {"train": part_train, "speed": lambda s, o: part_train(s, o, only_float32=True)}
        work |= {"loader": part_loader, "memory": part_memory}
        result = work[args.part](args.sizes, args.out)
        (args.out / f"{args.part}.json").write_text(json.dumps(result, indent=1))
        return 0
    import jax

    args.gpu = jax.default_backend() == "gpu"
    if not args.gpu and not args.smoke:
        print("error: jax sees no GPU; on a CPU machine run benchmarks/gpu_check.py --smoke")
        return 2
    from step_time import default_out

    out = args.out or Path(
        str(default_out()).replace("step_time-", "gpu-check-").removesuffix(".md")
    )
    out.mkdir(parents=True, exist_ok=True)
    head = header(args)
    boxes = {part: getattr(args.sizes, f"box_{part}") for part in PARTS}
    with tempfile.TemporaryDirectory() as cache:
        parts = {part: run_part(part, args, out, box, cache) for part, box in boxes.items()}
    if "images_per_second_last_epoch" in parts["speed"] and "xla_flags" in parts["train"]:
        parts["train"]["deterministic_cost"] = (
            parts["speed"]["images_per_second_last_epoch"]
            / parts["train"]["images_per_second_last_epoch"]
        )
    results = {"header": head, "sizes": dataclasses.asdict(args.sizes), "parts": parts}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "summary.md").write_text(summary(head, parts))
    print(f"wrote {out}/summary.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
