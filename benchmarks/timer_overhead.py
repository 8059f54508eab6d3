"""Cost of timing an empty callable: native time_calls vs its Python twin vs a perf_counter_ns loop.

Two figures per method, all measured side by side (interleaved rounds, one process):
  floor_ns    median duration each method *reports* for a call that does nothing:
              what every real sample is inflated by;
  per_call_ns wall time per timed call including the loop: the method's throughput.

    python benchmarks/timer_overhead.py [--calls 100000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import numpy as np

import bench_kernels
from bench_kernels import _python

try:
    from bench_kernels import _timer as _native
except ImportError:
    _native = None


def empty() -> None:
    pass


def perf_counter_loop(fn, n, out):
    pc = time.perf_counter_ns
    for i in range(n):
        t0 = pc()
        fn()
        t1 = pc()
        out[i] = t1 - t0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    if _native is None:
        print("native timer not built: pip install -e . first", file=sys.stderr)
        return 1
    methods = {
        "native time_calls": _native.time_calls,
        # gc.isenabled is a C function doing almost nothing: the floor it shows is the
        # clock's own cost plus a C call, without CPython's Python-function frame setup.
        "native, C no-op callable": lambda fn, n, out: _native.time_calls(gc.isenabled, n, out),
        "python twin time_calls": _python.time_calls,
        "perf_counter_ns loop": perf_counter_loop,
    }
    floors = {m: [] for m in methods}
    per_call = {m: [] for m in methods}
    out = np.zeros(args.calls, dtype=np.int64)
    for _ in range(args.rounds):
        for name, fn in methods.items():  # interleaved: machine noise hits all alike
            t0 = time.perf_counter_ns()
            fn(empty, args.calls, out)
            per_call[name].append((time.perf_counter_ns() - t0) / args.calls)
            floors[name].append(float(np.median(out)))
    base = statistics.median(floors["perf_counter_ns loop"])
    base_pc = statistics.median(per_call["perf_counter_ns loop"])
    res = bench_kernels.resolution_ns()
    print(f"timer: {bench_kernels.IMPL} in use, clock {bench_kernels.CLOCK}, resolution {res} ns; "
          f"{args.rounds} rounds x {args.calls} calls")  # fmt: skip
    print(f"{'method':<24} {'floor_ns':>9} {'vs loop':>8} {'per_call_ns':>12} {'vs loop':>8}")
    for name in methods:
        f = statistics.median(floors[name])
        p = statistics.median(per_call[name])
        print(f"{name:<24} {f:9.1f} {base / f:7.2f}x {p:12.1f} {base_pc / p:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
