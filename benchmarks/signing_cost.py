"""What signed commands cost: sealing on the coordinator, checking on the device.

Per job (a sampling job of 10 NAS-Bench-201 architectures, as the re-ranker sends) and
per push manifest (a ``--model-mb`` model in 64 KiB chunks, with each chunk's digest):
the coordinator's ``seal`` (the sequence number, the expiry, the Ed25519 signature), and
the device's whole check (``Trust.check``: the signature against the pinned key, the
device, the expiry; then ``Trust.consume``, the replay window, which writes the trust
file), on messages decoded from their wire bytes as the device gets them.  Also the
per-chunk digest check a device makes for every chunk that arrives.

    python benchmarks/signing_cost.py [--n 2000] [--model-mb 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.device.trust import Trust
from agent.protocol import messages
from agent.protocol.jobs import ArchItem, JobSettings, JobSpec
from agent.protocol.push import MAX_CHUNK_BYTES, Manifest, chunk_digests
from agent.protocol.signing import SeqClock, public_key_of, seal


def per_call_us(fn, n: int) -> tuple[float, float]:
    """(median, p90) microseconds of ``fn()`` over ``n`` calls, timed one by one."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times), statistics.quantiles(times, n=10)[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--model-mb", type=float, default=5.0)
    args = ap.parse_args()
    from agent.materialize import sample

    key = Ed25519PrivateKey.generate()
    public = public_key_of(key)
    seq = SeqClock()
    job = JobSpec(job_id="rerank-1-abc", architectures=tuple(
        ArchItem(space="nas-bench-201", arch=a) for a in sample("nas-bench-201", 10, 0)),
        settings=JobSettings(runs=20, warmup_runs=3, min_time_s=0.0, threads=1))  # fmt: skip
    model = os.urandom(int(args.model_mb * 1024 * 1024))
    manifest = Manifest(push_id="r1:shed-pi-3", name="fleetbench-model", version="abc", format="onnx",
                        size=len(model), sha256=hashlib.sha256(model).hexdigest(), release=1,
                        chunk_digests=chunk_digests(model, MAX_CHUNK_BYTES))  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trust = Trust(tmp, public)
        commands = (
            ("job", job, messages.JobMessage),
            ("push manifest", manifest, messages.PushManifestMessage),
        )
        for what, cmd, cls in commands:
            sealed = seal(cmd, "shed-pi-3", seq.next(), 86400, key)
            wire = messages.encode(messages.make(cls, "shed-pi-3", sealed))
            rows.append((f"seal a {what} (coordinator)", *per_call_us(
                lambda c=cmd: seal(c, "shed-pi-3", seq.next(), 86400, key), args.n)))  # fmt: skip
            received = messages.decode(wire, cls.TOPIC).data
            rows.append((f"check a {what} (device: signature, device, expiry)", *per_call_us(
                lambda r=received, w=what: trust.check(r, "shed-pi-3", w), args.n)))  # fmt: skip
            base = 10**15 * (1 + commands.index((what, cmd, cls)))  # above every number taken before
            fresh = iter(range(base, base + 10 * args.n))
            rows.append(("take its sequence number (device: replay window, trust file)", *per_call_us(
                lambda f=fresh, w=what: trust.consume(next(f), w), args.n)))  # fmt: skip
            print(f"{what}: {len(wire)} bytes on the wire", file=sys.stderr)
        data = model[:MAX_CHUNK_BYTES]
        rows.append(("check a 64 KiB chunk's digest (device)", *per_call_us(
            lambda: manifest.digest_ok(0, data), args.n)))  # fmt: skip
    for label, med, p90 in rows:
        print(f"{label:<62} median {med:8.1f} us  p90 {p90:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
