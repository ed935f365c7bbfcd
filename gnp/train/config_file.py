"""Reading a config file and its ``--config.KEY`` overrides, for every command line.

A config file is plain Python whose ``get_config()`` returns an
``ml_collections.ConfigDict`` (as in the released code and big_vision). Loading
it here, once, before absl parses the flags turns each way a file can be broken,
and each unknown override key, into one ValueError naming the file or key and
the fix; absl alone would print a traceback or silently ignore some of them.
"""

from __future__ import annotations

import difflib
import importlib.util
import os

import ml_collections
from absl import flags
from ml_collections import config_flags

from gnp.errors import one_line


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Runs the config file's ``get_config()``; whatever goes wrong is a ValueError naming the
    file (absl would show a traceback, or ignore a ``get_config`` that returns a dict)."""
    if not os.path.isfile(path):
        raise ValueError(
            f"config file {path!r} does not exist (a path with a space must be quoted)"
        )
    spec = importlib.util.spec_from_file_location("gnp_user_config", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"config file {path!r} is not a Python file; give a .py file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ValueError(
            f"config file {path!r} has a syntax error at line {error.lineno}: {error.msg}"
        ) from error
    except ImportError as error:
        raise ValueError(
            f"config file {path!r} imports {error.name!r}, which cannot be imported ({error})"
        ) from error
    except Exception as error:
        raise ValueError(f"config file {path!r} fails when run: {one_line(error)}") from error
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ValueError(
            f"config file {path!r} has no get_config() function; define one that returns an "
            "ml_collections.ConfigDict (see gnp/configs/default.py)"
        )
    try:
        config = get_config()
    except Exception as error:
        raise ValueError(f"get_config() in {path!r} fails: {one_line(error)}") from error
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(
            f"get_config() in {path!r} returned {type(config).__name__}, not an "
            "ml_collections.ConfigDict; return one (e.g. start from "
            "gnp.configs.base.get_base_config())"
        )
    return config


def config_path(argv: list[str]) -> str | None:
    """The ``--config`` path, given as ``--config=PATH`` or ``--config PATH``."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check_override_keys(argv: list[str]) -> None:
    """Loads the config file once up front, so that a broken file or an unknown
    ``--config.KEY`` is a clear error (the latter listing the valid keys at that level)."""
    path = config_path(argv)
    if path is None:
        return
    config = load_config_file(path)
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        keys = arg[len("--config.") :].split("=", 1)[0].split(".")
        node = config
        for depth, key in enumerate(keys):
            if not hasattr(node, "keys") or key not in node:
                valid = sorted(node.keys()) if hasattr(node, "keys") else []
                where = ".".join(keys[:depth]) or "the config"
                hint = difflib.get_close_matches(key, valid, n=1)
                raise ValueError(
                    f"unknown config key {'.'.join(keys)!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; valid keys of {where}: {', '.join(valid)}"
                )
            node = node[key]


def normalize_argv(argv: list[str]) -> list[str]:
    """Joins ``--config.a.b = 0.3`` (the released scripts' spaced form) into ``--config.a.b=0.3``.

    The shell splits the spaced form into three words that absl cannot parse.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" not in arg and i + 2 < len(argv) and argv[i + 1] == "=":
            out.append(f"{arg}={argv[i + 2]}")
            i += 3
        elif arg.startswith("--") and arg.endswith("=") and i + 1 < len(argv):
            out.append(arg + argv[i + 1])
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def read_config(argv: list[str]) -> ml_collections.ConfigDict:
    """The config file of ``argv`` with its ``--config.KEY=VALUE`` overrides, as ``gnp-train``
    reads it, for a command line that trains without owning absl's global flags."""
    check_override_keys(argv)
    flag_values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file(
        "config", None, "config file", flag_values=flag_values, sys_argv=argv
    )
    flag_values(argv)
    return holder.value
