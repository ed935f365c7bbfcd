"""The cheaper GR variants of issue 27, each held against its formula written out by hand, and
each at its neutral setting exactly GNP (reuse period 1 and MSAM's direction g1 are in
test_efficient.py): the second pass on a subset, random steps (hybrid training), the penalty
window."""

import jax
import pytest
from step_harness import applied_gradient, assert_close, loss_gradient, problem

from gnp.configs import default
from gnp.gr_schedule import GRSchedule, penalty_window
from gnp.options import GNPOptions
from gnp.train import build
from gnp.train.config import validate_config
from gnp.train.steps import step_kind

pytestmark = pytest.mark.compile_bound  # conftest: its compiles skip XLA's expensive passes

R, ALPHA = 0.3, 0.8


def gnp_formula(grad, params, first, second):
    """``(1 − α)·g1 + α·g2`` with g1 on the rows ``first`` and g2, at ``θ + r·g1/‖g1‖``, on
    the rows ``second`` (``(images, labels)`` each)."""
    g1 = grad(params, *first)
    norm = sum((g**2).sum() for g in jax.tree.leaves(g1)) ** 0.5
    point = jax.tree.map(lambda p, g: p + R * g / norm, params, g1)
    g2 = grad(point, *second)
    return jax.tree.map(lambda a, b: (1 - ALPHA) * a + ALPHA * b, g1, g2)


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_subset_second_pass_is_g2_on_the_leading_rows(fraction):
    """ESAM's idea for GR: g1 from the whole batch, g2 from its first f·B rows (shuffled)."""
    with jax.enable_x64(True):
        model, state, batch = problem(rows=16)
        grad = loss_gradient(model, state, 0)
        rows = int(fraction * 16)
        whole = (batch["image"], batch["label"])
        subset = (batch["image"][:rows], batch["label"][:rows])
        want = gnp_formula(grad, state.params, whole, subset)
        got = applied_gradient(
            model,
            state,
            batch,
            gr=GRSchedule(r=R, alpha=ALPHA),
            options=GNPOptions(r=R, alpha=ALPHA, perturbed_fraction=fraction),
        )
        assert_close(got, want)


def test_subset_of_the_whole_batch_is_gnp_bit_for_bit():
    with jax.enable_x64(True):
        model, state, batch = problem(rows=16)
        gr = GRSchedule(r=R, alpha=ALPHA)
        gnp = applied_gradient(model, state, batch, gr=gr, options=GNPOptions(r=R, alpha=ALPHA))
        whole = applied_gradient(
            model, state, batch, gr=gr, options=GNPOptions(r=R, alpha=ALPHA, perturbed_fraction=1.0)
        )
        for a, b in zip(jax.tree.leaves(gnp), jax.tree.leaves(whole), strict=True):
            assert (a == b).all()


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"perturbed_fraction": 0.0}, r"perturbed_fraction must lie in \(0, 1\]"),
        ({"perturbed_fraction": 1.5}, r"perturbed_fraction must lie in \(0, 1\]"),
        ({"perturbed_fraction": 0.5, "direction": "momentum"}, "takes direction='gradient'"),
    ],
)
def test_subset_fractions_that_mean_nothing_are_refused(fields, match):
    with pytest.raises(ValueError, match=match):
        GNPOptions(**fields)


def updates_over_steps(gr: GRSchedule, steps: range) -> list:
    """The update of each step in ``steps``, the compiled kind picked as the loop picks it from
    ``gr`` (no reuse: every GNP step is a full one)."""
    with jax.enable_x64(True):
        model, state, batch = problem(rows=16)
        options = GNPOptions(r=R, alpha=ALPHA)
        return [
            applied_gradient(
                model,
                state,
                batch,
                gr=gr,
                options=options,
                step=step,
                kind=step_kind(gr.is_gnp_step(step), reuse_full=True),
            )
            for step in steps
        ]


def assert_bit_for_bit(got, want) -> None:
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert (a == b).all()


def test_hybrid_p_one_is_gnp_and_p_zero_is_plain_bit_for_bit():
    """RST (random step training) is the trainer's hybrid training: p = 1 takes GNP's update at
    every step, p = 0 plain SGD's, whatever the draws."""
    steps = range(0, 40, 13)
    gnp = updates_over_steps(GRSchedule(r=R, alpha=ALPHA), steps)
    plain = updates_over_steps(GRSchedule(r=R, alpha=0.0), steps)
    always = updates_over_steps(GRSchedule(r=R, alpha=ALPHA, hybrid_p=1.0, seed=5), steps)
    never = updates_over_steps(GRSchedule(r=R, alpha=ALPHA, hybrid_p=0.0, seed=5), steps)
    with jax.enable_x64(True):
        model, state, batch = problem(rows=16)
        want_plain = loss_gradient(model, state, 0)(state.params, batch["image"], batch["label"])
    for step in range(len(steps)):
        assert_bit_for_bit(always[step], gnp[step])
        assert_bit_for_bit(never[step], plain[step])
        assert_close(plain[step], want_plain)


def window_schedule(start: int, stop: int, p: float = 1.0, steps_per_epoch: int = 10):
    """The GR schedule the trainer builds from a config with the penalty window."""
    config = default.get_config()
    config.use_hybrid_training = True
    config.schedule_function = penalty_window
    config.hybrid_config.p = p
    config.hybrid_config.start_step = start
    config.hybrid_config.stop_step = stop
    return build.gr_schedule(validate_config(config), steps_per_epoch)


def test_penalty_window_is_on_in_exactly_its_steps():
    """Early 50 % of 40 steps: GNP at steps 0–19; late 50 %: 20–39; GNP's update inside the
    window and plain's outside, bit for bit."""
    early, late = window_schedule(0, 20), window_schedule(20, 40)
    assert [early.is_gnp_step(s) for s in range(40)] == [True] * 20 + [False] * 20
    assert [late.is_gnp_step(s) for s in range(45)] == [False] * 20 + [True] * 20 + [False] * 5
    steps = range(18, 23)
    gnp = updates_over_steps(GRSchedule(r=R, alpha=ALPHA), steps)
    plain = updates_over_steps(GRSchedule(r=R, alpha=0.0), steps)
    windowed = updates_over_steps(
        GRSchedule(r=R, alpha=ALPHA, hybrid_p=penalty_window(1.0, 20, 40)), steps
    )
    for i, step in enumerate(steps):
        assert_bit_for_bit(windowed[i], gnp[i] if step >= 20 else plain[i])


def test_a_window_that_means_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match="penalty_window needs 0 <= start_step <= stop_step"):
        window_schedule(30, 20)
