"""Coordinator ingest rate: results from many simulated agents, through mosquitto, into SQLite
(or, ``--postgres``, a throwaway PostgreSQL server with fsync on, as in production).

A real mosquitto on a free loopback port; ``--agents`` MQTT clients (one connection each,
like real agents) in another process publish ``--per-agent`` result messages each with
QoS 1 as fast as the broker takes them; the coordinator's Ingestor (shared subscription,
batched commits, PUBACK after commit) stores them in a SQLite file.  Prints results/s from
the first publish to the last row committed, and whether any was lost.  The messages are
what a real agent sends: a result record with ``--samples`` samples (200: about 3 KB).

    python benchmarks/coordinator_ingest.py [--agents 100] [--per-agent 200] [--backlog] [--tls]
    python benchmarks/coordinator_ingest.py --backlog --compare 200cfce [--rounds 3]
    python benchmarks/coordinator_ingest.py --backlog --compare-tls [--rounds 3]
    python benchmarks/coordinator_ingest.py --backlog --compare-dashboard [--rounds 3]
    python benchmarks/coordinator_ingest.py --backlog --compare-db [--rounds 3]   (as root: PostgreSQL)

``--tls`` runs the broker from the shipped profile (``fleetbench broker-config``: mutual
TLS, a certificate per agent, the ACL) and every agent and the coordinator with its own
identity; ``--compare-tls`` measures plain TCP and the profile alternating, in one run.

``--compare BASE`` measures the previous code (a git worktree of BASE) and this code side
by side, alternating, in one run: the same messages (the previous release's version 1 for
it, version 2 for this one), the same harness (this file) importing each tree's
``Ingestor`` and store.  ``--malformed SHARE`` mixes that share of malformed messages in
(this code only: they become dead letters).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Optional

import paho.mqtt.client as mqtt
from _helpers import REPO, load_test_helper

MALFORMED = b'{"kind": "result", "v": 2, "id": "bad", "device_id": "%s", "ts": NaN, "data": {"result": [1]}}'


def build_payloads(n_agents: int, per_agent: int, samples: int, version: int, malformed: float) -> list:
    """Per agent: [(topic, payload)], made with this release's protocol (in ``version``)."""
    from agent.protocol import messages

    wire = load_test_helper("wire")
    every = int(1 / malformed) if malformed else 0
    out = []
    for a in range(n_agents):
        device = f"sim-{a:03d}"
        topic = f"fleetbench/v1/devices/{device}/results"
        items = []
        for i in range(per_agent):
            if every and (a * per_agent + i) % every == every - 1:
                items.append((topic, MALFORMED % device.encode()))
                continue
            data = wire.result_data("bench", f"m{i}", 1.0 + i / 100, samples=samples)
            msg = messages.make(messages.ResultMessage, device, data, f"r{a}-{i}")
            items.append((topic, messages.encode(msg, version)))
        out.append(items)
    return out


def simulate(port: int, payloads: list, go: Any, started: Any, done: Any, tls_dir: str = "") -> None:
    """Child process: one connection per agent, each publishing its results with QoS 1
    (over TLS with the agent's own certificate, from the profile in ``tls_dir``)."""
    clients = []
    connected = threading.Semaphore(0)
    for a in range(len(payloads)):
        name = f"sim-{a:03d}"
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
        if tls_dir:
            d = os.path.join(tls_dir, "clients", name)
            c.tls_set(
                os.path.join(d, "ca.crt"), os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key")
            )
        c.max_inflight_messages_set(100)
        c.on_connect = lambda *args: connected.release()
        c.connect("127.0.0.1", port)
        c.loop_start()
        clients.append(c)
    # Real agents are connected long before they have results; messages queued before the
    # CONNACK would go out at paho's reconnect pace instead (a few per second per client).
    for _ in range(len(payloads)):
        assert connected.acquire(timeout=60), "a simulated agent did not connect"
    started.set()
    go.wait()
    # One thread queues every publish (paho's publish only enqueues); each client's network
    # thread sends its own and handles the PUBACKs.
    per_agent = max(len(p) for p in payloads)
    infos = [
        clients[a].publish(payloads[a][i][0], payloads[a][i][1], qos=1)
        for i in range(per_agent)
        for a in range(len(payloads))
        if i < len(payloads[a])
    ]
    for info in infos:
        info.wait_for_publish(120)
    done.set()
    for c in clients:  # teardown is not measured
        c.disconnect()
    for c in clients:
        c.loop_stop()


def run(args: argparse.Namespace, payloads: list, expected: int) -> int:
    """One measurement with whichever tree's coordinator is importable here."""
    import coordinator
    from agent.transport.mqtt import BrokerSettings
    from coordinator.service import Ingestor
    from coordinator.store import open_store

    print(f"code: {os.path.dirname(os.path.dirname(os.path.abspath(coordinator.__file__)))}", file=sys.stderr)
    total = sum(len(p) for p in payloads)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        tls_dir = os.path.join(tmp, "profile") if args.tls else ""
        if tls_dir:  # the shipped profile, every agent and the coordinator with its own identity
            broker = _profile_broker(tls_dir, len(payloads))
            d = os.path.join(tls_dir, "clients", "bench-coordinator")
            settings = BrokerSettings.from_url(f"mqtts://127.0.0.1:{broker.port}", protocol=args.protocol,
                                               ca_file=os.path.join(d, "ca.crt"),
                                               cert_file=os.path.join(d, "bench-coordinator.crt"),
                                               key_file=os.path.join(d, "bench-coordinator.key"))  # fmt: skip
        else:
            broker = load_test_helper("broker").Mosquitto(tmp)
            broker.start()
            settings = BrokerSettings.from_url(broker.url, protocol=args.protocol)
        if args.postgres:  # a throwaway PostgreSQL server (tests/postgres.py), started untimed, fsync on
            server = stack.enter_context(load_test_helper("postgres").running(durable=True))
            store = open_store(server.new_database())
            stack.callback(store.engine.dispose)  # its connections close before the server stops
        else:
            store = open_store(os.path.join(tmp, "fleet.sqlite"))
        watching = threading.Event()
        if args.dashboard:
            watch_dashboard(store, args.fleet, args.dashboard, watching)
        elif args.fleet:  # the same store and server as with the dashboard, and no client loading it
            watch_dashboard(store, args.fleet, 3600.0, watching)
        ingestor = Ingestor(settings, store, client_id="bench-coordinator")
        if not args.publish_only:
            ingestor.start()
            assert ingestor.connected.wait(10)
            time.sleep(0.5)  # let the SUBACK land before publishing (setup, not a measurement)
            if args.backlog:  # the persistent session exists now; the broker queues for it
                ingestor.stop()
                ingestor = Ingestor(settings, store, client_id="bench-coordinator")
        # The simulated agents run in another process, as real agents run on other machines:
        # in this one they would compete with the coordinator for the interpreter lock.
        ctx = multiprocessing.get_context("spawn")
        go, started, done = ctx.Event(), ctx.Event(), ctx.Event()
        agents = ctx.Process(target=simulate, args=(broker.port, payloads, go, started, done, tls_dir))
        agents.start()
        assert started.wait(120), "the simulated agents did not connect"
        start = time.perf_counter()
        go.set()
        assert done.wait(600), "the simulated agents did not finish publishing"
        published = time.perf_counter() - start
        if args.publish_only:
            agents.join(300)
            _stop(broker)
            print(f"{total} results published by {len(payloads)} agents in {published:.2f} s: "
                  f"{total / published:,.0f} results/s into the broker (no coordinator)")  # fmt: skip
            return 0
        if args.backlog:
            start = time.perf_counter()
            ingestor.start()
        deadline = time.monotonic() + 300
        while store.count("results") < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        stored = store.count("results")
        watching.set()
        ingestor.stop()
        agents.join(300)
        _stop(broker)
    how = ("TLS profile" if args.tls else "plain TCP") + (", PostgreSQL" if args.postgres else ", SQLite")
    print(f"{how}: {len(payloads)} agents, {total} messages ({expected} results): "
          f"published in {published:.2f} s, "
          f"all stored after {elapsed:.2f} s: {stored / elapsed:,.0f} results/s; {stored} stored, "
          f"{expected - stored} lost")  # fmt: skip
    return 0 if stored == expected else 1


def _profile_broker(directory: str, agents: int) -> Any:
    """mosquitto from the profile ``fleetbench broker-config`` writes, with the agents and the
    coordinator enrolled (certificates are made before anything is timed)."""
    from coordinator.broker import enroll, make_profile

    port = load_test_helper("broker").free_port()
    user = "root" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    make_profile(directory, ("127.0.0.1",), port, bind="127.0.0.1", user=user)
    enroll(directory, "bench-coordinator", "coordinator")
    for a in range(agents):
        enroll(directory, f"sim-{a:03d}")
    return load_test_helper("tls").ProfileBroker(os.path.join(directory, "mosquitto.conf"), port)


def _stop(broker: Any) -> None:
    (broker.close if hasattr(broker, "close") else broker.stop)()


def alternate(args: argparse.Namespace, arms: dict[str, tuple[str, str, list[str]]]) -> Optional[dict]:
    """Run each arm (label -> payloads file, PYTHONPATH, extra flags) as a child of this script,
    ``args.rounds`` times, alternating the order; results/s per arm, or None if a run failed."""
    rates: dict[str, list[float]] = {label: [] for label in arms}
    for r in range(args.rounds):
        for label in list(arms) if r % 2 == 0 else list(reversed(arms)):
            path, pythonpath, extra = arms[label]
            backlog = ["--backlog"] if args.backlog else []
            argv = [sys.executable, os.path.abspath(__file__), "--payloads", path,
                    "--protocol", args.protocol, *backlog, *extra]  # fmt: skip
            out = subprocess.run(argv, capture_output=True, text=True, timeout=1200,
                                 env={**os.environ, "PYTHONPATH": pythonpath})  # fmt: skip
            line = (out.stdout.strip().splitlines() or [out.stderr[-500:]])[-1]
            found = re.search(r"([\d,]+) results/s", line)
            code = re.search(r"^code: (.+)$", out.stderr, re.MULTILINE)
            assert code and code.group(1) == pythonpath, f"{label} ran the code in {code and code.group(1)}"
            if out.returncode != 0 or not found:
                print(f"{label}: failed: {line}", file=sys.stderr)
                return None
            rates[label].append(float(found.group(1).replace(",", "")))
            print(f"round {r + 1} {label:<20} {line}", flush=True)
    return rates


def summarize(rates: dict[str, list[float]], base_label: str) -> None:
    base = statistics.median(rates[base_label])
    print()
    for label, values in rates.items():
        runs = "; ".join(f"{v:,.0f}" for v in values)
        print(f"{label:<20} median {statistics.median(values):>8,.0f} results/s  (runs: {runs})  "
              f"ratio to {base_label} {statistics.median(values) / base:.2f}")  # fmt: skip
    print(json.dumps({k: statistics.median(v) for k, v in rates.items()}))


def compare_flags(args: argparse.Namespace, arms: dict[str, list[str]]) -> int:
    """The same messages and code run as each arm (extra flags for this script), alternating;
    the first arm is the base the others are compared with."""
    with tempfile.TemporaryDirectory() as tmp:
        payloads = build_payloads(args.agents, args.per_agent, args.samples, 2, 0.0)
        path = os.path.join(tmp, "payloads.pickle")
        with open(path, "wb") as fh:
            pickle.dump((payloads, sum(len(p) for p in payloads)), fh)
        rates = alternate(args, {label: (path, REPO, extra) for label, extra in arms.items()})
    if rates is None:
        return 1
    summarize(rates, next(iter(arms)))
    return 0


def watch_dashboard(store: Any, devices: int, every_s: float, stop: threading.Event) -> threading.Thread:
    """The coordinator's dashboard on this store, in this process (as the coordinator serves it),
    with ``devices`` more devices in the store, and a client loading the fleet page every
    ``every_s``; the thread that does it (it ends when ``stop`` is set)."""
    import asyncio
    import urllib.request

    from agent.protocol import messages
    from agent.protocol.reports import StatusData
    from coordinator.config import CoordinatorConfig
    from coordinator.store import Message
    from coordinator.web.app import Dashboard, serve

    batch = []
    for i in range(devices):
        status = messages.make(
            messages.StatusMessage, f"fleet-{i:05d}", StatusData(state="online", protocol=2)
        )
        batch.append(Message(f"fleetbench/v1/devices/fleet-{i:05d}/status", messages.encode(status)))
    for i in range(0, len(batch), 1000):
        store.ingest(batch[i : i + 1000])
    port = load_test_helper("broker").free_port()
    served = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        runner = loop.run_until_complete(serve(Dashboard(store, CoordinatorConfig()), "127.0.0.1", port))
        served.set()
        while not stop.is_set():
            loop.run_until_complete(asyncio.sleep(0.05))
        loop.run_until_complete(runner.cleanup())

    def refresh() -> None:
        assert served.wait(30)
        while not stop.wait(every_s):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
                r.read()

    threading.Thread(target=run, daemon=True).start()
    client = threading.Thread(target=refresh, daemon=True)
    client.start()
    return client


def compare(args: argparse.Namespace) -> int:
    """The previous code and this one, alternating, on the same messages."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "previous")
        subprocess.run(
            ["git", "-C", REPO, "worktree", "add", "--detach", "-q", tree, args.compare], check=True
        )
        try:
            files = {}
            for label, version, bad in (
                ("previous", 1, 0.0),
                ("this", 2, 0.0),
                ("this, malformed", 2, args.malformed),
            ):
                if label == "this, malformed" and not bad:
                    continue
                payloads = build_payloads(args.agents, args.per_agent, args.samples, version, bad)
                expected = sum(
                    1
                    for p in payloads
                    for _, raw in p
                    if not raw.startswith(b'{"kind": "result", "v": 2, "id": "bad"')
                )
                path = os.path.join(tmp, f"{version}-{bad}.pickle")
                with open(path, "wb") as fh:
                    pickle.dump((payloads, expected), fh)
                files[label] = (path, tree if label == "previous" else REPO)
            rates = alternate(
                args, {label: (path, pythonpath, []) for label, (path, pythonpath) in files.items()}
            )
        finally:
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", tree], check=False)
    if rates is None:
        return 1
    summarize(rates, "previous")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--per-agent", type=int, default=200)
    ap.add_argument("--samples", type=int, default=200, help="samples per result record (default 200)")
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
    ap.add_argument("--compare", metavar="BASE", help="also run the code of this commit, side by side")
    ap.add_argument("--rounds", type=int, default=3, help="with --compare: rounds of each (default 3)")
    ap.add_argument("--malformed", type=float, default=0.0, metavar="SHARE",
                    help="with --compare: also this code with this share of malformed messages")  # fmt: skip
    ap.add_argument("--tls", action="store_true", help="through the shipped broker profile (mutual TLS, ACL)")
    ap.add_argument("--fleet", type=int, default=0, metavar="N", help="N more devices in the store first")
    ap.add_argument(
        "--dashboard", type=float, metavar="S", help="serve the dashboard; load its fleet page every S s"
    )
    ap.add_argument(
        "--compare-dashboard",
        action="store_true",
        help="ingest with and without a dashboard client, side by side",
    )
    ap.add_argument("--compare-tls", action="store_true", help="plain TCP and the TLS profile, side by side")
    ap.add_argument(
        "--postgres", action="store_true", help="store into a throwaway PostgreSQL server, not SQLite"
    )
    ap.add_argument("--compare-db", action="store_true", help="SQLite and PostgreSQL, side by side")
    ap.add_argument("--payloads", help=argparse.SUPPRESS)  # --compare's children: messages made by the parent
    args = ap.parse_args()
    if args.compare:
        return compare(args)
    if args.compare_tls:
        return compare_flags(args, {"plain TCP": [], "TLS profile": ["--tls"]})
    if args.compare_db:
        return compare_flags(args, {"SQLite": [], "PostgreSQL": ["--postgres"]})
    if args.compare_dashboard:
        quiet = ["--fleet", "1000"]
        return compare_flags(
            args, {"no dashboard": quiet, "dashboard every 2 s": [*quiet, "--dashboard", "2"]}
        )
    if args.payloads:
        with open(args.payloads, "rb") as fh:
            payloads, expected = pickle.load(fh)
    else:
        payloads = build_payloads(args.agents, args.per_agent, args.samples, 2, 0.0)
        expected = sum(len(p) for p in payloads)
    return run(args, payloads, expected)


if __name__ == "__main__":
    sys.exit(main())
