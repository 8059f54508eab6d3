"""Does a CPU quota slow a short layer as much as a whole network?  (issue 19's throttled boards)

Under a CFS quota (cgroup v1 here; a container's --cpus, systemd's CPUQuota= elsewhere) a run
shorter than what is left of the quota in its period is not slowed; the agent therefore times
groups of runs lasting two periods there (``protocol.runs_per_sample``).  This times a 3x3
convolution and an addition as one-layer models, and resnet56 whole, with ``fleetbench bench``,
free and inside a cgroup allowed QUOTA of one core per 2 ms, interleaved over ROUNDS rounds, and
prints each one's slowdown (median over rounds, and the range): a width table is a fair guide to
such a board only if the layers slow as the network does.

    python benchmarks/quota_timing.py [--quota 0.55] [--rounds 3] [--threads 1 2]   (root)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from _helpers import REPO, load_test_helper

PERIOD_US = 2000


def bench(path: str, threads: int, group: str | None) -> tuple[float, int]:
    argv = [sys.executable, "-m", "agent", "bench", path, "--threads", str(threads), "--runs", "10",
            "--warmup", "2", "--warmup-time", "0.02", "--min-time", "0.05", "--format", "json"]  # fmt: skip
    if group:
        argv = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *argv]
    out = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, check=True
    )
    (record,) = json.loads(out.stdout)
    return record["stats"]["p50_ms"], record["protocol"]["runs_per_sample"]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quota", type=float, default=0.55, help="share of one core per 2 ms (default 0.55)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    from agent.materialize import families as fam
    from agent.materialize import write_model
    from agent.materialize.lut import layer_network, plan_keys
    from agent.materialize.weights import seeded, to_network

    cgroups = load_test_helper("cgroups")
    work = tempfile.mkdtemp(prefix="fleetbench-quota-")
    plan = fam.plan("resnet56")
    keys = plan_keys(plan)
    models = {
        "conv 3x3 16->16 @32": layer_network(
            next(k for k in keys if k.op == "conv" and k.cin == k.cout == 16)
        ),
        "add 16 @32": layer_network(next(k for k in keys if k.op == "add")),
        "resnet56 whole": to_network(plan, seeded(plan, 0), "resnet56"),
    }
    paths = {
        name: write_model(net, os.path.join(work, f"m{i}.onnx"))
        for i, (name, net) in enumerate(models.items())
    }
    with cgroups.quota_group(PERIOD_US, int(PERIOD_US * args.quota)) as group:
        for threads in args.threads:
            for name, path in paths.items():
                ratios, groups = [], []
                for _ in range(args.rounds):
                    free, _ = bench(path, threads, None)
                    limited, per_sample = bench(path, threads, group)
                    ratios.append(limited / free)
                    groups.append(per_sample)
                print(json.dumps({
                    "threads": threads, "model": name, "quota": args.quota,
                    "slowdown": round(statistics.median(ratios), 2),
                    "range": [round(min(ratios), 2), round(max(ratios), 2)],
                    "runs_per_sample": groups,
                }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
