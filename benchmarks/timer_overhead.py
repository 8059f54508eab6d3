"""Cost of timing an empty callable: native time_calls vs its Python twin vs a perf_counter_ns loop.

Two figures per method, measured side by side (interleaved rounds in one process):
  floor_ns    median duration a method *reports* for a call that does nothing: what
              every real sample is inflated by;
  per_call_ns wall time per timed call including the loop: the method's throughput.

On a shared VM a whole process can land in a slow or a fast mode for its lifetime
(seen here: 40 ns in one process, 80 ns in the next, with or without ASLR), so, as
pyperf does, the measurement is repeated in several processes and the median over
processes is reported, with the spread.

    python benchmarks/timer_overhead.py [--processes 5] [--calls 100000] [--rounds 11]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time

import numpy as np

import bench_kernels

_python = bench_kernels.implementations()["python"]
_native = bench_kernels.implementations().get("native")

LOOP = "perf_counter_ns loop"


def empty() -> None:
    pass


def perf_counter_loop(fn, n, out):
    pc = time.perf_counter_ns
    for i in range(n):
        t0 = pc()
        fn()
        t1 = pc()
        out[i] = t1 - t0


def one_process(calls: int, rounds: int) -> dict:
    methods = {
        "native time_calls": _native.time_calls,
        # gc.isenabled is a C function doing almost nothing: its floor is the clock's
        # own cost plus a C call, without a Python frame.
        "native, C no-op callable": lambda fn, n, out: _native.time_calls(gc.isenabled, n, out),
        "python twin time_calls": _python.time_calls,
        LOOP: perf_counter_loop,
    }
    floors: dict = {m: [] for m in methods}
    per_call: dict = {m: [] for m in methods}
    out = np.zeros(calls, dtype=np.int64)
    for _ in range(rounds):
        for name, fn in methods.items():  # interleaved: machine noise hits all alike
            t0 = time.perf_counter_ns()
            fn(empty, calls, out)
            per_call[name].append((time.perf_counter_ns() - t0) / calls)
            floors[name].append(float(np.median(out)))
    return {
        m: {"floor_ns": statistics.median(floors[m]), "per_call_ns": statistics.median(per_call[m])}
        for m in methods
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=5)
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if _native is None:
        print("native timer not built: pip install -e . first", file=sys.stderr)
        return 1
    if args.worker:
        print(json.dumps(one_process(args.calls, args.rounds)))
        return 0
    runs = []
    for _ in range(args.processes):
        cmd = [sys.executable, __file__, "--worker", "--calls", str(args.calls),
               "--rounds", str(args.rounds)]  # fmt: skip
        runs.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
    res = bench_kernels.resolution_ns()
    print(f"timer: {bench_kernels.IMPL} in use, clock {bench_kernels.CLOCK}, resolution {res} ns; "
          f"{args.processes} processes x {args.rounds} rounds x {args.calls} calls")  # fmt: skip
    pairs = [f"{r['native time_calls']['floor_ns']:.0f}/{r[LOOP]['floor_ns']:.0f}" for r in runs]
    print("per process, floor_ns (native / loop):", ", ".join(pairs))
    print(f"{'method':<26} {'floor_ns':>9} {'(min-max)':>11} {'loop/this':>9} "
          f"{'per_call_ns':>11} {'loop/this':>9}")  # fmt: skip
    for m in runs[0]:
        floors = [r[m]["floor_ns"] for r in runs]
        ratio = statistics.median(r[LOOP]["floor_ns"] / r[m]["floor_ns"] for r in runs)
        pc_ratio = statistics.median(r[LOOP]["per_call_ns"] / r[m]["per_call_ns"] for r in runs)
        pc = statistics.median(r[m]["per_call_ns"] for r in runs)
        print(f"{m:<26} {statistics.median(floors):9.1f} {min(floors):5.0f}-{max(floors):<5.0f} "
              f"{ratio:8.2f}x {pc:11.1f} {pc_ratio:8.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
