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
        ms = sorted(v / NS_PER_MS for v in samples_ns)
        mean = math.fsum(ms) / n
        # Sample standard deviation (n - 1), as pyperf and statistics.stdev report.
        var = math.fsum((v - mean) ** 2 for v in ms) / (n - 1) if n > 1 else 0.0
        std = math.sqrt(var)
        q1, q3 = percentile(ms, 25), percentile(ms, 75)
        iqr = q3 - q1
        lo_fence, hi_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
        outliers = sum(1 for v in ms if v < lo_fence or v > hi_fence)
        return cls(
            n=n,
            mean_ms=mean,
            std_ms=std,
            min_ms=ms[0],
            p50_ms=percentile(ms, 50),
            p90_ms=percentile(ms, 90),
            p99_ms=percentile(ms, 99),
            max_ms=ms[-1],
            cv=std / mean if mean > 0 else 0.0,
            outliers=outliers,
        )
