"""The cheaper GR variants of issue 27, each held against its formula written out by hand, and
each at its neutral setting exactly GNP."""

import jax
import pytest
from step_harness import applied_gradient, assert_close, loss_gradient, problem

from gnp.gr_schedule import GRSchedule
from gnp.options import GNPOptions

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
