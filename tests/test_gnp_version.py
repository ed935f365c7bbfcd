"""The version string a checkpoint and a study record carry: gnp's version, the commit of the
checkout it runs from, and a mark when its gnp/ differs from that commit."""

import subprocess

import gnp
from gnp.provenance import checkout_version


def git(repo, *args):
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_checkout_is_named_by_its_commit_and_marked_when_gnp_differs(tmp_path):
    repo = tmp_path / "checkout"
    (repo / "gnp").mkdir(parents=True)
    (repo / "gnp" / "__init__.py").write_text("x = 1\n")
    (repo / "README.md").write_text("a\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    commit = git(repo, "rev-parse", "--short", "HEAD")
    assert checkout_version(str(repo)) == f"{gnp.__version__} (commit {commit})"
    (repo / "README.md").write_text("b\n")  # outside gnp/: the code that runs is the commit's
    (repo / "gnp" / "new.py").write_text("y = 2\n")  # untracked: not imported by anything
    assert checkout_version(str(repo)) == f"{gnp.__version__} (commit {commit})"
    (repo / "gnp" / "__init__.py").write_text("x = 2\n")
    marked = f"{gnp.__version__} (commit {commit}, with uncommitted changes to gnp/)"
    assert checkout_version(str(repo)) == marked


def test_outside_a_checkout_or_inside_another_repository_only_the_version(tmp_path):
    assert checkout_version(str(tmp_path)) == gnp.__version__
    outer = tmp_path / "project"
    (outer / "venv" / "gnp").mkdir(parents=True)
    (outer / "venv" / "gnp" / "__init__.py").write_text("x = 1\n")
    git(outer, "init", "-q")
    git(outer, "add", ".")
    git(outer, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project")
    # The checkout's top is the project, not the folder gnp is installed in: no commit of gnp's.
    assert checkout_version(str(outer / "venv")) == gnp.__version__
    assert checkout_version(str(outer)).startswith(f"{gnp.__version__} (commit ")
