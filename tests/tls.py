"""The shipped broker profile for tests: `fleetbench broker-config`, identities, and a real
mosquitto started from the profile's own mosquitto.conf; TLS clients that say what the broker
answered."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest
from broker import free_port
from daemon_proc import fleetbench

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


#: an MQTT 3.1.1 CONNECT with an empty client id (the broker names it after the certificate)
CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"


def handshake(port: int, files) -> str:
    """Connect over TLS with ``files`` (ca, cert, key) and send CONNECT: "CONNACK" if the
    broker took the client, else the TLS alert it answered with (e.g. "certificate revoked")."""
    ca, cert, key = files
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=20) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
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


def connect(port: int, files, protocol: int = 5, client_id: str = ""):
    """A paho client with ``files`` (ca, cert, key); (client, CONNACK reason) once answered."""
    import paho.mqtt.client as mqtt

    done = threading.Event()
    result: dict = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
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
    """(coordinator config, profile directory, broker): a coordinator config using the profile's
    coordinator identity, devices ``tls-pi`` and ``intruder`` enrolled, the broker running."""
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
