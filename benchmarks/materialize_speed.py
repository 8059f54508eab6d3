"""Materialize-and-load speed: 100 NAS-Bench-201 architectures built and loaded by each runtime.

A fixed, seeded sample of 100 architectures from the public table; for each, the
network is built (random seeded weights, folded BN), serialized, and loaded: an
onnxruntime InferenceSession (graph optimization included) for ONNX, a LiteRT
Interpreter with tensors allocated for TFLite.  Target (issue 5): 100 in < 20 s.

    python benchmarks/materialize_speed.py [--archs 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from agent.materialize import materialize, model_bytes
from coordinator.ranking.tables import read_table

TABLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "coordinator", "data",
                     "nb201_latency_ms.csv")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    archs = list(np.random.default_rng(args.seed).choice(read_table(TABLE).archs, args.archs, replace=False))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    for fmt in ("onnx", "tflite"):
        build_s = load_s = 0.0
        size = 0
        for arch in archs:
            t0 = time.perf_counter()
            data = model_bytes(materialize("nas-bench-201", arch, seed=0), fmt)
            t1 = time.perf_counter()
            if fmt == "onnx":
                ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
            else:
                Interpreter(model_content=data, num_threads=1).allocate_tensors()
            t2 = time.perf_counter()
            build_s, load_s, size = build_s + t1 - t0, load_s + t2 - t1, size + len(data)
        print(f"{fmt:<7} {len(archs)} archs: build+serialize {build_s:.2f} s, load {load_s:.2f} s, "
              f"total {build_s + load_s:.2f} s; mean model {size / len(archs) / 1024:.0f} KiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
