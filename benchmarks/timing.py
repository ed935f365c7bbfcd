"""Timing and memory helpers shared by the benchmarks (these machines are noisy and shared)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def interleaved_medians(runs: dict[Any, Callable[[], Any]], steps: int) -> dict[Any, float]:
    """Median seconds per call of each run, timed in interleaved rounds: each round times every
    run once, so a slow spell of a shared machine hits all of them alike."""
    for run in runs.values():  # compile and warm up
        jax.block_until_ready(run())
        jax.block_until_ready(run())
    times: dict[Any, list[float]] = {name: [] for name in runs}
    for _ in range(steps):
        for name, run in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(run())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def program_mib(compiled: Any) -> float:
    """XLA's own account of a compiled program's memory: arguments + outputs + temporaries,
    less donated buffers. Exact and repeatable, unlike a sampled peak (CPU reports none)."""
    memory = compiled.memory_analysis()
    total = (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        + memory.temp_size_in_bytes
        - memory.alias_size_in_bytes
    )
    return total / 2**20
