"""gnp.files: an atomic rewrite that fails leaves the old file whole; a torn JSON file is
refused naming the file and the fix."""

import json
import os

import pytest

from gnp import files


def test_rewrite_replaces_the_whole_file(tmp_path):
    path = tmp_path / "results.json"
    files.write_json_atomically(path, {"a": 1})
    files.write_json_atomically(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_full_disk_during_a_rewrite_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_text('{"old": true}\n')

    def full_disk(fd):
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        files.write_text_atomically(path, '{"new": true}\n')
    assert path.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_torn_file_is_named_with_the_fix(tmp_path):
    path = tmp_path / "study_run.json"
    path.write_text('{"runs": [1, 2')
    with pytest.raises(files.DamagedFile, match=r"study_run.json is damaged .*; delete it"):
        files.read_json(path, "delete it to rerun")
