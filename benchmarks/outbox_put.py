"""Outbox ``put()`` cost with 10 and with 100,000 results queued, side by side.

The issue-14 attack: 100,000 results of 40 KB queued made ``put()`` take 740 ms (a
count over the whole table on every put, on the event loop).  Here the outbox is
filled to ``--queued`` results of ``--bytes`` each (written in one transaction, not
timed), opened as the agent opens it, and ``--puts`` more results are timed one by
one with ``synchronous=FULL``, as the agent writes them.  The two sizes are measured
alternating, ``--rounds`` times, and the median put of each is printed with their
ratio.  ``--over`` also measures an outbox at its byte bound, where every put drops
the oldest health sample or result.

    python benchmarks/outbox_put.py [--queued 100000] [--bytes 2000] [--puts 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time

from agent.transport.outbox import Outbox


def fill(path: str, n: int, size: int) -> None:
    """``n`` queued results of ``size`` bytes, as an agent's outbox holds them (one transaction)."""
    Outbox(path).close()  # the schema, as the agent makes it
    db = sqlite3.connect(path)
    payload = b"r" * size
    now = time.time()
    db.executemany(
        "INSERT INTO messages (id, topic, payload, qos, retain, created_at, droppable) "
        "VALUES (?, ?, ?, 1, 0, ?, ?)",
        ((f"q{i}", "fleetbench/v1/devices/bench/results", payload, now, int(i % 10 == 0)) for i in range(n)),
    )
    db.commit()
    db.close()


def time_puts(path: str, puts: int, size: int, tag: str, max_bytes: int) -> list[float]:
    """Open the outbox (as the agent does at start) and time ``puts`` puts; ms each."""
    payload = b"x" * size
    out = []
    with Outbox(path, max_messages=1_000_000, max_bytes=max_bytes) as box:
        for i in range(puts):
            t0 = time.perf_counter()
            box.put(f"{tag}-{i}", "fleetbench/v1/devices/bench/results", payload)
            out.append((time.perf_counter() - t0) * 1000)
        box.ack([f"{tag}-{i}" for i in range(puts)])  # leave the size as it was for the next round
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queued", type=int, default=100_000)
    ap.add_argument("--bytes", type=int, default=2000, help="bytes per queued result (default 2000)")
    ap.add_argument("--puts", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--over", action="store_true", help="also an outbox at its byte bound (every put drops)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        unbounded = 1 << 40
        cases = {
            "10 queued": (os.path.join(tmp, "small.sqlite"), 10, unbounded),
            f"{args.queued:,} queued": (os.path.join(tmp, "large.sqlite"), args.queued, unbounded),
        }
        if args.over:
            bound = args.queued * args.bytes
            cases[f"{args.queued:,} at the byte bound"] = (
                os.path.join(tmp, "full.sqlite"),
                args.queued,
                bound,
            )
        for path, n, _ in cases.values():
            fill(path, n, args.bytes)
        times: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(args.rounds):
            for label in list(cases) if r % 2 == 0 else list(reversed(cases)):
                path, _, bound = cases[label]
                times[label] += time_puts(path, args.puts, args.bytes, f"r{r}", bound)
        base = statistics.median(times["10 queued"])
        for label, values in times.items():
            med = statistics.median(values)
            p90 = statistics.quantiles(values, n=10)[-1]
            print(f"{label:<32} put median {med:7.3f} ms  p90 {p90:7.3f} ms  ratio {med / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
