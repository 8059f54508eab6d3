"""Engine overhead and repeatability of ``fleetbench bench`` on a real model.

Side by side, in alternating order (A B, B A, ...), each in its own process:
  A  ``fleetbench bench MODEL --threads 1 --runs N --format json``  (its p50)
  B  a bare Python loop around ``session.run`` timed with ``time.perf_counter_ns``,
     same model, same session options, same input, same warm-up (its p50)

Prints each pair, the median of the A/B p50 ratios (target: within 3 %), and the
CV of A's p50 over the invocations (target: <= 3 %).

Because a shared host drifts by several per cent over tens of seconds, the script
also measures the engine's timed call against the bare loop *in one process and
one ORT session*, alternating blocks of 25 runs: the ratio there is free of drift
and isolates what the engine adds to each sample.

    python benchmarks/engine_overhead.py [--model example:squeezenet] [--pairs 5] [--runs 300]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

BARE = r"""
import sys, time, numpy as np, onnxruntime as ort
path, runs = sys.argv[1], int(sys.argv[2])
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
x = np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)
feeds = {inp.name: x}
t_end = time.perf_counter() + 0.5
for i in range(5):
    sess.run(None, feeds)
while time.perf_counter() < t_end:
    sess.run(None, feeds)
pc = time.perf_counter_ns
out = []
for _ in range(runs):
    t0 = pc()
    sess.run(None, feeds)
    out.append(pc() - t0)
print(float(np.median(out)) / 1e6)
"""


def _fleetbench() -> list:
    """The installed console script: beside this interpreter, on PATH, or as a module."""
    beside = os.path.join(os.path.dirname(sys.executable), "fleetbench")
    if os.path.exists(beside):
        return [beside]
    exe = shutil.which("fleetbench")
    return [exe] if exe else [sys.executable, "-m", "agent"]


def fleetbench_p50(model: str, runs: int) -> float:
    proc = subprocess.run(
        [*_fleetbench(), "bench", model, "--threads", "1", "--runs", str(runs), "--min-time", "0",
         "--format", "json", "--no-samples", "-q"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(json.loads(proc.stdout)[0]["stats"]["p50_ms"])


def bare_p50(path: str, runs: int) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", BARE, path, str(runs)], capture_output=True, text=True, check=True
    )
    return float(proc.stdout.strip())


def interleaved(path: str, blocks: int, block: int) -> tuple:
    """p50 of the engine's timed call vs a bare perf_counter_ns loop, same session, alternating."""
    import time

    import numpy as np

    import bench_kernels
    from agent.bench import backends
    from agent.bench.backends.base import BackendOptions
    from agent.bench.inputs import make_inputs

    sess = backends.for_model(path).open(path, BackendOptions(threads=1))
    feeds = make_inputs(sess.inputs, {s.name: s.shape for s in sess.inputs})  # type: ignore[misc]
    call = sess.prepare(feeds)  # what runner.measure times
    ort_sess = call.func  # the functools.partial's InferenceSession.run
    for _ in range(20):
        call()
    engine, bare = [], []
    pc = time.perf_counter_ns
    for _ in range(blocks):
        out = np.empty(block, dtype=np.int64)
        bench_kernels.time_calls(call, block, out)
        engine.extend(out.tolist())
        for _ in range(block):
            t0 = pc()
            ort_sess(None, feeds)
            bare.append(pc() - t0)
    return float(np.median(engine)) / 1e6, float(np.median(bare)) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="example:squeezenet")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--blocks", type=int, default=40, help="interleaved blocks of 25 runs")
    args = ap.parse_args()
    from agent.bench import examples

    path = examples.resolve(args.model)
    fb, bare, ratios = [], [], []
    print(f"model {args.model} ({path}); {args.pairs} pairs x {args.runs} runs, 1 thread")
    print(f"{'pair':>4} {'fleetbench p50 ms':>18} {'bare loop p50 ms':>17} {'ratio':>7}")
    for i in range(args.pairs):
        if i % 2 == 0:
            a, b = fleetbench_p50(args.model, args.runs), bare_p50(path, args.runs)
        else:
            b, a = bare_p50(path, args.runs), fleetbench_p50(args.model, args.runs)
        fb.append(a)
        bare.append(b)
        ratios.append(a / b)
        print(f"{i + 1:>4} {a:18.4f} {b:17.4f} {a / b:7.4f}")
    med = statistics.median(ratios)
    cv = statistics.stdev(fb) / statistics.mean(fb) if len(fb) > 1 else 0.0
    cv_bare = statistics.stdev(bare) / statistics.mean(bare) if len(bare) > 1 else 0.0
    pct = (med - 1) * 100
    print(f"engine overhead: median p50 ratio fleetbench/bare = {med:.4f} ({pct:+.2f} %)")
    e, b = interleaved(path, args.blocks, 25)
    print(f"in one process, interleaved {args.blocks} x 25 runs each: engine p50 {e:.4f} ms, "
          f"bare p50 {b:.4f} ms, ratio {e / b:.4f} ({(e / b - 1) * 100:+.2f} %)")  # fmt: skip
    print(f"repeatability: CV of fleetbench p50 over {len(fb)} invocations = {cv * 100:.2f} % "
          f"(bare loop: {cv_bare * 100:.2f} %)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
