"""The coordinator's store: migrations, idempotent ingest, the fleet registry."""

from __future__ import annotations

import json

import pytest

from agent.transport import messages
from coordinator.store import MIGRATIONS, Message, StoreError, ingest_all, open_store


def status(device, state, ts, **birth):
    return Message(
        f"fleetbench/v1/devices/{device}/status",
        json.dumps({"v": 1, "state": state, "device_id": device, "ts": ts, **birth}).encode(),
    )


def envelope(device, kind, data, msg_id=None):
    env = messages.make(kind, device, data, msg_id)
    return Message(f"fleetbench/v1/devices/{device}/{kind}", env.encode())


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "fleet.sqlite"))


def test_migrations_are_versioned_and_applied_once(tmp_path):
    path = str(tmp_path / "fleet.sqlite")
    store = open_store(path)
    assert store.version() == MIGRATIONS[-1][0]
    assert open_store(path).migrate() == []  # nothing left to apply


def test_ingest_is_idempotent_on_the_message_id(store):
    batch = [
        envelope(
            "pi-1",
            "results",
            {"job_id": "j", "model": f"m{i}", "result": {"stats": {"p50_ms": i}}},
            msg_id=f"result:j:m{i}",
        )
        for i in range(50)
    ]
    assert store.ingest(batch)["results"] == 50
    assert store.ingest(batch + batch[:10])["results"] == 0  # redelivered: stored once
    assert store.count("results") == 50
    rows = store.results_for("pi-1")
    assert sorted(r["p50_ms"] for r in rows) == list(range(50))


def test_fleet_registry_from_birth_will_and_health(store):
    caps = {"cores_logical": 4, "backends": {"litert": "ai-edge-litert 2.3.0"}}
    store.ingest(
        [
            status(
                "pi-1",
                "online",
                100.0,
                sku="Raspberry Pi 4 Model B Rev 1.4",
                platform="raspberry-pi",
                version="0.1.0",
                capabilities=caps,
            )
        ]
    )
    health = {
        "health": {"thermal": {"temperatures_c": {"cpu-thermal": 48.7}}},
        "degradation": {"index": 1.07},
    }
    store.ingest([envelope("pi-1", "health", health)])
    (device,) = store.fleet()
    assert (device["state"], device["sku"], device["platform"]) == (
        "online",
        "Raspberry Pi 4 Model B Rev 1.4",
        "raspberry-pi",
    )
    assert device["capabilities"] == caps and device["degradation_index"] == 1.07
    assert device["health"]["health"]["thermal"]["temperatures_c"]["cpu-thermal"] == 48.7
    store.ingest([status("pi-1", "offline", 200.0)])  # the Last Will
    assert (
        store.fleet()[0]["state"] == "offline" and store.fleet()[0]["sku"] == "Raspberry Pi 4 Model B Rev 1.4"
    )
    # a Will's "ts" is from when the agent connected, before its birth: arrival order decides
    store.ingest([status("pi-1", "online", 300.0), status("pi-1", "offline", 250.0)])
    assert store.fleet()[0]["state"] == "offline"


def test_older_health_does_not_replace_newer(store):
    new = messages.make("health", "pi-1", {"degradation": {"index": 1.2}})
    old = messages.Envelope(
        id="old", kind="health", device_id="pi-1", ts=new.ts - 60, data={"degradation": {"index": 1.0}}
    )
    store.ingest([Message("fleetbench/v1/devices/pi-1/health", new.encode())])
    store.ingest([Message("fleetbench/v1/devices/pi-1/health", old.encode())])
    assert store.fleet()[0]["degradation_index"] == 1.2 and store.count("health") == 2


def test_malformed_messages_are_skipped_and_the_rest_stored(store, caplog):
    batch = [
        Message("fleetbench/v1/devices/pi-1/results", b"not json"),
        Message("fleetbench/v1/devices/pi-1/status", b"\xff"),
        Message("some/other/topic", b"{}"),
        envelope("pi-1", "acks", {"job_id": "j", "state": "done"}),
    ]
    assert store.ingest(batch)["acks"] == 1
    assert "ignoring a results message from pi-1" in caplog.text


def test_many_in_batches(store):
    msgs = [envelope(f"d{i % 7}", "results", {"model": "m"}, msg_id=f"r{i}") for i in range(1200)]
    assert ingest_all(store, msgs + msgs[:300], batch=250)["results"] == 1200
    assert len(store.fleet()) == 7


def test_bad_database_arguments(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(str(tmp_path / "missing" / "fleet.sqlite"))
    with pytest.raises(StoreError, match=r"not supported|driver|cannot be opened|not a database"):
        open_store("mysql://nobody@127.0.0.1/fleet")
