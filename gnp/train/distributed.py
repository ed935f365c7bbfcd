"""Multi-host start-up with JAX's own multi-controller runtime (no launcher of ours).

Every process runs the same command. The coordinator comes from the flags, or
from the cluster's environment (SLURM, Open MPI, ``JAX_COORDINATOR_ADDRESS``:
JAX detects them), or is absent for a single process.
"""

from __future__ import annotations

import os

import jax

# Variables that mean "this process is one of several" to jax.distributed's auto-detection.
CLUSTER_ENVIRONMENT = ("JAX_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE")


def in_multiprocess_cluster() -> bool:
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    return any(name in os.environ for name in CLUSTER_ENVIRONMENT)


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """``jax.distributed.initialize`` when this is a multi-process run; a no-op otherwise.

    Must run before anything touches a JAX device.
    """
    if coordinator_address is None and not in_multiprocess_cluster():
        return
    # CPU processes need a collectives backend to all-reduce across hosts; GPUs ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
