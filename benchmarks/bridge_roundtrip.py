"""What the bridge adds to one BENCH: the round trip through a real pty at 115200 and 921600 baud.

The reference emulator answers on a pseudo-terminal; its runs take no time, so what is
measured is the bridge and the line alone: BENCH out, ACCEPT and one RESULT back
(``bench(model, runs=1)``), and PING/PONG.  A pty has no baud rate of its own, so the
emulator holds each frame for its time on the wire (10 bits a byte); "wire" below is
that time computed from the frames' sizes, and "bridge" is what the measurement adds to
it: the reader thread, framing, codec, the request bookkeeping and the pty.  "no pacing"
is the pty at full speed: the software alone.

    python benchmarks/bridge_roundtrip.py [--trips 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from firmware_bridge import codec
from firmware_bridge.board import BoardLink
from firmware_bridge.emulator import BoardSpec, EmulatedBoard
from firmware_bridge.framing import encode_frame


def frame_bytes(msg: codec.Message) -> int:
    return len(encode_frame(codec.encode(msg, 1000)))


def measure(baud: int | None, trips: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        board = EmulatedBoard(BoardSpec(models={"m": 1.0}, noise=0.0, baud=baud), link=f"{tmp}/tty").start()
        link = BoardLink(board.port, baud=baud or 115200, timeout_s=5.0)
        link.open()
        try:
            link.hello_request()
            for _ in range(20):  # warm up both threads and the pty
                link.bench("m", 1)
            bench, ping = [], []
            for _ in range(trips):
                t = time.perf_counter()
                link.bench("m", 1)
                bench.append(time.perf_counter() - t)
                t = time.perf_counter()
                link.ping(b"fleetbench")
                ping.append(time.perf_counter() - t)
        finally:
            link.close()
            board.stop()
    return {"bench": statistics.median(bench) * 1e3, "ping": statistics.median(ping) * 1e3,
            "bench_p90": statistics.quantiles(bench, n=10)[-1] * 1e3}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trips", type=int, default=300)
    args = ap.parse_args()
    trip = (codec.Bench("m", 1, 0), codec.Accept(), codec.Result(64_000_000, 64_000_000, 1, 0, (64_000,)))
    bench_bytes = sum(frame_bytes(m) for m in trip)
    ping_bytes = 2 * frame_bytes(codec.Ping(b"fleetbench"))
    print(f"a BENCH of one run moves {bench_bytes} bytes, a PING/PONG {ping_bytes}; "
          f"median of {args.trips} trips")  # fmt: skip
    head = ("line", "BENCH ms", "p90", "wire", "bridge", "PING ms", "wire")
    print("  ".join(h.rjust(w) for h, w in zip(head, (10, 9, 6, 6, 6, 8, 6))))
    for baud in (None, 115200, 921600):
        m = measure(baud, args.trips)
        wire_b = bench_bytes * 10 / baud * 1e3 if baud else 0.0
        wire_p = ping_bytes * 10 / baud * 1e3 if baud else 0.0
        name = f"{baud} Bd" if baud else "no pacing"
        added = m["bench"] - wire_b
        print(f"{name:>10}  {m['bench']:9.3f}  {m['bench_p90']:6.3f}  {wire_b:6.3f}  {added:6.3f}  "
              f"{m['ping']:8.3f}  {wire_p:6.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
