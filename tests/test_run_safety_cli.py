"""The command line a user runs: every mistake or fault is one ``error:`` line, no traceback.

Each case runs ``python -m gnp.main`` in a fresh process, except config-file errors:
those are found before absl parses a flag, so ``gnp.main.main.run()`` is called in this process
with the same argv.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_data_sources import write_cifar

from gnp.data import cifar
from gnp.train.checkpoint import CheckpointError, Checkpoints
from gnp.train.stops import Preempted
from gnp.train.workdir import RunLocked

REPO = Path(__file__).resolve().parents[1]
DEFAULT = str(REPO / "gnp" / "configs" / "default.py")
# A closed local port as the proxy: a CIFAR download fails at once instead of going online.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}


def gnp_main(*args, env=None, **kwargs):
    environment = {**os.environ, "PYTHONPATH": str(REPO), **OFFLINE, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gnp.main", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        **kwargs,
    )


def assert_one_line_error(result, *patterns):
    """Exit code 1, no traceback, and a last stderr line ``error: ...`` matching each pattern."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), result.stderr
    for pattern in patterns:
        assert re.search(pattern, line), line
    return line


CONFIG_FILES = {
    "syntax": ("def get_config(:\n", r"has a syntax error at line 1"),
    "no_get_config": ("X = 1\n", r"has no get_config\(\) function"),
    "returns_none": ("def get_config():\n    pass\n", r"returned NoneType, not an ml_collec"),
    "returns_dict": ("def get_config():\n    return {'batch_size': 8}\n", r"returned dict"),
    "missing_import": ("import no_such_module_x\n", r"imports 'no_such_module_x'"),
    "raises": ("def get_config():\n    return 1 / 0\n", r"fails: ZeroDivisionError"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES))
def test_a_broken_config_file_is_one_line_naming_it(tmp_path, monkeypatch, capsys, case):
    from gnp.main import main

    source, message = CONFIG_FILES[case]
    path = tmp_path / "my config.py"  # a space in the path too
    path.write_text(source)
    argv = ["gnp-train", f"--config={path}", f"--working_dir={tmp_path / 'run'}"]
    monkeypatch.setattr(sys, "argv", argv)
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main.run()
    finally:
        signal.signal(signal.SIGINT, previous)  # run() ends Ctrl-C at once while it exits
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert stderr.count("\n") == 1 and stderr.startswith("error: ")
    assert repr(str(path)) in stderr and re.search(message, stderr), stderr
    assert not (tmp_path / "run").exists()


def test_a_broken_config_file_through_the_real_command_line(tmp_path):
    path = tmp_path / "c.py"
    path.write_text(CONFIG_FILES["syntax"][0])
    assert_one_line_error(gnp_main(f"--config={path}"), r"has a syntax error at line 1")


def test_an_unquoted_path_with_a_space_says_to_quote_it(tmp_path):
    result = gnp_main(f"--config={tmp_path}/my", "config.py", "--dry_run")
    assert_one_line_error(result, r"does not exist \(a path with a space must be quoted\)")


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "c.py").write_text("X = 1\n")
    result = gnp_main(f"--config={tmp_path / 'c.py'}", "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr
    result = gnp_main(f"--config={tmp_path / 'c.py'}", env={"GNP_DEBUG": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_bad_values_name_the_key(tmp_path):
    result = gnp_main(f"--config={DEFAULT}", "--config.label_smoothing=1.0", "--dry_run")
    assert_one_line_error(result, r"label_smoothing must be in \[0, 1\), got 1.0")


def test_working_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    result = gnp_main(f"--config={DEFAULT}", f"--working_dir={tmp_path / 'file'}")
    assert_one_line_error(result, r"file, not a directory; choose another --working_dir")


def test_missing_cifar_leaves_nothing_behind(tmp_path):
    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    result = gnp_main(
        f"--config={DEFAULT}",
        "--config.dataset.dataset_name=cifar10",
        f"--config.dataset.data_dir={data_dir}",
        f"--working_dir={run_dir}",
    )
    assert_one_line_error(result, "CIFAR-10 not found", "cifar-10-python.tar.gz")
    assert sorted(os.listdir(tmp_path)) == []


def test_corrupt_cifar_archive(tmp_path):
    (tmp_path / cifar.CIFAR10.archive).write_bytes(b"<html>not found</html>")
    result = gnp_main(
        f"--config={DEFAULT}",
        "--config.dataset.dataset_name=cifar10",
        f"--config.dataset.data_dir={tmp_path}",
        f"--working_dir={tmp_path / 'run'}",
    )
    assert_one_line_error(result, r"cifar-10-python.tar.gz is not a readable .tar.gz archive")
    assert not (tmp_path / "run").exists()


def test_a_cifar_file_that_is_not_a_pickle(tmp_path):
    write_cifar(tmp_path, cifar.CIFAR10, as_archive=False)
    batch = tmp_path / cifar.CIFAR10.folder / "test_batch"
    batch.write_bytes(b"not a pickle")
    result = gnp_main(
        f"--config={DEFAULT}",
        "--config.dataset.dataset_name=cifar10",
        f"--config.dataset.data_dir={tmp_path}",
        "--dry_run",
    )
    assert_one_line_error(result, rf"{batch} is not a pickled CIFAR batch")


# --- Faults during a run --------------------------------------------------------------


def stop_after_an_epoch(args, signum, epoch_line):
    """Runs ``gnp.main ARGS`` in a process group of its own, as a terminal does, and sends
    ``signum`` to the whole group (the data workers too, as Ctrl-C or a closed terminal do)
    once ``epoch_line`` is printed; returns (exit code, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gnp.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,
    )
    try:
        for line in process.stdout:
            if line.startswith(epoch_line):
                break
        os.killpg(process.pid, signum)
        _, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    return process.returncode, stderr


@pytest.mark.slow
def test_ctrl_c_saves_says_how_to_resume_and_exits_130(tmp_path):
    """With data workers (num_workers=2): none prints a traceback, and the train iterator is
    closed with the run (else the resumed run's exit printed "OSError: handle is closed" and
    shared memory leaked). The resume is stopped by SIGHUP, which saves like SIGTERM."""
    run_dir = tmp_path / "run"
    args = [
        f"--config={DEFAULT}",
        f"--working_dir={run_dir}",
        "--config.total_epochs=200",
        "--config.dataset.num_workers=2",
    ]
    for signum, epoch_line, code in (
        (signal.SIGINT, "epoch   1", 130),
        (signal.SIGHUP, "epoch   2", 129),
    ):
        returncode, stderr = stop_after_an_epoch(args, signum, epoch_line)
        assert returncode == code, stderr
        for noise in ("Traceback", "handle is closed", "leaked", "Exception ignored"):
            assert noise not in stderr, stderr
        last = stderr.strip().splitlines()[-1]
        match = re.fullmatch(
            rf"stopped at step (\d+) \(epoch \d+\) on request \({signum.name}\) and saved (\S+); "
            "run the same command to resume",
            last,
        )
        assert match, stderr
        step = int(match[1])
        assert match[2] == str(run_dir / "checkpoints" / str(step))
        assert Checkpoints(str(run_dir / "checkpoints")).all_steps()[-1] == step


@contextlib.contextmanager
def tmpfs(path, options):
    """A small tmpfs at ``path`` (root only); skips the test where mounting is not allowed."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)])
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.slow
def test_read_only_working_dir(tmp_path):
    with tmpfs(tmp_path / "ro", "size=1m,ro") as mount:
        result = gnp_main(f"--config={DEFAULT}", f"--working_dir={mount}")
    assert_one_line_error(result, rf"cannot write to {mount} \(Read-only file system\)")


@pytest.mark.slow
def test_full_disk_during_a_save_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    # Room for the first checkpoint (~260 KB) but not the second.
    with tmpfs(tmp_path / "small", "size=450k") as mount:
        result = gnp_main(
            f"--config={DEFAULT}",
            f"--working_dir={mount / 'run'}",
            "--config.total_epochs=3",
            "--config.save_ckpt_every_n_epochs=1",
        )
        assert_one_line_error(
            result,
            r"could not save the checkpoint of step 22 .*No space left on device",
            rf"the last good checkpoint is {mount}/run/checkpoints/11",
        )
        checkpoints = Checkpoints(str(mount / "run" / "checkpoints"), read_only=True)
        assert checkpoints.all_steps() == [11]
        _, progress = checkpoints.load(11)
        checkpoints.close()
        assert progress["epoch"] == 1


@pytest.mark.parametrize(
    "error,code,message",
    [
        (KeyboardInterrupt(), 130, r"^interrupted \(Ctrl-C\); the checkpoints already in"),
        (
            RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.2GiB"),
            1,
            r"^error: out of memory; lower batch_size",
        ),
        (KeyError("x"), 1, r"^error: KeyError: 'x' \(unexpected: rerun with --debug"),
        (FileNotFoundError(2, "No such file", "/d"), 1, r"^error: \[Errno 2\] No such file"),
        (
            OSError(28, "No space left on device"),  # TensorBoard's flush names no file
            1,
            r"^error: No space left on device while writing the run's files; free space where "
            "--working_dir is",
        ),
        (RunLocked("d is in use by another run (pid 7)"), 1, r"^error: d is in use .*pid 7"),
        (CheckpointError("could not save\nthe checkpoint"), 1, r"^error: could not save the"),
        (Preempted("stopped at step 3", 130), 130, r"^stopped at step 3$"),
    ],
)
def test_every_failure_is_one_line_with_an_exit_code(error, code, message):
    from gnp.main.main import describe_failure

    got_code, line = describe_failure(error)
    assert got_code == code and re.search(message, line) and "\n" not in line


def test_help_points_to_the_config_keys():
    result = gnp_main("--help")
    assert result.returncode == 0, result.stderr
    assert "--config.KEY=VALUE" in result.stdout and "gnp/config_keys.py" in result.stdout
