"""Model push to a fleet: one 5 MB model to 50 devices of a SKU, through mosquitto on loopback.

A real mosquitto on a free loopback port; ``--devices`` simulated devices (one MQTT
connection each, in another process, as devices are other machines) that receive the
push with the agent's own model store: every chunk written to disk, size, sha256 and
the Ed25519 signature checked, the file installed atomically.  Their smoke run is
simulated (a fixed latency): the benchmark times the transfer and the rollout, not a
model.  The coordinator's deployer signs one manifest per device and sends 64 KiB
chunks with QoS 1: canary first (10 %), then the rest, ``--parallel`` at a time.
Prints the time from the rollout's creation to every device ``installed``.
Issue 6 asks for this figure (no target).

    python benchmarks/push_fleet.py [--devices 50] [--mb 5] [--parallel 50]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Any

from _helpers import load_test_helper

from agent.common.config import BrokerConfig
from agent.transport.mqtt import BrokerSettings
from coordinator.config import CoordinatorConfig, PushConfig, RerankConfig
from coordinator.deploy import Deployer, create_rollout, rollout_report
from coordinator.keys import generate_key
from coordinator.service import Ingestor
from coordinator.store import open_store

SKU = "Benchmark Board (simulated)"


def devices(url: str, n: int, public_key: str, workdir: str, ready: Any, done: Any) -> None:
    """Child process: ``n`` simulated devices until ``done``."""
    from coordinator.simulated import SimulatedDevice

    sims = []
    for i in range(n):
        name = f"bench-{i:03d}"
        settings = BrokerSettings.from_url(url)
        sims.append(SimulatedDevice(name, SKU, {}, "benchmark", settings, os.path.join(workdir, name),
                                    public_key, smoke_ms=1.0))  # fmt: skip
    for sim in sims:
        sim.start()
    for sim in sims:
        sim.connected.wait(60)
    ready.set()
    done.wait(600)
    for sim in sims:
        sim.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--parallel", type=int, default=50, help="devices receiving at once after the canary")
    ap.add_argument("--window", type=int, default=64, help="chunk messages in flight")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = load_test_helper("broker").Mosquitto(tmp)
        broker.start()
        config = CoordinatorConfig(
            db=os.path.join(tmp, "fleet.sqlite"), state_dir=os.path.join(tmp, "coord"), group="",
            broker=BrokerConfig(url=broker.url), rerank=RerankConfig(enabled=False),
            push=PushConfig(parallel=args.parallel, window=args.window, retry_s=60.0),
        )  # fmt: skip
        public = generate_key(config.key_file)
        model = os.path.join(tmp, "model.onnx")
        with open(model, "wb") as fh:
            fh.write(os.urandom(int(args.mb * 1024 * 1024)))
        store = open_store(config.db_url)
        ingestor = Ingestor(
            BrokerSettings.from_url(broker.url), store, client_id="bench-coordinator", group=""
        )
        ingestor.start()
        assert ingestor.connected.wait(10)
        ctx = multiprocessing.get_context("spawn")
        ready, done = ctx.Event(), ctx.Event()
        child = ctx.Process(target=devices, args=(broker.url, args.devices, public, tmp, ready, done))
        child.start()
        assert ready.wait(120), "the simulated devices did not connect"
        while sum(d["state"] == "online" for d in store.fleet()) < args.devices:
            time.sleep(0.1)  # the ingestor stores their births (setup, not the measurement)
        deployer = Deployer(store, config, ingestor.client)
        start = time.perf_counter()
        rollout = create_rollout(store, config, model, sku=SKU)
        canary_s = None
        while True:
            deployer.tick()
            (r,) = rollout_report(store, rollout["rollout_id"])
            if canary_s is None and r["state"] in ("rolling", "done", "halted"):
                canary_s = time.perf_counter() - start
            if r["state"] in ("done", "halted"):
                break
            time.sleep(0.1)  # the coordinator's tick (tick_s); polling its own database
        elapsed = time.perf_counter() - start
        installed = sum(d["state"] == "installed" for d in r["deployments"])
        sent = deployer.chunks_sent
        deployer.close()
        ingestor.stop()
        done.set()
        child.join(60)
        broker.stop()
    size_mb = args.mb * args.devices
    print(
        f"{args.mb:g} MB to {args.devices} devices: all {installed} installed after {elapsed:.2f} s "
        f"(canary of {max(1, -(-args.devices // 10))} done after {canary_s:.2f} s); "
        f"{size_mb:.0f} MB in {sent} messages, {size_mb / elapsed:.1f} MB/s of model data; "
        f"rollout {r['state']}"
    )
    return 0 if installed == args.devices else 1


if __name__ == "__main__":
    sys.exit(main())
