"""The dashboard and /metrics over real HTTP on 127.0.0.1 (aiohttp's test server), on a real
SQLite store filled through the ingest, and served by a real coordinator process."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request

import pytest
from broker import free_port
from daemon_proc import AgentProcess, eventually, start_configured_coordinator, stop, write_config
from prometheus_client.parser import text_string_to_metric_families

from agent.protocol import messages as m
from agent.protocol.reports import StatusData
from coordinator.config import CoordinatorConfig, HttpConfig
from coordinator.store import Message, open_store

pytest.importorskip("aiohttp")


def statuses(n, sku="Raspberry Pi 4", state="online", prefix="pi"):
    data = StatusData(state=state, protocol=2, sku=sku)
    return [
        Message(f"fleetbench/v1/devices/{prefix}-{i:04d}/status",
                m.encode(m.make(m.StatusMessage, f"{prefix}-{i:04d}", data)))
        for i in range(n)
    ]  # fmt: skip


def serve_and(store, config, requests):
    """Serve the dashboard for ``store`` and run ``requests(client)`` (async) against it."""
    from aiohttp.test_utils import TestClient, TestServer

    from coordinator.web.app import Dashboard

    async def main():
        async with TestClient(TestServer(Dashboard(store, config).app(), host="127.0.0.1")) as client:
            return await requests(client)

    return asyncio.run(main())


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "fleet.sqlite"))
    s.ingest(statuses(250) + statuses(3, sku="<script>alert(1)</script>", prefix="evil")
             + statuses(2, state="offline", prefix="gone"))  # fmt: skip
    return s


def test_the_fleet_page_pages_filters_and_escapes_what_devices_say(store):
    async def requests(client):
        page = await (await client.get("/")).text()
        api = await (await client.get("/api/fleet", params={"q": "evil"})).json()
        last = await (await client.get("/api/fleet", params={"page": "9"})).json()
        bad = await client.get("/", params={"page": "x"})
        return page, api, last, bad.status

    page, api, last, bad = serve_and(store, CoordinatorConfig(), requests)
    assert (
        "253 of 255 devices online" in page
        and "page 1 of 3" in page
        and "pi-0094" in page
        and "pi-0095" not in page
    )
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page  # autoescaped
    assert [r["device"] for r in api["rows"]] == ["evil-0000", "evil-0001", "evil-0002"]
    assert last["page"] == 3 and len(last["rows"]) == 55
    assert bad == 400


def test_a_token_guards_everything_but_metrics_on_loopback(store):
    config = CoordinatorConfig(http=HttpConfig(listen="127.0.0.1:1", token="s3cret"))

    async def requests(client):
        denied = await client.get("/")
        bearer = await client.get("/api/fleet", headers={"Authorization": "Bearer s3cret"})
        wrong = await client.get("/api/fleet", headers={"Authorization": "Bearer nope"})
        login = await client.get("/rollouts", params={"token": "s3cret"})
        after = await client.get("/dead-letters")  # the cookie set by ?token=
        metrics = await client.get("/metrics")
        return denied.status, bearer.status, wrong.status, login.status, after.status, metrics.status

    assert serve_and(store, config, requests) == (401, 200, 401, 200, 200, 200)


def test_metrics_count_the_fleet_per_state_and_sku(store):
    store.ingest([Message("fleetbench/v1/devices/pi-0000/results", b"not json")])

    async def requests(client):
        return await (await client.get("/metrics")).text()

    families = {
        f.name: f for f in text_string_to_metric_families(serve_and(store, CoordinatorConfig(), requests))
    }
    devices = {(s.labels["state"], s.labels["sku"]): s.value for s in families["fleetbench_devices"].samples}
    assert devices[("online", "Raspberry Pi 4")] == 250 and devices[("offline", "Raspberry Pi 4")] == 2
    dead = {s.labels["kind"]: s.value for s in families["fleetbench_dead_letters"].samples}
    assert dead == {"results": 1}


def test_a_listener_beyond_this_host_needs_a_token(tmp_path):
    from agent.common.config import ConfigError
    from coordinator.config import load

    path = tmp_path / "c.toml"
    path.write_text('[http]\nlisten = "0.0.0.0:8080"\n')
    with pytest.raises(ConfigError, match=r"reaches beyond this host; set http\.token"):
        load(str(path), env={})
    path.write_text('[http]\nlisten = "8080"\n')
    with pytest.raises(ConfigError, match="must be HOST:PORT"):
        load(str(path), env={})


def test_a_running_coordinator_serves_its_fleet_and_metrics(tmp_path, mosquitto):
    """`fleetbench coordinator --http`: a real agent appears on the page and in /metrics."""
    port = free_port()
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'db = "{tmp_path / "fleet.sqlite"}"\nstate_dir = "{tmp_path / "coord"}"\ntick_s = 0.2\n'
        f'[broker]\nurl = "{mosquitto.url}"\n[rerank]\nenabled = false\n[http]\nlisten = "127.0.0.1:{port}"\n'
    )
    coord = start_configured_coordinator(str(config))
    agent = AgentProcess(str(tmp_path), write_config(str(tmp_path / "agent.toml"), mosquitto.url), "web-pi")
    try:
        agent.start()
        agent.wait_note("READY=1")

        def fetch(path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                    return r.read().decode()
            except OSError:  # the coordinator is still starting
                return ""

        eventually(lambda: "web-pi" in fetch("/api/fleet"), 60)
        rows = json.loads(fetch("/api/fleet"))["rows"]
        assert [r["device"] for r in rows] == ["web-pi"] and rows[0]["state"] == "online"
        assert "web-pi" in fetch("/") and "fleetbench_up 1.0" in fetch("/metrics")
    finally:
        agent.close()
        stop(coord)


def test_the_shipped_prometheus_files_name_metrics_the_coordinator_exports(store):
    import os

    import yaml

    docs = os.path.join(os.path.dirname(__file__), "..", "..", "docs")
    with open(os.path.join(docs, "fleetbench-alerts.yml")) as fh:
        rules = yaml.safe_load(fh)["groups"][0]["rules"]
    with open(os.path.join(docs, "prometheus.yml")) as fh:
        assert yaml.safe_load(fh)["rule_files"] == ["fleetbench-alerts.yml"]

    async def requests(client):
        return await (await client.get("/metrics")).text()

    exported = {
        f.name for f in text_string_to_metric_families(serve_and(store, CoordinatorConfig(), requests))
    }
    exported |= {"fleetbench_up"}  # a running coordinator's (tested above)
    for rule in rules:
        named = set(re.findall(r"\bfleetbench_\w+", rule["expr"]))
        assert named and named <= exported, (rule["alert"], named - exported)


def test_a_devices_page_plots_its_degradation_over_time(tmp_path):
    from agent.collectors.degradation import DegradationState
    from agent.protocol.reports import HealthData

    store = open_store(str(tmp_path / "fleet.sqlite"))
    store.ingest(statuses(1))

    def sample(i):
        data = HealthData(degradation=DegradationState(index=1.0 + i / 100))
        return m.make(m.HealthMessage, "pi-0000", data, f"h{i}", ts=1_800_000_000.0 + i * 3600)

    samples = [sample(i) for i in range(24)]
    store.ingest([Message("fleetbench/v1/devices/pi-0000/health", m.encode(s)) for s in samples])

    async def requests(client):
        page = await (await client.get("/devices/pi-0000")).text()
        missing = await client.get("/devices/nobody")
        return page, missing.status

    page, missing = serve_and(store, CoordinatorConfig(), requests)
    assert "24 samples over 1.0 days: 1.000" in page and "to 1.230" in page
    points = re.search(r'<polyline[^>]*points="([^"]+)"', page).group(1).split()
    assert len(points) == 24 and missing == 404


def test_the_decisions_page_sets_what_each_device_expected_against_what_it_ran(tmp_path):
    """Each device's newest decision, read in one query: the chosen model's latency when chosen
    (measured or predicted) against its smoke run, on log axes, over budget shown as such."""
    from coordinator.store.records import Deployment

    store = open_store(str(tmp_path / "fleet.sqlite"))
    cases = {  # device: (basis, expected ms, smoke p50, its interval, state, budget)
        "fast-1": ("measured", 1.0, 0.98, (0.95, 1.02), "installed", 1.2),
        "slow-1": ("predicted", 40.0, 52.0, (51.0, 53.0), "rolled_back", 45.0),
        "edge-1": ("predicted", 6.0, 6.1, (5.9, 6.3), "installed", 6.05),
    }
    for i, (device, (basis, expected, p50, (lo, hi), state, budget)) in enumerate(cases.items()):
        for at, rollout in ((1.0, f"old{i}"), (2.0, f"new{i}")):  # an older decision, then the newest
            store.add_decision(device, at, "nas-bench-201", "|a~0|", budget, expected, 90.0, rollout,
                               {"basis": basis, "retry": 1 if state == "rolled_back" else 0})  # fmt: skip
            scale = at / 2  # the older decision's push ran at half the latency
            smoke = {"p50_ms": p50 * scale, "p50_lo_ms": lo * scale, "p50_hi_ms": hi * scale}
            store.add_deployments(
                [Deployment(f"{rollout}:{device}", rollout, device, "canary", state, 1, at, **smoke)]
            )
    latest = store.latest_decisions()
    assert [(d.device_id, d.at, d.deployment.p50_ms) for d in latest] == [
        ("edge-1", 2.0, 6.1), ("fast-1", 2.0, 0.98), ("slow-1", 2.0, 52.0)]  # fmt: skip

    async def requests(client):
        return await (await client.get("/decisions")).text(), await (
            await client.get("/decisions?q=slow")
        ).text()

    page, only = serve_and(store, CoordinatorConfig(), requests)
    assert "3 devices decided: 1 within the noise of their budget, 1 within budget, 1 over budget" in page
    dots = re.findall(r'<circle class="dot (\S+)" cx="([\d.]+)" cy="([\d.]+)"', page)
    assert sorted(c for c, _, _ in dots) == ["NO", "within", "yes"]
    xs = {c: float(x) for c, x, _ in dots}
    # log axes: 1 -> 6 -> 40 ms are spaced by their ratios, not crushed into a corner
    assert 0.5 < (xs["within"] - xs["yes"]) / (xs["NO"] - xs["within"]) < 1.5
    assert "NO (+16 %)" in page and "rolled_back (retry 1)" in page and "within noise (+1 %)" in page
    assert "slow-1" in only and "fast-1" not in only


def test_a_listener_already_taken_stops_the_coordinator_in_a_sentence(tmp_path, mosquitto):
    import socket

    from daemon_proc import fleetbench

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = fleetbench("coordinator", "--broker", mosquitto.url, "--db", str(tmp_path / "f.sqlite"),
                         "--state-dir", str(tmp_path), "--http", f"127.0.0.1:{port}")  # fmt: skip
    assert out.returncode == 2 and f"http.listen '127.0.0.1:{port}' cannot be served" in out.stderr
    assert "Traceback" not in out.stderr
