"""Simulated devices for the demo and the tests: they answer from published latencies.

A simulated device speaks the agent's protocol on the real broker: a retained birth
(platform ``simulated``, capabilities say so and where its numbers come from), health,
``architectures`` jobs answered with the published NAS-Bench-201 latency of its source
device times its drift (an aged board is slower) with log-normal noise, and model
pushes handled by the agent's own receiver and model store (verified, installed,
rolled back, acknowledged as a real agent does), on an event loop of its own.  Its
smoke run is the simulated latency of the architecture named in the pushed model.
Every message it sends says ``"simulated": true``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from agent.deploy import PushReceiver
from agent.errors import BenchmarkError
from agent.modelstore import ModelStore
from agent.transport import messages
from agent.transport.mqtt import BrokerSettings
from agent.transport.topics import DeviceTopics

logger = logging.getLogger(__name__)

_NB201_ARCH = re.compile(rb"\|[a-z_0-9]+~0\|\+\|[a-z_0-9~|+]+\|")


class SimulatedDevice:
    def __init__(
        self,
        device_id: str,
        sku: str,
        latency_ms: dict[str, float],
        source: str,
        settings: BrokerSettings,
        state_dir: str,
        public_key: Optional[str],
        drift: float = 1.0,
        noise: float = 0.03,
        seed: int = 0,
        on_chunk: Optional[Callable[[int], bool]] = None,
        smoke_ms: Optional[float] = None,
    ) -> None:
        self.device_id, self.sku, self.source = device_id, sku, source
        self.latency_ms, self.drift, self.noise = latency_ms, drift, noise
        self.topics = DeviceTopics(device_id)
        os.makedirs(state_dir, exist_ok=True)
        store = ModelStore(os.path.join(state_dir, "models"), state_dir, public_key, 256 * 1024 * 1024)
        self.pushes = PushReceiver(store, lambda data, msg_id: self._send("acks", data, msg_id), self._smoke,
                                   state_dir)  # fmt: skip
        self._loop = asyncio.new_event_loop()  # PushReceiver's installs run on it, as in the agent
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"sim-{device_id}", daemon=True)
        self.rng = np.random.default_rng(seed)
        #: tests: called with each chunk's index; False drops the chunk (an interrupted transfer)
        self.on_chunk = on_chunk
        #: benchmarks: every pushed file "runs" at this latency (it need not be a NAS-Bench-201 model)
        self.smoke_ms = smoke_ms
        self.chunks_received = 0
        #: every model that passed to its smoke run here: path, arch, p50_ms
        self.installed: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self._client = settings.client(f"fleetbench-sim-{device_id}")
        self._client.will_set(self.topics.status, self._status("offline"), qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._settings = settings

    def start(self) -> None:
        self._thread.start()
        self._client.connect_async(self._settings.host, self._settings.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        if self.connected.is_set():
            self._client.publish(
                self.topics.status, self._status("offline"), qos=1, retain=True
            ).wait_for_publish(5)
        self._client.disconnect()
        self._client.loop_stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def age(self, drift: float) -> None:
        """The board slows down (heat, wear): later answers use ``drift``, and health says so."""
        self.drift = drift
        self._send("health", {"health": {}, "degradation": {"index": round(drift - 1.0, 4)}})

    def true_ms(self, arch: str) -> float:
        """What this device's latency for ``arch`` is, before noise."""
        return self.latency_ms[arch] * self.drift

    # -- protocol -------------------------------------------------------------------

    def _status(self, state: str) -> bytes:
        import json

        caps = {"simulated": True, "source": self.source, "drift": self.drift, "backends": ["simulated"]}
        return json.dumps({"v": messages.VERSION, "state": state, "device_id": self.device_id,
                           "ts": time.time(), "platform": "simulated", "sku": self.sku,
                           "version": "simulated", "capabilities": caps}).encode()  # fmt: skip

    def _send(self, kind: str, data: dict[str, Any], msg_id: Optional[str] = None) -> None:
        env = messages.make(kind, self.device_id, {**data, "simulated": True}, msg_id)
        self._client.publish(self.topics.topic(kind), env.encode(), qos=1)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            return
        client.subscribe([(self.topics.jobs, 1), (self.topics.models, 1)])  # before "online", as the agent
        client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
        self.age(self.drift)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            env = messages.decode(msg.payload)
        except messages.MessageError:
            return
        try:
            if msg.topic == self.topics.jobs:
                self._on_job(env.data)
            elif msg.topic == self.topics.models:
                self._loop.call_soon_threadsafe(self._on_push, env.data)
        except Exception:  # a simulator bug must not kill paho's thread
            logger.exception("simulated device %s failed on %s", self.device_id, msg.topic)

    def _on_job(self, job: dict[str, Any]) -> None:
        job_id = job["job_id"]
        items = job.get("architectures") or []
        self._send(
            "acks",
            {"job_id": job_id, "state": "accepted", "architectures": len(items)},
            f"ack:{job_id}:accepted",
        )
        for item in items:
            arch = item["arch"]
            if arch not in self.latency_ms:
                self._send("acks", {"job_id": job_id, "state": "model_failed", "model": arch,
                                    "error": "no published latency for it"})  # fmt: skip
                continue
            ms = self.true_ms(arch) * float(np.exp(self.rng.normal(0.0, self.noise)))
            name = f"{item['space']}:{arch}"
            result = {"stats": {"p50_ms": ms, "mean_ms": ms, "runs": 1}, "backend": "simulated"}
            self._send("results", {"job_id": job_id, "model": name, "architecture": item, "result": result,
                                   "conditions": {"simulated": True}}, f"result:{job_id}:{name}")  # fmt: skip
        self._send("acks", {"job_id": job_id, "state": "done", "measured": len(items)}, f"ack:{job_id}:done")

    def _on_push(self, data: Any) -> None:  # on the loop
        if isinstance(data, dict) and data.get("type") == "chunk":
            index = data.get("index")
            if self.on_chunk is not None and isinstance(index, int) and not self.on_chunk(index):
                return
            self.chunks_received += 1
        self.pushes.handle(data)

    async def _smoke(self, path: str, runs: int) -> dict[str, Any]:
        """The smoke run: the simulated latency of the architecture the pushed model holds."""
        if self.smoke_ms is not None:
            self.installed.append({"path": path, "arch": None, "p50_ms": self.smoke_ms})
            return {"stats": {"p50_ms": self.smoke_ms}, "backend": "simulated"}
        with open(path, "rb") as fh:
            found = _NB201_ARCH.search(fh.read())
        arch = found.group(0).decode() if found else None
        if arch not in self.latency_ms:
            raise BenchmarkError(f"{os.path.basename(path)} is not a NAS-Bench-201 model this device knows")
        ms = self.true_ms(arch) * float(np.exp(self.rng.normal(0.0, self.noise)))
        self.installed.append({"path": path, "arch": arch, "p50_ms": ms})
        return {"stats": {"p50_ms": ms}, "backend": "simulated"}
