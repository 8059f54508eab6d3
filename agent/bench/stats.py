"""Summary statistics of latency samples.

Percentiles use linear interpolation between order statistics (numpy's default,
Hyndman & Fan type 7), the definition most benchmark tools report.  Outliers are
counted with Tukey's fences (beyond 1.5 IQR from the quartiles) and *kept*: a
benchmark flags noise, it does not hide it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NS_PER_MS = 1e6


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Percentile ``q`` (0-100) of already sorted values, linear interpolation.

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    >>> percentile([10.0, 20.0, 30.0], 90)
    28.0
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo]) + (float(sorted_values[hi]) - float(sorted_values[lo])) * frac


@dataclass(frozen=True)
class LatencyStats:
    """Latency summary in milliseconds; ``cv`` is std/mean (0.05 means 5 %)."""

    n: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cv: float
    outliers: int

    @classmethod
    def from_ns(cls, samples_ns: Sequence[int]) -> LatencyStats:
        """Summarize samples given in nanoseconds.

        >>> s = LatencyStats.from_ns([1_000_000, 2_000_000, 3_000_000])
        >>> (s.n, s.mean_ms, s.p50_ms, s.std_ms)
        (3, 2.0, 2.0, 1.0)
        """
        n = len(samples_ns)
        if n == 0:
            raise ValueError("no samples to summarize")
        # numpy: a capped run keeps a million samples, which pure Python sorts and sums in
        # about a second here and several on a Raspberry Pi.  ``percentile`` above is the
        # readable reference the tests hold this against.
        ms = np.sort(np.asarray(samples_ns, dtype=np.float64) / NS_PER_MS)
        mean = math.fsum(ms.tolist()) / n
        dev = ms - mean
        # Sample standard deviation (n - 1), as pyperf and statistics.stdev report.
        std = math.sqrt(float(dev @ dev) / (n - 1)) if n > 1 else 0.0
        q1, p50, q3, p90, p99 = _sorted_percentiles(ms, (25, 50, 75, 90, 99))
        iqr = q3 - q1
        outliers = int(np.count_nonzero((ms < q1 - 1.5 * iqr) | (ms > q3 + 1.5 * iqr)))
        return cls(
            n=n,
            mean_ms=mean,
            std_ms=std,
            min_ms=float(ms[0]),
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            max_ms=float(ms[-1]),
            cv=std / mean if mean > 0 else 0.0,
            outliers=outliers,
        )


def _sorted_percentiles(ms: np.ndarray, qs: Sequence[float]) -> list[float]:
    """``percentile`` for several q at once over a sorted array (same interpolation)."""
    n = len(ms)
    pos = (n - 1) * np.asarray(qs, dtype=np.float64) / 100.0
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    return (ms[lo] + (ms[hi] - ms[lo]) * (pos - lo)).tolist()
