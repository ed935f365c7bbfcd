"""Run safety, third round (issue 30 §1): the files a run keeps are never torn or forgotten.

A full disk is injected by making every write to one named file fail with ENOSPC, however
it is opened (``open`` or a descriptor from ``mkstemp``); a copied-in checkpoint is a real
checkpoint of another run.
"""

import builtins
import errno
import json
import os
import shutil

import pytest
from test_train import read_jsonl, tiny_config

from gnp.train.checkpoint import CheckpointMismatch, Checkpoints
from gnp.train.loop import train_and_evaluate
from gnp.train.workdir import ConfigChanged, NotWritable, run_id


@pytest.fixture
def interrupted(finished_run, tmp_path):
    """A copy of the run as if it had been killed after epoch 2's metrics line but before its
    checkpoint: a resume starts at epoch 1 and cuts metrics.jsonl back to it."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    shutil.rmtree(copy / "checkpoints" / "10")
    return copy


class FullDisk:
    """Writes to files whose name contains ``name`` fail with ENOSPC (after the open, as on a
    full disk: ``open(path, "w")`` has already truncated the file)."""

    def __init__(self, monkeypatch, name):
        self.name = name
        real_open, real_fdopen = builtins.open, os.fdopen

        def open_(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            return self.wrap(handle, str(file), mode)

        def fdopen(fd, mode="r", *args, **kwargs):
            handle = real_fdopen(fd, mode, *args, **kwargs)
            return self.wrap(handle, os.readlink(f"/proc/self/fd/{fd}"), mode)

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(os, "fdopen", fdopen)

    def wrap(self, handle, path, mode):
        if self.name not in os.path.basename(path) or not set(mode) & set("wa+"):
            return handle

        def write(_):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        handle.write = write
        handle.writelines = write
        return handle


def test_a_full_disk_while_metrics_are_cut_back_leaves_them_whole(interrupted, monkeypatch):
    before = (interrupted / "metrics.jsonl").read_text()
    with monkeypatch.context() as patch:
        FullDisk(patch, "metrics.jsonl")
        with pytest.raises(NotWritable, match=r"could not write .*metrics\.jsonl \(No space left"):
            train_and_evaluate(tiny_config(total_epochs=2), str(interrupted))
    assert (interrupted / "metrics.jsonl").read_text() == before
    train_and_evaluate(tiny_config(total_epochs=2), str(interrupted))
    assert [m["epoch"] for m in read_jsonl(interrupted)] == [1, 2]


def test_a_full_disk_while_config_json_is_rewritten_leaves_it_whole(interrupted, monkeypatch):
    before = (interrupted / "config.json").read_text()
    with monkeypatch.context() as patch:
        FullDisk(patch, "config.json")
        with pytest.raises(NotWritable, match=r"could not write .*config\.json \(No space left"):
            train_and_evaluate(tiny_config(total_epochs=2), str(interrupted))
    assert (interrupted / "config.json").read_text() == before
    assert not [p for p in os.listdir(interrupted) if p.endswith(".tmp")]
    train_and_evaluate(tiny_config(total_epochs=2), str(interrupted))  # resumes as before
    assert [m["epoch"] for m in read_jsonl(interrupted)] == [1, 2]


def test_a_deleted_config_json_is_checked_against_the_history(interrupted, capsys):
    (interrupted / "config.json").unlink()
    with pytest.raises(ConfigChanged, match=r"gnp\.alpha: 0\.8 -> 0\.1"):
        train_and_evaluate(tiny_config(total_epochs=2, **{"gnp.alpha": 0.1}), str(interrupted))
    assert "config.json is missing; checking the config against the last start" in (
        capsys.readouterr().out
    )
    train_and_evaluate(tiny_config(total_epochs=2), str(interrupted))  # its own config resumes
    assert (interrupted / "config.json").exists()


def test_a_torn_config_json_is_one_line_naming_it(interrupted):
    (interrupted / "config.json").write_text('{"batch_size": 25')
    with pytest.raises(ConfigChanged, match=r"config\.json is damaged .*restore it, or delete"):
        train_and_evaluate(tiny_config(total_epochs=2), str(interrupted))


def test_another_runs_checkpoint_copied_in_is_refused_and_kept(finished_run, tmp_path):
    """Run b trained 1 epoch; run a's epoch-2 checkpoint copied into it must not be resumed
    as b's (which gave metrics epochs 1 3)."""
    b = tmp_path / "b"
    train_and_evaluate(tiny_config(total_epochs=1), str(b))
    shutil.copytree(finished_run / "checkpoints" / "10", b / "checkpoints" / "10")
    metrics = (b / "metrics.jsonl").read_text()
    allow = {"allow_config_change": ["total_epochs"]}
    with pytest.raises(CheckpointMismatch, match=r"checkpoints/10 belongs to another run") as e:
        train_and_evaluate(tiny_config(total_epochs=3), str(b), **allow)
    assert run_id(str(finished_run)) in str(e.value) and run_id(str(b)) in str(e.value)
    assert sorted(os.listdir(b / "checkpoints")) == ["10", "5"]  # nothing set aside
    assert (b / "metrics.jsonl").read_text() == metrics
    shutil.rmtree(b / "checkpoints" / "10")  # the way out the message names
    train_and_evaluate(tiny_config(total_epochs=3), str(b), **allow)
    assert [m["epoch"] for m in read_jsonl(b)] == [1, 2, 3]


def test_each_checkpoint_carries_the_run_id_kept_in_the_history(finished_run):
    ours = run_id(str(finished_run))
    checkpoints = Checkpoints(str(finished_run / "checkpoints"), read_only=True)
    assert [checkpoints.load(step)[1]["run_id"] for step in (5, 10)] == [ours, ours]
    checkpoints.close()
    with open(finished_run / "config_history.jsonl") as f:
        assert json.loads(f.readline())["run_id"] == ours


def test_a_deleted_run_json_is_found_in_the_history(interrupted):
    ours = run_id(str(interrupted))
    (interrupted / "run.json").unlink()
    assert run_id(str(interrupted)) == ours
    train_and_evaluate(tiny_config(total_epochs=2), str(interrupted))
    assert json.loads((interrupted / "run.json").read_text())["run_id"] == ours
