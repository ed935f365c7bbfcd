"""Data parallel over every device and host: the multi-host start, the mesh, where the train
state lives (replicated, or sharded with ``shard_params``), how a host's batch is placed, and
how parameter-shaped trees lie inside the per-device step.

Multi-host: every process runs the same command; the coordinator comes from the flags, or from
the cluster's environment (SLURM, Open MPI, ``JAX_COORDINATOR_ADDRESS``: JAX detects them), or
is absent for a single process.

Sharded, every parameter-shaped leaf is split along its largest dimension that the device
count divides (a leaf with none stays replicated), so each device stores 1/n of the
parameters and of the optimizer's moments. Inside the step (``shard_map``) a ``ParamLayout``
gathers the parameters for the forward and backward passes, reduces the gradient to each
device's shard (a reduce-scatter, half an all-reduce), and takes norms of sharded trees by
adding the shards' squares over the axis: the optimizer update, the clipping and, with synced
perturbations, the GNP perturbation are computed on the shards.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gnp
from gnp.errors import one_line

PyTree = Any
AXIS = "data"
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


def data_mesh() -> Mesh:
    """Every device of every host along one ``data`` axis."""
    return jax.make_mesh((jax.device_count(),), (AXIS,))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Host-local numpy rows → one global array sharded along ``data``."""
    sharding = NamedSharding(mesh, P(AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def leaf_spec(shape: tuple[int, ...], devices: int, axis: str = AXIS) -> P:
    """``axis`` on the largest dimension ``devices`` divides (the first of equals); ``P()``
    (replicated) for a scalar or a leaf with no such dimension."""
    candidates = [d for d, size in enumerate(shape) if size >= devices and size % devices == 0]
    if devices == 1 or not candidates:
        return P()
    dim = max(candidates, key=lambda d: (shape[d], -d))
    return P(*(axis if d == dim else None for d in range(len(shape))))


def state_specs(state: Any, devices: int) -> Any:
    """The sharded train state's ``PartitionSpec`` tree: the parameters and the optimizer state
    sharded by ``leaf_spec``; the step count, the key, BatchNorm statistics and
    ``gnp.efficient``'s reuse state (small, or read whole by every device) replicated."""

    def replicated(tree: PyTree) -> PyTree:
        return jax.tree.map(lambda _: P(), tree)

    def sharded(tree: PyTree) -> PyTree:
        return jax.tree.map(lambda x: leaf_spec(x.shape, devices), tree)

    return state.replace(
        step=P(),
        params=sharded(state.params),
        batch_stats=replicated(state.batch_stats),
        opt_state=sharded(state.opt_state),
        rng=P(),
        reuse=replicated(state.reuse),
    )


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """``tree`` whole on every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def place(tree: PyTree, mesh: Mesh, specs: PyTree | None) -> PyTree:
    """``tree`` on ``mesh`` with these specs, or replicated when ``specs`` is None (every
    process holds the same values)."""
    if specs is None:
        return replicate(tree, mesh)
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    return jax.device_put(tree, shardings)


def _sharded_dim(spec: P, axis: str) -> int | None:
    return list(spec).index(axis) if axis in tuple(spec) else None


@dataclasses.dataclass(frozen=True)
class ParamLayout:
    """How parameter-shaped trees lie over ``axis`` inside the per-device step.

    ``specs`` is the parameters' ``PartitionSpec`` tree, or None when they are replicated:
    then gathering is the identity, the device mean an all-reduce and the norm
    ``gnp.global_norm``, the data-parallel step as it always was.
    """

    specs: PyTree | None = None
    axis: str = AXIS

    @property
    def sharded(self) -> bool:
        return self.specs is not None

    def _map(self, fn: Any, tree: PyTree) -> PyTree:
        """``fn(leaf, sharded dim or None)`` over a parameter-shaped tree."""
        return jax.tree.map(lambda spec, x: fn(x, _sharded_dim(spec, self.axis)), self.specs, tree)

    def gather(self, tree: PyTree) -> PyTree:
        """Each device's shards → the whole tree on every device (an all-gather per leaf)."""
        if not self.sharded:
            return tree
        return self._map(
            lambda x, d: x if d is None else jax.lax.all_gather(x, self.axis, axis=d, tiled=True),
            tree,
        )

    def device_mean(self, tree: PyTree) -> PyTree:
        """The mean over devices of a whole per-device tree, in this layout: each device keeps
        only its shard of the mean (a reduce-scatter), or all of it when replicated."""
        if not self.sharded:
            return jax.lax.pmean(tree, self.axis)
        devices = jax.lax.axis_size(self.axis)

        def mean(x: jax.Array, dim: int | None) -> jax.Array:
            if dim is None:
                return jax.lax.pmean(x, self.axis)
            total = jax.lax.psum_scatter(x, self.axis, scatter_dimension=dim, tiled=True)
            return total / devices

        return self._map(mean, tree)

    def norm(self, tree: PyTree) -> jax.Array:
        """‖tree‖ of a tree in this layout: the shards' squares summed over devices, each
        replicated leaf counted once."""
        if not self.sharded:
            return gnp.global_norm(tree)
        squares = {True: jnp.zeros((), jnp.float32), False: jnp.zeros((), jnp.float32)}
        for spec, x in zip(jax.tree.leaves(self.specs), jax.tree.leaves(tree), strict=True):
            squares[self.axis in tuple(spec)] += gnp.global_norm(x) ** 2
        return jnp.sqrt(jax.lax.psum(squares[True], self.axis) + squares[False])


class PlatformMissing(ValueError):
    """``JAX_PLATFORMS`` names a platform this machine cannot start: the user's environment."""


def check_platforms() -> None:
    """The devices start: with ``JAX_PLATFORMS`` naming a platform this machine lacks (cuda,
    gpu, tpu), JAX's own failure is an AssertionError or a RuntimeError of its start-up, which
    reads as a bug in gnp rather than a setting of the user's environment."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    try:
        jax.devices()
    except (RuntimeError, AssertionError) as error:
        if not platforms:
            raise
        cause = f" ({one_line(error)})" if str(error) else ""
        raise PlatformMissing(
            f"the environment variable JAX_PLATFORMS={platforms} names a platform that does not "
            f"start on this machine{cause}: unset it (JAX then uses what is there), or set it "
            "to one this machine has (e.g. cpu), or install JAX for that platform (jax[cuda12])"
        ) from None
