"""The coordinator service against a real mosquitto and a real agent: the fleet registry
fills from births, health and results; the Will marks a killed agent offline; nothing sent
while the coordinator is down is lost, and duplicates are stored once."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
from daemon_proc import (
    AgentProcess,
    eventually,
    fleet,
    fleetbench,
    publisher,
    start_coordinator,
    stop,
    wait_coordinator_subscribed,
    write_config,
)
from wire import job, result

from agent.protocol import messages
from coordinator.store import open_store

DEVICE = "fleet-pi"


def test_registry_fills_from_a_real_agent_and_the_will_marks_it_offline(tmp_path, mosquitto, onnx_model):
    db = str(tmp_path / "fleet.sqlite")
    coord = start_coordinator(mosquitto, db)
    (tmp_path / "state" / "models").mkdir(parents=True)
    shutil.copy(onnx_model, tmp_path / "state" / "models" / "conv.onnx")
    agent = AgentProcess(str(tmp_path), write_config(str(tmp_path / "agent.toml"), mosquitto.url), DEVICE)
    pub = publisher(mosquitto)
    try:
        agent.start()
        agent.wait_note("READY=1")
        device = eventually(lambda: fleet(db).get(DEVICE, {}).get("health") and fleet(db)[DEVICE])
        assert device["state"] == "online" and device["platform"] == "linux"
        assert device["capabilities"]["cores_logical"] >= 1
        sent = job(DEVICE, "j1", ("conv.onnx",), {"runs": 5, "min_time_s": 0.05, "warmup_time_s": 0})
        pub.publish(f"fleetbench/v1/devices/{DEVICE}/jobs", messages.encode(sent), qos=1).wait_for_publish(10)
        eventually(lambda: fleet(db)[DEVICE]["results"] == 1)
        store = open_store(db, migrate=False)
        (row,) = store.results_for(DEVICE)
        assert row.model == "conv.onnx" and row.p50_ms > 0 and row.job_id == "j1"
        agent.kill()  # kill -9: the broker publishes the Will
        eventually(lambda: fleet(db)[DEVICE]["state"] == "offline")
        table = fleetbench("fleet", "--db", db).stdout
        assert DEVICE in table and "offline" in table
    finally:
        agent.close()
        pub.loop_stop()
        stop(coord)


def test_nothing_sent_while_the_coordinator_is_down_is_lost_and_duplicates_count_once(tmp_path, mosquitto):
    db = str(tmp_path / "fleet.sqlite")
    coord = start_coordinator(mosquitto, db)
    pub = publisher(mosquitto)
    wait_coordinator_subscribed(pub, db)
    try:
        first = [messages.encode(result("sim-1", model=f"m{i}", msg_id=f"r{i}")) for i in range(100)]
        for raw in first + first[:20]:  # 20 redelivered
            pub.publish("fleetbench/v1/devices/sim-1/results", raw, qos=1).wait_for_publish(10)
        eventually(lambda: open_store(db, migrate=False).count("results") == 100)
        stop(coord)  # down: the broker keeps the persistent session's messages
        later = [messages.encode(result("sim-1", model=f"n{i}", msg_id=f"s{i}")) for i in range(300)]
        for raw in later:
            pub.publish("fleetbench/v1/devices/sim-1/results", raw, qos=1).wait_for_publish(10)
        coord = start_coordinator(mosquitto, db)
        eventually(lambda: open_store(db, migrate=False).count("results") == 400)
    finally:
        pub.loop_stop()
        stop(coord)
    assert open_store(db, migrate=False).count("results") == 400


def test_fleet_needs_a_fleetbench_database(tmp_path):
    out = fleetbench("fleet", "--db", str(tmp_path / "none.sqlite"))
    assert out.returncode == 2 and "does not exist" in out.stderr and not (tmp_path / "none.sqlite").exists()
    other = sqlite3.connect(tmp_path / "other.sqlite")
    other.execute("create table t (x)")
    other.close()
    out = fleetbench("fleet", "--db", str(tmp_path / "other.sqlite"))
    assert out.returncode == 2 and "not a fleetbench database" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("group", ["coordinators", "east"])
def test_subscriptions_share_data_but_not_status(group):
    from coordinator.service import subscriptions

    subs = dict(subscriptions(group))
    assert f"$share/{group}/fleetbench/v1/devices/+/results" in subs
    assert "fleetbench/v1/devices/+/status" in subs  # retained: never through $share


def test_a_missing_coordinator_extra_is_named():
    from coordinator.errors import ExtraMissingError
    from coordinator.extras import need

    with pytest.raises(
        ExtraMissingError,
        match=r"needs no_such_module_for_fleetbench: pip install 'fleetbench\[coordinator\]'",
    ):
        need("no_such_module_for_fleetbench", "the coordinator's database")


def test_a_batch_the_database_refused_for_a_while_is_stored_once_it_takes_writes_again(tmp_path, mosquitto):
    """The database failing (here another process holding SQLite's write lock past the busy
    timeout; with replicas, a PostgreSQL deadlock) leaves the batch unacknowledged and tried
    again: it used to wait for a reconnect that never came, with the broker's window full."""
    import threading

    db = str(tmp_path / "fleet.sqlite")
    coord = start_coordinator(mosquitto, db)
    pub = publisher(mosquitto)
    said: list[str] = []
    failed = threading.Event()

    def read_log() -> None:
        for line in coord.stderr:
            said.append(line)
            if "storing 1 messages failed" in line:
                failed.set()

    reader = threading.Thread(target=read_log, daemon=True)
    try:
        wait_coordinator_subscribed(pub, db)
        reader.start()
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # an operator's shell, a backup: nobody else writes
        raw = messages.encode(result("sim-1", msg_id="r1"))
        pub.publish("fleetbench/v1/devices/sim-1/results", raw, qos=1).wait_for_publish(10)
        assert failed.wait(60), "".join(said)
        assert "database is locked" in "".join(said) and "trying again" in "".join(said)
        holder.execute("ROLLBACK")
        holder.close()
        eventually(lambda: open_store(db, migrate=False).count("results") == 1)
    finally:
        pub.loop_stop()
        coord.send_signal(15)
        assert coord.wait(30) == 0
    reader.join(10)
    assert any("stored 1 messages after" in line for line in said), "".join(said)
