"""Trainings in a fresh process, one after another:
``run_training.py DEVICES RUNS [ID N PORT]``, RUNS a JSON list of ``[DIR, OVERRIDES]``.

Data-parallel tests compare runs on different device and process counts, which
JAX fixes once per process (and which take seconds to start: hence several runs in one).
"""

import json
import os
import sys

devices, runs = int(sys.argv[1]), json.loads(sys.argv[2])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(__file__))

from gnp.train import distributed  # noqa: E402

if len(sys.argv) > 3:
    process_id, num_processes, port = map(int, sys.argv[3:6])
    distributed.initialize(f"localhost:{port}", num_processes, process_id)

import tiny_models  # noqa: E402, F401
from test_train import tiny_config  # noqa: E402

from gnp.train.loop import train_and_evaluate  # noqa: E402

for working_dir, overrides in runs:
    train_and_evaluate(tiny_config(**overrides), working_dir)
