"""An upgrade of gnp resumes the runs of older versions, or refuses them in one line; a
working directory whose checkpoints cannot be used is never trained over.

The runs in ``tests/fixtures/old_runs`` were written by older commits of gnp itself (its
README names each commit and the command); each test works on its own copy.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import tiny_models  # noqa: F401 (registers TinyMLP)
from test_train import assert_trees_equal, read_jsonl, tiny_config

from gnp.data import build_input_pipeline
from gnp.main.main import describe_failure
from gnp.train import build, loop, workdir
from gnp.train.checkpoint import CheckpointError, CheckpointMismatch, Checkpoints
from gnp.train.config import validate_config
from gnp.train.loop import train_and_evaluate
from gnp.train.workdir import ConfigChanged

pytestmark = pytest.mark.compile_bound  # conftest: its compiles skip XLA's expensive passes

OLD_RUNS = Path(__file__).parent / "fixtures" / "old_runs"
NAMES = sorted(p.name for p in OLD_RUNS.iterdir() if p.is_dir())
RECORDS = ("config.json", "config_history.jsonl", "metrics.jsonl")


def copy_of(name, tmp_path):
    copy = tmp_path / name
    shutil.copytree(OLD_RUNS / name, copy)
    return copy


def records(working_dir):
    """The bytes of every record file the run has, to show that a refusal changed none."""
    return {n: (working_dir / n).read_bytes() for n in RECORDS if (working_dir / n).exists()}


def one_line_error(error):
    code, line = describe_failure(error)
    assert code == 1 and line.startswith("error: ") and "\n" not in line
    return line


def template(**overrides):
    """A fresh train state and data iterator of the fixtures' config (with ``overrides``)."""
    config = validate_config(tiny_config(total_epochs=2, **overrides))
    pipeline = build_input_pipeline(config)
    model = build.build_model(config, pipeline.info.num_classes)
    state, _, _ = build.train_state(
        config, model, pipeline.info.image_shape, pipeline.steps_per_epoch
    )
    return state, pipeline.train_iterator()


@pytest.fixture(scope="module")
def current_template():
    return template()


# --- Old checkpoints restore -----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_an_old_checkpoint_restores_to_its_own_arrays(name, tmp_path, current_template):
    """Before the reuse field, the state had nothing else: a run with gnp.reuse_period = 1
    (the only kind then) never reads it, so restoring without it is exact."""
    run = copy_of(name, tmp_path)
    checkpoints = Checkpoints(str(run / "checkpoints"))
    state, progress, skipped = checkpoints.restore(*current_template)
    saved, _ = checkpoints.load(10)
    assert skipped == [] and os.listdir(run / "checkpoints") == ["10"]
    assert int(state.step) == 10 and progress["epoch"] == 2 and progress["finished"]
    for field in ("params", "batch_stats", "opt_state", "rng", "step"):
        assert_trees_equal(getattr(state, field), saved[field])
    assert state.reuse == {}


@pytest.mark.parametrize("name", NAMES)
def test_the_same_command_over_an_old_run_finds_it_finished(name, tmp_path, capsys):
    """Its config (schedule_function saved as a repr included) is accepted as the same."""
    run = copy_of(name, tmp_path)
    before = records(run)
    final = train_and_evaluate(tiny_config(total_epochs=2, save_ckpt_every_n_epochs=2), str(run))
    assert "this run finished already (epoch 2)" in capsys.readouterr().out
    assert final["test_error_rate"] == read_jsonl(run)[-1]["test_error_rate"]
    assert records(run) == before and os.listdir(run / "checkpoints") == ["10"]


def test_an_old_run_extended_trains_on_and_keeps_its_history(tmp_path, capsys, monkeypatch):
    # Seconds, and not tested here.
    monkeypatch.setattr(loop, "plot_training_curves", lambda *args: None)
    run = copy_of("before_reuse", tmp_path)
    old_lines = (run / "metrics.jsonl").read_text().splitlines()
    config = tiny_config(total_epochs=3, save_ckpt_every_n_epochs=2)
    train_and_evaluate(config, str(run), allow_config_change=["total_epochs"])
    assert "resuming at step 10 (epoch 3)" in capsys.readouterr().out
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert lines[:2] == old_lines and json.loads(lines[2])["epoch"] == 3
    assert sorted(os.listdir(run / "checkpoints")) == ["10", "15"]
    history = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert [h["changes"] for h in history] == [{"total_epochs": {"from": 2, "to": 3}}]


# --- A checkpoint that cannot be mapped is refused and kept ----------------------------


def test_an_old_checkpoint_without_state_the_run_now_needs_is_refused_and_kept(tmp_path):
    """With gnp.reuse_period > 1 the state holds the reuse arrays, which a checkpoint of
    before that field cannot give."""
    run = copy_of("before_reuse", tmp_path)
    with pytest.raises(CheckpointMismatch) as caught:
        Checkpoints(str(run / "checkpoints")).restore(*template(**{"gnp.reuse_period": 2}))
    line = one_line_error(caught.value)
    assert f"{run}/checkpoints/10" in line
    assert "written by a gnp that records no version" in line
    assert "this version also has reuse.count" in line
    assert os.listdir(run / "checkpoints") == ["10"]  # not set aside as damaged


def test_another_models_checkpoint_is_refused_naming_the_arrays_and_its_version(
    tmp_path, current_template
):
    tiny_mlp = template(**{"model.model_name": "TinyMLP"})
    checkpoints = Checkpoints(str(tmp_path / "checkpoints"))
    checkpoints.save(tiny_mlp[0], tiny_mlp[1], {"epoch": 0, "finished": False})
    with pytest.raises(CheckpointMismatch) as caught:
        checkpoints.restore(*current_template)
    line = one_line_error(caught.value)
    assert "written by gnp 0.1.0" in line
    assert "params.Dense_0.kernel: (64, 32) in the checkpoint, (64, 10) here" in line
    assert "this version also has params.BatchNorm_0.bias" in line
    assert "the checkpoint also has params.Dense_1.bias, params.Dense_1.kernel" in line
    assert os.listdir(tmp_path / "checkpoints") == ["0"]


# --- Config files of older versions ----------------------------------------------------


def current_config(**overrides):
    return validate_config(
        tiny_config(total_epochs=2, save_ckpt_every_n_epochs=2, **overrides)
    ).to_dict()


def test_schedule_function_saved_as_its_repr_is_the_same_function(tmp_path):
    run = copy_of("schedule_repr", tmp_path)
    saved = json.loads((run / "config.json").read_text())["schedule_function"]
    assert saved.startswith("<function constant_probability at 0x")
    assert workdir.check_resume(str(run), current_config(), epochs_done=2) == {}
    config = json.loads((run / "config.json").read_text())
    config["schedule_function"] = "<function other_probability at 0x7f0011223344>"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigChanged, match="schedule_function: '<function other_probability"):
        workdir.check_resume(str(run), current_config(), epochs_done=2)


def test_a_key_added_since_counts_at_its_default(tmp_path):
    """A run of before gnp.reuse_period trained at its default, 1: another value is a change."""
    run = copy_of("before_reuse", tmp_path)
    with pytest.raises(ConfigChanged) as caught:
        workdir.check_resume(str(run), current_config(**{"gnp.reuse_period": 2}), epochs_done=2)
    assert "gnp.reuse_period: 1 (the default: not in its config.json) -> 2" in str(caught.value)


def test_a_key_this_version_no_longer_has(tmp_path, capsys):
    """Unset (None or empty), it cannot have shaped the run: ignored with a notice. Set, it
    is refused as what it is, not as a change ``None -> None``."""
    run = copy_of("main_42edb18", tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["dataset"]["imagenet_train_dir"] = None
    (run / "config.json").write_text(json.dumps(config))
    assert workdir.check_resume(str(run), current_config(), epochs_done=2) == {}
    assert "notice: dataset.imagenet_train_dir (None in its config.json) is not a key of" in (
        capsys.readouterr().out
    )

    config["retired_option"] = 3
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigChanged) as caught:
        workdir.check_resume(str(run), current_config(), epochs_done=2)
    assert "retired_option: 3, not a key of this version of gnp" in str(caught.value)
    assert "None -> None" not in str(caught.value)


# --- A run without a usable checkpoint is never trained over ---------------------------


def test_a_run_whose_checkpoints_were_set_aside_is_refused_not_restarted(tmp_path):
    run = copy_of("main_42edb18", tmp_path)
    (run / "checkpoints" / "10").rename(run / "checkpoints" / "10.damaged")
    before = records(run)
    with pytest.raises(CheckpointError) as caught:
        train_and_evaluate(tiny_config(total_epochs=2), str(run))
    line = one_line_error(caught.value)
    assert "metrics.jsonl (2 epochs)" in line and "checkpoints/10.damaged" in line
    assert "new --working_dir" in line and f"move those files out of {run}" in line
    assert records(run) == before and os.listdir(run / "checkpoints") == ["10.damaged"]


def test_a_run_whose_checkpoints_are_all_unreadable_is_refused_every_time(tmp_path):
    """The first try sets the damaged checkpoint aside, the second finds only that: both
    refuse, and the records stay as they were."""
    run = copy_of("before_reuse", tmp_path)
    shutil.rmtree(run / "checkpoints" / "10" / "state")
    before = records(run)
    for attempt in ("sets aside", "finds it set aside"):
        with pytest.raises(CheckpointError) as caught:
            train_and_evaluate(tiny_config(total_epochs=2), str(run))
        line = one_line_error(caught.value)
        assert "new --working_dir" in line and "move those files out of" in line, attempt
        assert records(run) == before and os.listdir(run / "checkpoints") == ["10.damaged"]


class Stop(Exception):
    pass


def test_a_run_that_never_saved_a_checkpoint_starts_again_only_with_its_own_config(
    tmp_path, capsys
):
    """Its epochs come back the same (runs are deterministic); under another config, or with no
    config.json to compare, a fresh start would replace another run's history."""
    run = copy_of("main_42edb18", tmp_path)
    shutil.rmtree(run / "checkpoints" / "10")  # e.g. killed before its first save
    config_json = (run / "config.json").read_bytes()
    (run / "config.json").unlink()
    before = records(run)
    with pytest.raises(CheckpointError) as caught:
        train_and_evaluate(tiny_config(total_epochs=2), str(run))
    assert "holds metrics.jsonl (2 epochs): nothing there was changed" in one_line_error(
        caught.value
    )
    assert records(run) == before
    (run / "config.json").write_bytes(config_json)
    before = records(run)
    with pytest.raises(ConfigChanged, match=r"gnp\.alpha: 0\.8 -> 0\.3"):
        train_and_evaluate(tiny_config(total_epochs=2, **{"gnp.alpha": 0.3}), str(run))
    assert records(run) == before

    def stop(step, state):
        raise Stop

    with pytest.raises(Stop):
        train_and_evaluate(tiny_config(total_epochs=2), str(run), on_step=stop)
    assert "no checkpoint was saved yet (metrics.jsonl (2 epochs)); training again" in (
        capsys.readouterr().out
    )
