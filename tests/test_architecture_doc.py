"""docs/architecture.md against the code (issue 25): every path it names exists, every module
of ``gnp/train/`` and ``gnp/study/`` has its row, and the layering rules and size limits it
states hold (parsed with ``ast``, not by running anything)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / "gnp" / package).glob("*.py") if not p.name.startswith("_"))


def test_every_path_the_doc_names_exists():
    named = set(re.findall(r"`(gnp/[\w/.]+?)/?`", DOC))
    assert len(named) > 15
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"docs/architecture.md names {missing}, which do not exist"


def test_every_train_and_study_module_has_its_row():
    train_rows = re.findall(r"^\| `(\w+\.py)` \|", DOC, re.M)
    assert sorted(train_rows) == sorted(p.name for p in modules("train"))
    study_row = next(line for line in DOC.splitlines() if line.startswith("| `gnp/study/` |"))
    assert set(re.findall(r"`(\w+\.py)`", study_row)) == {p.name for p in modules("study")}


def imported_modules(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_train_never_imports_the_config_files_and_stays_small():
    train = modules("train")
    assert len(train) <= 11
    for path in train:
        tree = ast.parse(path.read_text())
        configs = sorted(n for n in imported_modules(tree) if n.startswith("gnp.configs"))
        assert not configs, f"{path.name} imports {configs}"
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 100, f"{path.name}:{node.name} is {length} lines"


def test_the_gnp_options_are_checked_in_one_place():
    """Only gnp/options.py raises ``OptionError`` (the trainer catches it to name config
    keys); the old ``check_coefficients`` is gone from every module."""
    raisers = []
    for path in (ROOT / "gnp").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            called = isinstance(node, ast.Call) and getattr(node.func, "id", "")
            if called in ("OptionError", "check_coefficients"):
                raisers.append(path.relative_to(ROOT).as_posix())
    assert raisers and set(raisers) == {"gnp/options.py"}, raisers
