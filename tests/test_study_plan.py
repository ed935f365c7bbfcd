"""The confirmatory study's plan (docs/study/plan.md) is what the results record."""

import subprocess

from gnp.study import plan


def test_plan_commit_is_the_commit_that_last_changed_the_plan():
    expected = subprocess.run(
        ["git", "log", "-1", "--format=%H", "--", "docs/study/plan.md"],
        cwd=plan.PLAN_FILE.parents[2],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert len(expected) == 40
    assert plan.plan_commit() == expected


def test_plan_commit_outside_git_is_none(tmp_path):
    assert plan.plan_commit(tmp_path / "plan.md") is None
