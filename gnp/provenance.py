"""Which code made a record: gnp's version and, in a git checkout, its commit.

Checkpoints, study records and benchmark files each say which gnp wrote them, and the
study's results which commit declared its plan; both ask git, through the one helper here.
Standard library only."""

from __future__ import annotations

import functools
import os
import subprocess

import gnp


def git(directory: str | os.PathLike[str], *args: str) -> str:
    """``git -C directory ARGS``'s output. Raises ``OSError`` (no git) or
    ``subprocess.SubprocessError`` (not a checkout, or git failed)."""
    return subprocess.run(
        ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout


@functools.cache
def gnp_version() -> str:
    """This gnp's version and, when it runs from a git checkout of gnp, the commit: saved in
    each checkpoint's meta, so that a checkpoint another version cannot read names its writer,
    and in each study run's record."""
    return checkout_version(os.path.dirname(os.path.dirname(os.path.realpath(gnp.__file__))))


def checkout_version(checkout: str) -> str:
    """gnp's version, with the commit of ``checkout`` when it is the top of a git checkout, and
    a mark when its ``gnp/`` differs from that commit (the commit alone would then claim code
    that did not run)."""
    try:
        top, commit = git(checkout, "rev-parse", "--show-toplevel", "--short", "HEAD").split()
        modified = git(
            checkout, "status", "--porcelain", "--untracked-files=no", "--", "gnp"
        ).strip()
    except (OSError, subprocess.SubprocessError, ValueError):  # no git, or not a checkout
        return gnp.__version__
    # An installed gnp inside some other repository (a venv in a project) has no commit of its own.
    if os.path.realpath(top) != os.path.realpath(checkout):
        return gnp.__version__
    mark = ", with uncommitted changes to gnp/" if modified else ""
    return f"{gnp.__version__} (commit {commit}{mark})"
