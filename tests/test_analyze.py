"""``gnp-analyze`` on tiny real training runs of the digits set, checked by hand computations."""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_train import tiny_config

from gnp import analysis, analyze, models
from gnp.data.digits import load_digits_split
from gnp.train import workdir
from gnp.train.checkpoint import Checkpoints
from gnp.train.loop import train_and_evaluate
from gnp.train.run import load_run, params_loss, split_batches

L2 = 5e-4  # the default config's l2_regularization, on every parameter
DEFAULT_CONFIG = Path(analyze.__file__).parent / "configs" / "default.py"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    working_dir = tmp_path_factory.mktemp("run")
    train_and_evaluate(tiny_config(total_epochs=2, l2_regularization=L2), str(working_dir))
    return working_dir


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    working_dir = tmp_path_factory.mktemp("sweep")
    analyze.main(
        [
            "alpha-sweep",
            f"--config={DEFAULT_CONFIG}",
            f"--working_dir={working_dir}",
            "--alphas=0,1",
            "--config.total_epochs=1",
            "--config.warmup_epochs=0",
            "--config.batch_size=256",
            "--config.save_ckpt_every_n_epochs=1",
        ]
    )
    return working_dir


def hand_loss(working_dir, batch_stats=None):
    """L(θ) of a checkpoint over all 360 test digits in one batch, written out by hand.

    With the checkpoint's BatchNorm statistics unless ``batch_stats`` are given.
    """
    state, _ = Checkpoints(os.path.join(working_dir, "checkpoints")).load_latest()
    state = jax.tree.map(np.asarray, state)  # restored arrays keep the training mesh's sharding
    if batch_stats is not None:
        state["batch_stats"] = batch_stats
    split = load_digits_split()
    train_pixels = split["train"][0] / 255.0
    images = (split["test"][0] / 255.0 - train_pixels.mean()) / train_pixels.std()
    labels = split["test"][1]
    model = models.get_model("SmallCNN", num_classes=10)

    @jax.jit
    def loss(params):
        variables = {"params": params, "batch_stats": state["batch_stats"]}
        logits = model.apply(variables, jnp.asarray(images, jnp.float32), train=False)
        cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        squares = sum(jnp.sum(p**2) for p in jax.tree.leaves(params))
        return cross_entropy + 0.5 * L2 * squares

    return loss, state["params"]


def read_json(path):
    return json.loads(path.read_text())


def only(directory, pattern):
    """The one file of ``directory`` that matches ``pattern``."""
    (path,) = directory.glob(pattern)
    return path


def test_gradient_norm_equals_a_direct_computation(run_dir):
    analyze.main(["gradient-norm", f"--working_dir={run_dir}", "--split=test"])
    numbers = read_json(run_dir / "analysis" / "gradient_norm_test_step10.json")
    loss, params = hand_loss(run_dir)
    value, gradient = jax.value_and_grad(loss)(params)
    expected = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(gradient)))
    assert numbers["num_examples"] == 360
    assert numbers["loss"] == pytest.approx(float(value), rel=1e-5)
    assert numbers["gradient_norm"] == pytest.approx(float(expected), rel=1e-4)
    assert len(numbers["batch_gradient_norms"]) == numbers["num_batches"] == 2
    assert (run_dir / "analysis" / "gradient_norm_test_step10.png").stat().st_size > 0


def test_hessian_lanczos_agrees_with_power_iteration(run_dir):
    analyze.main(
        ["hessian", f"--working_dir={run_dir}", "--split=test", "--k=2", "--trace_probes=4"]
    )
    numbers = read_json(run_dir / "analysis" / "hessian_test_step10.json")
    eigenvalues = numbers["eigenvalues"]["eigenvalues"]
    assert len(eigenvalues) == 2 and eigenvalues[0] >= eigenvalues[1]
    assert len(numbers["trace_samples"]) == 4
    residuals = numbers["residual_norms"]["eigenvalues"]
    assert len(residuals) == 2 and all(r >= 0 for r in residuals)
    assert numbers["converged"]["eigenvalues"] == [r <= 1e-3 * eigenvalues[0] for r in residuals]

    run = load_run(run_dir)
    batches = split_batches(run.pipeline, "test", None)
    operator = analysis.hessian_operator(params_loss(run), run.params, batches)
    power = analysis.power_iteration(operator, key=jax.random.key(7), num_iterations=200)
    assert eigenvalues[0] == pytest.approx(float(power.eigenvalues[0]), rel=0.03)


def test_landscape_at_zero_is_the_loss_at_theta(run_dir):
    loss, params = hand_loss(run_dir)
    at_theta = float(loss(params))
    for dims in (1, 2):
        flags = ["--split=test", f"--dims={dims}", "--points=3", "--span=0.5"]
        analyze.main(["landscape", f"--working_dir={run_dir}", *flags])
    curve = read_json(run_dir / "analysis" / "landscape_1d_test_step10.json")
    assert curve["coordinates"] == [-0.5, 0.0, 0.5]
    assert curve["losses"]["loss"][1] == pytest.approx(at_theta, rel=1e-5)
    assert curve["split"] == "test" and curve["checkpoint_step"] == 10
    plane = read_json(run_dir / "analysis" / "landscape_2d_test_step10.json")
    assert plane["values"][1][1] == pytest.approx(at_theta, rel=1e-5)
    # A filter-normalized step of half of every filter's norm raises the loss.
    assert min(curve["losses"]["loss"][0], curve["losses"]["loss"][2]) > at_theta


def test_alpha_sweep_draws_one_curve_per_alpha(sweep_dir):
    assert sorted(os.listdir(sweep_dir)) == [
        "alpha_0_r_0.05",
        "alpha_1_r_0.05",
        "alpha_sweep.json",
        "alpha_sweep.png",
    ]
    curves = read_json(sweep_dir / "alpha_sweep.json")["curves"]
    assert sorted(curves) == ["α=0", "α=1"]
    for label, alpha in (("α=0", 0.0), ("α=1", 1.0)):
        (epoch,) = curves[label]
        assert epoch["epoch"] == 1 and epoch["alpha"] == alpha
        assert 0 <= epoch["test_error_rate"] <= 1 and epoch["gradient_norm"] > 0
    config = read_json(sweep_dir / "alpha_1_r_0.05" / "config.json")
    assert config["evaluate_every_n_epochs"] == 1 and config["total_epochs"] == 1
    assert (sweep_dir / "alpha_sweep.png").stat().st_size > 0


def hand_recomputed_batch_stats(working_dir, num_batches):
    """SmallCNN's statistics (momentum 0.9) from the trainer's first batches, one by one."""
    state, _ = Checkpoints(os.path.join(working_dir, "checkpoints")).load_latest()
    state = jax.tree.map(np.asarray, state)
    pipeline = load_run(working_dir).pipeline
    model = models.get_model("SmallCNN", num_classes=10)
    zeros = jax.tree.map(np.zeros_like, state["batch_stats"])
    estimates = []
    for step in range(num_batches):
        images = jnp.asarray(pipeline.train_batch(step)["image"])
        variables = {"params": state["params"], "batch_stats": zeros}
        _, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
        # From zero statistics a step leaves (1 − 0.9) × the batch's own.
        estimates.append(jax.tree.map(lambda x: x / 0.1, updates["batch_stats"]))
    return jax.tree.map(lambda *xs: np.mean(xs, axis=0), *estimates)


def test_interpolation_ends_are_the_two_runs(sweep_dir):
    run_a, run_b = sweep_dir / "alpha_0_r_0.05", sweep_dir / "alpha_1_r_0.05"
    flags = ["--split=test", "--points=5", "--bn_batches=3"]
    analyze.main(["interpolate", f"--working_dir={run_a}", f"--other={run_b}", *flags])
    numbers = read_json(
        only(run_a / "analysis", "interpolation_test_step*_vs_alpha_1_r_0.05_step*.json")
    )
    assert numbers["coordinates"] == [-0.5, 0.0, 0.5, 1.0, 1.5]
    assert "re-estimated at each point on 3 training batches" in numbers["batchnorm_statistics"]
    losses = numbers["losses"]["loss"]
    for index, end, run in ((1, 0, run_a), (3, 1, run_b)):
        # Re-estimated statistics: each end is its checkpoint measured with its own re-estimate.
        loss, params = hand_loss(run, hand_recomputed_batch_stats(run, 3))
        assert losses[index] == pytest.approx(float(loss(params)), rel=1e-4)
        saved, params = hand_loss(run)
        assert numbers["endpoint_losses_with_saved_statistics"][end] == pytest.approx(
            float(saved(params)), rel=1e-5
        )
    # Blending the saved statistics instead: the ends are the checkpoints exactly as saved.
    blend = [*flags[:2], "--batchnorm_statistics=interpolate"]
    analyze.main(["interpolate", f"--working_dir={run_a}", f"--other={run_b}", *blend])
    numbers = read_json(
        only(run_a / "analysis", "interpolation_test_step*_vs_alpha_1_r_0.05_step*.json")
    )
    assert "interpolated" in numbers["batchnorm_statistics"]
    losses = numbers["losses"]["loss"]
    for index, run in ((1, run_a), (3, run_b)):
        loss, params = hand_loss(run)
        assert losses[index] == pytest.approx(float(loss(params)), rel=1e-5)


def test_hessian_of_two_runs_pairs_their_trace_probes(sweep_dir):
    run_a, run_b = sweep_dir / "alpha_0_r_0.05", sweep_dir / "alpha_1_r_0.05"
    flags = ["--split=test", "--k=2", "--trace_probes=6", f"--other={run_b}"]
    analyze.main(["hessian", f"--working_dir={run_a}", *flags])
    numbers = read_json(only(run_a / "analysis", "hessian_test_step*_vs_alpha_1_r_0.05_step*.json"))
    assert sorted(numbers["eigenvalues"]) == ["alpha_0_r_0.05", "alpha_1_r_0.05"]
    assert sorted(numbers["residual_norms"]) == ["alpha_0_r_0.05", "alpha_1_r_0.05"]
    a, b = np.array(numbers["trace_samples"]), np.array(numbers["other"]["trace_samples"])
    difference = numbers["trace_difference"]
    assert difference["mean"] == pytest.approx(a.mean() - b.mean(), rel=1e-6)
    assert difference["standard_error"] == pytest.approx((a - b).std(ddof=1) / np.sqrt(6), rel=1e-6)
    assert difference["unpaired_standard_error"] == pytest.approx(
        np.hypot(a.std(ddof=1), b.std(ddof=1)) / np.sqrt(6), rel=1e-6
    )
    # Two runs from one initialization: their curvature shares most of each probe's value.
    assert difference["standard_error"] < difference["unpaired_standard_error"]


def test_errors_name_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        analyze.main(["gradient-norm", f"--working_dir={tmp_path / 'absent'}"])
    with pytest.raises(SystemExit, match=r"config\.json does not exist"):
        analyze.main(["hessian", f"--working_dir={tmp_path}"])
    config = tiny_config()
    (tmp_path / "config.json").write_text(json.dumps(workdir.plain(config.to_dict())))
    with pytest.raises(SystemExit, match="no checkpoint"):
        analyze.main(["landscape", f"--working_dir={tmp_path}"])
    assert not (tmp_path / "checkpoints").exists()


def test_usage_errors_exit_with_status_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        analyze.main(["sharpness", "--working_dir=x"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'sharpness'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        analyze.main(["gradient-norm", "--working_dir=x", "--config.total_epochs=1"])
    assert exit_info.value.code == 2
    assert "only alpha-sweep takes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        analyze.main(["hessian", "--working_dir=x", "--tolerance=0"])
    assert exit_info.value.code == 2
    assert "--tolerance: expected a positive number, got 0" in capsys.readouterr().err


def test_help_shows_no_docstring_markup(capsys):
    with pytest.raises(SystemExit):
        analyze.main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "gradient-norm" in out and "'gnp-analyze'" in out


@pytest.mark.slow
def test_the_documented_commands_run(run_dir, sweep_dir, tmp_path, monkeypatch):
    """docs/analysis.md's gnp-analyze commands on runs/default, runs/sgd and runs/gnp, as
    written, with the tiny runs above in those places. Appended, for the suite's time: one
    batch each, and two eigenvalues and five probes for hessian (the lines as written take
    40 s of CPU). alpha-sweep trains four 10-epoch runs: test_doc_commands.py checks its flags."""
    from test_doc_commands import COMMANDS

    places = {"default": run_dir, "sgd": sweep_dir / "alpha_0_r_0.05"}
    places["gnp"] = sweep_dir / "alpha_1_r_0.05"
    (tmp_path / "runs").mkdir()
    for name, path in places.items():
        (tmp_path / "runs" / name).symlink_to(path)
    monkeypatch.chdir(tmp_path)
    documented = [
        command.argv
        for command in COMMANDS
        if command.doc == "docs/analysis.md"
        and command.argv[0] == "gnp-analyze"
        and command.argv[1] != "alpha-sweep"
        and any(f"=runs/{name}" in arg for arg in command.argv for name in places)
    ]
    subcommands = [argv[1] for argv in documented]
    assert subcommands == ["gradient-norm", "hessian", "hessian", "landscape", "interpolate"]
    for argv in documented:
        cheaper = ["--k=2", "--trace_probes=5"] if argv[1] == "hessian" else []
        analyze.main([*argv[1:], "--max_batches=1", *cheaper])
    written = {path.name for path in (tmp_path / "runs" / "default" / "analysis").iterdir()}
    assert {
        "gradient_norm_test_step10_batches1.json",
        "hessian_train_step10_batches1.png",
        "landscape_2d_train_step10_batches1.png",
    } <= written
    assert only(
        tmp_path / "runs" / "sgd" / "analysis",
        "interpolation_train_*_batches1_vs_alpha_1_r_0.05_*.png",
    )


def test_analyses_of_two_splits_or_steps_keep_both_results(run_dir):
    """Each output is named by its split and checkpoint: none overwrites another, and --step
    reads the checkpoint asked for (the tiny run keeps steps 5 and 10)."""
    for flags in (["--split=test"], ["--split=train"], ["--split=test", "--step=5"]):
        analyze.main(["gradient-norm", f"--working_dir={run_dir}", "--max_batches=1", *flags])
    analysis_dir = run_dir / "analysis"
    names = {"test_step10", "train_step10", "test_step5"}
    numbers = {n: read_json(analysis_dir / f"gradient_norm_{n}_batches1.json") for n in names}
    assert {n: (v["split"], v["checkpoint_step"]) for n, v in numbers.items()} == {
        "test_step10": ("test", 10),
        "train_step10": ("train", 10),
        "test_step5": ("test", 5),
    }
    assert numbers["test_step5"]["gradient_norm"] != numbers["test_step10"]["gradient_norm"]


def test_an_unknown_step_is_refused_listing_the_kept_steps(run_dir):
    with pytest.raises(SystemExit, match=r"^error: no checkpoint of step 7 .*kept steps: 5, 10$"):
        analyze.main(["landscape", f"--working_dir={run_dir}", "--step=7"])


def test_the_loss_prints_cross_entropy_and_l2_apart_and_measures_either(run_dir, capsys):
    """Against the hand loss: cross-entropy and ½·λ‖θ‖² at θ, and --loss=cross_entropy
    measures the first alone."""
    loss, params = hand_loss(run_dir)
    squares = sum(
        float(np.sum(np.square(np.asarray(p, np.float64)))) for p in jax.tree.leaves(params)
    )
    l2_term = 0.5 * L2 * squares
    flags = ["--split=test", "--dims=1", "--points=3", "--span=0.5"]
    analyze.main(["landscape", f"--working_dir={run_dir}", *flags, "--loss=cross_entropy"])
    out = capsys.readouterr().out
    assert "cross-entropy" in out and "L2 term" in out
    numbers = read_json(run_dir / "analysis" / "landscape_1d_test_step10_cross_entropy.json")
    terms = numbers["loss_terms_at_theta"]
    assert terms["l2_term"] == pytest.approx(l2_term, rel=1e-3)
    assert terms["cross_entropy"] == pytest.approx(float(loss(params)) - l2_term, rel=1e-5)
    assert numbers["losses"]["loss"][1] == pytest.approx(terms["cross_entropy"], rel=1e-5)


@pytest.mark.parametrize("points", [2, 5, 11, 21, 30])
def test_the_interpolation_grid_holds_both_runs(points):
    grid = analyze.interpolation_grid(points)
    assert 0.0 in grid and 1.0 in grid
    assert (grid[0] == pytest.approx(-0.5) and grid[-1] == pytest.approx(1.5)) or points == 2
    assert np.all(np.diff(grid) > 0) and abs(grid.size - points) <= 1


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("analysis"))
    (copy / "checkpoints" / "10" / "meta" / "metadata").write_text('{"epoch": 2, "fini')
    analyze.main(["gradient-norm", f"--working_dir={copy}", "--split=test", "--max_batches=1"])
    out = capsys.readouterr().out
    (notice,) = [line for line in out.splitlines() if " is damaged " in line]
    assert notice.startswith(f"checkpoint {copy / 'checkpoints' / '10'} is damaged (")
    assert notice.endswith("); reading the previous one") and "checkpoint step 5" in out
    assert read_json(copy / "analysis" / "gradient_norm_test_step5_batches1.json")
    assert (copy / "checkpoints" / "10").is_dir()  # analysis reads; it never renames
    with pytest.raises(SystemExit, match=r"^error: checkpoint .*10 is damaged .*kept steps: 5, 10"):
        analyze.main(["gradient-norm", f"--working_dir={copy}", "--step=10"])


def test_a_step_that_vanishes_while_read_is_looked_up_again(run_dir, tmp_path, monkeypatch):
    """A run rotating its checkpoints deletes the newest-but-one as analysis reads it."""
    import shutil

    from gnp.analysis import checkpoints

    copy = tmp_path / "run"
    shutil.copytree(run_dir / "checkpoints", copy)
    real_read, calls = checkpoints._read, []

    def rotating_read(directory, step):
        calls.append(step)
        if len(calls) == 1:  # the trainer deletes step 10 (the test plays it) mid-read
            shutil.rmtree(directory / str(step))
            raise FileNotFoundError(directory / str(step))
        return real_read(directory, step)

    monkeypatch.setattr(checkpoints, "_read", rotating_read)
    _, meta = checkpoints.read_checkpoint(copy, say=pytest.fail)
    assert calls == [10, 5] and meta["epoch"] == 1
