"""Paired comparisons across seeds: the statistics the study declares before running.

A seed fixes the initialization, the data order and the flipped labels, so two variants'
runs of one seed are paired, and their per-seed difference is far less noisy than the
difference of their means. For each declared contrast: the mean paired difference with a
95 % t interval, an exact two-sided sign test (which assumes nothing about the shape of the
differences), and Holm's step-down adjustment over the whole declared family.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """``mean`` of the per-seed differences a − b, its 95 % CI, and the sign test."""

    differences: tuple[float, ...]
    mean: float
    ci_low: float  # NaN with fewer than two pairs: no interval from one difference
    ci_high: float
    positive: int
    negative: int
    sign_test_p: float


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean; (NaN, NaN) for fewer than two values."""
    from scipy.stats import t as student_t

    array = np.asarray(values, np.float64)
    if len(array) < 2:
        return math.nan, math.nan
    half = student_t.ppf(0.5 + confidence / 2, len(array) - 1) * array.std(ddof=1)
    half /= math.sqrt(len(array))
    return float(array.mean() - half), float(array.mean() + half)


def sign_test(positive: int, negative: int) -> float:
    """Exact two-sided sign test: P(a split at least this uneven | each sign has p = ½).

    Ties (zero differences) are left out before counting, as is usual.
    """
    n = positive + negative
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(positive, negative) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """Per-pair ``a[i] − b[i]`` summarized; ``a`` and ``b`` are aligned by seed."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired samples need equal, non-zero lengths, got {len(a)} and {len(b)}")
    differences = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    positive, negative = int((differences > 0).sum()), int((differences < 0).sum())
    low, high = t_interval(differences)
    return PairedDifference(
        differences=tuple(differences.tolist()),
        mean=float(differences.mean()),
        ci_low=low,
        ci_high=high,
        positive=positive,
        negative=negative,
        sign_test_p=sign_test(positive, negative),
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (family-wise error control)."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted, running = [0.0] * m, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _centred_ranks(values: Sequence[float]) -> np.ndarray:
    ranks = _ranks(np.asarray(values, np.float64))
    return ranks - ranks.mean()


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's on the ranks); NaN when either is constant."""
    rx, ry = _centred_ranks(x), _centred_ranks(y)
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else math.nan


def paired_standard_error(a: Sequence[float], b: Sequence[float]) -> float:
    """Standard error of mean(a − b) for per-probe estimates sharing their probes.

    Hutchinson trace estimates of two models with the same Rademacher probes are
    paired probe by probe; the paired error is far smaller than the two errors combined.
    """
    differences = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if len(differences) < 2:
        return math.nan
    return float(differences.std(ddof=1) / math.sqrt(len(differences)))


def t_test_p(differences: Sequence[float]) -> float:
    """Two-sided paired t-test of mean(differences) = 0 (Student's t, n − 1 degrees of
    freedom); NaN for fewer than two pairs. Differences that are all equal have no spread to
    test against: p is 1 where they are all zero, else 0."""
    from scipy.stats import t as student_t

    array = np.asarray(differences, np.float64)
    if len(array) < 2:
        return math.nan
    sd = array.std(ddof=1)
    if sd == 0:
        return 1.0 if array.mean() == 0 else 0.0
    statistic = array.mean() / (sd / math.sqrt(len(array)))
    return float(2 * student_t.sf(abs(statistic), len(array) - 1))


def bootstrap_interval(
    values: np.ndarray, resamples: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of mean(values) over ``resamples`` resamples of its entries with
    replacement. With ``values`` the per-test-signal difference of two models' errors (mean
    over seeds), it is the test set's own sampling uncertainty, which seeds do not show."""
    values = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(values))  # at most 2 million indices at a time
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        indices = rng.integers(0, len(values), size=(stop - start, len(values)))
        means[start:stop] = values[indices].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def spearman_permutation_p(
    x: Sequence[float], y: Sequence[float], resamples: int = 10_000, seed: int = 0
) -> float:
    """Two-sided Monte Carlo permutation p of Spearman's ρ = 0: the share of ``resamples``
    random pairings of x with y whose |ρ| reaches the observed one (the observed pairing
    counted once, so p is never 0). Exact in the limit, with no assumption on the shape of
    the data; at ten seeds a t or normal approximation is not to be trusted. NaN where ρ is."""
    observed = spearman(x, y)
    if math.isnan(observed):
        return math.nan
    rx, ry = _centred_ranks(x), _centred_ranks(y)
    scale = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    rng = np.random.default_rng(seed)
    shuffled = ry[np.argsort(rng.random((resamples, len(ry))), axis=1)]
    rhos = shuffled @ rx / scale
    # 1e-12: the same |ρ| computed in another order is a tie, not a smaller value.
    extreme = int((np.abs(rhos) >= abs(observed) - 1e-12).sum())
    return (1 + extreme) / (1 + resamples)
