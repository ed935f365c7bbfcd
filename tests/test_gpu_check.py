"""benchmarks/gpu_check.py --smoke: every part of the GPU run on CPU at its smallest sizes, so
the script cannot rot while no GPU is lent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_runs_every_part_and_records_a_timed_out_one(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The step table gets a 1 s box: it is recorded as timed out and the other parts still run.
    command = [sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--smoke", f"--out={out}"]
    command += ["--box_table=1", "--train_per_file=16", "--train_batch=16", "--probes=1"]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=170)
    parts = json.loads((out / "results.json").read_text())["parts"]
    assert parts["table"]["status"] == "timed out after 1 s"
    assert all(parts[p]["status"] == "ok" for p in ("train", "speed", "loader", "memory"))
    train = parts["train"]
    assert train["loss_falls"] and train["norms_finite"] and train["bf16_within_tolerance"]
    assert train["resume_bit_identical"]  # CPU: XLA's ops are deterministic
    assert set(parts["loader"]["images_per_second"]) == {
        "CIFAR-10 basic, batch 128",
        "CIFAR-10 autoaugment, batch 128",
        "ImageNet 224 basic, batch 64",
    }
    assert parts["memory"]["float32"]["probes"][0]["batch"] == 8
    summary = (out / "summary.md").read_text()
    assert "- device: CPU" in summary and "## table: timed out after 1 s" in summary


def test_without_a_gpu_the_full_run_refuses_in_one_line_naming_smoke():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu_check.py")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stdout.strip().splitlines() == [
        "error: jax sees no GPU; on a CPU machine run benchmarks/gpu_check.py --smoke"
    ]
