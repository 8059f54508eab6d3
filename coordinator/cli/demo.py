"""``fleetbench demo``: the command (the run itself is ``coordinator.demo.Demo``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from agent.common.args import seconds, whole
from agent.common.errors import UsageError
from coordinator.extras import need

#: the extras the demo needs, for the error that names them
DEMO_EXTRAS = "onnx,coordinator,demo"


def register(sub: Any) -> None:
    from coordinator.demo import SIMULATED

    demo = sub.add_parser(
        "demo",
        help="run the whole loop on this machine: broker, coordinator, a real agent, simulated devices",
        description=(
            "Start an embedded MQTT broker (amqtt, loopback only), the coordinator with a SQLite "
            "file, one real agent that benchmarks NAS-Bench-201 models with ONNX Runtime here, and "
            "simulated devices that answer from published latencies (labelled simulated).  Each "
            "device measures the probes and gets an instant pick, then is sampled, its latency "
            "column predicted, the best model under its budget chosen, pushed signed, installed and "
            "smoke-run.  Ends with a summary table and an HTML report.  Takes under a minute on a "
            "2-core machine (about 33 s; benchmarks/RESULTS.md)."
        ),
        epilog="Example: fleetbench demo            (then open fleetbench-demo/report.html)",
    )
    demo.add_argument("--out", default="fleetbench-demo", metavar="DIR", help="default: ./fleetbench-demo")
    demo.add_argument("--broker", metavar="URL", help="use this broker instead of the embedded one")
    demo.add_argument("--samples", type=whole(2), default=8, metavar="K",
                      help="architectures measured per device (default 8)")  # fmt: skip
    demo.add_argument("--simulated", type=whole(0), default=len(SIMULATED), metavar="N",
                      help=f"simulated devices, 0-{len(SIMULATED)} (default {len(SIMULATED)})")  # fmt: skip
    demo.add_argument(
        "--runs", type=whole(1), default=10, metavar="N", help="timed runs per model (default 10)"
    )
    demo.add_argument(
        "--timeout", type=seconds, default=600.0, metavar="S", help="give up after (default 600)"
    )
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from coordinator.demo import SIMULATED, Demo

    if args.samples > 50:
        raise UsageError(f"--samples {args.samples} must be 2-50")
    if args.simulated > len(SIMULATED):
        raise UsageError(f"--simulated {args.simulated} must be 0-{len(SIMULATED)}")
    if args.timeout <= 0:
        raise UsageError("--timeout must be above 0")
    for module in ("onnxruntime", "onnx", "sqlalchemy", "cryptography", "matplotlib"):
        need(module, "the demo", DEMO_EXTRAS)
    if not args.broker:
        if sys.version_info < (3, 10):
            raise UsageError("the embedded broker (amqtt) needs Python >= 3.10; run a broker such as "
                             "mosquitto and give it with --broker mqtt://127.0.0.1:1883")  # fmt: skip
        need("amqtt", "the embedded broker", DEMO_EXTRAS)
    return asyncio.run(Demo(args).run())
