"""The agent: the device daemon (``agent.device.daemon``) for the machine it runs on.

    setup:    identity -> capabilities -> health collectors -> degradation tracker ->
              model pushes; zeroconf advertising
    health:   the collectors' sample and the degradation index, every health.interval_s
    jobs:     models, search-space architectures and lookup tables, checked against this
              device (``agent.measure``), each item measured in a worker process, after
              waiting while the device is too hot or low on battery
    probe:    the reference workload when due, idle and cool (the degradation index)
    pushes:   verified, installed, smoke-run in a worker, rolled back when they fail
    SIGHUP:   reload the configuration (a bad file is logged and the old one kept)

Blocking work stays at the edges: sysfs reads in the default executor, benchmarks and
the reference workload in spawned worker processes, MQTT in paho's thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable, Optional

import msgspec

from agent import __version__
from agent.collectors import identity as identity_mod
from agent.collectors._sysfs import Runner, SysfsReader
from agent.collectors.degradation import DegradationTracker, reference_workload
from agent.collectors.health import HealthMonitor, HealthSample
from agent.common.config import ConfigError
from agent.common.errors import FleetbenchError, WorkerCancelledError
from agent.common.sdnotify import Notifier
from agent.config import AgentConfig
from agent.deploy import PushReceiver, SmokeResult
from agent.device.daemon import DeviceDaemon
from agent.device.jobs import Job, JobError, blocked_by
from agent.measure import (
    LUT_DEFAULTS,
    bench_settings,
    bench_target,
    cache_path,
    check_job,
    lut_target,
    prune_cache,
    resolve_model,
)
from agent.modelstore import ModelStore
from agent.protocol.jobs import JobSpec
from agent.protocol.messages import VERSION, Envelope
from agent.protocol.reports import Conditions, HealthData, ResultData, StatusData
from agent.protocol.topics import DeviceTopics
from agent.transport import discovery, homeassistant
from agent.transport.mqtt import RawHandler

logger = logging.getLogger(__name__)

# How often a waiting job looks at the device again.
RECHECK_S = 10.0
PROGRESS_EVERY_S = 5.0


class Agent(DeviceDaemon):
    name = "agent"

    def __init__(
        self,
        config: AgentConfig,
        reload: Optional[Callable[[], AgentConfig]] = None,
        reader: Optional[SysfsReader] = None,
        run_helper: Optional[Runner] = None,
        notifier: Optional[Notifier] = None,
    ) -> None:
        super().__init__(config, notifier)
        self.config: AgentConfig = config
        self._reload = reload
        self.reader = reader or SysfsReader()
        self._run_helper = run_helper
        self.last_health: Optional[HealthSample] = None
        self._advertiser: Optional[discovery.Advertiser] = None
        self.probe_postponed: Optional[str] = None

    # -- the plug-in --------------------------------------------------------------------

    async def setup(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        try:
            os.makedirs(cfg.model_dir, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"jobs.model_dir {cfg.model_dir!r} cannot be created: {err.strerror}") from None
        self.identity = await loop.run_in_executor(None, identity_mod.detect, self.reader, cfg.device_id)
        self.capabilities = await loop.run_in_executor(
            None, identity_mod.capabilities, self.reader, self.identity
        )
        self.use_topics(DeviceTopics(self.identity.device_id))
        self.monitor = await loop.run_in_executor(None, HealthMonitor, self.reader, self._run_helper)
        self.degradation = DegradationTracker(
            os.path.join(cfg.state_dir, "degradation.json"),
            cfg.degradation.interval_s,
            cfg.degradation.max_load_per_core,
            cfg.degradation.max_temperature_c,
        )
        self.pushes = PushReceiver(
            ModelStore(cfg.model_dir, cfg.state_dir, cfg.models.max_bytes),
            self.publisher,
            self._smoke,
            cfg.state_dir,
            self.trust,
            lambda: self.device_id,
        )
        if cfg.discovery.enabled:
            self._spawn(self._advertise())
        if cfg.degradation.enabled:
            self._spawn(self._degradation_loop())

    async def teardown(self) -> None:
        if hasattr(self, "pushes"):  # an install's smoke run was cancelled: let it roll back
            try:
                await asyncio.wait_for(self.pushes.wait_idle(), 10)
            except asyncio.TimeoutError:
                logger.warning("a model install did not finish stopping")
        if self._advertiser is not None:
            try:
                await asyncio.wait_for(self._advertiser.stop(), 5)
            except (OSError, asyncio.TimeoutError) as err:
                logger.debug("zeroconf did not stop cleanly: %s", err)

    def birth(self) -> StatusData:
        return StatusData(
            state="online",
            protocol=VERSION,
            platform=self.identity.platform,
            sku=self.identity.sku,
            version=__version__,
            capabilities=self.capabilities,
            collectors=tuple(self.monitor.names),
        )

    def link_options(self) -> dict[str, Any]:
        ha = self.config.homeassistant
        raw: dict[str, RawHandler] = {}
        if ha.enabled:
            raw[homeassistant.status_topic(ha.prefix)] = self._on_ha_status
        return {"raw_handlers": raw, "on_connected": self._on_connected}

    async def health(self) -> HealthData:
        sample = await self._sample()
        return HealthData(
            health=sample, degradation=self.degradation.state(), collectors=tuple(self.monitor.names)
        )

    def check_job(self, spec: JobSpec) -> None:
        check_job(spec, self.config.model_dir, self.config.jobs)

    def on_push(self, msg: Envelope) -> None:
        self.pushes.handle(msg)

    def status_fields(self) -> dict[str, Any]:
        degradation = self.degradation.state() if hasattr(self, "degradation") else None
        return {
            "platform": self.identity.platform if hasattr(self, "identity") else None,
            "sku": self.identity.sku if hasattr(self, "identity") else None,
            "health": msgspec.to_builtins(self.last_health),
            "degradation": msgspec.to_builtins(degradation),
            #: why the degradation probe waits (too busy, too hot, a job running), if it does
            "probe_postponed": self.probe_postponed,
        }

    # -- zeroconf and Home Assistant ------------------------------------------------------

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

    def _on_connected(self) -> None:  # paho's thread
        ha = self.config.homeassistant
        if ha.enabled and self.link is not None and self.topics is not None:
            for topic, payload in homeassistant.discovery_messages(
                self.topics, ha.prefix, self.identity.sku, self.monitor.names
            ):
                self.link.publish_now(topic, payload, retain=True)

    def _on_ha_status(self, payload: bytes) -> None:  # paho's thread
        if payload.strip() == b"online":  # Home Assistant restarted: it forgot the sensors
            self._on_connected()

    # -- health and the degradation probe -----------------------------------------------

    async def _sample(self) -> HealthSample:
        sample = await asyncio.get_running_loop().run_in_executor(None, self.monitor.sample)
        self.last_health = sample
        return sample

    async def _degradation_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.degradation.due(time.time()):
                sample = await self._sample()
                reason = self.degradation.blocked_by(sample, self.capabilities.cores_logical)
                assert self._busy is not None
                if reason or self._busy.locked():
                    self.probe_postponed = reason or "a job is running"
                    logger.info("degradation probe postponed: %s", self.probe_postponed)
                else:
                    async with self._busy:
                        from agent.bench.worker import call_in_worker

                        try:
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
                            self.probe_postponed = None
                            state = self.degradation.record(measured)
                            logger.info(
                                "degradation index %.3f (reference workload %.3f ms, baseline %.3f ms)",
                                state.index,
                                state.last_ms,
                                state.baseline_ms,
                            )
            if await self._sleep(min(RECHECK_S * 6, self.config.degradation.interval_s)):
                return

    # -- jobs ---------------------------------------------------------------------------

    async def prepare(self, job: Job) -> Conditions:
        """Wait while too hot or low on battery; JobError past jobs.max_wait_s."""
        start = time.monotonic()
        reasons: list[str] = []
        limits = self.config.jobs
        while True:
            s = await self._sample()
            bat = s.battery
            on_battery = (bat.plugged is False) if bat else None
            percent = bat.percent if bat else None
            reason = blocked_by(s.max_temperature_c, percent, on_battery, limits.max_temperature_c,
                                limits.min_battery_percent)  # fmt: skip
            waited = time.monotonic() - start
            if reason is None:
                return Conditions(waited_s=round(waited, 1), waited_for=tuple(reasons),
                                  max_temperature_c=s.max_temperature_c, battery_percent=percent,
                                  on_battery=on_battery)  # fmt: skip
            if reason not in reasons:
                reasons.append(reason)
                logger.info("job %s waits: %s", job.job_id, reason)
                self.inbox.ack(job.job_id, "waiting", reason=reason)
            if waited >= limits.max_wait_s:
                raise JobError(f"the device stayed unfit to measure for {waited:.0f} s: {reason}")
            if await self._sleep(RECHECK_S):
                raise WorkerCancelledError("stopping while waiting")

    async def measure(self, job: Job, item: str, conditions: Conditions) -> ResultData:
        """One item of a job in a worker process, with progress acks every few seconds."""
        from agent.bench.worker import LOAD_GRACE_S, call_in_worker

        loop = asyncio.get_running_loop()
        spec, limits = job.spec, self.config.jobs
        wanted = spec.table(item)
        if wanted is not None:
            settings = bench_settings(spec.settings, limits, LUT_DEFAULTS)
            table = await loop.run_in_executor(
                None, call_in_worker, lut_target, (wanted, settings), LOAD_GRACE_S + 3600.0,
                f"the {wanted.space} lookup table", None, self._cancel,
            )  # fmt: skip
            return ResultData(job_id=job.job_id, model=item, lut=table, conditions=conditions)
        settings = bench_settings(spec.settings, limits)
        arch = spec.architecture(item)
        if arch is None:
            path = resolve_model(item, self.config.model_dir)  # again: the file may have gone meanwhile
        else:
            os.makedirs(self.cache_dir, exist_ok=True)
            path = cache_path(self.cache_dir, arch)
        last = [time.monotonic()]

        def progress(phase: str, done: int, wanted: int, elapsed_s: float) -> None:
            if time.monotonic() - last[0] >= PROGRESS_EVERY_S:  # executor thread; send is thread-safe
                last[0] = time.monotonic()
                self.inbox.ack(job.job_id, "progress", model=item, phase=phase, runs=done,
                               elapsed_s=round(elapsed_s, 1))  # fmt: skip

        timeout_s = LOAD_GRACE_S + 2 * settings.max_time_s
        result = await loop.run_in_executor(
            None,
            call_in_worker,
            bench_target,
            (path, settings, arch, self.config.jobs.max_model_bytes),
            timeout_s,
            repr(item),
            progress,
            self._cancel,
        )
        if arch is not None:
            await loop.run_in_executor(None, prune_cache, self.cache_dir, self.config.jobs.cache_bytes, path)
        return ResultData(
            job_id=job.job_id, model=item, result=result, architecture=arch, conditions=conditions,
            probe=spec.is_probe(item),
        )  # fmt: skip

    @property
    def cache_dir(self) -> str:
        """Materialized architectures (rebuilt on demand; safe to delete)."""
        return os.path.join(self.config.state_dir, "cache")

    async def _smoke(self, path: str, runs: int) -> SmokeResult:
        """A pushed model's smoke benchmark: loads and runs in a worker, between jobs."""
        from agent.bench.settings import BenchSettings
        from agent.bench.stats import NS_PER_MS, median_interval
        from agent.bench.worker import LOAD_GRACE_S, call_in_worker

        settings = BenchSettings(runs=runs, warmup_runs=2, warmup_time_s=0.0, min_time_s=0.0, max_time_s=60.0)
        assert self._busy is not None
        async with self._busy:
            result = await asyncio.get_running_loop().run_in_executor(
                None, call_in_worker, bench_target, (path, settings, None, 0), LOAD_GRACE_S + 120.0,
                f"the smoke run of {os.path.basename(path)}", None, self._cancel,
            )  # fmt: skip
        runs_ms = sorted(ns / NS_PER_MS for ns in result.samples_ns)
        interval = median_interval(runs_ms) if runs_ms else None
        return SmokeResult(result.stats.p50_ms, result.backend.name, interval)

    # -- reload -------------------------------------------------------------------------

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
            await self.drop_link()
            self.broker_url = new.broker.url
            self.connect_when_ready()
        self.degradation.interval_s = new.degradation.interval_s
        self.degradation.max_load_per_core = new.degradation.max_load_per_core
        self.degradation.max_temperature_c = new.degradation.max_temperature_c
        logger.info("configuration reloaded from %s", new.source or "defaults and environment")
        self.notifier.ready()
