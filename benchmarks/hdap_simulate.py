"""HDAP's planning at scale: ``fleetbench hdap --simulate`` on 10,000 described boards in 5 conditions
(issue 19).  The base width tables are measured here first (``fleetbench lut``, 1 thread), the fleet
file written next to them, and each network planned and judged by the fleet's truth against the
baselines, and a model per cluster (``--per-cluster``) beside HDAP's one model; the weights are
seeded (the filter importance of an untrained network).

    python benchmarks/hdap_simulate.py [--devices 10000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _helpers import REPO

CONDITIONS = {
    "healthy": {},
    "throttled": {"conv": 1.6, "pointwise": 1.5, "depthwise": 1.4, "memory": 1.1},
    "worn-memory": {"memory": 2.5, "pointwise": 1.3, "depthwise": 1.6, "head": 1.2},
    "hot": {"conv": 1.3, "pointwise": 1.2, "memory": 1.4},
    "old": {"conv": 1.2, "memory": 1.8, "pointwise": 1.6, "depthwise": 1.3},
}
MIX = {"healthy": 0.4, "throttled": 0.2, "worn-memory": 0.2, "hot": 0.1, "old": 0.1}


def fleetbench(*args: str) -> str:
    print("$ fleetbench " + " ".join(args), file=sys.stderr, flush=True)
    out = subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return out.stdout


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--work", default="/tmp/fleetbench-hdap-simulate")
    args = ap.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    from agent.materialize import families as fam
    from agent.materialize.weights import save, seeded

    for family in ("resnet56", "mobilenetv1"):
        lut = os.path.join(args.work, f"{family}-lut.csv")
        if not os.path.exists(lut):
            fleetbench("lut", "--space", family, "--widths", "25,50,75,100", "--sample", "10", "-o", lut)
        weights = os.path.join(args.work, f"{family}.npz")
        plan = fam.plan(family)
        save(weights, plan, seeded(plan, 0))
        fleet = {
            "space": family,
            "base_lut": os.path.basename(lut),
            "conditions": CONDITIONS,
            "generate": {"devices": args.devices, "mix": MIX},
            "jitter": 0.02,
            "shape_noise": 0.1,
            "profile_noise": 0.01,
            "seed": 0,
        }
        path = os.path.join(args.work, f"{family}-fleet.json")
        with open(path, "w") as fh:
            json.dump(fleet, fh)
        started = time.monotonic()
        out = fleetbench(
            "hdap",
            "--space",
            family,
            "--weights",
            weights,
            "--flops",
            "0.5",
            "--simulate",
            path,
            "--per-cluster",
            "--format",
            "json",
        )
        report = json.loads(out)
        report["command_s"] = round(time.monotonic() - started, 1)
        print(json.dumps({k: v for k, v in report.items() if not k.endswith("_widths")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
