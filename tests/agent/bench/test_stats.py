from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.bench.stats import LatencyStats, median_interval, percentile

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)


def test_hand_computed_summary():
    # samples 1..10 ms and one 100 ms outlier
    ns = [v * 1_000_000 for v in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100)]
    s = LatencyStats.from_ns(ns)
    assert s.n == 11
    assert s.mean_ms == pytest.approx(155 / 11)
    # sample variance: sum((x - mean)^2) / 10
    mean = 155 / 11
    var = sum((x - mean) ** 2 for x in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100)) / 10
    assert s.std_ms == pytest.approx(math.sqrt(var))
    assert s.min_ms == 1 and s.max_ms == 100
    assert s.p50_ms == 6  # the 6th of 11 sorted values
    # p90: position 0.9 * 10 = 9 -> sorted[9] = 10
    assert s.p90_ms == 10
    # p99: position 9.9 -> 10 + 0.9 * (100 - 10) = 91
    assert s.p99_ms == pytest.approx(91)
    assert s.cv == pytest.approx(math.sqrt(var) / mean)
    # Q1 = 3.5, Q3 = 8.5, IQR 5 -> fences -4 and 16: only 100 is out
    assert s.outliers == 1


def test_single_sample():
    s = LatencyStats.from_ns([2_500_000])
    assert (s.n, s.mean_ms, s.std_ms, s.p99_ms, s.cv, s.outliers) == (1, 2.5, 0.0, 2.5, 0.0, 0)


def test_no_samples_is_an_error():
    with pytest.raises(ValueError):
        LatencyStats.from_ns([])


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 25) == 1.75
    assert percentile([5], 99) == 5.0
    with pytest.raises(ValueError):
        percentile([1, 2], 101)


@given(st.lists(st.integers(min_value=1, max_value=10**12), min_size=1, max_size=200))
def test_order_invariants(values):
    s = LatencyStats.from_ns(values)
    assert s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    assert s.min_ms <= s.mean_ms * (1 + 1e-12) and s.mean_ms <= s.max_ms * (1 + 1e-12)
    assert 0 <= s.outliers < s.n or s.n == 0
    assert s.std_ms >= 0 and s.cv >= 0


@given(st.lists(st.integers(min_value=1, max_value=10**12), min_size=1, max_size=300))
def test_fast_summary_matches_the_pure_python_reference(values):
    s = LatencyStats.from_ns(values)
    ms = sorted(v / 1e6 for v in values)
    mean = math.fsum(ms) / len(ms)
    assert s.mean_ms == mean  # fsum in both: exact
    for q, got in ((50, s.p50_ms), (90, s.p90_ms), (99, s.p99_ms)):
        assert got == pytest.approx(percentile(ms, q), rel=1e-12, abs=1e-12)
    var = math.fsum((v - mean) ** 2 for v in ms) / (len(ms) - 1) if len(ms) > 1 else 0.0
    assert s.std_ms == pytest.approx(math.sqrt(var), rel=1e-9, abs=1e-12)
    q1, q3 = percentile(ms, 25), percentile(ms, 75)
    fence = 1.5 * (q3 - q1)
    assert s.outliers == sum(1 for v in ms if v < q1 - fence or v > q3 + fence)


def test_matches_numpy_linear_percentiles():
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(3)
    ns = rng.integers(1_000, 5_000_000, size=537)
    s = LatencyStats.from_ns(ns.tolist())
    ms = ns / 1e6
    for q, got in ((50, s.p50_ms), (90, s.p90_ms), (99, s.p99_ms)):
        assert got == pytest.approx(np.percentile(ms, q))
    assert s.std_ms == pytest.approx(np.std(ms, ddof=1))


def test_the_medians_interval_is_the_textbook_order_statistics():
    """Ranks 6 and 15 of 20 samples, 40 and 61 of 100 (exact binomial); 5 or fewer: all of them."""
    assert median_interval([float(i) for i in range(1, 21)]) == (6.0, 15.0)
    assert median_interval([float(i) for i in range(1, 101)]) == (40.0, 61.0)
    assert median_interval([1.0, 3.0, 4.0, 5.0, 9.0]) == (1.0, 9.0)
    with pytest.raises(ValueError):
        median_interval([])


def test_the_medians_interval_is_as_wide_either_side_of_the_exact_limit():
    """The normal approximation above 300 samples takes over where the exact count leaves off."""
    lo300, hi300 = median_interval([float(i) for i in range(300)])
    lo301, hi301 = median_interval([float(i) for i in range(301)])
    assert abs((hi300 - lo300) - (hi301 - lo301)) <= 2


def test_the_medians_interval_covers_the_true_median_95_times_in_100():
    """Skewed latencies (log-normal, median 1): the interval holds the true median as often as
    it says, at 25 and at 400 runs (exact and approximate)."""
    rng = np.random.default_rng(7)
    for n in (25, 400):
        trials = 2000
        intervals = [median_interval(sorted(rng.lognormal(0.0, 0.5, n).tolist())) for _ in range(trials)]
        hits = sum(lo <= 1.0 <= hi for lo, hi in intervals)
        assert 0.93 <= hits / trials <= 0.99, (n, hits / trials)
