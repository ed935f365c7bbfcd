"""What the study measures of a run: Adam's state while it trains, then at its final
checkpoint the train errors on flipped and clean labels, ‖∇L‖ and the Hessian's λ₁ and trace.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnp import analysis
from gnp.analysis.plots import json_ready
from gnp.data import build_input_pipeline
from gnp.data.label_noise import RelabeledSplit
from gnp.optim import learning_rate_schedule
from gnp.provenance import gnp_version
from gnp.study.plan import RUN_FILE, RunSpec, Scale
from gnp.study.report import TEST_CORRECT
from gnp.train.loop import train_and_evaluate
from gnp.train.objective import model_variables
from gnp.train.run import Run, load_run, params_loss, split_batches
from gnp.train.state import TrainState
from gnp.train.stops import NonFiniteError
from gnp.train.workdir import read_metrics

ADAM_STEPS = 300  # steps whose Adam second-moment statistics are recorded
TRACE_KEY = 0  # one probe key for every run: trace estimates of two runs are paired
# The Hessian's 30 products over all 4,000 MNIST-1D signals would cost as much as training a
# run; the first eval batch (1,000 signals, the same for every run) is what they see.
HESSIAN_BATCHES = 1


def adam_moments(config: Any) -> Callable[[TrainState], dict[str, jax.Array]]:
    """Mean and coefficient of variation over all parameters of Adam's √ν̂ (ν bias-corrected)
    and of the per-parameter step size lr/(√ν̂ + ε), read from the optax AdamW state."""
    beta2 = config.opt.opt_params.beta2 or 0.999
    epsilon = config.opt.opt_params.eps or 1e-8

    def find_adam(tree: Any) -> Any:
        nodes = jax.tree.leaves(tree, is_leaf=lambda node: hasattr(node, "nu"))
        return next(node for node in nodes if hasattr(node, "nu"))

    @jax.jit
    def moments(state: TrainState, learning_rate: jax.Array) -> dict[str, jax.Array]:
        adam = find_adam(state.opt_state)
        nu = jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(adam.nu)])
        sqrt_nu = jnp.sqrt(nu / (1.0 - beta2 ** adam.count.astype(jnp.float32)))
        step_size = learning_rate / (sqrt_nu + epsilon)
        stats = {}
        for name, values in (("sqrt_nu", sqrt_nu), ("step_size", step_size)):
            stats[f"mean_{name}"] = jnp.mean(values)
            stats[f"cv_{name}"] = jnp.std(values) / jnp.mean(values)
        return stats

    return moments


def train_with_adam_trace(spec: RunSpec, directory: Path) -> list[dict[str, float]] | None:
    """Train the run; for an Adam run, the moments after each of its first ``ADAM_STEPS``."""
    if spec.config.opt.opt_type != "Adam":
        train_and_evaluate(spec.config, str(directory))
        return None
    steps_per_epoch = build_input_pipeline(spec.config).steps_per_epoch
    schedule = learning_rate_schedule(spec.config, steps_per_epoch)
    moments, trace = adam_moments(spec.config), []

    def on_step(step: int, state: TrainState) -> None:
        if step < ADAM_STEPS:
            # Adam's update at ``step`` used the learning rate of that step.
            stats = jax.device_get(moments(state, schedule(step)))
            trace.append({"step": step + 1} | {k: float(v) for k, v in stats.items()})

    train_and_evaluate(spec.config, str(directory), on_step=on_step)
    return trace


def predictions(run: Run, split: str) -> np.ndarray:
    """The model's class (eval mode) for every sample of ``split`` ("train" or "test", which
    is the validation split in a run that does not use the test set), in the split's order."""
    variables = model_variables(run.params, run.variables["batch_stats"])
    predict = jax.jit(
        lambda images: jnp.argmax(run.model.apply(variables, images, train=False), -1)
    )
    predicted = []
    for batch in split_batches(run.pipeline, split, None):
        predicted.append(np.asarray(predict(batch["image"]))[np.asarray(batch["mask"])])
    return np.concatenate(predicted)


def train_errors(run: Run) -> dict[str, float]:
    """Train error (eval mode) against the labels trained on, the flipped ones and the clean."""
    source = run.pipeline.source
    clean = source.train.split.labels if isinstance(source.train, RelabeledSplit) else None
    predicted = predictions(run, "train")
    trained_on = np.asarray(source.train.labels)
    result = {"train_error_rate_eval": float((predicted != trained_on).mean())}
    if clean is not None:
        flipped = trained_on != clean
        result["flipped_train_error_rate"] = float(
            (predicted[flipped] != trained_on[flipped]).mean()
        )
        result["unflipped_train_error_rate"] = float(
            (predicted[~flipped] != trained_on[~flipped]).mean()
        )
    return result


def curvature(run: Run, scale: Scale) -> dict[str, Any]:
    """‖∇L‖ over the whole training set, λ₁ and tr H over its first ``HESSIAN_BATCHES``
    evaluation batches, of the training objective (labels as trained on; BatchNorm in
    inference mode), as ``gnp-analyze`` measures them."""
    loss, batches = params_loss(run), split_batches(run.pipeline, "train", None)
    norm = analysis.full_gradient_norm(loss, run.params, batches)
    operator = analysis.hessian_operator(loss, run.params, batches[:HESSIAN_BATCHES])
    top = analysis.top_eigenvalues(
        operator, 1, key=jax.random.key(1), num_iterations=scale.lanczos_iterations
    )
    trace = analysis.hessian_trace(
        operator, key=jax.random.key(TRACE_KEY), num_probes=scale.trace_probes
    )
    return {
        "full_gradient_norm": norm.norm,
        "top_eigenvalue": float(top.eigenvalues[0]),
        "trace": trace.mean,
        "trace_standard_error": trace.standard_error,
        "trace_samples": trace.samples.tolist(),
    }


def test_correctness(run: Run, directory: Path) -> float:
    """Saves which test signals the final model classifies right (``TEST_CORRECT``, one bool
    per signal in the split's order: what a bootstrap over test signals resamples); returns
    the test error they give."""
    correct = predictions(run, "test") == np.asarray(run.pipeline.source.test.labels)
    np.save(directory / TEST_CORRECT, correct)
    return float(1.0 - correct.mean())


def clean_validation_error(run: Run) -> float:
    """Validation error against the clean labels of a run tuned on flipped ones (descriptive:
    the flipped error is what a setting is chosen by)."""
    split = run.pipeline.source.test
    clean = split.split.labels if isinstance(split, RelabeledSplit) else split.labels
    return float((predictions(run, "test") != np.asarray(clean)).mean())


def epoch_curve(directory: Path) -> list[dict[str, float]]:
    """Per epoch: the clean mini-batch ‖g1‖, the perturbed ‖g2‖ and the combined gradient's
    norm (Figure 3's, ``report.plot_figure3``).

    ``clean_gradient_norm`` is ‖g1‖ and ``gradient_norm`` the combined (clipped) gradient's
    norm, as the released trainer logs it. A trainer older than that split logs ‖g1‖ as
    ``gradient_norm`` only: then ‖g1‖ is read from it and the combined norm is absent.
    ``perturbed_gradient_norm`` (the mean over the epoch's GNP steps) is None in an epoch
    without one (a plain run) or from a trainer that did not log it; runs measured before it
    was recorded lack the key, so readers use ``.get``.
    """
    rows = []
    for row in read_metrics(str(directory / "metrics.jsonl")):
        clean = row.get("clean_gradient_norm", row["gradient_norm"])
        combined = row["gradient_norm"] if "clean_gradient_norm" in row else None
        rows.append(
            {
                "epoch": row["epoch"],
                "clean_gradient_norm": clean,
                "combined_gradient_norm": combined,
                "perturbed_gradient_norm": row.get("perturbed_gradient_norm"),
                "train_loss": row["train_loss"],
                "train_error_rate": row["train_error_rate"],
            }
        )
    return rows


def measure(spec: RunSpec, directory: Path, scale: Scale) -> dict[str, Any]:
    """Train the run, then its test (or validation) numbers, per-epoch curve and, for a
    final run, its train errors and curvature."""
    adam = train_with_adam_trace(spec, directory)
    final = read_metrics(str(directory / "metrics.jsonl"))[-1]
    result: dict[str, Any] = {
        "error_rate": final["test_error_rate"],
        "loss": final["test_loss"],
        "train_error_rate": final["train_error_rate"],
        "curve": epoch_curve(directory),
    }
    if spec.stage == "final":
        run = load_run(directory)
        result |= train_errors(run) | curvature(run, scale)
        result["saved_test_error_rate"] = test_correctness(run, directory)
    elif spec.config.dataset.get("flip_validation_labels", False):
        result["clean_validation_error_rate"] = clean_validation_error(load_run(directory))
    if adam is not None:
        result["adam"] = adam
    return result


def execute(spec: RunSpec, out: Path, scale: Scale) -> dict[str, Any]:
    """Train and measure one run, or read it back if it finished before.

    A run whose loss becomes NaN or Inf is finished too, with an error rate of 1 (the worst
    there is, so tuning never picks its r) and ``diverged`` saying why: it ends the run, not
    the study.
    """
    directory = spec.directory(out)
    result_path = directory / RUN_FILE
    if result_path.exists():
        return json.loads(result_path.read_text())
    # An interrupted run restarts: its Adam trace would otherwise be partial.
    shutil.rmtree(directory, ignore_errors=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    result: dict[str, Any] = {
        "part": spec.part,
        "stage": spec.stage,
        "group": spec.group,
        "variant": spec.variant.key,
        "label": spec.variant.label,
        "r": spec.r,
        "seed": spec.seed,
        "use_test_set": spec.config.use_test_set,
    }
    try:
        result |= measure(spec, directory, scale)
    except NonFiniteError as error:
        print(f"diverged: {error}", flush=True)
        result |= {"error_rate": 1.0, "diverged": str(error)}
    # Wall time depends on what else runs; CPU time (all threads) is what to plan with.
    result["seconds"] = time.perf_counter() - started
    # A study runs over days and commits: each run names the gnp (and commit) that made it.
    result["gnp_version"] = gnp_version()
    result["cpu_seconds"] = time.process_time() - cpu_started
    directory.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(json_ready(result), indent=1) + "\n")
    return result
