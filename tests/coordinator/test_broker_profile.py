"""The shipped broker profile, end to end: `fleetbench broker-config` writes a mosquitto
configuration, a real mosquitto starts from it as it is, and over mutual TLS a real agent and
the coordinator work; one device cannot speak for another, a client without a certificate of
the fleet is turned away, and a revoked device cannot connect again."""

from __future__ import annotations

import json
import os
import threading

from daemon_proc import AgentProcess, eventually, fleetbench, start_configured_coordinator, stop, write_config
from tls import DEVICE, client_files, connect, handshake

from coordinator.store import open_store


def pinned_key(db: str):
    """The key fingerprint tls-pi's status announced, once the coordinator has stored it."""
    import sqlalchemy

    try:
        device = open_store(db, migrate=False).device(DEVICE)
    except sqlalchemy.exc.OperationalError:  # the coordinator has not made its tables yet
        return None
    return device.key if device else None


def test_the_profile_runs_an_agent_and_the_coordinator_over_mutual_tls_and_denies_the_rest(tmp_path, profile):
    coord_conf, directory, broker = profile
    with open(os.path.join(directory, "mosquitto.conf")) as fh:
        conf = fh.read()
    for line in ("require_certificate true", "use_identity_as_username true", "allow_anonymous false",
                 "max_queued_messages 1000000", "persistence true"):  # fmt: skip
        assert line in conf
    # the device's settings come from its enrollment, as the README says to copy them
    with open(os.path.join(directory, "clients", DEVICE, "fleetbench.toml")) as fh:
        enrolled = fh.read().replace("/etc/fleetbench/", os.path.join(directory, "clients", DEVICE) + "/")
    agent_conf = write_config(
        str(tmp_path / "agent.toml"), None, enrolled.replace(f'device_id = "{DEVICE}"\n', "")
    )
    agent = AgentProcess(str(tmp_path / "agent"), agent_conf, DEVICE)
    os.makedirs(agent.workdir, exist_ok=True)
    coord = start_configured_coordinator(coord_conf)
    try:
        agent.argv = [*agent.argv, "--device-id", DEVICE]
        agent.start()
        agent.wait_note("READY=1")
        db = str(tmp_path / "fleet.sqlite")
        eventually(lambda: pinned_key(db), 60)
        job = ("job", "--device", DEVICE, "example:squeezenet", "--runs", "3", "--min-time", "0")
        out = fleetbench(*job, "--config", coord_conf, "--timeout", "120", "--format", "json", timeout_s=200)
        assert out.returncode == 0, out.stderr
        (result,) = [json.loads(line) for line in out.stdout.splitlines()]
        assert result["device_id"] == DEVICE and result["result"]["stats"]["n"] == 3

        # another enrolled device can neither speak for tls-pi nor read its jobs
        intruder, reason = connect(broker.port, client_files(directory, "intruder"))
        assert str(reason) == "Success"
        seen: list = []
        answered: list = []
        events = {"subscribed": threading.Event(), "published": threading.Event()}
        intruder.on_message = lambda c, u, m: seen.append(m.topic)
        intruder.on_subscribe = lambda c, u, mid, codes, props: events["subscribed"].set()
        intruder.on_publish = lambda c, u, mid, code, props: (
            answered.append(code),
            events["published"].set(),
        )
        intruder.subscribe(f"fleetbench/v1/devices/{DEVICE}/jobs", qos=1)
        assert events["subscribed"].wait(10)
        intruder.publish(f"fleetbench/v1/devices/{DEVICE}/results", b"{}", qos=1)
        assert events["published"].wait(10)
        assert str(answered[0]) == "Not authorized", answered  # MQTT 5's PUBACK says why
        # a job for tls-pi reaches it (it answers) and not the intruder subscribed to its jobs
        out = fleetbench(*job, "--config", coord_conf, "--timeout", "120", timeout_s=200)
        assert out.returncode == 0, out.stderr
        assert seen == [], "the broker delivered tls-pi's job to another device"
        intruder.loop_stop()
        intruder.disconnect()
        store = open_store(db, migrate=False)
        assert [d.device_id for d in store.fleet()] == [DEVICE]
        assert store.dead_letters(device_id=DEVICE) == []

        # a client whose certificate another CA issued is turned away at the handshake
        other = tmp_path / "other"
        out = fleetbench("broker-config", "--dir", str(other), "--host", "127.0.0.1", "--port", "1")
        assert out.returncode == 0, out.stderr
        assert fleetbench("enroll", "stranger", "--dir", str(other)).returncode == 0
        stranger = (client_files(directory, DEVICE)[0], *client_files(str(other), "stranger")[1:])
        assert handshake(broker.port, client_files(directory, "intruder")) == "CONNACK"
        assert handshake(broker.port, stranger) != "CONNACK"  # mosquitto closes without an alert

        # revoked: the coordinator refuses what it sends, and the broker its next connection
        out = fleetbench("revoke", "intruder", "--config", coord_conf)
        assert out.returncode == 0 and "on the CRL" in out.stderr, out.stderr
        broker.reload()  # SIGHUP: mosquitto reads the CRL again (when it gets to it: poll)
        eventually(
            lambda: "certificate revoked" in handshake(broker.port, client_files(directory, "intruder")), 30
        )
    finally:
        agent.close()
        stop(coord)
