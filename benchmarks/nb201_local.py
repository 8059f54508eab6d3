"""This machine as one more NAS-Bench-201 device: materialized models timed, ranked against the table.

A fixed, seeded sample of ``--archs`` architectures from the public table (1,999
archs, six devices) is materialized to ONNX (CIFAR-10 networks, 32x32, random seeded
weights) and timed with ONNX Runtime on one thread through fleetbench's own protocol
(``run_benchmark``).  Two passes, the second in reverse order, so slow drift of this
shared host does not line up with the sample order; each arch keeps the lower of its
two medians.  Prints the SRCC of the local latencies against every device column.
A faithful materializer should track the CPU devices (Raspberry Pi 4, Pixel 3) far
better than the accelerators.

    python benchmarks/nb201_local.py [--archs 200] [--seed 0] [--out local.csv]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from agent.bench.runner import BenchSettings, run_benchmark
from agent.materialize import materialize, write_model
from coordinator.ranking.monotonicity import spearman
from coordinator.ranking.tables import read_table

TABLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "coordinator", "data",
                     "nb201_latency_ms.csv")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write arch,local_ms to this CSV")
    args = ap.parse_args()
    table = read_table(TABLE)
    rows = np.sort(np.random.default_rng(args.seed).choice(len(table.archs), args.archs, replace=False))
    archs = [table.archs[r] for r in rows]
    settings = BenchSettings(backend="onnxruntime", threads=1, runs=20, warmup_runs=3, warmup_time_s=0.1,
                             min_time_s=0.3, max_time_s=5.0).validate()  # fmt: skip
    best = np.full(len(archs), np.inf)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, arch in enumerate(archs):
            paths.append(write_model(materialize("nas-bench-201", arch), os.path.join(tmp, f"a{i}.onnx")))
        for order in (range(len(archs)), reversed(range(len(archs)))):
            for n, i in enumerate(order):
                best[i] = min(best[i], run_benchmark(paths[i], settings).stats.p50_ms)
                print(f"\r{n + 1}/{len(archs)} ({time.monotonic() - start:.0f} s)", end="", file=sys.stderr)
            print(file=sys.stderr)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("arch,local_ms\n" + "".join(f"{a},{ms:.5f}\n" for a, ms in zip(archs, best)))
    print(f"{len(archs)} archs (seed {args.seed}), local p50 {best.min():.3f}-{best.max():.3f} ms, "
          f"onnxruntime 1 thread, {time.monotonic() - start:.0f} s")  # fmt: skip
    print(f"{'device':<22} {'n':>4}  SRCC vs this machine")
    for j, device in enumerate(table.devices):
        col = table.ms[rows, j]
        ok = np.isfinite(col)
        print(f"{device:<22} {int(ok.sum()):>4}  {spearman(col[ok], best[ok]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
