"""The shipped broker profile, end to end: `fleetbench broker-config` writes a mosquitto
configuration, a real mosquitto starts from it as it is, and over mutual TLS a real agent and
the coordinator work; one device cannot speak for another, a client without a certificate of
the fleet is turned away, and a revoked device cannot connect again."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest
from broker import free_port
from daemon_proc import AgentProcess, eventually, fleetbench, start_configured_coordinator, stop, write_config

from coordinator.store import open_store

DEVICE = "tls-pi"


class ProfileBroker:
    """mosquitto started from the profile's own mosquitto.conf, unchanged."""

    def __init__(self, conf: str, port: int) -> None:
        exe = "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else "mosquitto"
        self.port = port
        self.proc = subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)  # waiting for the port to accept, not for a fixed time
        raise RuntimeError("mosquitto did not listen")

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def pinned_key(db: str):
    """The key fingerprint tls-pi's status announced, once the coordinator has stored it."""
    import sqlalchemy

    try:
        device = open_store(db, migrate=False).device(DEVICE)
    except sqlalchemy.exc.OperationalError:  # the coordinator has not made its tables yet
        return None
    return device.key if device else None


#: an MQTT 3.1.1 CONNECT with an empty client id (the broker names it after the certificate)
CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"


def handshake(port: int, files) -> str:
    """Connect over TLS with ``files`` (ca, cert, key) and send CONNECT: "CONNACK" if the
    broker took the client, else the TLS alert it answered with (e.g. "certificate revoked")."""
    ca, cert, key = files
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(CONNECT)
                answer = tls.recv(4)
    except ssl.SSLError as err:
        return str(err.reason or err).lower().replace("_", " ")
    except ConnectionError as err:
        return f"connection closed: {err}"
    return "CONNACK" if answer[:1] == b"\x20" else f"unexpected {answer!r}"


def client_files(profile: str, name: str) -> tuple[str, str, str]:
    d = os.path.join(profile, "clients", name)
    return os.path.join(d, "ca.crt"), os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key")


def connect(port: int, files, protocol: int = 5):
    """A paho client with ``files`` (ca, cert, key); (client, CONNACK reason) once answered."""
    import paho.mqtt.client as mqtt

    done = threading.Event()
    result: dict = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=protocol)
    ca, cert, key = files
    client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)

    def on_connect(c, u, flags, reason, props):
        result["reason"] = reason
        done.set()

    def on_disconnect(c, u, flags, reason, props):
        result.setdefault("reason", reason)
        done.set()

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except (ssl.SSLError, OSError) as err:
        return client, f"refused: {err}"
    client.loop_start()
    assert done.wait(20), "no answer from the broker"
    return client, result["reason"]


@pytest.fixture
def profile(tmp_path):
    port = free_port()
    coord_conf = tmp_path / "coordinator.toml"
    coord_conf.write_text(
        f'db = "{tmp_path / "fleet.sqlite"}"\nstate_dir = "{tmp_path / "coord"}"\ntick_s = 0.2\n'
        "[rerank]\nenabled = false\n"
    )
    directory = str(tmp_path / "coord" / "broker")
    out = fleetbench("broker-config", "--config", str(coord_conf), "--host", "127.0.0.1", "--port", str(port),
                     "--bind", "127.0.0.1", "--user", "root")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert fleetbench("keygen", "--config", str(coord_conf)).returncode == 0
    for name, role in (("fleetbench-coordinator", "coordinator"), (DEVICE, "device"), ("intruder", "device")):
        out = fleetbench("enroll", name, "--role", role, "--broker", f"mqtts://127.0.0.1:{port}",
                         "--config", str(coord_conf))  # fmt: skip
        assert out.returncode == 0, out.stderr
    ca, cert, key = client_files(directory, "fleetbench-coordinator")
    with open(coord_conf, "a") as fh:
        fh.write(f'[broker]\nurl = "mqtts://127.0.0.1:{port}"\nca_file = "{ca}"\ncert_file = "{cert}"\n'
                 f'key_file = "{key}"\n')  # fmt: skip
    broker = ProfileBroker(os.path.join(directory, "mosquitto.conf"), port)
    yield str(coord_conf), directory, broker
    broker.close()


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
        broker.reload()
        assert "certificate revoked" in handshake(broker.port, client_files(directory, "intruder"))
    finally:
        agent.close()
        stop(coord)
