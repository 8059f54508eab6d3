"""Coordinator ingest rate: results from many simulated agents, through mosquitto, into SQLite.

A real mosquitto on a free loopback port; ``--agents`` MQTT clients (one connection
each, like real agents) publish ``--per-agent`` result envelopes each with QoS 1 as
fast as the broker takes them; the coordinator's Ingestor (shared subscription,
batched commits, PUBACK after commit) stores them in a SQLite file.  Prints results/s
from the first publish to the last row committed, and whether any was lost.
Target (issue 6): >= 5,000 results/s from 100 agents, none lost.

    python benchmarks/coordinator_ingest.py [--agents 100] [--per-agent 200]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from _helpers import load_test_helper

from agent.transport import messages
from agent.transport.mqtt import BrokerSettings
from coordinator.service import Ingestor
from coordinator.store import open_store


def simulate(port: int, n_agents: int, per_agent: int, go: Any, started: Any, done: Any) -> None:
    """Child process: ``n_agents`` connections, each publishing its results with QoS 1."""
    payloads = [
        [
            messages.make(
                "results",
                f"sim-{a:03d}",
                {"job_id": "bench", "model": f"m{i}", "result": {"stats": {"p50_ms": 1.0 + i}}},
                msg_id=f"r{a}-{i}",
            ).encode()
            for i in range(per_agent)
        ]
        for a in range(n_agents)
    ]
    clients = []
    connected = threading.Semaphore(0)
    for a in range(n_agents):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{a:03d}")
        c.max_inflight_messages_set(100)
        c.on_connect = lambda *args: connected.release()
        c.connect("127.0.0.1", port)
        c.loop_start()
        clients.append(c)
    # Real agents are connected long before they have results; messages queued before the
    # CONNACK would go out at paho's reconnect pace instead (a few per second per client).
    for _ in range(n_agents):
        assert connected.acquire(timeout=60), "a simulated agent did not connect"
    started.set()
    go.wait()

    # One thread queues every publish (paho's publish only enqueues); each client's network
    # thread sends its own and handles the PUBACKs.
    infos = [
        clients[a].publish(f"fleetbench/v1/devices/sim-{a:03d}/results", p, qos=1)
        for i in range(per_agent)
        for a, p in enumerate(col[i] for col in payloads)
    ]
    for info in infos:
        info.wait_for_publish(120)
    done.set()
    # Teardown is not measured: loop_stop() waits out each network thread's 1 s select.
    for c in clients:
        c.disconnect()
    for c in clients:
        c.loop_stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--per-agent", type=int, default=200)
    ap.add_argument(
        "--protocol", choices=["3.1.1", "5"], default="3.1.1", help="the coordinator's MQTT version"
    )
    ap.add_argument(
        "--backlog",
        action="store_true",
        help="publish everything while the coordinator is down, then time only its catch-up",
    )
    ap.add_argument(
        "--publish-only",
        action="store_true",
        help="no coordinator: how fast the simulated agents get their results into the broker",
    )
    args = ap.parse_args()
    total = args.agents * args.per_agent
    with tempfile.TemporaryDirectory() as tmp:
        broker = load_test_helper("broker").Mosquitto(tmp)
        broker.start()
        store = open_store(os.path.join(tmp, "fleet.sqlite"))
        ingestor = Ingestor(
            BrokerSettings.from_url(broker.url, protocol=args.protocol), store, client_id="bench-coordinator"
        )
        if not args.publish_only:
            ingestor.start()
            assert ingestor.connected.wait(10)
            time.sleep(0.5)  # let the SUBACK land before publishing (setup, not a measurement)
            if args.backlog:  # the persistent session exists now; the broker queues for it
                ingestor.stop()
                ingestor = Ingestor(
                    BrokerSettings.from_url(broker.url, protocol=args.protocol),
                    store,
                    client_id="bench-coordinator",
                )
        # The simulated agents run in another process, as real agents run on other machines:
        # in this one they would compete with the coordinator for the interpreter lock.
        ctx = multiprocessing.get_context("spawn")
        go, started, done = ctx.Event(), ctx.Event(), ctx.Event()
        agents = ctx.Process(
            target=simulate, args=(broker.port, args.agents, args.per_agent, go, started, done)
        )
        agents.start()
        assert started.wait(60), "the simulated agents did not connect"
        start = time.perf_counter()
        go.set()
        assert done.wait(300), "the simulated agents did not finish publishing"
        published = time.perf_counter() - start
        if args.publish_only:
            agents.join(300)
            broker.stop()
            print(
                f"{total} results published by {args.agents} agents in {published:.2f} s: "
                f"{total / published:,.0f} results/s into the broker (no coordinator)"
            )
            return 0
        if args.backlog:
            start = time.perf_counter()
            ingestor.start()
        deadline = time.monotonic() + 120
        while store.count("results") < total and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        stored = store.count("results")
        ingestor.stop()
        agents.join(300)
        broker.stop()
    print(
        f"{args.agents} agents x {args.per_agent} results = {total}: published in {published:.2f} s, "
        f"all stored after {elapsed:.2f} s: {stored / elapsed:,.0f} results/s; "
        f"{stored} stored, {total - stored} lost"
    )
    return 0 if stored == total else 1


if __name__ == "__main__":
    sys.exit(main())
