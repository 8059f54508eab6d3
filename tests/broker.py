"""A real mosquitto broker for tests: its own config, a free port on 127.0.0.1, stoppable."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from typing import Callable, Optional

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    def __init__(self, workdir: str) -> None:
        self.exe = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
        )
        self.port = free_port()
        self.dir = workdir
        self.conf = os.path.join(workdir, "mosquitto.conf")
        with open(self.conf, "w") as fh:
            fh.write(
                f"listener {self.port} 127.0.0.1\n"
                "allow_anonymous true\n"
                "persistence true\n"
                f"persistence_location {workdir}/\n"
                f"log_dest file {workdir}/mosquitto.log\n"
                "max_queued_messages 100000\n"
                # Started as root, mosquitto 2.0 drops to the `mosquitto` user Debian's package
                # creates, which cannot write this root-owned test directory: no log, and no
                # persistence, so subscriber sessions vanish at every broker restart.
                + ("user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else "")
            )
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-c", self.conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:  # wait for the port to accept, not a fixed time
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode}; see {self.dir}/mosquitto.log"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
                continue
            if not os.path.exists(os.path.join(self.dir, "mosquitto.log")):
                raise RuntimeError(f"mosquitto cannot write to {self.dir} (its persistence would be lost)")
            return
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(str(tmp_path))
    if broker.exe is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed; .ci/run installs it")
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    broker.start()
    yield broker
    broker.stop()


class Receiver:
    """A coordinator-like subscriber: persistent session, QoS 1, collects envelopes by topic."""

    def __init__(self, broker: Mosquitto, topic: str, client_id: str = "test-receiver") -> None:
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.payloads: list[tuple[str, bytes, bool]] = []
        #: envelope ids per topic suffix ("results", "status", ...), indexed as messages arrive,
        #: so waiting on them costs O(1) per message, not a re-decode of everything received
        self.ids: dict[str, list[str]] = {}
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect_async("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        payload = bytes(msg.payload)
        try:
            msg_id = json.loads(payload).get("id")
        except (ValueError, AttributeError, RecursionError):  # the tests send garbage on purpose
            msg_id = None
        with self._cond:
            self.payloads.append((msg.topic, payload, bool(msg.retain)))
            if msg_id:
                self.ids.setdefault(msg.topic.rsplit("/", 1)[-1], []).append(msg_id)
            self._cond.notify_all()

    def wait_ids(self, kind: str, expected: set, timeout_s: float = 60.0) -> list:
        """Wait until every id in ``expected`` has arrived on ``kind``; returns all ids seen there."""
        seen: set = set()
        done = [0]

        def arrived(_payloads):
            got = self.ids.get(kind, [])
            seen.update(got[done[0] :])
            done[0] = len(got)
            return expected <= seen

        self.wait_for(arrived, timeout_s)
        return list(self.ids.get(kind, []))

    def count_ids(self, kind: str) -> int:
        with self._cond:
            return len(self.ids.get(kind, []))

    def wait_subscribed(self, timeout_s: float = 10.0) -> None:
        assert self._subscribed.wait(timeout_s), "receiver did not subscribe"

    def wait_for(self, predicate: Callable[[list], bool], timeout_s: float = 30.0) -> list:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self.payloads), timeout_s)
            assert ok, f"timed out; received {len(self.payloads)} message(s)"
            return list(self.payloads)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
