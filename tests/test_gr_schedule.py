"""The r and α each GR warmup strategy uses, and which steps are GNP steps."""

import pytest

from gnp.train.gr_schedule import GRSchedule


@pytest.mark.parametrize(
    "strategy,step,want",
    [
        ("none", 0, (0.1, 0.8)),
        ("none", 50, (0.1, 0.8)),
        ("r", 0, (0.0, 0.8)),
        ("r", 25, (0.025, 0.8)),
        ("r", 100, (0.1, 0.8)),
        ("r", 500, (0.1, 0.8)),
        ("lambda", 0, (0.1, 0.0)),
        ("lambda", 75, (0.1, 0.6)),
        ("lambda", 100, (0.1, 0.8)),
        ("zero", 99, (0.0, 0.0)),
        ("zero", 100, (0.1, 0.8)),
    ],
)
def test_r_and_alpha_at_chosen_steps(strategy, step, want):
    gr = GRSchedule(r=0.1, alpha=0.8, strategy=strategy, warmup_steps=100)
    assert gr.logged_values(step) == pytest.approx(want)
    if strategy != "zero":
        r, alpha = gr.values(step)
        assert (float(r), float(alpha)) == pytest.approx(want, rel=1e-6)


def test_zero_warmup_uses_plain_steps_during_warmup_only():
    gr = GRSchedule(r=0.1, alpha=0.8, strategy="zero", warmup_steps=10)
    assert [gr.is_gnp_step(s) for s in range(12)] == [False] * 10 + [True, True]


def test_hybrid_probability():
    never = GRSchedule(r=0.1, alpha=0.8, hybrid_p=0.0)
    always = GRSchedule(r=0.1, alpha=0.8, hybrid_p=1.0)
    half = GRSchedule(r=0.1, alpha=0.8, hybrid_p=0.5, seed=3)
    assert not any(never.is_gnp_step(s) for s in range(100))
    assert all(always.is_gnp_step(s) for s in range(100))
    draws = [half.is_gnp_step(s) for s in range(2000)]
    assert 900 < sum(draws) < 1100  # binomial(2000, ½): ±4.5 standard deviations
    assert draws == [half.is_gnp_step(s) for s in range(2000)]  # same draws after a resume


def test_no_penalty_means_plain_steps():
    assert not GRSchedule(r=0.0, alpha=0.8).is_gnp_step(5)
    assert not GRSchedule(r=0.1, alpha=0.0).is_gnp_step(5)


def test_invalid_strategy_and_p():
    with pytest.raises(ValueError, match="lambda"):
        GRSchedule(r=0.1, alpha=0.8, strategy="linear")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        GRSchedule(r=0.1, alpha=0.8, hybrid_p=1.5)
