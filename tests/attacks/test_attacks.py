"""The attacks of issue 14's "Why", tried again with an ordinary MQTT client against real
mosquitto brokers and real daemons: each must fail now, and the fleet must keep working.

    Why                                                          here, or
    anyone can make any agent work for days (2,000 jobs)         test_anonymous_jobs_...
    threads=1e9, warmup_runs=1e18, a 518 MB MobileNetV2          test_a_signed_job_is_still_...
    a push replayed to another device, downgraded                test_pushes_cannot_be_...
    a tampered chunk ahead of a genuine push                     test_pushes_cannot_be_...
    a push_id of ../../../evil                                   test_pushes_cannot_be_...
    any client publishes for any device id; 20,000 fake devices  test_no_client_speaks_...
    the coordinator's client id taken over                       test_no_client_speaks_...
    5,000 results while the coordinator is down became 1,000     test_what_devices_send_...
    the outbox bounded by count, put() 740 ms at 100k            tests/agent/transport/test_outbox.py
                                                                 (byte bound, health first) and
                                                                 benchmarks/outbox_put.py
    a password in the URL in status.json and `fleetbench status` test_credentials_never_show_...
    10 MB status messages accepted                               test_oversized_statuses_...
    the first _mqtt._tcp broker announced on the LAN trusted     tests/agent/transport/test_discovery.py
    units scored 5.5 and 5.0 by systemd-analyze security         tests/systemd/test_units.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import threading

import msgspec
import pytest
from broker import Receiver
from daemon_proc import (
    AgentProcess,
    eventually,
    fleetbench,
    publisher,
    start_configured_coordinator,
    start_coordinator,
    stop,
    wait_coordinator_subscribed,
    write_config,
)
from keys import key_pair, sealed
from tls import DEVICE as TLS_DEVICE
from tls import client_files, connect
from wire import command, raw_job, received, signed_job

from agent.protocol import messages
from agent.protocol.jobs import ArchItem, JobSpec
from agent.protocol.push import Chunk, Manifest, chunk_digests
from agent.protocol.reports import StatusData
from coordinator.store import open_store

DEVICE = "victim-pi"
JOBS = f"fleetbench/v1/devices/{DEVICE}/jobs"


def acks(rx, job_id=None, state=None):
    found = [a.data for a in received(rx.payloads, "acks")]
    return [a for a in found if job_id in (None, a.get("job_id")) and state in (None, a.get("state"))]


def wait_ack(rx, job_id, state, timeout_s=120.0):
    rx.wait_for(lambda p: acks(rx, job_id, state), timeout_s)
    return acks(rx, job_id, state)[0]


@pytest.fixture
def victim(tmp_path, mosquitto, onnx_model):
    """A real agent that pins the tests' coordinator key, and a client that hears all it says."""
    (tmp_path / "state" / "models").mkdir(parents=True)
    shutil.copy(onnx_model, tmp_path / "state" / "models" / "conv.onnx")
    rx = Receiver(mosquitto, f"fleetbench/v1/devices/{DEVICE}/#", client_id="attack-observer")
    rx.wait_subscribed()
    extra = "[jobs]\nmax_waiting = 1\nmax_threads = 2\nmax_warmup_runs = 100\n"
    agent = AgentProcess(
        str(tmp_path), write_config(str(tmp_path / "agent.toml"), mosquitto.url, extra), DEVICE
    )
    agent.start()
    agent.wait_note("READY=1")
    rx.wait_for(lambda p: received(p, "health"))  # it sends health only once subscribed
    yield agent, rx
    agent.close()
    rx.close()


def publish(rx, topic, payload) -> None:
    rx.client.publish(topic, payload, qos=1).wait_for_publish(10)


def test_anonymous_jobs_are_refused_and_never_queued(victim):
    agent, rx = victim
    for i in range(2000):  # what took 0.2 s to queue 55 device-days of work
        rx.client.publish(JOBS, raw_job(DEVICE, {"job_id": f"spam-{i}", "models": ["conv.onnx"]}), qos=1)
    rx.wait_for(lambda p: len(acks(rx, state="rejected")) >= 2000, 300)
    assert all("not signed" in a["error"] for a in acks(rx, state="rejected"))
    assert not [a for a in acks(rx) if a["state"] == "accepted"]
    assert [n for n in os.listdir(os.path.join(agent.state_dir, "jobs")) if n.endswith(".json")] == []
    # absurd settings are refused as they are read, whoever signed them
    other, _ = key_pair()
    for job_id, settings in (("threads", {"threads": 10**9}), ("warmup", {"warmup_runs": 10**18})):
        data = {"job_id": job_id, "models": ["conv.onnx"], "settings": settings}
        publish(rx, JOBS, raw_job(DEVICE, {**data, "device_id": DEVICE, "seq": 1, "expires_at": 4e9}))
        assert "settings." in wait_ack(rx, job_id, "rejected")["error"]
    forged = JobSpec(job_id="forged", models=("conv.onnx",))
    publish(
        rx,
        JOBS,
        messages.encode(messages.make(messages.JobMessage, DEVICE, sealed(forged, DEVICE, key=other))),
    )
    assert "not by the coordinator key" in wait_ack(rx, "forged", "rejected")["error"]
    # the fleet keeps working: the coordinator's job runs
    publish(rx, JOBS, command(DEVICE, {"job_id": "real", "models": ["conv.onnx"], "settings": {"runs": 3}}))
    assert wait_ack(rx, "real", "done")["measured"] == 1


def test_a_signed_job_is_still_bounded_by_the_device(victim):
    agent, rx = victim
    model = {"models": ["conv.onnx"]}
    days = {"architectures": [{"space": "nas-bench-201", "arch": a} for a in _archs(30)]}
    refused = {  # job id: (items, settings, why)
        "threads": (model, {"threads": 64}, "settings.threads 64 is more than this device allows"),
        "warmup": (model, {"warmup_runs": 1000}, "settings.warmup_runs 1000 is more than this device allows"),
        "days": (days, {"max_time_s": 600}, "more than it gives one job (jobs.max_job_s"),
    }
    for job_id, (items, settings, why) in refused.items():
        publish(rx, JOBS, signed_job(DEVICE, {"job_id": job_id, **items, "settings": settings}))
        assert why in wait_ack(rx, job_id, "rejected")["error"]
    # a 300-byte job that used to leave a 518 MB model in the cache: not built at all
    huge = ArchItem(space="mobilenetv2", arch=_mbv2(), classes=100_000)
    publish(rx, JOBS, signed_job(DEVICE, {"job_id": "huge", "architectures": [msgspec.to_builtins(huge)],
                                          "settings": {"runs": 1}}))  # fmt: skip
    assert "more than this device builds" in wait_ack(rx, "huge", "model_failed")["error"]
    wait_ack(rx, "huge", "failed")
    cache = os.path.join(agent.state_dir, "cache")
    assert sum(os.path.getsize(os.path.join(cache, f)) for f in os.listdir(cache)) < 10_000_000
    # a bounded queue: one job waits at most (jobs.max_waiting = 1); the oldest waiting is dropped
    slow = {"runs": 1_000, "min_time_s": 5, "max_time_s": 10}
    for job_id in ("first", "second", "third"):
        publish(rx, JOBS, signed_job(DEVICE, {"job_id": job_id, "models": ["conv.onnx"], "settings": slow}))
        if job_id == "first":
            wait_ack(rx, "first", "running")  # measuring: the next two wait, and only one may
    assert "dropped unstarted" in wait_ack(rx, "second", "rejected")["error"]
    wait_ack(rx, "third", "done")
    assert wait_ack(rx, "first", "done")["measured"] == 1


def _archs(n):
    from agent.materialize import sample

    return sample("nas-bench-201", n, 0)


def _mbv2():
    from agent.materialize import sample

    return sample("mobilenetv2", 1, 0)[0]


def test_pushes_cannot_be_replayed_to_another_device_downgraded_or_spoiled(victim, onnx_model):
    agent, rx = victim
    with open(onnx_model, "rb") as fh:
        model = fh.read()
    models = f"fleetbench/v1/devices/{DEVICE}/models"

    def manifest(push_id, device=DEVICE, release=10, **fields):
        m = Manifest(push_id=push_id, name="clf", version=push_id, format="onnx", size=len(model),
                     sha256=hashlib.sha256(model).hexdigest(), chunk_bytes=1024, smoke_runs=2,
                     release=release, chunk_digests=chunk_digests(model, 1024), **fields)  # fmt: skip
        return messages.encode(messages.make(messages.PushManifestMessage, DEVICE, sealed(m, device)))

    def chunk(push_id, i, data):
        msg = messages.make(messages.PushChunkMessage, DEVICE, Chunk(push_id=push_id, index=i, data=data))
        return messages.encode(msg)

    def push_acks(push_id, state):
        return [a.data for a in received(rx.payloads, "acks")
                if a.data.get("push_id") == push_id and a.data.get("state") == state]  # fmt: skip

    # a forged chunk sent ahead of the genuine push is dropped; the genuine push installs
    publish(rx, models, manifest("p1"))
    rx.wait_for(lambda p: push_acks("p1", "receiving"))
    publish(rx, models, chunk("p1", 0, os.urandom(1024)))
    for i in range(-(-len(model) // 1024)):
        publish(rx, models, chunk("p1", i, model[i * 1024 : (i + 1) * 1024]))
    rx.wait_for(lambda p: push_acks("p1", "installed") or push_acks("p1", "rejected"), 120)
    assert push_acks("p1", "installed"), push_acks("p1", "rejected")
    # device A's push replayed to this device; an older release (a downgrade)
    publish(rx, models, manifest("p2", device="other-pi", release=11))
    publish(rx, models, manifest("p3", release=9))
    rx.wait_for(lambda p: push_acks("p2", "rejected") and push_acks("p3", "rejected"))
    assert "is for device 'other-pi'" in push_acks("p2", "rejected")[0]["error"]
    assert "is not newer than release 10" in push_acks("p3", "rejected")[0]["error"]
    # a push id that is a path: refused as it is read; nothing is written outside the state dir
    evil = json.loads(chunk("p1", 0, b"x"))
    evil["data"]["push_id"] = "../../../evil"
    publish(rx, models, json.dumps(evil).encode())
    publish(rx, JOBS, command(DEVICE, {"job_id": "after", "models": ["conv.onnx"], "settings": {"runs": 2}}))
    wait_ack(rx, "after", "done")
    outside = os.path.dirname(os.path.dirname(agent.state_dir))
    assert not [p for p in os.listdir(outside) if "evil" in p]
    assert "push_id" in agent.read_log() and "Traceback" not in agent.read_log()


def test_no_client_speaks_for_another_or_takes_over_the_coordinators_session(tmp_path, profile):
    coord_conf, directory, broker = profile
    coord = start_configured_coordinator(coord_conf)
    db = str(tmp_path / "fleet.sqlite")
    try:
        device, reason = connect(broker.port, client_files(directory, TLS_DEVICE))
        assert str(reason) == "Success"
        _status(device, TLS_DEVICE)
        eventually(lambda: _devices(db) == [TLS_DEVICE])
        # an enrolled device tries to invent 200 devices and to take the coordinator's client id
        intruder, reason = connect(
            broker.port, client_files(directory, "intruder"), client_id="fleetbench-coordinator"
        )
        assert str(reason) == "Success"
        refused = [_status(intruder, f"fake-{i}") for i in range(200)]
        assert {str(r) for r in refused} == {"Not authorized"}
        # the coordinator's session survived: what the device sends next is stored
        for i in range(50):
            result = msgspec.json.encode(_result(TLS_DEVICE, i))
            device.publish(f"fleetbench/v1/devices/{TLS_DEVICE}/results", result, qos=1).wait_for_publish(10)
        eventually(lambda: open_store(db, migrate=False).count("results") == 50)
        assert _devices(db) == [TLS_DEVICE]
        for client in (device, intruder):
            client.loop_stop()
            client.disconnect()
    finally:
        stop(coord)


def test_what_devices_send_while_the_coordinator_is_down_is_kept_by_the_profile(tmp_path, profile):
    coord_conf, directory, broker = profile
    db = str(tmp_path / "fleet.sqlite")
    coord = start_configured_coordinator(coord_conf)
    eventually(lambda: os.path.exists(db) and _subscribed(broker, directory, db))
    stop(coord)
    device, _ = connect(broker.port, client_files(directory, TLS_DEVICE))
    topic = f"fleetbench/v1/devices/{TLS_DEVICE}/results"
    infos = [device.publish(topic, msgspec.json.encode(_result(TLS_DEVICE, i)), qos=1) for i in range(5000)]
    for info in infos:
        info.wait_for_publish(30)
    device.loop_stop()
    device.disconnect()
    coord = start_configured_coordinator(coord_conf)
    try:
        eventually(lambda: open_store(db, migrate=False).count("results") == 5000, 180)
    finally:
        stop(coord)


def test_credentials_never_show_and_state_is_private(tmp_path, mosquitto):
    url = f"mqtt://pi:s3cret-pw@127.0.0.1:{mosquitto.port}"  # mosquitto here takes any user
    agent = AgentProcess(str(tmp_path), write_config(str(tmp_path / "agent.toml"), url), DEVICE)
    agent.start()
    try:
        agent.wait_note("READY=1")
        eventually(lambda: agent.status().get("connected"), 30)
        status_file = os.path.join(agent.state_dir, "status.json")
        with open(status_file) as fh:
            assert "s3cret" not in fh.read()
        shown = fleetbench("status", "--state-dir", agent.state_dir)
        assert "s3cret" not in shown.stdout + shown.stderr and "pi:***@" in shown.stdout
        assert "s3cret" not in "".join(agent.notes)
        for path in (agent.state_dir, status_file, os.path.join(agent.state_dir, "outbox.sqlite")):
            assert stat.S_IMODE(os.stat(path).st_mode) & 0o007 == 0, path  # nothing for other users
    finally:
        agent.close()


def test_oversized_statuses_are_refused_and_the_fleet_keeps_working(tmp_path, mosquitto):
    db = str(tmp_path / "fleet.sqlite")
    coord = start_coordinator(mosquitto, db)
    pub = publisher(mosquitto)
    try:
        wait_coordinator_subscribed(pub, db)
        big = StatusData(
            state="online", protocol=2, sku="x" * 100, collectors=tuple(f"c{i:05}" for i in range(3000))
        )
        raw = msgspec.json.encode(messages.make(messages.StatusMessage, "big-pi", big))
        assert 16 * 1024 < len(raw) < messages.MAX_BYTES
        pub.publish("fleetbench/v1/devices/big-pi/status", raw, qos=1).wait_for_publish(10)
        pub.publish("fleetbench/v1/devices/huge-pi/status", b"{" + b" " * 10_000_000 + b"}", qos=1)
        ok = messages.encode(
            messages.make(messages.StatusMessage, "fine-pi", StatusData(state="online", protocol=2))
        )
        pub.publish("fleetbench/v1/devices/fine-pi/status", ok, qos=1).wait_for_publish(30)
        eventually(
            lambda: (
                _devices(db) == ["fine-pi", "probe"]
                and len(open_store(db, migrate=False).dead_letters()) == 2
            )
        )
        reasons = sorted(d.reason for d in open_store(db, migrate=False).dead_letters())
        assert "over the 16384-byte limit of its kind" in reasons[0] + reasons[1]
        assert any("over the 131072-byte limit" in r for r in reasons)
    finally:
        pub.loop_stop()
        stop(coord)


# -- helpers -----------------------------------------------------------------------------


def _devices(db):
    import sqlalchemy

    try:
        return [d.device_id for d in open_store(db, migrate=False).fleet()]
    except sqlalchemy.exc.OperationalError:  # the coordinator has not made its tables yet
        return None


def _status(client, device_id):
    """Publish an online status for ``device_id``; the broker's answer (MQTT 5's PUBACK reason)."""
    done, answer = threading.Event(), []
    client.on_publish = lambda c, u, mid, code, props: (answer.append(code), done.set())
    raw = messages.encode(
        messages.make(messages.StatusMessage, device_id, StatusData(state="online", protocol=2))
    )
    client.publish(f"fleetbench/v1/devices/{device_id}/status", raw, qos=1, retain=True)
    assert done.wait(10)
    return answer[0]


def _result(device_id, i):
    from wire import result

    return result(device_id, job_id="flood", model=f"m{i}.onnx", msg_id=f"r{i}")


def _subscribed(broker, directory, db):
    """The coordinator has its persistent session (a status sent now is stored)."""
    probe, _ = connect(broker.port, client_files(directory, TLS_DEVICE))
    _status(probe, TLS_DEVICE)
    probe.loop_stop()
    probe.disconnect()
    return _devices(db) == [TLS_DEVICE]
