"""The r and α each GR warmup strategy uses, and which steps are GNP steps."""

import pytest

from gnp.gr_schedule import GRSchedule, constant_probability, hybrid_probability


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
        ("zero", 99, None),  # a plain step: it logs r = α = 0
        ("zero", 100, (0.1, 0.8)),
    ],
)
def test_r_and_alpha_at_chosen_steps(strategy, step, want):
    gr = GRSchedule(r=0.1, alpha=0.8, strategy=strategy, warmup_steps=100)
    assert gr.is_gnp_step(step) == (want is not None)
    if want is not None:
        r, alpha = gr.values(step)
        assert (float(r), float(alpha)) == pytest.approx(want, rel=1e-6)


def test_values_are_concrete_unless_they_warm_up():
    """A step whose r and α do not move sees numbers (MSAM's one pass needs a concrete α = 1)."""
    assert GRSchedule(r=0.1, alpha=1.0, strategy="zero", warmup_steps=10).values(50) == (0.1, 1.0)
    r, alpha = GRSchedule(r=0.1, alpha=1.0, strategy="r", warmup_steps=10).values(5)
    assert alpha == 1.0 and float(r) == pytest.approx(0.05)
    assert GRSchedule(r=0.0, alpha=0.8).values(5) == (0.0, 0.0)


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


def test_step_dependent_probability_as_the_released_schedule_function():
    """Released: ``schedule_function(**hybrid_config)`` returns ``step ↦ p``."""

    def ramp(p, steps):  # p rises from 0 to p over `steps`, then stays
        return lambda step: p * min(step / steps, 1.0)

    probability = hybrid_probability(ramp, {"p": 1.0, "steps": 1000})
    gr = GRSchedule(r=0.1, alpha=0.8, hybrid_p=probability, seed=1)
    assert [gr.probability(s) for s in (0, 250, 1000, 5000)] == [0.0, 0.25, 1.0, 1.0]
    early = sum(gr.is_gnp_step(s) for s in range(0, 200))  # p ≤ 0.2: mean ≤ 20
    late = [gr.is_gnp_step(s) for s in range(1000, 1100)]
    assert early < 40 and all(late)
    released = hybrid_probability(constant_probability, {"p": 0.3})
    assert [released(s) for s in (0, 10**6)] == [0.3, 0.3]


def test_bad_probability_schedules_are_clear_errors():
    with pytest.raises(ValueError, match="schedule_function must be a function"):
        hybrid_probability(0.5, {"p": 0.5})
    with pytest.raises(ValueError, match="schedule_function 'linear' cannot be imported"):
        hybrid_probability("linear", {"p": 0.5})
    with pytest.raises(ValueError, match="at step 0"):
        hybrid_probability(constant_probability, {"p": -0.1})
    gr = GRSchedule(r=0.1, alpha=0.8, hybrid_p=lambda step: 0.5 if step < 10 else 2.0)
    with pytest.raises(ValueError, match=r"got 2\.0 at step 10"):
        [gr.is_gnp_step(s) for s in range(20)]


def test_negative_r_or_alpha_is_rejected():
    with pytest.raises(ValueError, match="r must be"):
        GRSchedule(r=-0.05, alpha=0.8)
    with pytest.raises(ValueError, match="alpha must be"):
        GRSchedule(r=0.05, alpha=-1.0)


def test_no_penalty_means_plain_steps():
    assert not GRSchedule(r=0.0, alpha=0.8).is_gnp_step(5)
    assert not GRSchedule(r=0.1, alpha=0.0).is_gnp_step(5)


def test_invalid_strategy_and_p():
    with pytest.raises(ValueError, match="lambda"):
        GRSchedule(r=0.1, alpha=0.8, strategy="linear")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        GRSchedule(r=0.1, alpha=0.8, hybrid_p=1.5)


def test_schedule_function_is_stored_by_import_path_and_resumes_with_it():
    # config.json holds the function's import path: its repr would hold a memory address that
    # differs in the resuming process, and every resume would look like a changed config.
    from gnp.configs.default import get_config
    from gnp.train import workdir

    config = get_config().to_dict()
    saved = workdir.plain(config)
    assert saved["schedule_function"] == "gnp.gr_schedule.constant_probability"
    assert workdir.differences(saved, config) == {}
    probability = hybrid_probability(saved["schedule_function"], {"p": 0.3})
    assert probability(0) == probability(7) == 0.3
    with pytest.raises(ValueError, match=r"'gnp\.nowhere\.f' cannot be imported"):
        hybrid_probability("gnp.nowhere.f", {"p": 0.3})
