"""Summary statistics of latency samples.

Percentiles use linear interpolation between order statistics (numpy's default,
Hyndman & Fan type 7), the definition most benchmark tools report.  Outliers are
counted with Tukey's fences (beyond 1.5 IQR from the quartiles) and *kept*: a
benchmark flags noise, it does not hide it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
        # readable reference the tests hold this against.  Imported here: the agent daemon
        # reads and writes these records but never computes them, and numpy would double its RSS.
        import numpy as np

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
    import numpy as np

    n = len(ms)
    pos = (n - 1) * np.asarray(qs, dtype=np.float64) / 100.0
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    return (ms[lo] + (ms[hi] - ms[lo]) * (pos - lo)).tolist()


def median_interval(sorted_ms: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median of already sorted samples.

    Order statistics ``x_(k) .. x_(n+1-k)`` cover the true median with probability
    ``P(k <= B < n+1-k)`` for ``B ~ Binomial(n, 1/2)``, whatever the latency distribution
    (tails, bimodal runs and all); ``k`` is the largest rank that keeps that at or above
    ``confidence``.  Exact up to 300 samples, the normal approximation above.  Too few
    samples for the confidence (5 or fewer at 95 %) give the whole range.

    >>> median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    (2.0, 9.0)
    >>> median_interval([4.0, 5.0])
    (4.0, 5.0)
    """
    n = len(sorted_ms)
    if n == 0:
        raise ValueError("no samples to take the median of")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} is outside (0, 1)")
    tail = (1.0 - confidence) / 2.0
    if n <= 300:
        # the largest k with P(B <= k - 1) <= tail, in exact integers
        share = Fraction(tail).limit_denominator(10**9)
        limit, below, k = share.numerator * 2**n, 0, 0
        while k < n // 2 and (below + math.comb(n, k)) * share.denominator <= limit:
            below += math.comb(n, k)
            k += 1
    else:
        z = statistics.NormalDist().inv_cdf(1.0 - tail)
        k = max(0, math.floor(n / 2.0 - z * math.sqrt(n) / 2.0))
    if k == 0:
        return float(sorted_ms[0]), float(sorted_ms[-1])
    return float(sorted_ms[k - 1]), float(sorted_ms[n - k])


# -- rank correlation: how the device side judges a prediction (the coordinator uses these too)


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties sharing their average rank (scipy's "average").

    Written in numpy so ranking needs no scipy import (a second on a Raspberry Pi).

    >>> import numpy as np
    >>> rankdata(np.array([10.0, 20.0, 10.0, 5.0])).tolist()
    [2.5, 4.0, 2.5, 1.0]
    """
    import numpy as np

    sorter = np.argsort(values, kind="mergesort")
    inv = np.empty(len(values), dtype=np.intp)
    inv[sorter] = np.arange(len(values))
    ordered = values[sorter]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = np.cumsum(first)[inv]
    bounds = np.r_[np.flatnonzero(first), len(values)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """SRCC of two equally long vectors (ties averaged); NaN if either is constant.

    >>> import numpy as np
    >>> round(spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 30, 20, 40])), 3)
    0.8
    """
    import numpy as np

    ra, rb = rankdata(a) - (len(a) + 1) / 2, rankdata(b) - (len(b) + 1) / 2
    den = np.sqrt((ra @ ra) * (rb @ rb))
    return float(ra @ rb / den) if den > 0 else float("nan")
