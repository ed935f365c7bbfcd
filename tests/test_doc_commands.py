"""Every shell command in README.md and docs/*.md is checked, so that the docs cannot drift.

A command is found in a ```bash block (every line), or in an unlabelled fenced block or an
indented block (a line that starts with a program, since such blocks also hold paths and
formulas; diagrams are fenced as ```text). Each is checked by what it runs:

- ``python -m gnp.main`` / ``gnp-train``: its config file loads, every ``--config.KEY``
  exists and the resolved config passes the trainer's checks; every other flag is one of
  gnp.main's. Not executed: each trains for longer than the suite can afford (the trainer's
  command line is run end to end by test_run_safety_cli.py and test_recipes.py).
- ``gnp-analyze``, ``python -m gnp.study``, ``python benchmarks/X.py``: their own argument
  parsers accept the command. The analysis commands on runs/default, runs/sgd and runs/gnp
  are also executed, verbatim, by test_analyze.py.
- ``make TARGET``: the Makefile has the target.
- anything else must be listed in ``NOT_CHECKED`` with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell"}
PROGRAMS = ("python", "python3", "gnp-train", "gnp-analyze", "make", "source", "srun", "pip")
NOT_CHECKED = {
    "source": "activates the virtual environment the suite itself runs in",
    "srun": "SLURM's launcher; the gnp.main command it starts is checked on its own",
    "pip": "installs packages: the lock and make's set-up are what the suite runs under",
    "mkdir": "a file-system step before a command that is checked",
    "cp": "a file-system step before a command that is checked",
}
# Placeholders the docs use where the reader fills in a value.
PLACEHOLDERS = {"...", "PATH/TO/config.py"}


@dataclasses.dataclass(frozen=True)
class Command:
    """One command as a shell would split it, and where it is written."""

    doc: str
    line: int
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {shlex.join(self.argv)}"


def code_lines(text: str) -> Iterator[tuple[int, str, str | None]]:
    """(line number, line, fence language or None for an indented block) of every code line,
    continuation lines joined onto the line they continue."""
    lines = text.splitlines()
    language: str | None = None
    in_fence = in_indented = False
    previous_blank = True
    pending: tuple[int, str] | None = None
    for number, line in enumerate(lines, start=1):
        if line.startswith("```"):
            in_fence, language = not in_fence, line[3:].strip()
            previous_blank = False
            continue
        if line.strip():  # an indented block starts after a blank line and runs until prose
            in_indented = (
                not in_fence and line.startswith("    ") and (previous_blank or in_indented)
            )
        previous_blank = not line.strip()
        if not (in_fence or in_indented) or not line.strip():
            continue
        start, body = pending if pending else (number, "")
        body += " " + line.strip()
        if body.endswith("\\"):
            pending = (start, body[:-1])
            continue
        pending = None
        yield start, body.strip(), (language if in_fence else None)


def split_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line: split at ; & && | and with shell keywords
    (for ... in ...; do ...; done) and variable assignments removed; $variables become 0."""
    line = re.sub(r"\$\{?\w+\}?", "0", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, current = [], []
    for token in lexer:
        if set(token) <= set(";&|"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    simple = []
    for words in commands:
        if words[:1] == ["do"]:
            words = words[1:]
        while words and re.fullmatch(r"\w+=\S*", words[0]):  # VAR=value prefix or assignment
            words = words[1:]
        if words and words[0] not in ("for", "done", "wait"):
            simple.append(words)
    return simple


def doc_commands() -> list[Command]:
    found = []
    for path in DOCS:
        for number, line, language in code_lines(path.read_text()):
            shell = language in SHELL_LANGUAGES
            unlabelled = not language  # an indented block or a fence without a language
            starts_a_program = bool(line) and Path(line.split()[0]).name.startswith(PROGRAMS)
            if not (shell or (unlabelled and starts_a_program)):
                continue  # python, text (diagrams), paths, formulas
            try:
                commands = split_commands(line)
            except ValueError as error:  # an unclosed quote
                raise ValueError(f"{path.name}:{number}: {error}: {line}") from None
            doc = str(path.relative_to(ROOT))
            found += [Command(doc, number, tuple(words)) for words in commands]
    return found


COMMANDS = doc_commands()


def target(argv: tuple[str, ...]) -> tuple[str, list[str]]:
    """(what runs, its arguments): a module, a script path, or a program name."""
    program = Path(argv[0]).name
    if re.fullmatch(r"python(3(\.\d+)?)?", program):
        if argv[1] == "-m":
            return argv[2], list(argv[3:])
        return argv[1], list(argv[2:])
    entry_points = {"gnp-train": "gnp.main", "gnp-analyze": "gnp.analyze"}
    return entry_points.get(program, program), list(argv[1:])


class _Parsed(Exception):
    """Raised by the patched ``parse_args`` once a script's parser has accepted its argv."""


def check_argparse_script(path: Path, arguments: list[str], monkeypatch) -> None:
    """Runs the script's ``main()`` until its parser has parsed ``arguments``."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.syspath_prepend(str(path.parent))
    monkeypatch.setattr(sys, "argv", [str(path), *arguments])
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    module = importlib.import_module(path.stem)
    with pytest.raises(_Parsed):
        module.main()


def check_train_command(arguments: list[str]) -> None:
    """The trainer's flags and config, resolved as gnp.main resolves them, without training."""
    from absl import flags

    from gnp.main import main as cli  # defines gnp.main's flags
    from gnp.train.config import normalize_argv, read_config, validate_config

    synopsis = [a for a in arguments if a.startswith("[") or a.endswith("]") or a == "..."]
    arguments = [a for a in normalize_argv(arguments) if a not in synopsis]
    config_args = [a for a in arguments if a.startswith(("--config=", "--config."))]
    for argument in set(arguments) - set(config_args):
        name = argument.removeprefix("--").split("=", 1)[0]
        if name not in flags.FLAGS and name.startswith("no"):  # --noflag of a boolean
            name = name[2:]
        defined_by = flags.FLAGS.find_module_defining_flag(name) if name in flags.FLAGS else None
        assert defined_by == cli.__name__, f"gnp.main has no flag {argument}"
    path = next(a.split("=", 1)[1] for a in config_args if a.startswith("--config="))
    if path in PLACEHOLDERS:
        return
    assert (ROOT / path).is_file(), f"no config file {path}"
    overrides = [a for a in config_args if not a.startswith("--config=")]
    config = read_config(["gnp-train", f"--config={ROOT / path}", *overrides])
    validate_config(config)


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_documented_command(command: Command, monkeypatch) -> None:
    what, arguments = target(command.argv)
    if what in NOT_CHECKED:
        return
    if what in ("gnp.main", "gnp.main.main"):
        check_train_command(arguments)
    elif what == "gnp.analyze":
        from gnp import analyze

        analyze.parse_args(arguments)
    elif what == "gnp.study":
        from gnp.study import main as study_main

        study_main.parse_args(arguments)
    elif what.startswith("benchmarks/") and what.endswith(".py"):
        check_argparse_script(ROOT / what, arguments, monkeypatch)
    elif what == "make":
        makefile = (ROOT / "Makefile").read_text()
        for name in (a for a in arguments if "=" not in a):
            assert re.search(rf"^{re.escape(name)}:", makefile, re.M), f"no make target {name}"
    else:
        pytest.fail(f"{command}: no check for {what!r}; add one or a reason to NOT_CHECKED")


def test_every_doc_command_is_found() -> None:
    """The extraction itself: commands of each kind and place are there (a regex that matched
    nothing would pass every check above)."""
    texts = {str(c) for c in COMMANDS}
    for expected in (
        "README.md:14: make train",
        "README.md:31: source .venv/bin/activate",
        "gnp-analyze interpolate --working_dir=runs/sgd --other=runs/gnp",
        "gnp-analyze hessian --working_dir=0/alpha_0_r_0.2 --other=0/alpha_0_r_0.2",
        "python -m gnp.study --mode=full --shard=1/2",
        ".venv/bin/python benchmarks/step_time.py --models ResNet18,ViT_TI16",
        "srun .venv/bin/python -m gnp.main --config=gnp/configs/resnet_imagenet.py",
    ):
        assert any(expected in text for text in texts), expected
    assert len({c.doc for c in COMMANDS}) >= 6


@pytest.mark.parametrize(
    "line",
    [
        "python -m gnp.main --config=gnp/configs/default.py --config.gnp.alhpa=0.8",
        "python -m gnp.main --config=gnp/configs/default.py --config.gnp.r=-1",
        "python -m gnp.main --config=gnp/configs/nope.py",
        "python -m gnp.main --config=gnp/configs/default.py --work_dir=runs/x",
    ],
)
def test_a_broken_train_command_is_caught(line: str) -> None:
    with pytest.raises((AssertionError, ValueError)):
        check_train_command(target(tuple(shlex.split(line)))[1])


def test_a_broken_script_command_is_caught(monkeypatch) -> None:
    with pytest.raises(SystemExit):
        check_argparse_script(ROOT / "benchmarks/step_time.py", ["--modles", "X"], monkeypatch)
