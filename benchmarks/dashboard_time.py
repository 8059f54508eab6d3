"""Dashboard and /metrics server time with a big fleet in the store.

``--devices`` devices (statuses and a health sample each, through the real ingest; a
decision and its push each) in a SQLite store; the dashboard served by aiohttp on
127.0.0.1; each of the fleet page, its JSON, the decisions page and /metrics fetched
``--requests`` times, one at a time.  Prints the median and p90 of the time from request
to the last byte, per endpoint.

    python benchmarks/dashboard_time.py [--devices 1000] [--requests 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

from agent.collectors.health import HealthSample, Thermal
from agent.protocol import messages as m
from agent.protocol.reports import HealthData, StatusData
from coordinator.config import CoordinatorConfig
from coordinator.store import Message, open_store


def fill(store, n: int) -> None:
    batch = []
    for i in range(n):
        device = f"pi-{i:05d}"
        sku = f"Board {i % 7}"
        status = m.make(m.StatusMessage, device, StatusData(state="online" if i % 10 else "offline",
                                                            protocol=2, sku=sku))  # fmt: skip
        health = m.make(
            m.HealthMessage, device, HealthData(health=HealthSample(thermal=Thermal({"cpu": 40 + i % 30})))
        )
        batch += [Message(f"fleetbench/v1/devices/{device}/status", m.encode(status)),
                  Message(f"fleetbench/v1/devices/{device}/health", m.encode(health))]  # fmt: skip
    for i in range(0, len(batch), 1000):
        store.ingest(batch[i : i + 1000])
    # each device's decision and push, with inputs the size the re-ranking loop stores (ten
    # measured architectures, the references, the method)
    from coordinator.ranking import NB201_LATENCY
    from coordinator.ranking.tables import read_table
    from coordinator.store.records import Deployment

    archs = read_table(NB201_LATENCY).archs
    deployments = []
    for i in range(n):
        device, rollout = f"pi-{i:05d}", f"r{i:05d}"
        inputs = {"measured": {a: 10.0 + j for j, a in enumerate(archs[i % 100 : i % 100 + 10])},
                  "basis": "predicted", "method": "fleet from zc706_fpga, pixel3, eyeriss_asic",
                  "references": ["coral_edgetpu", "eyeriss_asic", "zc706_fpga", "pixel3"], "retry": 0,
                  "reason": "new device", "round": 1, "log_error": 0.18, "notes": []}  # fmt: skip
        store.add_decision(device, 1.0, "nas-bench-201", archs[i], 45.0, 40.0, 93.0, rollout, inputs)
        deployments.append(Deployment(f"{rollout}:{device}", rollout, device, "canary", "installed", 1, 1.0,
                                      p50_ms=41.0, p50_lo_ms=40.5, p50_hi_ms=41.5))  # fmt: skip
    store.add_deployments(deployments)


async def measure(store, requests: int) -> dict[str, list[float]]:
    from aiohttp.test_utils import TestClient, TestServer

    from coordinator.web.app import Dashboard

    out: dict[str, list[float]] = {"/": [], "/api/fleet": [], "/decisions": [], "/metrics": []}
    async with TestClient(
        TestServer(Dashboard(store, CoordinatorConfig()).app(), host="127.0.0.1")
    ) as client:
        for _ in range(requests):
            for path in out:
                t0 = time.perf_counter()
                response = await client.get(path)
                await response.read()
                out[path].append((time.perf_counter() - t0) * 1000)
                assert response.status == 200
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(os.path.join(tmp, "fleet.sqlite"))
        fill(store, args.devices)
        times = asyncio.run(measure(store, args.requests))
    for path, values in times.items():
        med, p90 = statistics.median(values), statistics.quantiles(values, n=10)[-1]
        print(f"{path:<12} {args.devices} devices: median {med:7.1f} ms  p90 {p90:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
