"""One re-ranking decision for a new device: plan k samples, predict all 1,999 archs, pick.

Each published device in turn is held out as the "new" device; the other five are the
reference.  ``plan_samples`` chooses k=10 architectures, their published latencies
stand in for the device's measurements, and ``decide`` predicts the device's column
and picks the most accurate architecture (CIFAR-10 top-1) under the budget (the
device's median latency).  Prints the wall time of plan + decide per device, and how
the pick's true latency compares with the budget.  Target (issue 6): < 1 s.

    python benchmarks/rerank_speed.py
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from coordinator.ranking.decision import decide, plan_samples
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import LatencyTable, read_accuracy, read_table

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "coordinator", "data")


def main() -> int:
    table = read_table(os.path.join(DATA, "nb201_latency_ms.csv"))
    accuracy, _ = read_accuracy(os.path.join(DATA, "nb201_accuracy.csv"), "cifar10_top1")
    space = get_space("nas-bench-201")
    rows = {a: i for i, a in enumerate(table.archs)}
    worst = 0.0
    for j, device in enumerate(table.devices):
        column = table.ms[:, j]
        keep = np.isfinite(column)
        others = [k for k in range(len(table.devices)) if k != j]
        reference = LatencyTable(
            tuple(a for a, ok in zip(table.archs, keep) if ok),
            tuple(table.devices[k] for k in others),
            table.ms[keep][:, others],
        )
        budget = float(np.median(column[keep]))
        start = time.perf_counter()
        archs = plan_samples(reference, space, 10)
        d = decide(reference, space, f"new-{device}", {a: column[rows[a]] for a in archs}, accuracy, budget)
        took = time.perf_counter() - start
        worst = max(worst, took)
        true_ms = column[rows[d.arch]] if d.arch else float("nan")
        print(
            f"{device:<20} {len(reference.archs)} archs  plan+decide {took:.3f} s  budget {budget:.2f} ms  "
            f"pick true {true_ms:.2f} ms ({'fits' if true_ms <= budget else 'OVER'}), top-1 {d.accuracy:.2f}"
        )
    print(f"slowest decision: {worst:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
