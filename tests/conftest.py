"""Test-wide set-up: four virtual CPU devices and a persistent compilation cache.

Four devices let multi-device code run on one CPU. The compilation cache lives in
``.pytest_cache/jax`` and is set through the environment, so the training runs
that tests start in fresh processes share it: the same tiny step compiled by
several tests (or by the next ``make test``) is read back instead of compiled
again, which is most of the suite's time on a 2-core machine.
"""

import os
from pathlib import Path

import pytest

_CACHE = Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
# Cache every program that took noticeable time to compile; tiny ones cost more to store.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A finished 2-epoch run of test_train's tiny config, checkpoints at steps 5 and 10, trained
    once per test worker: the tests only read it, or copy it and damage the copy. Imports
    inside: JAX must load after the environment above is set."""
    from test_train import tiny_config

    from gnp.train.loop import train_and_evaluate

    working_dir = tmp_path_factory.mktemp("finished") / "run"
    train_and_evaluate(tiny_config(total_epochs=2), str(working_dir))
    return working_dir


@pytest.fixture(autouse=True, scope="module")
def _cheap_compiles(request):
    """In a file marked ``compile_bound``, XLA compiles without its expensive passes: those
    files compile many small steps (sharded, multi-device, per-metric) and run each a few
    times, so optimizing them costs more than it saves (measured per file, paired, on a cold
    compilation cache). The level is part of the compilation cache's key, so the two never
    share an entry. Files whose time is computation keep the default (there, level 0 is
    several times slower)."""
    if request.node.get_closest_marker("compile_bound") is None:
        yield
        return
    import jax

    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", False)
