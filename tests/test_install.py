"""What `make` installs stays consistent: the GPU extras pin the same jax as the lock."""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).parents[1]


def _locked_version(name: str) -> str:
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        package, _, version = line.partition("==")
        if package.lower() == name:
            return version
    raise AssertionError(f"{name} is not pinned in requirements.lock")


def test_cuda_extras_install_the_locked_jax_release():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    jax_version = _locked_version("jax")
    assert _locked_version("jaxlib") == jax_version
    for cuda in ("cuda12", "cuda13"):
        (requirement,) = extras[cuda]
        assert re.fullmatch(rf"jax\[{cuda}\]=={re.escape(jax_version)}", requirement), requirement
