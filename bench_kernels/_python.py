"""Pure-Python twin of ``bench_kernels._timer``.

Same signatures, same clock and same errors as the C extension, so that every
timer test runs against both.  It is only used when the extension could not be
built or ``FLEETBENCH_TIMER=python`` asks for it; each result records which one
measured it, because the twin's loop adds interpreter overhead to every sample.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional

_CLOCK_ID: Optional[int]
if hasattr(time, "CLOCK_MONOTONIC_RAW"):
    _CLOCK_ID = time.CLOCK_MONOTONIC_RAW
    CLOCK = "CLOCK_MONOTONIC_RAW"
elif hasattr(time, "CLOCK_MONOTONIC"):
    _CLOCK_ID = time.CLOCK_MONOTONIC
    CLOCK = "CLOCK_MONOTONIC"
else:  # pragma: no cover - not a POSIX system
    _CLOCK_ID = None
    CLOCK = "perf_counter"

_BUFFER_ERROR = "time_calls: out must be a writable contiguous buffer of int64"
_INT64_FORMATS = {"q", "@q", "=q", "<q" if sys.byteorder == "little" else ">q"}
if sys.maxsize > 2**32:  # 'l' is 64-bit on LP64 (numpy's int64 on Linux)
    _INT64_FORMATS |= {"l", "@l", "=l", "<l" if sys.byteorder == "little" else ">l"}

if _CLOCK_ID is not None:
    _clock_id = _CLOCK_ID

    def now_ns() -> int:
        """Current value of the benchmark clock in nanoseconds."""
        return time.clock_gettime_ns(_clock_id)

    def resolution_ns() -> int:
        """Resolution of the benchmark clock in nanoseconds."""
        return max(1, round(time.clock_getres(_clock_id) * 1e9))

else:  # pragma: no cover
    now_ns = time.perf_counter_ns

    def resolution_ns() -> int:
        return max(1, round(time.get_clock_info("perf_counter").resolution * 1e9))


def _int64_view(out: Any) -> memoryview:
    try:
        view = memoryview(out)
    except TypeError:
        raise TypeError(_BUFFER_ERROR) from None
    if view.readonly or not view.c_contiguous or view.itemsize != 8:
        raise TypeError(_BUFFER_ERROR)
    if view.format not in _INT64_FORMATS:
        raise TypeError(_BUFFER_ERROR)
    return view.cast("B").cast("q")


def time_calls(fn: Callable[[], object], n: int, out: Any) -> None:
    """Call ``fn()`` ``n`` times; write each call's duration in ns into ``out[0:n]``."""
    if not callable(fn):
        raise TypeError("time_calls: fn must be callable")
    n = n.__index__()
    if n < 0:
        raise ValueError("time_calls: n must be >= 0")
    view = _int64_view(out)
    if len(view) < n:
        raise ValueError("time_calls: out holds fewer than n items")
    if _CLOCK_ID is None:  # pragma: no cover - not a POSIX system
        clock = time.perf_counter_ns
        for i in range(n):
            t0 = clock()
            res = fn()
            t1 = clock()
            del res
            view[i] = t1 - t0
        return
    # The clock call is inlined (not now_ns()) so each sample pays one C call per read.
    gettime, clock_id = time.clock_gettime_ns, _CLOCK_ID
    for i in range(n):
        t0 = gettime(clock_id)
        res = fn()
        t1 = gettime(clock_id)
        del res
        view[i] = t1 - t0
