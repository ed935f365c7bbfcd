"""Running the study's runs: in order, resumably (a finished run is read back), shared by
``--shard`` processes, with progress and an ETA.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gnp.study.measure import execute
from gnp.study.plan import RUN_FILE, RunSpec, Scale, choose_r, default_r


class Progress:
    """Runs done / total and an ETA: the seconds per unit of cost measured so far in each
    part (a ViT epoch costs more than a CNN one) times that part's cost left; a part not
    measured yet borrows the overall rate."""

    def __init__(self, runs: Sequence[RunSpec], out: Path) -> None:
        self.out = out
        self.total = self.done = 0
        self.remaining: dict[str, float] = {}
        self._count(runs, +1)
        self.spent: dict[str, tuple[float, float]] = {}  # part → (seconds, cost)
        self.last = time.perf_counter()

    def _count(self, runs: Sequence[RunSpec], sign: int) -> None:
        """Adds (``sign`` +1) or removes (-1) ``runs`` from the plan, finished or not."""
        self.total += sign * len(runs)
        for spec in runs:
            if (spec.directory(self.out) / RUN_FILE).exists():
                self.done += sign
            else:
                self.remaining[spec.part] = self.remaining.get(spec.part, 0.0) + sign * spec.cost

    def replan(self, planned: Sequence[RunSpec], chosen: Sequence[RunSpec]) -> None:
        """The final runs at their chosen r in place of those planned before the tuning ended
        (at a placeholder r, whose folders another study may have filled)."""
        self._count(planned, -1)
        self._count(chosen, +1)

    def line(self) -> str:
        text = f"[{self.done}/{self.total} runs done]"
        if self.spent:
            seconds = sum(s for s, _ in self.spent.values())
            overall = seconds / sum(c for _, c in self.spent.values())
            rate = {part: s / c for part, (s, c) in self.spent.items()}
            left = sum(cost * rate.get(part, overall) for part, cost in self.remaining.items())
            text += f" ETA {format_duration(left)}"
        return text

    def finished(self, spec: RunSpec) -> None:
        now = time.perf_counter()
        seconds, cost = self.spent.get(spec.part, (0.0, 0.0))
        self.spent[spec.part] = (seconds + now - self.last, cost + spec.cost)
        self.remaining[spec.part] -= spec.cost
        self.done += 1
        self.last = now

    def skipped(self) -> None:
        """A run found finished after all (by another process): time since is not its cost."""
        self.last = time.perf_counter()


def format_duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def run_all(specs: Sequence[RunSpec], out: Path, scale: Scale, progress: Progress) -> None:
    """Train and measure every run not finished yet, printing progress before each."""
    for spec in specs:
        directory = spec.directory(out)
        fresh = not (directory / RUN_FILE).exists()
        if fresh:
            print(
                f"{progress.line()} {spec.part} {spec.stage} {spec.group} "
                f"{spec.variant.label} r={spec.r:g} seed {spec.seed}",
                flush=True,
            )
        execute(spec, out, scale)
        if fresh:
            progress.finished(spec)
        else:
            progress.skipped()


def select(specs: list[RunSpec], args: argparse.Namespace, sharded: bool = True) -> list:
    """The runs ``--variants`` keeps (and this ``--shard`` takes), with ``--data_dir``."""
    specs = [s for s in specs if not args.variants or s.variant.key in args.variants]
    for spec in specs:
        if args.data_dir:
            spec.config.dataset.data_dir = args.data_dir
    return specs[args.shard[0] :: args.shard[1]] if sharded else specs


def wait_for(specs: Sequence[RunSpec], out: Path, poll_seconds: float = 10.0) -> None:
    """Block until every run in ``specs`` has finished (in this or another ``--shard``)."""
    waiting = [spec for spec in specs if not (spec.directory(out) / RUN_FILE).exists()]
    if waiting:
        print(f"waiting for {len(waiting)} tuning runs of the other shards", flush=True)
    while any(not (spec.directory(out) / RUN_FILE).exists() for spec in waiting):
        time.sleep(poll_seconds)


def finished_runs(specs: Sequence[RunSpec], out: Path) -> list[dict[str, Any]]:
    """The results of the runs in ``specs`` that have finished, in plan order, each under its
    spec's variant (a folder two variants share holds the key of the one that ran first) and
    with its folder relative to ``out``."""
    found = []
    for spec in specs:
        path = spec.directory(out) / RUN_FILE
        if path.exists():
            named = {"variant": spec.variant.key, "label": spec.variant.label}
            where = {"directory": str(spec.directory(out).relative_to(out))}
            found.append(json.loads(path.read_text()) | named | where)
    return found


def planned_r(tuning: Sequence[RunSpec], out: Path, scale: Scale) -> Callable[[str, str], float]:
    """The final runs' r as far as known before running: chosen if every tuning run finished
    (so that finished final runs are counted as such), else a placeholder."""
    finished = finished_runs(tuning, out)
    chosen = choose_r(finished, scale.tie_tolerance) if len(finished) == len(tuning) else {}
    return lambda group, key: chosen.get((group, key), default_r(scale))


def strip(run: dict[str, Any]) -> dict[str, Any]:
    """A tuning run without its per-epoch curve: only its validation error matters."""
    return {key: value for key, value in run.items() if key != "curve"}
