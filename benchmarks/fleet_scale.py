"""A fleet of 10,000 simulated devices against 1 and 3 coordinator replicas on PostgreSQL (issue 20).

Everything is real but the devices: mosquitto started from the shipped broker profile (mutual
TLS, a certificate per device from ``fleetbench enroll``, the ACL), a PostgreSQL server with fsync
on (as root: the cluster runs as the ``postgres`` user), and ``fleetbench coordinator`` processes,
each with its own identity, in one group on one database.  The devices are ``--devices`` MQTT
connections over TLS, spread over ``--procs`` processes (one event loop each, paho's client with
the agent's settings: MQTT 3.1.1, keepalive 30 s, a retained ``online`` status and its will).
Each device sends a health report every ``--health-s`` (60 s) and a job's result every
``--result-s`` (60 s, 200 samples: 3 KB), at random phases, for ``--minutes`` (5).

Runs (``--runs``, in this order by default):

    steady-1     one replica
    steady-3     three replicas
    failover     three replicas; the one holding the loops' lease is killed (-9) halfway and
                 started again ``--restart-s`` later (systemd's RestartSec for the coordinator)
    backlog-1/3  every device sends ``--backlog`` results while the replicas are down (their
                 sessions exist), then the replicas start: stored/s from the first row to the last
                 (``--backlog-rounds`` rounds, alternating 1 and 3)

Counted: ``sent`` = reports the broker acknowledged (PUBACK); ``stored`` = of those, in the
database at the end; ``lost`` = sent and not stored; ``duplicates`` = rows beyond one per message
(the store keys reports by device and message id); ``p99_ingest_lag_s`` = stamp to row, the row
seen by polling the database every 0.5 s (an upper bound, to within the poll); ``failover_s`` =
the kill to another replica's taking of the lease, by the lease's own clock.  The CPU each part
used (broker, coordinators, PostgreSQL, devices) is printed per run: the bottleneck.

Needs: a file-descriptor limit above the devices (raised here up to the hard limit: mosquitto
holds a socket per device in one process), mosquitto, PostgreSQL (as root: see above).
About 30 minutes for the default runs.  Last lines: one JSON object per run.

    python benchmarks/fleet_scale.py [--devices 10000] [--minutes 5] [--runs steady-1,failover,...]
    python benchmarks/fleet_scale.py --devices 300 --minutes 1     (a quick look)
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import multiprocessing
import os
import pickle
import random
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from _helpers import REPO, load_test_helper

GROUP = "coordinators"
POLL_S = 0.5
LAG_BUCKET_S = 0.1


# -- the simulated devices (child processes) ---------------------------------------------


def _payloads(samples: int) -> tuple[Any, Any]:
    """A Raspberry Pi 4's health data, as store_size.py measures it, and a benchmark's result."""
    wire = load_test_helper("wire")
    return wire.pi4_health(), wire.result_data("fleet-scale", "mobilenetv2.onnx", 12.5, samples=samples)


@dataclass
class Plan:
    """What each simulated device does once told to go."""

    port: int
    profile: str
    health_s: float
    result_s: float
    seconds: float
    samples: int
    backlog: int = 0  # > 0: only this many results, as fast as the broker takes them


def devices_main(names: list[str], plan: Plan, connected: Any, go: Any, t0: Any, out: str) -> None:
    """Child: connect every device (TLS, its own certificate), then send as ``plan`` says; write
    the reports the broker acknowledged, (kind, device, msg_id, ts), to ``out``."""
    from agent.protocol import messages as m
    from agent.protocol.reports import StatusData
    from agent.transport.mqtt import BrokerSettings

    health, result = _payloads(plan.samples)
    sel = selectors.DefaultSelector()
    writing: set[Any] = set()
    acked: list[tuple[str, str, str, float]] = []
    lost_links = [0]

    def watch(c: Any) -> None:
        sock = c.socket()
        if sock is None:
            return
        want = c.want_write()
        if want != (c in writing):
            (writing.add if want else writing.discard)(c)
            sel.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0), c)

    def on_close(client: Any, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(sock)
        writing.discard(client)

    def on_publish(client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        record = userdata["pending"].pop(mid, None)
        if record is not None:
            acked.append(record)

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        userdata["up"] = True
        status = m.make(m.StatusMessage, userdata["name"], StatusData(state="online", protocol=2))
        client.publish(userdata["status"], m.encode(status), qos=1, retain=True)
        with connected.get_lock():  # four processes count into it
            connected.value += 1

    def on_disconnect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if userdata.get("up"):
            lost_links[0] += 1
        userdata["up"] = False

    def pump(timeout: float) -> None:
        for key, mask in sel.select(timeout):
            c = key.data
            if mask & selectors.EVENT_READ:
                c.loop_read()
                sock = c.socket()  # TLS may hold decrypted bytes the selector cannot see
                while sock is not None and hasattr(sock, "pending") and sock.pending():
                    c.loop_read()
                    sock = c.socket()
            if mask & selectors.EVENT_WRITE and c.socket() is not None:
                c.loop_write()
            watch(c)

    clients: list[Any] = []
    pinged = [time.monotonic()]

    def keep_alive() -> None:
        """paho's keepalive pings, once a second: an idle link is cut by the broker after 1.5
        keepalives (45 s), connecting a few thousand devices can take that long."""
        if time.monotonic() - pinged[0] >= 1.0:
            pinged[0] = time.monotonic()
            for c in clients:
                c.loop_misc()

    for name in names:
        d = os.path.join(plan.profile, "clients", name)
        settings = BrokerSettings.from_url(
            f"mqtts://127.0.0.1:{plan.port}",
            ca_file=os.path.join(d, "ca.crt"),
            cert_file=os.path.join(d, f"{name}.crt"),
            key_file=os.path.join(d, f"{name}.key"),
        )
        c = settings.client(name)  # the agent's own client settings (keepalive 30 s, MQTT 3.1.1)
        status = f"fleetbench/v1/devices/{name}/status"
        offline = m.make(m.StatusMessage, name, StatusData(state="offline", protocol=2))
        c.will_set(status, m.encode(offline), qos=1, retain=True)
        c.user_data_set({"name": name, "status": status, "pending": {}, "seq": 0})
        c.on_connect, c.on_disconnect, c.on_publish = on_connect, on_disconnect, on_publish
        c.on_socket_close = on_close
        c.connect("127.0.0.1", plan.port, keepalive=settings.keepalive_s)
        sel.register(c.socket(), selectors.EVENT_READ, c)
        watch(c)
        clients.append(c)
        pump(0)
        keep_alive()
    while sum(1 for c in clients if c.user_data_get().get("up")) < len(clients):
        pump(0.05)
        keep_alive()
        if any(c.socket() is None for c in clients):
            raise SystemExit(f"a simulated device lost its connection while connecting ({lost_links[0]})")
    while not go.is_set():  # connected: keep the links alive until told to go
        pump(0.05)
        keep_alive()
    start = t0.value

    def send(c: Any, kind: str) -> None:
        u = c.user_data_get()
        u["seq"] += 1
        msg_id, now = f"{kind[0]}{u['seq']}", time.time()
        if kind == "health":
            payload = m.encode(m.make(m.HealthMessage, u["name"], health, msg_id, ts=now))
        else:
            payload = m.encode(m.make(m.ResultMessage, u["name"], result, msg_id, ts=now))
        info = c.publish(f"fleetbench/v1/devices/{u['name']}/{kind}", payload, qos=1)
        u["pending"][info.mid] = (kind, u["name"], msg_id, now)
        watch(c)

    rng = random.Random(names[0] if names else "")  # the same phases each run
    due: list[tuple[float, int, str]] = []
    if plan.backlog:
        for c in clients:
            for _ in range(plan.backlog):
                send(c, "results")
    else:
        for i in range(len(clients)):
            heapq.heappush(due, (start + rng.uniform(0, plan.health_s), i, "health"))
            heapq.heappush(due, (start + rng.uniform(0, plan.result_s), i, "results"))
    end = start + plan.seconds
    while due and due[0][0] < end:
        now = time.time()
        while due and due[0][0] <= now and due[0][0] < end:
            at, i, kind = heapq.heappop(due)
            send(clients[i], kind)
            heapq.heappush(due, (at + (plan.health_s if kind == "health" else plan.result_s), i, kind))
        pump(max(0.0, min(0.05, (due[0][0] - time.time()) if due else 0.05)))
        keep_alive()
    deadline = time.time() + 600  # every acknowledgement in (or the link gone)
    while time.time() < deadline and any(c.user_data_get()["pending"] and c.socket() for c in clients):
        pump(0.05)
        keep_alive()
    unacked = sum(len(c.user_data_get()["pending"]) for c in clients)
    with open(out, "wb") as fh:
        pickle.dump({"acked": acked, "unacked": unacked, "lost_links": lost_links[0]}, fh)
    for c in clients:
        with contextlib.suppress(Exception):
            c.disconnect()
    pump(0.2)


class Devices:
    """The simulated fleet: ``procs`` processes connecting ``names`` between them."""

    def __init__(self, names: list[str], plan: Plan, procs: int, work: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.connected, self.t0, self.go = ctx.Value("i", 0), ctx.Value("d", 0.0), ctx.Event()
        self.outs = [os.path.join(work, f"sent-{k}.pickle") for k in range(procs)]
        for path in self.outs:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        self.total = len(names)
        self.procs = [
            ctx.Process(
                target=devices_main,
                args=(names[k::procs], plan, self.connected, self.go, self.t0, self.outs[k]),
                daemon=True,
            )
            for k in range(procs)
        ]
        for p in self.procs:
            p.start()

    def wait_connected(self, say: Any) -> float:
        start = time.monotonic()
        while self.connected.value < self.total:
            if any(p.exitcode not in (None, 0) for p in self.procs):
                raise SystemExit("a process of simulated devices failed while connecting")
            say(f"connecting: {self.connected.value:,} of {self.total:,} devices")
            time.sleep(0.5)  # progress display, not synchronization
        return time.monotonic() - start

    def start(self) -> float:
        self.t0.value = time.time()
        self.go.set()
        return self.t0.value

    def finish(self, timeout_s: float) -> dict[str, Any]:
        """Wait for every process; what the broker acknowledged, and what it did not."""
        out: dict[str, Any] = {"acked": [], "unacked": 0, "lost_links": 0}
        for p, path in zip(self.procs, self.outs):
            p.join(timeout_s)
            if p.exitcode != 0:
                raise SystemExit(f"a process of simulated devices ended with {p.exitcode}")
            with open(path, "rb") as fh:
                part = pickle.load(fh)
            out["acked"] += part["acked"]
            out["unacked"] += part["unacked"]
            out["lost_links"] += part["lost_links"]
        return out

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()


# -- the real parts: broker, database, coordinators ----------------------------------------


@dataclass
class Env:
    work: str
    profile: str
    port: int
    names: list[str]
    replicas: list[str]
    pg: Any
    args: argparse.Namespace
    broker: Optional[subprocess.Popen] = None
    coordinators: dict[str, subprocess.Popen] = field(default_factory=dict)
    pids: dict[str, set[int]] = field(default_factory=dict)


def raise_fd_limit(devices: int) -> str:
    """Enough descriptors for the process holding the most: mosquitto, a socket per device (a
    device process holds a share of them; the limit is per process, and children inherit it)."""
    need = devices + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return f"file descriptors: the limit ({soft:,}) is enough for mosquitto's {devices:,} sockets"
    if hard != resource.RLIM_INFINITY and hard < need:
        try:  # with CAP_SYS_RESOURCE the hard limit can go up too
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
        except (ValueError, OSError):
            raise SystemExit(
                f"fleet_scale needs {need:,} open files in one process (mosquitto holds a socket per "
                f"device); the hard limit is {hard:,}: raise it (ulimit -Hn {need}, LimitNOFILE= in "
                f"a unit) or run with fewer --devices"
            ) from None
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return (
        f"file descriptors: raised the limit from {soft:,} to {need:,} for mosquitto's {devices:,} "
        "sockets (it inherits the limit from here)"
    )


def make_profile(work: str, devices: int, replicas: int, say: Any) -> tuple[str, int, list[str], list[str]]:
    from coordinator.broker import enroll_many, make_profile

    profile = os.path.join(work, "profile")
    port = load_test_helper("broker").free_port()
    user = "root" if os.geteuid() == 0 else None
    make_profile(profile, ("127.0.0.1",), port, bind="127.0.0.1", user=user)
    coordinators = [f"coordinator-{i + 1}" for i in range(replicas)]
    enroll_many(profile, coordinators, "coordinator")
    names = [f"sim-{i:05d}" for i in range(devices)]
    start = time.monotonic()
    enroll_many(
        profile, names, progress=lambda k: say(f"enrolling: {k:,} of {devices:,}") if k % 500 == 0 else None
    )
    say("")
    print(
        f"enrolled {devices:,} devices (a certificate each) in {time.monotonic() - start:.1f} s", flush=True
    )
    return profile, port, names, coordinators


def start_broker(env: Env, tag: str) -> None:
    """mosquitto from the profile, unchanged, with an empty persistence store."""
    shutil.rmtree(os.path.join(env.profile, "data"), ignore_errors=True)
    os.makedirs(os.path.join(env.profile, "data"))
    if os.geteuid() == 0:
        shutil.chown(os.path.join(env.profile, "data"), "root")
    exe = "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else "mosquitto"
    log = open(os.path.join(env.work, f"mosquitto-{tag}.log"), "wb")  # noqa: SIM115 (the broker's life)
    env.broker = subprocess.Popen([exe, "-c", os.path.join(env.profile, "mosquitto.conf")], stderr=log)
    import socket

    deadline = time.monotonic() + 15
    while True:
        if env.broker.poll() is not None:
            raise SystemExit(f"mosquitto exited; see {log.name}")
        try:
            socket.create_connection(("127.0.0.1", env.port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("mosquitto did not listen") from None
            time.sleep(0.05)  # waiting for the port to accept, not for a fixed time


def stop_broker(env: Env) -> None:
    if env.broker is not None:
        env.broker.terminate()
        env.broker.wait(60)
        env.broker = None


def client_files(env: Env, name: str) -> dict[str, str]:
    d = os.path.join(env.profile, "clients", name)
    return {"ca_file": f"{d}/ca.crt", "cert_file": f"{d}/{name}.crt", "key_file": f"{d}/{name}.key"}


def replica_config(env: Env, name: str, db: str) -> str:
    files = client_files(env, name)
    path = os.path.join(env.work, f"{name}.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(
            f'db = "{db}"\nstate_dir = "{env.work}/state"\nclient_id = "{name}"\ngroup = "{GROUP}"\n'
            f'lease_s = {env.args.lease_s}\n[broker]\nurl = "mqtts://127.0.0.1:{env.port}"\n'
            + "".join(f'{k} = "{v}"\n' for k, v in files.items())
            + "[rerank]\nenabled = false\n"
        )
    return path


def sessions(env: Env, names: list[str]) -> None:
    """Each replica's persistent session and shared subscriptions, made before anything is
    sent (a coordinator makes them at its first start): the broker keeps their share for each
    from the first report on, whether the replica runs yet or not."""
    from agent.transport.mqtt import BrokerSettings
    from coordinator.service import subscriptions

    for name in names:
        settings = BrokerSettings.from_url(f"mqtts://127.0.0.1:{env.port}", **client_files(env, name))
        c = settings.client(name, clean_session=False)
        done = threading.Event()
        c.on_subscribe = lambda *a, done=done: done.set()
        c.on_connect = lambda client, *a: client.subscribe(subscriptions(GROUP))
        c.connect("127.0.0.1", env.port)
        c.loop_start()
        if not done.wait(30):
            raise SystemExit(f"{name} could not subscribe at the broker")
        c.disconnect()
        c.loop_stop()


def start_coordinator(env: Env, name: str, config: str, tag: str) -> None:
    log = open(os.path.join(env.work, f"{name}-{tag}.log"), "ab")  # noqa: SIM115 (the process's life)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "coordinator", "--config", config],
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    env.coordinators[name] = proc
    env.pids.setdefault("coordinators", set()).add(proc.pid)


def stop_coordinators(env: Env) -> None:
    for proc in env.coordinators.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in env.coordinators.values():
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    env.coordinators.clear()


class Cpu:
    """CPU seconds per part of the system, sampled as it runs (a killed process keeps its last)."""

    def __init__(self, env: Env, devices: Devices) -> None:
        self.env, self.devices = env, devices
        self.seen: dict[tuple[str, int], float] = {}
        self.base: dict[tuple[str, int], float] = {}
        self.started = time.monotonic()
        self.sample(into=self.base)

    def _parts(self) -> dict[str, list[int]]:
        import psutil

        parts = {
            "broker": [self.env.broker.pid] if self.env.broker else [],
            "coordinators": sorted(self.env.pids.get("coordinators", ())),
            "devices": [p.pid for p in self.devices.procs if p.pid],
            "postgres": [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"],
            "this script": [os.getpid()],
        }
        return parts

    def sample(self, into: Optional[dict] = None) -> None:
        import psutil

        into = self.seen if into is None else into
        for part, pids in self._parts().items():
            for pid in pids:
                try:
                    t = psutil.Process(pid).cpu_times()
                    into[(part, pid)] = t.user + t.system
                except psutil.Error:
                    continue

    def report(self) -> dict[str, float]:
        """Cores used on average per part since the start."""
        self.sample()
        wall = time.monotonic() - self.started
        out: dict[str, float] = {}
        for (part, pid), cpu in self.seen.items():
            out[part] = out.get(part, 0.0) + (cpu - self.base.get((part, pid), 0.0)) / wall
        return out


def say_cpu(cpu: dict[str, float]) -> str:
    if not cpu:
        return "cores used: not measured (nothing was stored)"
    busiest = max(cpu, key=lambda k: cpu[k])
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
    total = sum(cpu.values())
    return f"cores used: {parts}; all {total:.2f} of {os.cpu_count()} (busiest: {busiest})"


# -- measuring ----------------------------------------------------------------------------------


class Poller:
    """Counts of stored reports per 0.1 s of their stamps, read every 0.5 s: when each arrived."""

    def __init__(self, store: Any, since: float, cpu: Optional[Cpu] = None) -> None:
        self.store, self.since, self.cpu = store, since, cpu
        self.polls: list[tuple[float, dict[float, int]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            at = time.time()  # rows counted were committed before the query began
            self.polls.append((at, self.store.report_counts(self.since, LAG_BUCKET_S)))
            if self.cpu is not None:
                self.cpu.sample()
            if self.stop.wait(POLL_S):
                return

    def stored(self) -> int:
        return sum(self.polls[-1][1].values()) if self.polls else 0

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)
        self.polls.append((time.time(), self.store.report_counts(self.since, LAG_BUCKET_S)))

    def lags(self, acked: list[tuple[str, str, str, float]]) -> list[float]:
        """Stamp to the first poll that saw it, per acknowledged report (first in, first stored
        within a 0.1 s bucket of stamps)."""
        ms = round(LAG_BUCKET_S * 1000)
        by_bucket: dict[float, list[float]] = {}
        for _, _, _, ts in acked:
            by_bucket.setdefault(int(ts * 1000) // ms * ms / 1000, []).append(ts)
        out: list[float] = []
        for bucket, stamps in by_bucket.items():
            stamps.sort()
            k = 0
            for at, counts in self.polls:
                n = min(counts.get(bucket, 0), len(stamps))
                out += [at - ts for ts in stamps[k:n]]
                k = max(k, n)
        return out


def percentile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def reconcile(store: Any, since: float, acked: list[tuple[str, str, str, float]]) -> dict[str, int]:
    keys = store.report_keys(since)
    stored = {(t, d, i) for t, rows in keys.items() for d, i in rows}
    sent = {("health" if kind == "health" else "results", d, i) for kind, d, i, _ in acked}
    rows = sum(len(rows) for rows in keys.values())
    return {
        "sent": len(sent),
        "stored": len(sent & stored),
        "lost": len(sent - stored),
        "duplicates": rows - len(stored),
        "unexpected": len(stored - sent),
    }


def lease_holder(store: Any) -> Optional[tuple[str, float]]:
    """(holder, acquired_at) of the live lease on the loops."""
    now = time.time()
    live = [lease for lease in store.leases() if lease.name == "loops" and lease.expires_at >= now]
    return (live[0].holder, live[0].acquired_at) if live else None


def kill_leader(env: Env, store: Any, configs: dict[str, str], run: str, t0: float) -> Optional[float]:
    """Kill the replica holding the loops' lease (-9), start it again ``--restart-s`` later as
    systemd would; seconds from the kill to another holder's taking of the lease."""
    held = lease_holder(store)
    while held is None:  # between two renewals: look again
        time.sleep(0.1)
        held = lease_holder(store)
    old, leader = held[0], held[0].split("@")[0]
    env.coordinators[leader].send_signal(signal.SIGKILL)
    killed_at = time.time()
    env.coordinators[leader].wait(10)
    print(f"{run}: killed {leader} (-9), the loops' leader, at {killed_at - t0:.0f} s", flush=True)
    failover_s: Optional[float] = None
    restarted = False
    while (failover_s is None or not restarted) and time.time() < killed_at + 120:
        held = lease_holder(store)
        if failover_s is None and held is not None and held[0] != old:
            failover_s = held[1] - killed_at
            print(f"{run}: {held[0]} took the loops {failover_s:.1f} s after the kill", flush=True)
        if not restarted and time.time() >= killed_at + env.args.restart_s:
            start_coordinator(env, leader, configs[leader], run)
            restarted = True
            print(f"{run}: {leader} started again {time.time() - killed_at:.0f} s after the kill", flush=True)
        time.sleep(0.1)  # polling the lease table
    if not restarted:
        start_coordinator(env, leader, configs[leader], run)
    return failover_s


@contextlib.contextmanager
def stage(env: Env, run: str, replicas: int) -> Iterator[tuple[Any, str, list[str]]]:
    """A new database, a broker with nothing in it, the replicas' sessions made: (store, its
    URL, the replicas' names); everything this run started is stopped at the end."""
    from coordinator.store import open_store

    db = env.pg.new_database()
    store = open_store(db)
    start_broker(env, run)
    try:
        names = env.replicas[:replicas]
        sessions(env, names)
        yield store, db, names
    finally:
        stop_coordinators(env)
        stop_broker(env)
        store.engine.dispose()


def line(env: Env, run: str, replicas: int, counts: dict[str, int], rate: float, used: dict[str, float],
         failover_s: Optional[float] = None, lag: Optional[float] = None) -> dict[str, Any]:  # fmt: skip
    """A run's JSON line."""
    return {
        "run": run,
        "devices": len(env.names),
        "replicas": replicas,
        **{k: counts[k] for k in ("sent", "stored", "lost", "duplicates")},
        "ingest_per_s": round(rate, 1),
        "failover_s": None if failover_s is None else round(failover_s, 2),
        "p99_ingest_lag_s": None if lag is None else round(lag, 2),
        "cores": {k: round(v, 2) for k, v in used.items()},
    }


def steady(env: Env, run: str, replicas: int, failover: bool, say: Any) -> dict[str, Any]:
    args = env.args
    plan = Plan(env.port, env.profile, args.health_s, args.result_s, args.minutes * 60, args.samples)
    failover_s: Optional[float] = None
    with stage(env, run, replicas) as (store, db, names):
        configs = {n: replica_config(env, n, db) for n in names}
        for n in names:
            start_coordinator(env, n, configs[n], run)
        devices = Devices(env.names, plan, args.procs, env.work)
        try:
            took = devices.wait_connected(say)
            say("")
            print(f"{run}: {len(env.names):,} devices connected in {took:.0f} s", flush=True)
            cpu = Cpu(env, devices)
            t0 = devices.start()
            poller = Poller(store, t0 - 1, cpu)
            killed = False
            while time.time() < t0 + plan.seconds:
                say(f"{run}: {time.time() - t0:.0f} of {plan.seconds:.0f} s, {poller.stored():,} stored")
                if failover and not killed and time.time() >= t0 + plan.seconds / 2:
                    say("")
                    failover_s, killed = kill_leader(env, store, configs, run, t0), True
                time.sleep(1.0)  # progress display
            sent = devices.finish(900)
            expected = len(sent["acked"])
            deadline = time.time() + 300
            while poller.stored() < expected and time.time() < deadline:
                say(f"{run}: draining, {poller.stored():,} of {expected:,} stored")
                time.sleep(0.5)  # polling the table
            say("")
            poller.finish()
            used = cpu.report()
            counts = reconcile(store, t0 - 1, sent["acked"])
            lag = percentile(poller.lags(sent["acked"]), 0.99)
        finally:
            devices.kill()
    if sent["unacked"] or sent["lost_links"]:
        print(f"{run}: {sent['unacked']} reports never acknowledged by the broker, "
              f"{sent['lost_links']} device links dropped", flush=True)  # fmt: skip
    print(f"{run}: {say_cpu(used)}", flush=True)
    return line(env, run, replicas, counts, counts["stored"] / plan.seconds, used, failover_s, lag)


def backlog(env: Env, run: str, replicas: int, say: Any) -> dict[str, Any]:
    plan = Plan(env.port, env.profile, 0, 0, 0, env.args.samples, backlog=env.args.backlog)
    with stage(env, run, replicas) as (store, db, names):
        devices = Devices(env.names, plan, env.args.procs, env.work)
        try:
            devices.wait_connected(say)
            since = devices.start() - 1
            sent = devices.finish(1800)
            expected = len(sent["acked"])
            say("")
            print(f"{run}: {expected:,} results waiting at the broker for {replicas} replica(s)", flush=True)
            for n in names:
                start_coordinator(env, n, replica_config(env, n, db), run)
            cpu: Optional[Cpu] = None  # from the first row stored: the replicas' start-up is not ingest
            first = last = time.time()
            stored = 0
            deadline = time.time() + 900
            while stored < expected and time.time() < deadline:
                stored = store.count("results")
                last = time.time()
                if stored and cpu is None:
                    cpu, first = Cpu(env, devices), last
                say(f"{run}: {stored:,} of {expected:,} stored")
                time.sleep(0.2)  # polling the table
            say("")
            used = cpu.report() if cpu is not None else {}
            counts = reconcile(store, since, sent["acked"])
        finally:
            devices.kill()
    print(f"{run}: {say_cpu(used)}", flush=True)
    return line(env, run, replicas, counts, counts["stored"] / (last - first) if last > first else 0.0, used)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=5.0, help="of reports in each steady run (default 5)")
    ap.add_argument("--health-s", type=float, default=60.0, help="a device's health every S s (60)")
    ap.add_argument("--result-s", type=float, default=60.0, help="a device's job result every S s (60)")
    ap.add_argument("--samples", type=int, default=200, help="samples in a result (200: about 3 KB)")
    ap.add_argument("--procs", type=int, default=4, help="processes simulating the devices (4)")
    ap.add_argument("--runs", default="steady-1,steady-3,failover,backlog", help="which runs, in order")
    ap.add_argument(
        "--backlog", type=int, default=10, metavar="N", help="results per device in a backlog run"
    )
    ap.add_argument(
        "--backlog-rounds", type=int, default=2, help="backlog runs of 1 and 3 replicas, alternating"
    )
    ap.add_argument("--lease-s", type=float, default=10.0, help="the coordinators' lease_s (default 10)")
    ap.add_argument("--restart-s", type=float, default=10.0,
                    help="the killed replica starts again after this (systemd's RestartSec, 10)")  # fmt: skip
    ap.add_argument("--work", help="keep the profile, logs and state here (default: a temporary directory)")
    args = ap.parse_args()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in ("steady-1", "steady-3", "failover", "backlog")]
    if unknown:
        ap.error(f"--runs: {unknown[0]!r} is not one of steady-1, steady-3, failover, backlog")
    from agent.common.progress import ProgressLine

    say = ProgressLine()
    print(raise_fd_limit(args.devices), flush=True)
    work = args.work or tempfile.mkdtemp(prefix="fleetbench-scale-")
    shutil.rmtree(os.path.join(work, "run"), ignore_errors=True)  # a previous run's, with --work
    os.makedirs(work, exist_ok=True)
    lines: list[dict[str, Any]] = []
    try:
        profile, port, names, replicas = make_profile(os.path.join(work, "run"), args.devices, 3, say)
        with load_test_helper("postgres").running(durable=True) as pg:
            env = Env(os.path.join(work, "run"), profile, port, names, replicas, pg, args)
            os.makedirs(os.path.join(env.work, "state"), exist_ok=True)
            key = replica_config(env, "coordinator-1", pg.url())
            argv = [sys.executable, "-m", "agent", "keygen", "--config", key]
            out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
            if out.returncode:
                raise SystemExit(f"keygen failed: {out.stderr}")
            for run in runs:
                if run == "backlog":
                    for r in range(args.backlog_rounds):
                        for n in (1, 3) if r % 2 == 0 else (3, 1):
                            lines.append(backlog(env, f"backlog-{n}", n, say))
                            print(json.dumps(lines[-1]), flush=True)
                else:
                    n = 1 if run == "steady-1" else 3
                    lines.append(steady(env, run, n, run == "failover", say))
                    print(json.dumps(lines[-1]), flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    ones = [x["ingest_per_s"] for x in lines if x["run"] == "backlog-1"]
    threes = [x["ingest_per_s"] for x in lines if x["run"] == "backlog-3"]
    if ones and threes:
        import statistics

        one, three = statistics.median(ones), statistics.median(threes)
        print(f"\nbacklog: 1 replica {one:,.0f} results/s, 3 replicas {three:,.0f} results/s: "
              f"ratio {three / one:.2f} (medians of {len(ones)})")  # fmt: skip
    print()
    for line in lines:
        print(json.dumps(line))
    return 0 if all(x["lost"] == 0 and x["duplicates"] == 0 for x in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
