"""Frames decoded per second by the bridge: framing (COBS + CRC-32) and codec together.

A stream of RESULT frames (32 samples each, the emulator's and PROTOCOL.md's suggested
size) with a HEALTH frame every tenth, fed in 4 KiB pieces as a serial read returns
them.  Prints frames/s and MB/s for the framing layer alone and with the codec, and how
many times faster that is than a 921600-baud line can deliver frames (the headroom).

    python benchmarks/bridge_decode.py [--frames 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from firmware_bridge import codec
from firmware_bridge.framing import FrameDecoder, encode_frame


def stream(frames: int) -> bytes:
    parts = []
    for i in range(frames):
        if i % 10 == 9:
            msg: codec.Message = codec.Health(41.5, 3.3, i, 18_000)
        else:
            msg = codec.Result(
                64_000_000, 64_000_000, 0xFFFF, (i * 32) % 0xFF00, tuple(range(800_000, 800_032))
            )
        parts.append(encode_frame(codec.encode(msg, i % 0xFFFF + 1)))
    return b"".join(parts)


def decode_all(data: bytes, with_codec: bool) -> tuple[float, int]:
    decoder = FrameDecoder()
    n = 0
    start = time.perf_counter()
    for i in range(0, len(data), 4096):
        for packet in decoder.feed(data[i : i + 4096]):
            if with_codec:
                codec.decode(packet)
            n += 1
    return time.perf_counter() - start, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    data = stream(args.frames)
    per_frame = len(data) / args.frames
    line_fps = 921_600 / 10 / per_frame  # 8N1: 10 bits a byte
    print(f"{args.frames} frames, {len(data) / 1e6:.2f} MB, {per_frame:.0f} bytes a frame on average")
    for with_codec in (False, True):
        rates = []
        for _ in range(args.repeat):
            seconds, n = decode_all(data, with_codec)
            assert n == args.frames
            rates.append(n / seconds)
        med = statistics.median(rates)
        what = "framing + codec" if with_codec else "framing only   "
        print(f"{what}: {med:,.0f} frames/s (min {min(rates):,.0f}, max {max(rates):,.0f}), "
              f"{med * per_frame / 1e6:.1f} MB/s, {med / line_fps:,.0f}x a 921600-baud line "
              f"({line_fps:,.0f} frames/s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
