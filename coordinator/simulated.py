"""Simulated devices for the demo and the tests: they answer from published latencies.

A simulated device speaks the agent's protocol on the real broker: a retained birth
(platform ``simulated``, capabilities say so and where its numbers come from), health,
``architectures`` jobs answered with the published NAS-Bench-201 latency of its source
device times its drift (an aged board is slower) with log-normal noise, and model
pushes received, verified and installed with the agent's own model store.  Its smoke
run is the simulated latency of the architecture named in the pushed ONNX model.
Every message it sends says ``"simulated": true``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from agent.modelstore import ModelStore
from agent.transport import messages
from agent.transport.mqtt import BrokerSettings
from agent.transport.push import Manifest, PushError, parse_chunk, ranges
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
        self.models = ModelStore(f"{state_dir}/models", state_dir, public_key, 256 * 1024 * 1024)
        self.rng = np.random.default_rng(seed)
        #: tests: called with each chunk's index; False drops the chunk (an interrupted transfer)
        self.on_chunk = on_chunk
        #: benchmarks: every pushed file "runs" at this latency (it need not be a NAS-Bench-201 model)
        self.smoke_ms = smoke_ms
        self.chunks_received = 0
        self.installed: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self._ended: dict[str, tuple[str, dict[str, Any]]] = {}
        self._client = settings.client(f"fleetbench-sim-{device_id}")
        self._client.will_set(self.topics.status, self._status("offline"), qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._settings = settings

    def start(self) -> None:
        self._client.connect_async(self._settings.host, self._settings.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        if self.connected.is_set():
            self._client.publish(
                self.topics.status, self._status("offline"), qos=1, retain=True
            ).wait_for_publish(5)
        self._client.disconnect()
        self._client.loop_stop()

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
                self._on_push(env.data)
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

    def _on_push(self, data: dict[str, Any]) -> None:
        if data.get("type") == "manifest":
            push_id = str((data.get("manifest") or {}).get("push_id"))
            if push_id in self._ended:
                state, fields = self._ended[push_id]
                self._ack(push_id, state, **fields)
                return
            try:
                manifest, missing = self.models.offer(data.get("manifest"))
            except PushError as err:
                self._ack(push_id, "rejected", error=str(err))
                return
            if missing:
                self._ack(push_id, "receiving", missing=ranges(missing), chunks=manifest.chunks)
            else:
                self._install(manifest)
        elif data.get("type") == "chunk":
            push_id, index, raw = parse_chunk(data)
            if push_id in self._ended or (self.on_chunk is not None and not self.on_chunk(index)):
                return
            self.chunks_received += 1
            try:
                complete = self.models.add_chunk(push_id, index, raw)
            except PushError:
                return
            if complete is not None:
                self._install(complete)

    def _install(self, manifest: Manifest) -> None:
        try:
            installed = self.models.install(manifest.push_id)
        except PushError as err:
            self._end(manifest.push_id, "rejected", error=str(err))
            return
        if self.smoke_ms is not None:
            self.installed.append(
                {"name": manifest.name, "version": manifest.version, "p50_ms": self.smoke_ms}
            )
            self._end(manifest.push_id, "installed", name=manifest.name, version=manifest.version,
                      p50_ms=self.smoke_ms, previous=installed.previous)  # fmt: skip
            return
        with open(installed.path, "rb") as fh:
            found = _NB201_ARCH.search(fh.read())
        arch = found.group(0).decode() if found else None
        if arch not in self.latency_ms:
            self.models.rollback(manifest.name)
            self._end(manifest.push_id, "rolled_back", error="smoke run failed: not a NAS-Bench-201 model")
            return
        ms = self.true_ms(arch) * float(np.exp(self.rng.normal(0.0, self.noise)))
        self.installed.append(
            {"name": manifest.name, "version": manifest.version, "arch": arch, "p50_ms": ms}
        )
        self._end(manifest.push_id, "installed", name=manifest.name, version=manifest.version, p50_ms=ms,
                  previous=installed.previous)  # fmt: skip

    def _ack(self, push_id: str, state: str, **fields: Any) -> None:
        self._send("acks", {"job_id": push_id, "push_id": push_id, "state": state, **fields})

    def _end(self, push_id: str, state: str, **fields: Any) -> None:
        self._ended[push_id] = (state, fields)
        self._send(
            "acks",
            {"job_id": push_id, "push_id": push_id, "state": state, **fields},
            f"ack:{push_id}:{state}",
        )
