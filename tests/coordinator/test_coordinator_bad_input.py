"""What the real coordinator does with bad input from the broker (issue 13's "Why"), against a
real mosquitto: a bad message costs only itself.

- A result or health with ``ts: NaN``, ``job_id: {}``, ``result: [1]`` or deep nesting used to
  make the whole batch fail, unacknowledged, redelivered forever: every other device's data
  stopped being stored.  Now each becomes a dead letter, is acknowledged, and is not redelivered.
- Message ids are per device: the same job id answered by two devices is two results.
- Acks change only the deployment of the device that sent them; a "missing" range beyond the
  push is ignored, and one that is not numbers is a dead letter, not a tick that raises forever.
- A flood of malformed messages of every kind from one forged device id leaves a real agent's
  health and results flowing into the store.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from daemon_proc import (
    AgentProcess,
    eventually,
    fleet,
    fleetbench,
    publisher,
    start_configured_coordinator,
    start_coordinator,
    stop,
    wait_coordinator_subscribed,
    write_config,
)
from wire import job, result

from agent.protocol import messages
from agent.transport.mqtt import BrokerSettings
from coordinator.simulated import SimulatedDevice
from coordinator.store import open_store

MALFORMED = [
    ("results", b'{"kind": "result", "v": 2, "id": "a", "device_id": "bad-dev", "ts": NaN, "data": {}}'),
    (
        "results",
        b'{"kind": "result", "v": 2, "id": "b", "device_id": "bad-dev", "ts": 1, "data": {"job_id": {}}}',
    ),
    (
        "results",
        b'{"kind": "result", "v": 2, "id": "c", "device_id": "bad-dev", "ts": 1, "data": {"result": [1]}}',
    ),
    (
        "results",
        b'{"kind": "result", "v": 2, "id": "d", "device_id": "bad-dev", "ts": 1, "x": '
        + b"[" * 100_000
        + b"}",
    ),
    ("health", b'{"kind": "health", "v": 2, "id": "e", "device_id": "bad-dev", "ts": 1e999, "data": {}}'),
    (
        "acks",
        b'{"kind": "push_ack", "v": 2, "id": "f", "device_id": "bad-dev", "ts": 1, '
        b'"data": {"push_id": "p", "state": "receiving", "missing": [["a", "b"]]}}',
    ),
    ("status", b"\xff\xfe"),
    ("health", b"[" * 100_000),
]


def topic(device: str, kind: str) -> str:
    return f"fleetbench/v1/devices/{device}/{kind}"


def coord_log(proc) -> str:
    """What the coordinator process logged so far (it logs to stderr, a pipe here)."""
    os.set_blocking(proc.stderr.fileno(), False)
    return proc.stderr.read() or ""


def test_malformed_reports_cost_only_themselves_and_are_not_redelivered(tmp_path, mosquitto):
    db = str(tmp_path / "fleet.sqlite")
    coord = start_coordinator(mosquitto, db)
    pub = publisher(mosquitto)
    try:
        wait_coordinator_subscribed(pub, db)
        for i, (kind, payload) in enumerate(MALFORMED):
            pub.publish(topic("bad-dev", kind), payload, qos=1).wait_for_publish(10)
            good = result("good-dev", "j", f"m{i}", msg_id=f"r{i}")
            pub.publish(topic("good-dev", "results"), messages.encode(good), qos=1).wait_for_publish(10)
        store = open_store(db, migrate=False)
        eventually(
            lambda: store.count("results") == len(MALFORMED) and store.count("dead_letters") == len(MALFORMED)
        )
        reasons = [d.reason for d in store.dead_letters()]
        for needle in (
            "not valid JSON",
            "data.job_id",
            "data.result",
            "nested too deeply",
            "out of range",
            "missing",
        ):
            assert any(needle in r for r in reasons), (needle, reasons)
        table = fleetbench("fleet", "--db", db)
        assert table.returncode == 0 and f"{len(MALFORMED)} message(s) refused" in table.stderr
        stop(coord)  # acknowledged: a restarted coordinator does not get them again
        coord = start_coordinator(mosquitto, db)
        late = result("good-dev", "j", "late", msg_id="late")
        pub.publish(topic("good-dev", "results"), messages.encode(late), qos=1).wait_for_publish(10)
        eventually(lambda: store.count("results") == len(MALFORMED) + 1)
        assert store.count("dead_letters") == len(MALFORMED)
    finally:
        pub.loop_stop()
        stop(coord)


def test_the_same_job_answered_by_two_devices_is_two_results(tmp_path, mosquitto):
    db = str(tmp_path / "fleet.sqlite")
    coord = start_coordinator(mosquitto, db)
    pub = publisher(mosquitto)
    try:
        wait_coordinator_subscribed(pub, db)
        for device in ("pi-a", "pi-b"):  # what both agents send for job "j-same": the same message id
            msg = result(device, "j-same", "conv.onnx", msg_id="result:j-same:conv.onnx")
            pub.publish(topic(device, "results"), messages.encode(msg), qos=1).wait_for_publish(10)
        eventually(
            lambda: (
                {d: fleet(db).get(d, {}).get("results") for d in ("pi-a", "pi-b")} == {"pi-a": 1, "pi-b": 1}
            )
        )
    finally:
        pub.loop_stop()
        stop(coord)


def test_acks_change_only_their_own_devices_deployment(tmp_path, mosquitto):
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'db = "{tmp_path / "fleet.sqlite"}"\nstate_dir = "{tmp_path / "coord"}"\ntick_s = 0.2\n'
        f'[broker]\nurl = "{mosquitto.url}"\n[push]\nretry_s = 600\n'
    )
    out = fleetbench("keygen", "--config", str(config))
    public = out.stdout.split('public_key = "')[1].split('"')[0]
    accept, counted = threading.Event(), []

    def on_chunk(index: int) -> bool:  # the victim takes nothing until told to: its push waits
        counted.append(index)
        return accept.is_set()

    victim = SimulatedDevice("victim", "Board", {}, "a test", BrokerSettings.from_url(mosquitto.url),
                             str(tmp_path / "victim"), public, on_chunk=on_chunk, smoke_ms=5.0)  # fmt: skip
    victim.start()
    assert victim.connected.wait(10)
    coord = start_configured_coordinator(str(config))
    pub = publisher(mosquitto)
    try:
        eventually(
            lambda: (tmp_path / "fleet.sqlite").exists() and "victim" in fleet(str(tmp_path / "fleet.sqlite"))
        )
        store = open_store(str(tmp_path / "fleet.sqlite"), migrate=False)
        model = tmp_path / "model.onnx"
        model.write_bytes(bytes(range(256)) * 1000)  # 256,000 bytes: 4 chunks
        pushed = fleetbench("push", str(model), "--device", "victim", "--config", str(config))
        rollout_id = pushed.stdout.split()[1].rstrip(":")
        push_id = f"{rollout_id}:victim"
        eventually(lambda: len(counted) >= 4)  # the victim said "receiving", the chunks came, it dropped them

        def deployment():
            return store.deployments(rollout_id)[0]

        assert deployment().state == "sending"
        # an "installed" for the victim's push, published by another device, about the victim
        forged = messages.make(messages.PushAckMessage, "attacker",
                               messages.PushAck(push_id=push_id, state="installed", p50_ms=0.1))  # fmt: skip
        pub.publish(topic("attacker", "acks"), messages.encode(forged), qos=1).wait_for_publish(10)
        # a "receiving" from the victim's own topic that asks for a million chunks
        greedy = messages.make(
            messages.PushAckMessage,
            "victim",
            messages.PushAck(push_id=push_id, state="receiving", missing=((0, 1_000_000),)),
        )
        pub.publish(topic("victim", "acks"), messages.encode(greedy), qos=1).wait_for_publish(10)
        # and one whose ranges are not numbers at all
        junk = (
            b'{"kind": "push_ack", "v": 2, "id": "j", "device_id": "victim", "ts": 1, '
            b'"data": {"push_id": "%s", "state": "receiving", "missing": [["a", "b"]]}}' % push_id.encode()
        )
        pub.publish(topic("victim", "acks"), junk, qos=1).wait_for_publish(10)
        eventually(lambda: store.count("dead_letters") >= 1)
        # the loop has read the victim's acks up to the greedy one (sent after the forged one)
        eventually(lambda: (deployment().last_ack_ts or 0) >= greedy.ts)
        assert deployment().state == "sending" and deployment().p50_ms is None, (
            "the forged ack changed nothing"
        )
        assert len(counted) == 4, "no chunk beyond the push's 4 was sent"
        assert "missing chunks beyond the 4 of the push" in coord_log(coord)
        accept.set()  # the victim takes the push now: the rollout was never stuck
        resend = messages.make(
            messages.PushAckMessage,
            "victim",
            messages.PushAck(push_id=push_id, state="receiving", missing=((0, 3),)),
        )
        victim._client.publish(topic("victim", "acks"), messages.encode(resend), qos=1).wait_for_publish(10)
        eventually(lambda: deployment().state == "installed")
        assert deployment().p50_ms == 5.0
    finally:
        pub.loop_stop()
        stop(coord)
        victim.stop()


def test_a_flood_from_a_forged_device_leaves_a_real_agents_reports_flowing(tmp_path, mosquitto, onnx_model):
    """1,000 malformed messages of every kind from one forged id, while a real agent reports."""
    db = str(tmp_path / "fleet.sqlite")
    coord = start_coordinator(mosquitto, db)
    (tmp_path / "state" / "models").mkdir(parents=True)
    shutil.copy(onnx_model, tmp_path / "state" / "models" / "conv.onnx")
    agent = AgentProcess(str(tmp_path), write_config(str(tmp_path / "agent.toml"), mosquitto.url), "real-pi")
    pub = publisher(mosquitto)
    try:
        agent.start()
        agent.wait_note("READY=1")
        eventually(lambda: (fleet(db).get("real-pi") or {}).get("health"))
        store = open_store(db, migrate=False)
        start = time.time()
        sent = []
        for i in range(1000):  # every kind of malformed message, from one forged device id
            kind, payload = MALFORMED[i % len(MALFORMED)]
            sent.append(
                pub.publish(topic("forged-dev", kind), payload.replace(b'"bad-dev"', b'"forged-dev"'), qos=1)
            )
            if i == 500:  # in the middle of the flood, real work for the real agent
                work = job("real-pi", "during-flood", ("conv.onnx",), {"runs": 5, "min_time_s": 0.05})
                pub.publish(topic("real-pi", "jobs"), messages.encode(work), qos=1)
        for info in sent:
            info.wait_for_publish(30)

        def health_since_start():
            return [h for h in store.fleet() if h.device_id == "real-pi" and (h.health_at or 0) > start]

        eventually(lambda: health_since_start() and store.results_for("real-pi", "during-flood"))
        eventually(lambda: store.count("dead_letters") >= 1000)
        # the "done" ack follows the result on the wire: wait for it too, not just the result
        assert eventually(lambda: store.job_ending("real-pi", "during-flood")).state == "done"
        assert len(store.results_for("real-pi", "during-flood")) == 1, "none lost"
        assert "forged-dev" not in {d.device_id for d in store.fleet()}, "garbage registers no device"
        dead = store.dead_letters(limit=10_000, device_id="forged-dev")
        assert len(dead) == 1000 and {d.kind for d in dead} == {"results", "health", "acks", "status"}
        print(
            f"flood of 1,000: the agent's health and result stored {time.time() - start:.1f} s after it began"
        )
    finally:
        pub.loop_stop()
        agent.close()
        stop(coord)


@pytest.mark.parametrize(
    "args, error",
    [
        (
            ("--lut", "resnet20", "--sample", "1000"),
            "--sample 1000 is more than a device takes for one table (500)",
        ),
        (("--lut", "nas-bench-201", "--widths", "50"), "--widths is for --lut of a prunable family"),
        (("--lut", "vgg16"), "--lut 'vgg16' is not one of nas-bench-201"),
        (("--lut", "resnet20", "--lut-dir", "MISSING"), "does not exist"),
        ((), "name a MODEL to benchmark, or --lut SPACE"),
    ],
)
def test_a_lookup_table_job_that_no_device_takes_is_refused_before_anything_is_queued(tmp_path, args, error):
    db = str(tmp_path / "fleet.sqlite")
    open_store(db)
    argv = [str(tmp_path / "gone" / "dir") if a == "MISSING" else a for a in args]
    out = fleetbench("job", "--device", "shed-pi", *argv, "--db", db)
    assert out.returncode == 2 and error in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0
    assert open_store(db, migrate=False).count("outgoing_jobs") == 0
