"""How the reproduction page words each confirmatory row, fixed before any error was read.

A reviewer's first question of a verdict is whether its words were chosen after the
numbers. These rules (docs/study/confirm.md, "How the page words a row") were committed
before any error of the confirmatory study was read; the page quotes this module's output
for its verdicts, and its test (tests/test_reproduction_doc.py, once the results file lands)
rebuilds them from the results: the words follow from the numbers alone.

The rules, per row of the one Holm family (test error a − b, paired by seed):
- Holm p (on the t-test) < 0.05: the difference is **detected**, in its direction; where the
  test-signal bootstrap interval includes 0, the verdict adds that the test set's own sampling
  could produce it (the seeds agree, a new test set might not).
- otherwise: **not detected**, with the t interval as the range the data leave open; never
  "no effect".
- a row whose tuned variant chose a λ (or r) at its grid's edge says so: its optimum is not
  bracketed, so the row compares that variant at a setting that may not be its best.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

ALPHA = 0.05


def _pp(value: float) -> str:
    return f"{100 * value:+.2f}"


def _edges(row: dict[str, Any], chosen: dict[str, dict[str, Any]]) -> list[str]:
    """The row's tuned variants whose chosen setting sits at its grid's edge. The 2024 part
    tunes GR's r once (at one width) and every GR variant at every width uses it."""
    if row["part"] == "icml2024":
        tuned = {name.split("/")[1]: s for name, s in chosen.items() if name.startswith("width")}
        uses_r = [key for key in (row["a"], row["b"]) if key != "adam"]
        return sorted(k for k, s in tuned.items() if uses_r and not s["bracketed"])
    groups = [row["group"]] + ([row["versus"]] if row.get("versus") else [])
    return sorted(
        {
            key
            for key in (row["a"], row["b"])
            for group in groups
            if f"{group}/{key}" in chosen and not chosen[f"{group}/{key}"]["bracketed"]
        }
    )


def direction(row: dict[str, Any]) -> str:
    """What the sign of the difference means, in the row's own terms."""
    positive = row["test_error_difference"]["mean"] > 0
    if row.get("versus"):
        pair = row["name"].split(")")[0].lstrip("(")
        where = f"at {row['group']} than at {row['versus']}"
        if positive:
            return f"{pair} is larger {where}: the larger model is hurt more"
        return f"{pair} is smaller {where}: the larger model is hurt less"
    a, b = row["name"].split(" − ", 1)
    return f"{a} has a {'higher' if positive else 'lower'} test error than {b}"


def verdict(row: dict[str, Any], chosen: dict[str, dict[str, Any]], labels: dict[str, str]) -> str:
    """One row's sentence: its numbers, then the words the rules give them."""
    error = row["test_error_difference"]
    interval = (
        "no interval"
        if error["ci_low"] is None or math.isnan(error["ci_low"])  # JSON writes NaN as null
        else f"95 % t CI [{_pp(error['ci_low'])}, {_pp(error['ci_high'])}]"
    )
    bootstrap = row.get("test_signal_bootstrap")
    numbers = (
        f"{_pp(error['mean'])} pp, {interval}, {error['positive']} of "
        f"{len(row['seeds'])} seeds positive and {error['negative']} negative, Holm p "
        f"{row['holm_p']:.3g} (of {row['holm_family_size']})"
    )
    if bootstrap:
        numbers += (
            f", test-signal bootstrap [{_pp(bootstrap['ci_low'])}, {_pp(bootstrap['ci_high'])}]"
        )
    if row["holm_p"] < ALPHA and error["mean"] != 0:
        words = f"detected: {direction(row)}"
        if bootstrap and bootstrap["ci_low"] <= 0 <= bootstrap["ci_high"]:
            words += " on these seeds, within the test set's own sampling uncertainty"
    else:
        words = "no difference detected"
    edges = _edges(row, chosen)
    if edges:
        names = " and ".join(labels.get(key, key) for key in edges)
        at = "its grid's edge" if len(edges) == 1 else "their grids' edges"
        words += f" ({names}: chosen at {at}, optimum not bracketed)"
    group = row["group"] + (f" vs {row['versus']}" if row.get("versus") else "")
    return f"- **{row['name']}** ({group}): {numbers}. {words[0].upper()}{words[1:]}."


def verdicts(
    rows: Sequence[dict[str, Any]], chosen: dict[str, dict[str, Any]], labels: dict[str, str]
) -> str:
    """The page's verdict list: one sentence per row, in the family's order."""
    return "\n".join(verdict(row, chosen, labels) for row in rows)
