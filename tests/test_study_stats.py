"""The study's statistics on cases worked by hand (and, where installed, against scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gnp.analysis import statistics


def test_paired_t_interval_by_hand():
    a = [0.10, 0.12, 0.15, 0.11]
    b = [0.12, 0.13, 0.14, 0.15]
    result = statistics.paired_difference(a, b)
    # d = (−0.02, −0.01, 0.01, −0.04): mean −0.015, squared deviations sum 1.3e-3, sd² = 1.3e-3/3.
    sd = math.sqrt(1.3e-3 / 3)
    half = 3.182446305284263 * sd / 2  # t(0.975, 3 degrees of freedom) · sd / √4
    np.testing.assert_allclose(result.differences, [-0.02, -0.01, 0.01, -0.04], atol=1e-15)
    assert result.mean == pytest.approx(-0.015, abs=1e-15)
    assert result.ci_low == pytest.approx(-0.015 - half, rel=1e-12)
    assert result.ci_high == pytest.approx(-0.015 + half, rel=1e-12)
    assert (result.positive, result.negative) == (1, 3)
    assert result.sign_test_p == pytest.approx(10 / 16)  # 2·(C(4,0) + C(4,1))/2⁴


def test_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    values = [0.3, -0.1, 0.25, 0.4, 0.05, 0.2]
    expected = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    np.testing.assert_allclose(statistics.t_interval(values), expected, rtol=1e-12)


def test_one_pair_has_no_interval():
    result = statistics.paired_difference([0.2], [0.1])
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high)
    assert result.mean == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("positive", "negative", "expected"),
    [
        (0, 10, 2 / 1024),
        (8, 2, 2 * (1 + 10 + 45) / 1024),
        (5, 5, 1.0),  # 2·638/1024 > 1
        (0, 0, 1.0),
        (3, 0, 2 / 8),
    ],
)
def test_exact_sign_test_by_hand(positive, negative, expected):
    assert statistics.sign_test(positive, negative) == pytest.approx(expected, rel=1e-15)


def test_sign_test_drops_ties():
    result = statistics.paired_difference([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 3.0])
    assert (result.positive, result.negative) == (3, 0)
    assert result.sign_test_p == pytest.approx(0.25)


def test_holm_by_hand():
    # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → kept monotone: 0.06.
    adjusted = statistics.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    assert statistics.holm([0.6, 0.5]) == [1.0, 1.0]  # capped at 1


def test_spearman_with_ties_by_hand():
    # Ranks of y: (1, 2, 3.5, 5, 3.5); centred products sum to 8; Σ rx² = 10, Σ ry² = 9.5.
    rho = statistics.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])
    assert rho == pytest.approx(8 / math.sqrt(95), rel=1e-12)
    assert statistics.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(statistics.spearman([1, 2, 3], [4, 4, 4]))


def test_paired_standard_error_by_hand():
    # d = (0.5, −0.5, 1): sd² = (1/36 + 25/36 + 16/36)/2 = 21/36.
    se = statistics.paired_standard_error([1, 2, 3], [0.5, 2.5, 2])
    assert se == pytest.approx(math.sqrt(21 / 36) / math.sqrt(3), rel=1e-12)


def test_paired_t_test_p_matches_scipy_and_a_hand_case():
    stats = pytest.importorskip("scipy.stats")
    a = np.array([0.31, 0.28, 0.35, 0.30, 0.27, 0.33])
    b = np.array([0.30, 0.29, 0.31, 0.27, 0.27, 0.30])
    expected = stats.ttest_rel(a, b).pvalue
    assert statistics.t_test_p(a - b) == pytest.approx(expected, rel=1e-10)
    # d = (1, −1, 3): mean 1, sd 2, t = 1 / (2/√3) = 0.866 on 2 degrees of freedom:
    # p = 2·P(T₂ > 0.866) = 1 − 0.866/√(2 + 0.75) = 0.47777 (Student's t with 2 df in closed form).
    assert statistics.t_test_p([1.0, -1.0, 3.0]) == pytest.approx(1 - 0.75**0.5 / 2.75**0.5)
    assert math.isnan(statistics.t_test_p([0.1]))
    assert statistics.t_test_p([0.0, 0.0]) == 1.0 and statistics.t_test_p([0.1, 0.1]) == 0.0


def test_bootstrap_interval_covers_the_binomial_spread_of_a_test_set():
    """Per-signal differences of 0/±1 (a model wrong on 300 signals the other gets right, right
    on 200 it gets wrong, of 10,000): mean 0.01; the bootstrap SD of the mean is the sample SD
    of the values / √N, so the 95 % interval is mean ± 1.96·SD/√N to within resampling error."""
    values = np.zeros(10_000)
    values[:300], values[300:500] = 1.0, -1.0
    low, high = statistics.bootstrap_interval(values, resamples=4_000, seed=1)
    half = 1.959964 * values.std() / math.sqrt(len(values))
    assert low == pytest.approx(0.01 - half, abs=3e-4)
    assert high == pytest.approx(0.01 + half, abs=3e-4)
    assert statistics.bootstrap_interval(values, 500, seed=2) == statistics.bootstrap_interval(
        values, 500, seed=2
    )


def _exact_spearman_p(x, y):
    """Two-sided exact permutation p: every pairing of x with y, enumerated."""
    import itertools

    observed = abs(statistics.spearman(x, y))
    rhos = [abs(statistics.spearman(x, list(p))) for p in itertools.permutations(y)]
    return sum(rho >= observed - 1e-12 for rho in rhos) / len(rhos)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([1, 2, 3, 4, 5, 6, 7], [2, 1, 4, 3, 7, 5, 6]),  # ρ = 23/28: exact p 172/5040
        ([0.3, 0.1, 0.5, 0.2, 0.9, 0.4, 0.6], [3, 3, 1, 2, 5, 4, 2]),  # ties in y
        ([1, 2, 3, 4, 5, 6], [3, 5, 1, 6, 2, 4]),  # no association
    ],
)
def test_spearman_permutation_p_is_the_exact_one(x, y):
    exact = _exact_spearman_p(x, y)
    estimate = statistics.spearman_permutation_p(x, y, resamples=40_000)
    # Monte Carlo SD at 40,000 draws is at most 0.0025; 0.01 is four of them.
    assert estimate == pytest.approx(exact, abs=0.01)


def test_spearman_permutation_p_of_a_perfect_order_and_a_constant():
    # Of 10! pairings, 2 give |ρ| = 1: p is (1 + draws that hit them) / (1 + draws) ≈ 1/10,001.
    p = statistics.spearman_permutation_p(range(10), range(10), resamples=10_000)
    assert p == pytest.approx(1 / 10_001, abs=3 / 10_001)
    assert math.isnan(statistics.spearman_permutation_p([1, 2, 3], [4, 4, 4]))
