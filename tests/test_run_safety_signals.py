"""Signals and environments: each case ends in one line or a correct recovery, no traceback.

The stop after a run's last step trains one 1-epoch run in this process; the command-line
cases run ``python -m gnp.main`` in a fresh process (``gnp_main``) on a failure found before
any training, or call the study's and the analysis' command lines here with the training
replaced by the stop it raises.
"""

import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
from importlib.util import find_spec

import pytest
from test_run_safety_cli import DEFAULT, REPO, assert_one_line_error, gnp_main
from test_train import tiny_config

from gnp import analyze
from gnp.study import main as study_main
from gnp.study import plan
from gnp.study import run as study_run
from gnp.train.checkpoint import Checkpoints
from gnp.train.loop import train_and_evaluate
from gnp.train.stops import Preempted, PreemptionGuard
from gnp.train.workdir import NotWritable

STEPS_PER_EPOCH = 1437 // 256  # 5
# tiny_config (test_train) as command-line flags over the default config: the same run.
TINY_FLAGS = [
    f"--config={DEFAULT}",
    "--config.warmup_epochs=1",
    "--config.batch_size=256",
    "--config.evaluate_every_n_epochs=1",
    "--config.save_ckpt_every_n_epochs=1",
    "--config.log_every_n_steps=2",
]


def test_sighup_asks_to_save_and_stop_like_sigterm():
    """A closed terminal or ssh session (SIGHUP) would otherwise end the run unsaved."""
    guard = PreemptionGuard()
    previous = signal.getsignal(signal.SIGHUP)
    guard.install()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert guard.requested and guard.exit_code == 128 + 1 and guard.cause == "SIGHUP"
    finally:
        guard.restore()
    assert signal.getsignal(signal.SIGHUP) is previous


@pytest.mark.slow
def test_a_stop_after_the_last_step_ends_the_run_and_the_study(tmp_path, monkeypatch):
    """Ctrl-C during the last epoch, after its last step: the run finishes and saves, then the
    stop reaches the study, which does not start its next run."""
    scale = plan.SCALES["smoke"]
    specs = plan.final_runs(scale, "icml2022", lambda group, key: plan.default_r(scale))[:2]
    started = []

    def interrupt_at_the_last_step(step, state):
        if step == STEPS_PER_EPOCH - 1:
            os.kill(os.getpid(), signal.SIGINT)

    def execute(spec, out, scale):
        started.append(spec)
        return train_and_evaluate(
            tiny_config(total_epochs=1),
            str(spec.directory(out)),
            on_step=interrupt_at_the_last_step,
        )

    monkeypatch.setattr(study_run, "execute", execute)
    with pytest.raises(Preempted) as stop:
        study_run.run_all(
            specs, tmp_path, plan.SCALES["smoke"], study_run.Progress(specs, tmp_path)
        )
    assert started == specs[:1]
    run_dir = specs[0].directory(tmp_path)
    assert stop.value.exit_code == 130
    assert str(stop.value) == (
        f"the run finished (epoch 1) and saved {run_dir}/checkpoints/{STEPS_PER_EPOCH}; stopped "
        "on request (SIGINT) before what follows it: run the same command to go on"
    )
    assert (run_dir / "curves.png").exists()
    checkpoints = Checkpoints(str(run_dir / "checkpoints"), read_only=True)
    _, progress = checkpoints.load()
    checkpoints.close()
    assert progress["epoch"] == 1 and progress["finished"]
    # Run again, it is a finished run: its last record back, nothing trained.
    record = train_and_evaluate(tiny_config(total_epochs=1), str(run_dir))
    assert record["epoch"] == 1 and record["step"] == STEPS_PER_EPOCH


@pytest.mark.parametrize(
    "stop,code,cause",
    [
        (
            Preempted("stopped at step 3 (epoch 1) on request (SIGINT) and saved d", 130),
            130,
            "SIGINT",
        ),
        (
            Preempted("stopped at step 3 (epoch 1) on request (SIGHUP) and saved d", 129),
            129,
            "SIGHUP",
        ),
        (KeyboardInterrupt(), 130, "SIGINT"),
    ],
)
def test_the_study_command_ends_a_stop_in_one_line(monkeypatch, capsys, stop, code, cause):
    def stopped(argv):
        raise stop

    monkeypatch.setattr(study_main, "main", stopped)
    monkeypatch.setattr(sys, "argv", ["gnp.study", "--mode=smoke"])
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as exit_:
            runpy.run_module("gnp.study", run_name="__main__")
    finally:
        signal.signal(signal.SIGINT, previous)  # the command line's exit-time Ctrl-C handler
    assert exit_.value.code == code
    assert capsys.readouterr().err.splitlines() == [
        f"the study stopped on request ({cause}); its finished runs are kept: run the same "
        "command to go on (a run it stopped in is trained again)"
    ]


def test_alpha_sweep_ends_a_stop_in_one_line(monkeypatch, capsys, tmp_path):
    line = f"stopped at step 7 (epoch 2) on request (SIGTERM) and saved {tmp_path}/a; run the same"

    def stopped(config, working_dir):
        raise Preempted(line, 143)

    monkeypatch.setattr(analyze, "train_and_evaluate", stopped)
    with pytest.raises(SystemExit) as exit_:
        analyze.main(
            ["alpha-sweep", f"--config={DEFAULT}", f"--working_dir={tmp_path}", "--alphas=0,1"]
        )
    assert exit_.value.code == 143
    assert capsys.readouterr().err.splitlines() == [line]


# gnp-train with an exit that takes a while (as orbax's and JAX's clean-up can): a Ctrl-C
# pressed during it ends the process at once. The 60 s are short sleeps: the kernel may hand
# the signal to one of JAX's threads, and Python runs its handler only when the main thread
# next runs Python code (one long sleep would then finish first).
SLOW_EXIT = """
import atexit, sys, time
atexit.register(lambda: [time.sleep(0.1) for _ in range(600)])
atexit.register(print, "exiting", flush=True)  # runs first: atexit calls the last one first
from gnp.main.main import run
sys.argv = ["gnp-train", *sys.argv[1:]]
run()
"""


def test_a_ctrl_c_while_exiting_ends_at_once_without_a_traceback():
    process = subprocess.Popen(  # an error found at once (no --config), then the slow exit
        [sys.executable, "-c", SLOW_EXIT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout.readline() == "exiting\n"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)  # not the 60 s of the slow exit
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr.strip().startswith("error: --config=PATH is required"), stderr


@pytest.mark.parametrize("platform,plugin", [("cuda", "jax_cuda12_plugin"), ("tpu", "libtpu")])
def test_jax_platforms_naming_a_missing_platform_is_one_line(platform, plugin):
    if find_spec(plugin) is not None:
        pytest.skip(f"JAX for {platform} is installed here")
    result = gnp_main(f"--config={DEFAULT}", "--dry_run", env={"JAX_PLATFORMS": platform})
    assert_one_line_error(
        result,
        rf"^error: the environment variable JAX_PLATFORMS={platform} names a platform",
        "unset it",
    )


@pytest.mark.parametrize(
    "command", [["gnp.study", "--mode=smoke"], ["gnp.analyze", "curves"]], ids=["study", "analyze"]
)
def test_the_study_and_analysis_say_the_same_of_a_missing_platform(command, tmp_path):
    if find_spec("jax_cuda12_plugin") is not None:
        pytest.skip("JAX for cuda is installed here")
    arguments = [f"--out={tmp_path}"] if command[0] == "gnp.study" else [str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", *command, *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cuda"},
        timeout=120,
    )
    assert_one_line_error(result, r"^error: the environment variable JAX_PLATFORMS=cuda names")


def test_a_working_dir_the_checkpoints_cannot_take_is_refused_before_any_work(tmp_path):
    not_utf8 = os.fsdecode(bytes(tmp_path) + b"/run-\xff")
    with pytest.raises(NotWritable, match=r"run-\\xff is not valid UTF-8.*whose name is UTF-8"):
        train_and_evaluate(tiny_config(total_epochs=1), not_utf8)
    # Each folder within the 255 bytes of a name; the whole past what a save's files can take.
    long = os.path.join(tmp_path, *["d" * 200] * 20)
    with pytest.raises(NotWritable, match=r"a checkpoint's files below it would pass .* at most"):
        train_and_evaluate(tiny_config(total_epochs=1), long)
    assert os.listdir(tmp_path) == []  # refused before anything was written


@pytest.mark.slow
def test_checkpoints_that_all_fail_their_checksum_are_one_line(finished_run, tmp_path):
    """The error line, then nothing: no orbax "Exception ignored in: <coroutine" traceback."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    for meta_file in run_dir.glob("checkpoints/*/meta/metadata"):
        meta = json.loads(meta_file.read_text())
        meta_file.write_text(json.dumps(meta | {"state_sha256": "0" * 64}))
    result = gnp_main(*TINY_FLAGS, f"--working_dir={run_dir}", "--config.total_epochs=2")
    assert "Exception ignored" not in result.stderr, result.stderr
    assert_one_line_error(
        result, r"^error: no checkpoint in \S+ restores: skipped damaged checkpoint .*SHA-256"
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# gnp-train whose TensorBoard files meet a full disk after the first epoch's events: both in
# tensorboardX's writer thread (its writes) and in the trainer's flush after each epoch.
FULL_TENSORBOARD = """
import errno, os, sys
import tensorboardX.record_writer as record_writer

Writer = record_writer.RecordWriter
real_write, real_flush, flushes = Writer.write, Writer.flush, []

def full(real):
    def write(self, *args):
        if len(flushes) > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args)
    return write

Writer.write = full(real_write)
Writer.flush = lambda self: flushes.append(1) or full(real_flush)(self)
from gnp.main.main import run
sys.argv = ["gnp-train", *sys.argv[1:]]
run()
"""


@pytest.mark.slow
def test_a_full_disk_under_tensorboard_is_the_error_line_only(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", FULL_TENSORBOARD, *TINY_FLAGS, f"--working_dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert result.stderr.strip().splitlines() == [
        "error: No space left on device while writing the run's files; free space where "
        "--working_dir is, then run the same command to resume"
    ], result.stderr
    assert result.returncode == 1
