"""Speed of the ranking commands on large synthetic tables (targets from issue 3):

  predict       a 2,000 x 20 table (10 devices fully measured, 10 with 10 samples) in < 2 s
  monotonicity  1,000 devices x 15,625 architectures (all of NAS-Bench-201) in < 10 s

Each is timed as the whole command a user runs (`fleetbench ...` in a fresh process,
reading the CSV included) and as the library call alone; median of --repeat runs.

    python benchmarks/ranking_speed.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from coordinator.ranking.fill import fill_table
from coordinator.ranking.monotonicity import monotonicity
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import read_table


def synthetic(archs, devices, rng, sparse_cols=0, samples=10):
    """Log-latency = device-specific op costs over the encodings + shared non-additive part + noise."""
    space = get_space("nas-bench-201")
    enc = space.encode_all(archs)
    x = np.c_[enc["onehot"], enc["alive"]]
    shared = rng.normal(0, 0.15, len(archs))
    base = rng.uniform(0.1, 1.0, x.shape[1])
    logs = np.empty((len(archs), devices))
    for j in range(devices):
        w = base * rng.lognormal(0, 0.4, x.shape[1])
        logs[:, j] = np.log(x @ w + 1.0) + rng.uniform(0.5, 1.0) * shared + rng.normal(0, 0.05, len(archs))
    ms = np.exp(logs + rng.uniform(0, 3, devices))
    for j in range(devices - sparse_cols, devices):
        keep = rng.choice(len(archs), samples, replace=False)
        mask = np.ones(len(archs), bool)
        mask[keep] = False
        ms[mask, j] = np.nan
    return ms


def write_csv(path, archs, ms):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", *[f"dev{j:04d}" for j in range(ms.shape[1])]])
        for a, row in zip(archs, ms):
            w.writerow([a, *("" if np.isnan(v) else f"{v:.5g}" for v in row)])


def fleetbench():
    beside = os.path.join(os.path.dirname(sys.executable), "fleetbench")
    return [beside] if os.path.exists(beside) else [sys.executable, "-m", "agent"]


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    space = get_space("nas-bench-201")
    with tempfile.TemporaryDirectory() as tmp:
        archs = space.sample(2000, rng)
        p = os.path.join(tmp, "t2000x20.csv")
        write_csv(p, archs, synthetic(archs, 20, rng, sparse_cols=10))
        out = os.path.join(tmp, "out.csv")
        cmd = [*fleetbench(), "predict", p, "-o", out]
        t_cli = timed(lambda: subprocess.run(cmd, check=True, capture_output=True), args.repeat)
        table = read_table(p)
        t_lib = timed(lambda: fill_table(table, space), args.repeat)
        print(f"predict 2,000 x 20 (10 columns to fill from 10 samples each): command {t_cli:.2f} s, "
              f"fill_table {t_lib:.2f} s  (target < 2 s)")  # fmt: skip

        all_archs = space.sample(15625, rng)
        p = os.path.join(tmp, "t15625x1000.csv")
        write_csv(p, all_archs, synthetic(all_archs, 1000, rng))
        size_mb = os.path.getsize(p) / 1e6
        cmd = [*fleetbench(), "monotonicity", p, "--format", "json"]
        t_cli = timed(lambda: subprocess.run(cmd, check=True, capture_output=True), args.repeat)
        t_read = timed(lambda: read_table(p), 1)
        table = read_table(p)
        t_lib = timed(lambda: monotonicity(table), args.repeat)
        print(f"monotonicity 15,625 x 1,000 ({size_mb:.0f} MB CSV): command {t_cli:.2f} s "
              f"(reading the CSV {t_read:.2f} s, SRCC matrix {t_lib:.2f} s)  (target < 10 s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
