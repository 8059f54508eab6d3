"""Decode-and-check cost per message: the previous code against this one, in one run.

What the coordinator's store does with each result message before it writes the row.
The previous code (``--base``, the commit before the wire contract) read it with
``agent.transport.messages.decode`` (json.loads and the envelope's fields) and dug
``data["result"]["stats"]["p50_ms"]`` out of a dict, checking nothing inside.  This code
decodes and checks the whole message against its class (``agent.protocol``): every
field's type and range, finite numbers, the device the topic names; then builds the row
(``coordinator.store.ingest.plan``).  Both read the same result message, as a real agent
sends it (the previous release's version 1, this one's version 2), with 200 samples and
with 5,000 (about 40 KB); the exact sizes are printed.  Each figure is the median over ``--repeats``
rounds of ``--loops`` messages, the two interleaved round by round.

    python benchmarks/decode_cost.py [--base 200cfce] [--loops 2000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from typing import Any, Callable

from _helpers import load_test_helper

from agent.protocol import messages
from coordinator.store.ingest import Batch, Message, plan

result_data = load_test_helper("wire").result_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPIC = "fleetbench/v1/devices/pi-1/results"


def previous_decoder(base: str) -> Callable[[bytes], Any]:
    """The previous release's decode, loaded from git as it was, and its row extraction."""
    source = subprocess.run(["git", "-C", REPO, "show", f"{base}:agent/transport/messages.py"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    source = source.replace(
        "from agent.errors import FleetbenchError", "from agent.common.errors import FleetbenchError"
    )
    module = types.ModuleType("previous_messages")
    sys.modules[module.__name__] = module  # (its dataclasses look their module up)
    exec(compile(source, "previous_messages.py", "exec"), module.__dict__)

    def decode(raw: bytes) -> Any:  # the previous store's work per result message
        device_id, _kind = TOPIC.split("/")[3:5]
        env = module.decode(raw)
        data = env.data if isinstance(env.data, dict) else {}
        arch = data.get("architecture") or {}
        stats = (data.get("result") or {}).get("stats") or {}
        return {
            "msg_id": env.id,
            "device_id": device_id,
            "ts": env.ts,
            "data": raw.decode("utf-8", "replace"),
            "job_id": data.get("job_id"),
            "model": data.get("model"),
            "space": arch.get("space"),
            "arch": arch.get("arch"),
            "p50_ms": stats.get("p50_ms"),
        }

    return decode


def current_decoder() -> Callable[[bytes], Any]:
    def decode(raw: bytes) -> Any:  # the store's work per result message: decode, check, its row
        batch = Batch()
        plan(Message(TOPIC, raw), batch)
        return batch.results[0]

    return decode


def time_per_call_us(fn: Callable[[bytes], Any], raw: bytes, loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        fn(raw)
    return (time.perf_counter() - start) / loops * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="200cfce", help="the previous code's commit (default: 200cfce)")
    ap.add_argument("--loops", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    old, new = previous_decoder(args.base), current_decoder()
    print(f"{'message':<34} {'bytes':>7} {'previous us':>12} {'this us':>9} {'ratio':>6}")
    for samples in (200, 5000):
        msg = messages.make(
            messages.ResultMessage,
            "pi-1",
            result_data("j-1", "mobilenet.tflite", 3.2, samples=samples),
            "result:j-1:mobilenet.tflite",
        )
        raw_new = messages.encode(msg)
        raw_old = messages.encode(msg, version=1)  # the same message as the previous release wrote it
        assert old(raw_old)["p50_ms"] == new(raw_new)["p50_ms"]
        olds, news = [], []
        for _ in range(args.repeats):
            olds.append(time_per_call_us(old, raw_old, args.loops))
            news.append(time_per_call_us(new, raw_new, args.loops))
        o, n = statistics.median(olds), statistics.median(news)
        print(
            f"result, {samples:>5} samples (v2)          {len(raw_new):>7} {o:>12.1f} {n:>9.1f} {n / o:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
