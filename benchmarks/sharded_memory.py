"""Memory per device of the trainer's GNP step, parameters replicated or sharded (shard_params).

    .venv/bin/python benchmarks/sharded_memory.py [--models WideResNet_28_10,ViT_L16]
        [--batch 256] [--devices 8] [--optimizer Adam]

Compiles (does not run) the step on a mesh of ``--devices`` devices (on a CPU machine, that many
virtual CPU devices) and prints XLA's account of one device's program: arguments (the state
and this device's rows of the batch), temporaries (activations, gathered parameters,
gradients) and their sum less donated buffers. Compiling is all it takes to know whether a
step fits a device's memory, so the numbers hold for a GPU of the same count, up to the
backend's own scheduling of temporaries.
"""

from __future__ import annotations

import argparse
import os
import platform
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="WideResNet_28_10,ViT_L16")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--optimizer", default="Adam", choices=("Momentum", "Adam"))
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    # Virtual CPU devices must be asked for before jax starts (no effect on a GPU machine).
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P
    from timing import program_mib  # benchmarks/ is on the path

    from gnp.config_keys import get_base_config
    from gnp.optim import build_optimizer, learning_rate_schedule
    from gnp.train import build
    from gnp.train.distributed import shard_batch

    def abstract_state(config: Any, model: Any) -> Any:
        """The train state's shapes only: nothing of its size is allocated anywhere."""
        return jax.eval_shape(
            lambda: build.train_state(config, model, (32, 32, 3), steps_per_epoch=1)[0]
        )

    devices = jax.devices()[: args.devices]
    mesh = jax.make_mesh((len(devices),), ("data",), devices=devices)
    print(
        f"GNP step, batch {args.batch} (32x32x3, 10 classes), {args.optimizer}, "
        f"{len(devices)} × {devices[0].device_kind} ({platform.machine()}), jax {jax.__version__}"
    )
    print(
        "| model | parameters | state | perturbation | MiB per device: arguments | temporaries "
        "| program |"
    )
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    batch = shard_batch(
        {
            "image": rng.standard_normal((args.batch, 32, 32, 3), dtype=np.float32),
            "label": np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.batch)],
        },
        mesh,
    )
    for name in args.models.split(","):
        for sharded, synced in ((False, False), (False, True), (True, False), (True, True)):
            config = get_base_config()
            config.model.model_name, config.opt.opt_type = name, args.optimizer
            config.shard_params, config.gnp.sync_perturbations = sharded, synced
            model = build.build_model(config, num_classes=10)
            state = abstract_state(config, model)
            schedule = learning_rate_schedule(config, steps_per_epoch=1)
            optimizer = build_optimizer(config, schedule, state.params)
            specs = build.state_specs(config, state)  # None: replicated
            placed = jax.tree.map(
                lambda x, spec: jax.ShapeDtypeStruct(
                    x.shape, x.dtype, sharding=NamedSharding(mesh, spec)
                ),
                state,
                jax.tree.map(lambda _: P(), state) if specs is None else specs,
            )
            step = build.train_steps(
                config,
                model=model,
                optimizer=optimizer,
                schedule=schedule,
                mesh=mesh,
                gr=build.gr_schedule(config, steps_per_epoch=1),
                state_specs=specs,
            )["gnp"]
            compiled = step.lower(placed, batch["image"], batch["label"]).compile()
            memory = compiled.memory_analysis()
            count = sum(x.size for x in jax.tree.leaves(state.params))
            print(
                f"| {name} | {count:,} | {'sharded' if sharded else 'replicated'} | "
                f"{'synced' if synced else 'per device'} | "
                f"{memory.argument_size_in_bytes / 2**20:,.0f} | "
                f"{memory.temp_size_in_bytes / 2**20:,.0f} | {program_mib(compiled):,.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
