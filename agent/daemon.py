"""The agent daemon: one asyncio loop that ties collectors, jobs and the transport together.

    start:   state dir -> identity -> outbox -> broker link -> collectors -> READY=1
    run:     health every health.interval_s; degradation probe when due, idle and cool;
             jobs from MQTT, one at a time, each model in a worker process;
             WATCHDOG=1 at half of WATCHDOG_USEC while the loop and the link are healthy
    SIGHUP:  reload the configuration (a bad file is logged and the old one kept)
    SIGTERM: STOPPING=1, stop the running benchmark (its job stays on disk and resumes
             at the next start with the models it had not finished), say "offline",
             leave unsent messages in the outbox

Blocking work stays at the edges: sysfs reads in the default executor, benchmarks
and the reference workload in spawned worker processes, MQTT in paho's thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Optional

from agent import __version__
from agent.collectors import identity as identity_mod
from agent.collectors._sysfs import Runner, SysfsReader
from agent.collectors.degradation import DegradationTracker, reference_workload
from agent.collectors.health import HealthMonitor, HealthSample
from agent.config import AgentConfig, ConfigError
from agent.deploy import PushReceiver
from agent.errors import FleetbenchError, WorkerCancelledError
from agent.files import write_text_atomic
from agent.jobs import (
    Job,
    JobError,
    JobInbox,
    JobStore,
    bench_target,
    blocked_by,
    cache_path,
    lut_target,
    parse_job,
    resolve_model,
)
from agent.modelstore import ModelStore
from agent.sdnotify import Notifier
from agent.tasks import Supervised
from agent.transport import discovery, homeassistant, messages
from agent.transport.mqtt import BrokerSettings, MqttLink, RawHandler
from agent.transport.outbox import Outbox
from agent.transport.topics import DeviceTopics

logger = logging.getLogger(__name__)

STATUS_FILE = "status.json"
# How often a waiting job looks at the device again.
RECHECK_S = 10.0
PROGRESS_EVERY_S = 5.0


class Agent(Supervised):
    name = "agent"

    def __init__(
        self,
        config: AgentConfig,
        reload: Optional[Callable[[], AgentConfig]] = None,
        reader: Optional[SysfsReader] = None,
        run_helper: Optional[Runner] = None,
        notifier: Optional[Notifier] = None,
    ) -> None:
        super().__init__()
        self.config = config
        self._reload = reload
        self.reader = reader or SysfsReader()
        self._run_helper = run_helper
        self.notifier = notifier or Notifier()
        self.started_at = time.time()
        self.link: Optional[MqttLink] = None
        self.broker_url: Optional[str] = None
        self.current: Optional[dict[str, Any]] = None
        self.last_health: Optional[HealthSample] = None
        self.jobs_done = 0
        self._cancel = threading.Event()  # set on stop: running workers are killed
        self._stop: Optional[asyncio.Event] = None
        self._jobs: Optional[asyncio.Queue[Job]] = None
        self._busy: Optional[asyncio.Lock] = None  # one measurement at a time: jobs and the probe
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._advertiser: Optional[discovery.Advertiser] = None

    # -- lifecycle ----------------------------------------------------------------

    async def run(self, install_signals: bool = True) -> int:
        """Run until stopped (SIGTERM/SIGINT, or ``stop()``); signals only in the main thread."""
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()  # made here: on Python 3.9 they bind to the loop they are made in
        self._jobs = asyncio.Queue()
        self._busy = asyncio.Lock()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        try:
            await self._start()
            self.notifier.ready(f"device {self.identity.device_id}, broker {self.broker_url or 'searching'}")
            logger.info("agent %s up (state in %s)", self.identity.device_id, self.config.state_dir)
            await self._stop.wait()
        finally:
            await self._shutdown()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
        return 0

    def stop(self) -> None:
        """Stop gracefully (call from the loop's thread; from others use ``stop_threadsafe``)."""
        if self._stop is not None and not self._stop.is_set():
            logger.info("stopping")
            self.notifier.stopping()
            self._cancel.set()
            self._stop.set()

    def stop_threadsafe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.stop)

    async def _start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        try:
            os.makedirs(cfg.state_dir, exist_ok=True)
            os.makedirs(cfg.model_dir, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"state_dir {cfg.state_dir!r} cannot be created: {err.strerror}") from None
        if not os.access(cfg.state_dir, os.W_OK):
            raise ConfigError(f"state_dir {cfg.state_dir!r} is not writable by this user")
        self.identity = await loop.run_in_executor(None, identity_mod.detect, self.reader, cfg.device_id)
        self.capabilities = await loop.run_in_executor(
            None, identity_mod.capabilities, self.reader, self.identity
        )
        self.topics = DeviceTopics(self.identity.device_id)
        self.outbox = Outbox(
            os.path.join(cfg.state_dir, "outbox.sqlite"),
            cfg.outbox.max_messages,
            cfg.outbox.max_age_days * 86400,
        )
        self.monitor = await loop.run_in_executor(None, HealthMonitor, self.reader, self._run_helper)
        self.degradation = DegradationTracker(
            os.path.join(cfg.state_dir, "degradation.json"),
            cfg.degradation.interval_s,
            cfg.degradation.max_load_per_core,
            cfg.degradation.max_temperature_c,
        )
        self.store = JobStore(os.path.join(cfg.state_dir, "jobs"))
        self.inbox = JobInbox(self.store, self._send)
        self.pushes = PushReceiver(
            ModelStore(cfg.model_dir, cfg.state_dir, cfg.models.public_key, cfg.models.max_bytes),
            lambda data, msg_id: self._send("acks", data, msg_id=msg_id),
            self._smoke,
            cfg.state_dir,
        )
        for job in self.store.pending():
            logger.info(
                "resuming job %s (%d of %d items left)", job.job_id, len(job.remaining), len(job.items)
            )
            self._jobs.put_nowait(job)  # type: ignore[union-attr]
        if cfg.broker.url:
            self._connect(cfg.broker.url)
        else:
            self._spawn(self._search_broker())
        if cfg.discovery.enabled:
            self._spawn(self._advertise())
        self._spawn(self._health_loop())
        self._spawn(self._job_loop())
        if cfg.degradation.enabled:
            self._spawn(self._degradation_loop())
        if self.notifier.watchdog_s:
            self._spawn(self._watchdog_loop())
        self._write_status("running")

    async def _shutdown(self) -> None:
        self._cancel.set()
        await self._cancel_tasks()
        if hasattr(self, "pushes"):  # an install's smoke run was cancelled above: let it roll back
            try:
                await asyncio.wait_for(self.pushes.wait_idle(), 10)
            except asyncio.TimeoutError:
                logger.warning("a model install did not finish stopping")
        if self._advertiser is not None:
            try:
                await asyncio.wait_for(self._advertiser.stop(), 5)
            except (OSError, asyncio.TimeoutError) as err:
                logger.debug("zeroconf did not stop cleanly: %s", err)
        if self.link is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.link.stop)
        if hasattr(self, "outbox"):
            self._write_status("stopped")
            self.outbox.close()
        self.notifier.close()

    # -- broker ---------------------------------------------------------------------

    def _connect(self, url: str) -> None:
        settings = BrokerSettings.from_config(self.config.broker, url)
        ha = self.config.homeassistant
        raw: dict[str, RawHandler] = {}
        if ha.enabled:
            raw[homeassistant.status_topic(ha.prefix)] = self._on_ha_status
        self.link = MqttLink(
            settings,
            self.topics,
            self.outbox,
            on_message=self._on_message_thread,
            on_connected=self._on_connected,
            on_malformed=self._on_malformed_thread,
            raw_handlers=raw,
            birth=self._birth(),
        )
        self.broker_url = url
        self.link.start()
        logger.info("broker %s:%d (%s)", settings.host, settings.port, "TLS" if settings.tls else "plain")

    async def _advertise(self) -> None:
        caps = self.capabilities
        props = {
            "v": "1",
            "id": self.identity.device_id,
            "sku": self.identity.sku,
            "platform": self.identity.platform,
            "version": __version__,
            "backends": ",".join(sorted(caps.backends)),
            "accelerators": ",".join(caps.accelerators),
        }
        advertiser = discovery.Advertiser(self.identity.device_id, props, self.config.discovery.interfaces)
        try:
            await advertiser.start()
        except (OSError, discovery.DiscoveryError) as err:  # no multicast route (some containers)
            logger.warning("zeroconf advertising is unavailable here; the agent works without it: %s", err)
            await advertiser.stop()
            return
        self._advertiser = advertiser

    def _birth(self) -> dict[str, Any]:
        caps = self.capabilities
        return {
            "platform": self.identity.platform,
            "sku": self.identity.sku,
            "version": __version__,
            "capabilities": dataclasses.asdict(caps),
            "collectors": list(self.monitor.names),
        }

    async def _search_broker(self) -> None:
        url = await discovery.search_broker(self.config.discovery.interfaces, self._sleep)
        if url is not None:
            self._connect(url)
            self._write_status("running")

    def _on_connected(self) -> None:  # paho's thread
        ha = self.config.homeassistant
        if ha.enabled and self.link is not None:
            for topic, payload in homeassistant.discovery_messages(
                self.topics, ha.prefix, self.identity.sku, self.monitor.names
            ):
                self.link.publish_now(topic, payload, retain=True)

    def _on_ha_status(self, payload: bytes) -> None:  # paho's thread
        if payload.strip() == b"online":  # Home Assistant restarted: it forgot the sensors
            self._on_connected()

    def _on_malformed_thread(self, topic: str, error: str) -> None:  # paho's thread
        if topic == self.topics.jobs:
            self.inbox.ack(None, "rejected", error=f"not a fleetbench job message: {error}")

    def _on_message_thread(self, topic: str, env: messages.Envelope) -> None:  # paho's thread
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_message, topic, env)

    def _on_message(self, topic: str, env: messages.Envelope) -> None:
        if topic == self.topics.models:
            self.pushes.handle(env.data)
            return
        if topic != self.topics.jobs:
            return
        cfg = self.config
        job = self.inbox.receive(env.data, env.id, lambda d: parse_job(d, cfg.model_dir, cfg.jobs))
        if job is not None:
            assert self._jobs is not None
            self._jobs.put_nowait(job)

    async def _smoke(self, path: str, runs: int) -> dict[str, Any]:
        """A pushed model's smoke benchmark: loads and runs in a worker, between jobs."""
        from agent.bench.worker import LOAD_GRACE_S, call_in_worker

        settings = {"runs": runs, "warmup_runs": 2, "warmup_time_s": 0.0, "min_time_s": 0.0,
                    "max_time_s": 60.0}  # fmt: skip
        assert self._busy is not None
        async with self._busy:
            return await asyncio.get_running_loop().run_in_executor(
                None, call_in_worker, bench_target, (path, settings, None), LOAD_GRACE_S + 120.0,
                f"the smoke run of {os.path.basename(path)}", None, self._cancel,
            )  # fmt: skip

    # -- periodic work --------------------------------------------------------------

    async def _sample(self) -> HealthSample:
        sample = await asyncio.get_running_loop().run_in_executor(None, self.monitor.sample)
        self.last_health = sample
        return sample

    async def _health_loop(self) -> None:
        while True:
            sample = await self._sample()
            data = {
                "health": sample.to_dict(),
                "degradation": self.degradation.state().to_dict(),
                "outbox": {"pending": len(self.outbox), "dropped_total": self.outbox.dropped_total},
                "uptime_s": round(time.time() - self.started_at, 1),
                "job": self.current,
                "collectors": list(self.monitor.names),
            }
            self._send("health", data)
            self._write_status("running")
            if await self._sleep(self.config.health.interval_s):
                return

    async def _degradation_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.degradation.due(time.time()):
                sample = await self._sample()
                reason = self.degradation.blocked_by(sample, self.capabilities.cores_logical)
                assert self._busy is not None
                if reason or self._busy.locked():
                    logger.info("degradation probe postponed: %s", reason or "a job is running")
                else:
                    async with self._busy:
                        try:
                            from agent.bench.worker import call_in_worker

                            measured = await loop.run_in_executor(
                                None,
                                lambda: call_in_worker(
                                    reference_workload,
                                    {},
                                    300.0,
                                    "the reference workload",
                                    cancel=self._cancel,
                                ),
                            )
                        except WorkerCancelledError:
                            return
                        except FleetbenchError as err:
                            logger.warning("degradation probe failed: %s", err)
                        else:
                            state = self.degradation.record(measured)
                            logger.info(
                                "degradation index %.3f (reference workload %.3f ms, baseline %.3f ms)",
                                state.index,
                                state.last_ms,
                                state.baseline_ms,
                            )
            if await self._sleep(min(RECHECK_S * 6, self.config.degradation.interval_s)):
                return

    async def _watchdog_loop(self) -> None:
        assert self.notifier.watchdog_s
        while True:
            healthy = self.link is None or self.link.healthy()
            if healthy:
                self.notifier.watchdog()
            else:
                logger.error("the MQTT link's threads died; withholding the watchdog ping")
            if await self._sleep(self.notifier.watchdog_s / 2):
                return

    # -- jobs -----------------------------------------------------------------------

    async def _job_loop(self) -> None:
        assert self._jobs is not None and self._busy is not None
        while True:
            job = await self._jobs.get()
            async with self._busy:
                await self._run_job(job)

    async def _wait_for_conditions(self, job: Job) -> dict[str, Any]:
        """Wait while too hot or low on battery; (seconds waited, reasons).  JobError past max_wait_s."""
        start = time.monotonic()
        reasons: list[str] = []
        while True:
            s = await self._sample()
            bat = s.battery
            reason = blocked_by(
                s.max_temperature_c,
                bat.percent if bat else None,
                (bat.plugged is False) if bat else None,
                self.config.jobs,
            )
            waited = time.monotonic() - start
            if reason is None:
                return {
                    "waited_s": round(waited, 1),
                    "waited_for": reasons,
                    "max_temperature_c": s.max_temperature_c,
                    "battery_percent": bat.percent if bat else None,
                    "on_battery": (bat.plugged is False) if bat else None,
                }
            if reason not in reasons:
                reasons.append(reason)
                logger.info("job %s waits: %s", job.job_id, reason)
                self.inbox.ack(job.job_id, "waiting", reason=reason)
            if waited >= self.config.jobs.max_wait_s:
                raise JobError(f"the device stayed unfit to measure for {waited:.0f} s: {reason}")
            if await self._sleep(RECHECK_S):
                raise WorkerCancelledError("stopping while waiting")

    async def _run_job(self, job: Job) -> None:
        failed: list[str] = []
        try:
            conditions = await self._wait_for_conditions(job)
        except WorkerCancelledError:
            return
        except JobError as err:
            self._finish(job, "failed", error=str(err))
            return
        total = len(job.items)
        settings = dict(job.settings)
        max_time_s = float(settings.get("max_time_s", 60.0))
        for name in job.remaining:
            index = job.items.index(name) + 1
            self.current = {"job_id": job.job_id, "model": name, "index": index, "total": total}
            self._write_status("running")
            self.inbox.ack(job.job_id, "running", model=name, index=index, total=total)
            try:
                result = await self._measure(job, name, settings, max_time_s)
            except WorkerCancelledError:
                self.inbox.ack(
                    job.job_id,
                    "interrupted",
                    model=name,
                    message="the agent is stopping; the job resumes when it starts again",
                )
                self.current = None
                return
            except FleetbenchError as err:
                logger.warning("job %s: %s failed: %s", job.job_id, name, err)
                failed.append(name)
                self.inbox.ack(job.job_id, "model_failed", model=name, error=str(err))
            else:
                self._send_result(job, name, result, conditions)
            job = dataclasses.replace(job, done=(*job.done, name))
            self.store.save(job)
        self.current = None
        state = "failed" if failed and len(failed) == total else "done"
        self._finish(job, state, measured=total - len(failed), failed=failed)

    async def _measure(self, job: Job, name: str, settings: dict[str, Any], max_time_s: float) -> Any:
        """One item of a job in a worker process, with progress acks every few seconds."""
        from agent.bench.worker import LOAD_GRACE_S, call_in_worker

        job_id, item = job.job_id, job.architecture(name)
        if job.lut is not None and name == job.lut.key:
            return await asyncio.get_running_loop().run_in_executor(
                None, call_in_worker, lut_target, (dataclasses.asdict(job.lut), settings),
                LOAD_GRACE_S + 3600.0, f"the {job.lut.space} lookup table", None, self._cancel,
            )  # fmt: skip
        if item is None:
            path = resolve_model(name, self.config.model_dir)  # again: the file may have gone meanwhile
            arch = None
        else:
            os.makedirs(self.cache_dir, exist_ok=True)
            path, arch = cache_path(self.cache_dir, item), dataclasses.asdict(item)
        last = [time.monotonic()]

        def progress(phase: str, done: int, wanted: int, elapsed_s: float) -> None:
            if time.monotonic() - last[0] >= PROGRESS_EVERY_S:  # executor thread; send is thread-safe
                last[0] = time.monotonic()
                self.inbox.ack(
                    job_id, "progress", model=name, phase=phase, runs=done, elapsed_s=round(elapsed_s, 1)
                )

        timeout_s = LOAD_GRACE_S + 2 * max_time_s
        return await asyncio.get_running_loop().run_in_executor(
            None,
            call_in_worker,
            bench_target,
            (path, settings, arch),
            timeout_s,
            repr(name),
            progress,
            self._cancel,
        )

    @property
    def cache_dir(self) -> str:
        """Materialized architectures (rebuilt on demand; safe to delete)."""
        return os.path.join(self.config.state_dir, "cache")

    def _finish(self, job: Job, state: str, **extra: Any) -> None:
        self.inbox.finish(job, state, **extra)
        self.jobs_done += 1
        self._write_status("running")

    def _send_result(self, job: Job, model: str, result: dict[str, Any], conditions: dict[str, Any]) -> None:
        data: dict[str, Any] = {"job_id": job.job_id, "model": model, "conditions": conditions}
        if job.lut is not None and model == job.lut.key:  # a lookup table, not one benchmark
            data["lut"] = {**dataclasses.asdict(job.lut), **result}
        else:
            data["result"] = result
            item = job.architecture(model)
            if item is not None:
                data["architecture"] = dataclasses.asdict(item)
        self.inbox.send_result(job.job_id, model, data)

    def _send(self, kind: str, data: Any, msg_id: Optional[str] = None) -> None:
        if self.link is not None:
            self.link.send(kind, data, msg_id)
            return
        env = messages.make(kind, self.topics.device_id, data, msg_id)  # no broker yet: queue for later
        self.outbox.put(env.id, self.topics.topic(kind), env.encode())

    # -- reload and status ----------------------------------------------------------

    async def reload(self) -> None:
        if self._reload is None:
            return
        self.notifier.reloading()
        try:
            new = self._reload()
        except ConfigError as err:
            logger.error("reload refused, keeping the running configuration: %s", err)
            self.notifier.ready()
            return
        old, self.config = self.config, new
        for key in ("device_id", "state_dir", "outbox", "discovery", "homeassistant"):
            if getattr(old, key) != getattr(new, key):
                logger.warning("%s changed; it takes effect at the next restart", key)
        if new.broker != old.broker and new.broker.url:
            logger.info("broker settings changed; reconnecting")
            if self.link is not None:
                link, self.link = self.link, None
                await asyncio.get_running_loop().run_in_executor(None, link.stop)
            self._connect(new.broker.url)
        self.degradation.interval_s = new.degradation.interval_s
        self.degradation.max_load_per_core = new.degradation.max_load_per_core
        self.degradation.max_temperature_c = new.degradation.max_temperature_c
        logger.info("configuration reloaded from %s", new.source or "defaults and environment")
        self.notifier.ready()

    def _write_status(self, state: str) -> None:
        degradation = self.degradation.state() if hasattr(self, "degradation") else None
        status = {
            "state": state,
            "pid": os.getpid(),
            "version": __version__,
            "device_id": self.identity.device_id,
            "platform": self.identity.platform,
            "sku": self.identity.sku,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "health_interval_s": self.config.health.interval_s,
            "broker": self.broker_url,
            "connected": bool(self.link and self.link.connected.is_set()),
            "outbox": {"pending": len(self.outbox), "dropped_total": self.outbox.dropped_total},
            "job": self.current,
            "jobs_waiting": self._jobs.qsize() if self._jobs else 0,
            "jobs_done": self.jobs_done,
            "health": self.last_health.to_dict() if self.last_health else None,
            "degradation": degradation.to_dict() if degradation else None,
        }
        try:
            write_text_atomic(
                os.path.join(self.config.state_dir, STATUS_FILE),
                json.dumps(status, indent=1),
                what="status file",
            )
        except FleetbenchError as err:
            logger.warning("%s", err)


def read_status(state_dir: str) -> Optional[dict[str, Any]]:
    """The local agent's last status, with ``alive`` telling whether its process still runs."""
    try:
        with open(os.path.join(state_dir, STATUS_FILE), encoding="utf-8") as fh:
            status = json.load(fh)
    except (OSError, ValueError):
        return None
    alive = False
    if status.get("state") == "running" and isinstance(status.get("pid"), int):
        try:
            os.kill(status["pid"], 0)
            alive = True
        except PermissionError:  # running as another user (the service account)
            alive = True
        except OSError:
            alive = False
    status["alive"] = alive
    return status
