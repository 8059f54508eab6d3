"""Simulated devices for the demo and the tests: they answer from published latencies.

A simulated device speaks the agent's protocol on the real broker, through the same
message classes: a retained birth (platform ``simulated``, with where its numbers come
from), health, ``architectures`` jobs answered with the published NAS-Bench-201 latency
of its source device times its drift (an aged board is slower) with log-normal noise,
and model pushes handled by the agent's own receiver and model store (verified,
installed, rolled back, acknowledged as a real agent does), on an event loop of its own.
Its smoke run is the simulated latency of the architecture named in the pushed model: a
session's offset, then each run's jitter, with the median and its interval. Its results
are ordinary result records that say what they are: backend and timer ``simulated``,
system ``simulated``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from concurrent.futures import Future
from typing import Any, Callable, Literal, Optional, cast

import numpy as np

from agent.bench.metadata import DeviceSnapshot
from agent.bench.results import BackendInfo, BenchResult, ModelInfo, ProtocolInfo, TimerInfo
from agent.bench.stats import LatencyStats, median_interval
from agent.collectors.degradation import DegradationState
from agent.common.errors import BenchmarkError
from agent.deploy import PushReceiver, SmokeResult
from agent.device.publisher import Publisher
from agent.device.trust import Trust
from agent.modelstore import ModelStore
from agent.protocol.errors import ProtocolError
from agent.protocol.jobs import JobSpec
from agent.protocol.messages import (
    VERSION,
    Envelope,
    HealthMessage,
    JobAckMessage,
    JobMessage,
    ResultMessage,
    StatusMessage,
    decode,
    encode,
    make,
)
from agent.protocol.reports import Conditions, HealthData, JobAck, ResultData, Simulation, StatusData
from agent.protocol.signing import TrustError
from agent.protocol.topics import DeviceTopics, Topic
from agent.transport.mqtt import BrokerSettings

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
        smoke_slowdown: tuple[float, ...] = (),
    ) -> None:
        self.device_id, self.sku, self.source = device_id, sku, source
        self.latency_ms, self.drift, self.noise = latency_ms, drift, noise
        self.topics = DeviceTopics(device_id)
        os.makedirs(state_dir, exist_ok=True)
        store = ModelStore(os.path.join(state_dir, "models"), state_dir, 256 * 1024 * 1024)
        #: it checks commands as an agent does (a demo pins the coordinator's key in each)
        self.trust = Trust(state_dir, public_key, allow_unsigned=not public_key)
        self.pushes = PushReceiver(store, _Direct(self), self._smoke, state_dir, self.trust,
                                   lambda: self.device_id)  # fmt: skip
        self._loop = asyncio.new_event_loop()  # PushReceiver's installs run on it, as in the agent
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"sim-{device_id}", daemon=True)
        self.rng = np.random.default_rng(seed)
        #: tests: called with each chunk's index; False drops the chunk (an interrupted transfer)
        self.on_chunk = on_chunk
        #: benchmarks: every pushed file "runs" at this latency (it need not be a NAS-Bench-201 model)
        self.smoke_ms = smoke_ms
        #: tests: the first smoke runs are this many times slower than the device's latency (a
        #: board that runs hotter once the model is deployed), one factor each, then as sampled
        self.smoke_slowdown = list(smoke_slowdown)
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
        # the index as an agent reports it: the reference workload's time now over when new (1.00 new)
        self.send(HealthMessage, HealthData(degradation=DegradationState(index=round(drift, 4))))

    def true_ms(self, arch: str) -> float:
        """What this device's latency for ``arch`` is, before noise."""
        return self.latency_ms[arch] * self.drift

    # -- protocol -------------------------------------------------------------------

    def _status(self, state: str) -> bytes:
        simulation = Simulation(source=self.source, drift=self.drift)
        data = StatusData(
            state=cast(Literal["online", "offline"], state),
            protocol=VERSION,
            platform="simulated",
            sku=self.sku,
            version="simulated",
            simulation=simulation,
            key=self.trust.fingerprint,
        )
        return encode(make(StatusMessage, self.device_id, data))

    def send(self, cls: type[Envelope], data: Any, msg_id: Optional[str] = None) -> None:
        msg = make(cls, self.device_id, data, msg_id)
        self._client.publish(self.topics.topic(cls.TOPIC), encode(msg), qos=1)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            return
        client.subscribe([(self.topics.jobs, 1), (self.topics.models, 1)])  # before "online", as the agent
        client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
        self.age(self.drift)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            kind = self.topics.parse(msg.topic)
            message = decode(bytes(msg.payload), Topic(self.device_id, kind or ""))
        except ProtocolError:
            return
        try:
            if isinstance(message, JobMessage):  # on the loop, as pushes: one thread takes sequence numbers
                self._loop.call_soon_threadsafe(self._on_job, message.data)
            else:
                self._loop.call_soon_threadsafe(self._on_push, message)
        except Exception:  # a simulator bug must not kill paho's thread
            logger.exception("simulated device %s failed on %s", self.device_id, msg.topic)

    def _on_job(self, job: JobSpec) -> None:
        job_id = job.job_id
        try:
            self.trust.check(job, self.device_id, f"job {job_id}")
            self.trust.consume(job.seq, f"job {job_id}")
        except TrustError as err:
            self.send(JobAckMessage, JobAck(job_id=job_id, state="rejected", error=str(err)))
            return
        self.send(
            JobAckMessage,
            JobAck(job_id=job_id, state="accepted", architectures=len(job.all_architectures)),
            f"ack:{job_id}:accepted",
        )
        for item in job.all_architectures:
            arch = item.arch
            if arch not in self.latency_ms:
                self.send(JobAckMessage, JobAck(job_id=job_id, state="model_failed", model=item.key,
                                                error="no published latency for it"))  # fmt: skip
                continue
            ms = self.true_ms(arch) * float(np.exp(self.rng.normal(0.0, self.noise)))
            data = ResultData(job_id=job_id, model=item.key, result=simulated_result(item.key, ms),
                              architecture=item, conditions=Conditions(),
                              probe=job.is_probe(item.key))  # fmt: skip
            self.send(ResultMessage, data, f"result:{job_id}:{item.key}")
        self.send(JobAckMessage, JobAck(job_id=job_id, state="done", measured=len(job.all_architectures)),
                  f"ack:{job_id}:done")  # fmt: skip

    def _on_push(self, message: Envelope) -> None:  # on the loop
        if message.kind == "push_chunk":
            if self.on_chunk is not None and not self.on_chunk(message.data.index):  # type: ignore[attr-defined]
                return
            self.chunks_received += 1
        self.pushes.handle(message)

    async def _smoke(self, path: str, runs: int) -> SmokeResult:
        """The smoke run: the simulated latency of the architecture the pushed model holds."""
        if self.smoke_ms is not None:
            self.installed.append({"path": path, "arch": None, "p50_ms": self.smoke_ms})
            return SmokeResult(self.smoke_ms, "simulated")
        with open(path, "rb") as fh:
            found = _NB201_ARCH.search(fh.read())
        arch = found.group(0).decode() if found else None
        if arch not in self.latency_ms:
            raise BenchmarkError(f"{os.path.basename(path)} is not a NAS-Bench-201 model this device knows")
        # this session's conditions (the noise between measurements), then each run's jitter
        slowdown = self.smoke_slowdown.pop(0) if self.smoke_slowdown else 1.0
        session = self.true_ms(arch) * slowdown * float(np.exp(self.rng.normal(0.0, self.noise)))
        runs_ms = np.sort(session * np.exp(self.rng.normal(0.0, self.noise, size=max(runs, 1))))
        ms = float(np.median(runs_ms))
        self.installed.append({"path": path, "arch": arch, "p50_ms": ms})
        return SmokeResult(ms, "simulated", median_interval(runs_ms.tolist()))


class _Direct(Publisher):
    """The push receiver's publisher for a simulated device: straight to its client, no outbox."""

    def __init__(self, device: SimulatedDevice) -> None:
        self.device = device

    def send(self, cls: type[Envelope], data: Any, msg_id: Optional[str] = None) -> Optional[Future[str]]:
        self.device.send(cls, data, msg_id)
        return None


def simulated_result(name: str, ms: float, samples: int = 1) -> BenchResult:
    """A result record for a latency a simulated device "measured": it says what it is."""
    ns = int(ms * 1e6)
    return BenchResult(
        model=ModelInfo(path=name, name=name, format="simulated", size_bytes=0, sha256="", inputs=()),
        backend=BackendInfo(name="simulated", version="", threads=1, runtime="simulated"),
        timer=TimerInfo(impl="simulated", clock="published latencies", resolution_ns=1),
        protocol=ProtocolInfo(
            warmup_runs=0,
            warmup_time_s=0.0,
            runs=samples,
            min_time_s=0.0,
            max_time_s=0.0,
            seed=0,
            isolated=False,
            warmup_done=0,
            measure_time_s=ms / 1e3,
            load_ms=0.0,
            first_run_ms=ms,
        ),
        stats=LatencyStats.from_ns([ns] * samples),
        device=DeviceSnapshot(
            hostname="",
            system="simulated",
            kernel="",
            machine="",
            python="",
            board=None,
            cpu_model=None,
            cores_logical=None,
            cores_physical=None,
            freq_policies=(),
            temperatures_c=(),
            rpi_throttled=None,
            battery_percent=None,
            battery_plugged=None,
            load_1m=None,
        ),
        samples_ns=(ns,) * samples,
    )
