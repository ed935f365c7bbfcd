"""docs/reproduction.md, the confirmatory study's page: the design it states is the plan's
scale in the code, and the plan's commit it names is the one the results will record."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from gnp.provenance import git
from gnp.study import plan

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "reproduction.md").read_text()
CONFIRM = plan.SCALES["confirm"]


def _braced(values) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


def test_the_design_the_page_states_is_the_confirm_scale():
    prose = " ".join(DOC.split())  # the page wraps lines anywhere
    seeds = ", ".join(str(seed) for seed in CONFIRM.tune_seeds)
    assert f"**Tuning over three seeds** ({seeds})" in prose and len(CONFIRM.tune_seeds) == 3
    assert f"{CONFIRM.validation_size:,} held-out validation signals" in prose
    assert CONFIRM.flip_validation and "flipped at the training rate" in prose
    assert f"learning rate varied ({_braced(sorted({0.1, *CONFIRM.lr_grid}))}" in prose
    assert f"GR's r tuned over {_braced(CONFIRM.r_grid_2024)}" in prose
    widths = ", ".join(str(w) for w in CONFIRM.widths)
    assert f"three widths ({widths})" in prose and len(CONFIRM.widths) == 3
    seeds_at_64 = Counter({key: n for width, key, n in CONFIRM.design_2024 if width == 64})
    assert seeds_at_64["adam"] == seeds_at_64["gr"] == seeds_at_64["gr_warmup_zero"] == 20
    assert "20 seeds for Adam, GR and zero-warmup GR at width 64" in prose
    size = plan.family_size(plan.CONFIRMATORY, CONFIRM)
    assert f"**One Holm family of {size} rows**" in prose and CONFIRM.holm_on == "t_test_p"


def test_the_plan_commit_the_page_names_is_the_plans():
    """The commit that last changed docs/study/plan.md (what the results record as
    ``plan_commit``) is the one the page names, so the plan has not moved since."""
    named = re.search(r"committed \(([0-9a-f]{7}), (\d{4}-\d\d-\d\d)\)", DOC)
    assert named, "the page names no plan commit"
    commit = plan.plan_commit()
    assert commit is not None and commit.startswith(named.group(1))
    date = git(ROOT, "log", "-1", "--format=%ad", "--date=short", commit).strip()
    assert date == named.group(2)
