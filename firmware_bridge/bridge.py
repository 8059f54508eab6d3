"""The bridge daemon: one board on one serial port, a fleet device on the broker.

    start:  state dir -> outbox -> board link (waits for the port) -> READY=1
    HELLO:  the device id (--device-id, else board name + factory id) -> the MQTT link,
            whose retained status carries the HELLO (``fleetbench fleet`` shows it)
    run:    HEALTH every health.interval_s (die temperature, supply, the link's counters);
            jobs from MQTT naming the board's models, one model at a time; each finished
            run is a result record in the durable outbox under the board's device id
    unplug: status "offline" (retained), the run in progress fails, the port is awaited;
            a board that comes back says HELLO and is "online" again
    SIGTERM: stop; a job in progress stays on disk and resumes with its unfinished models

The board link's blocking calls run in the default executor; MQTT runs in paho's thread,
as in the agent, whose outbox, MQTT link, job store and message shapes this reuses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from typing import Any, Optional

from agent.config import AgentConfig, ConfigError
from agent.errors import FleetbenchError
from agent.jobs import Job, JobInbox, JobStore
from agent.sdnotify import Notifier
from agent.tasks import Supervised
from agent.transport import discovery, messages
from agent.transport.mqtt import BrokerSettings, MqttLink
from agent.transport.outbox import Outbox
from agent.transport.topics import DeviceTopics
from firmware_bridge import codec, records
from firmware_bridge.board import BoardLink, BridgeError
from firmware_bridge.jobs import parse_board_job
from firmware_bridge.ports import usb_info

logger = logging.getLogger(__name__)


class Bridge(Supervised):
    name = "bridge"

    def __init__(
        self,
        config: AgentConfig,
        port: str,
        device_id: Optional[str] = None,
        notifier: Optional[Notifier] = None,
    ) -> None:
        super().__init__()
        self.config, self.port, self.fixed_id = config, port, device_id
        self.notifier = notifier or Notifier()
        self.started_at = time.time()
        self.board = BoardLink(
            port, config.bridge.baud, config.bridge.timeout_s, config.bridge.retries,
            config.bridge.stall_timeout_s, config.bridge.reopen_s,
            on_hello=self._on_hello_thread, on_port=self._on_port_thread,
        )  # fmt: skip
        self.link: Optional[MqttLink] = None
        self.topics: Optional[DeviceTopics] = None
        self.broker_url = config.broker.url
        self.current: Optional[dict[str, Any]] = None
        self.last_health: Optional[codec.Health] = None
        self.results_sent = 0
        self._birth: dict[str, Any] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._health_now: Optional[asyncio.Event] = None
        self._jobs: Optional[asyncio.Queue[Job]] = None
        self._warned: set[str] = set()

    # -- lifecycle ----------------------------------------------------------------

    async def run(self, install_signals: bool = True) -> int:
        loop = self._loop = asyncio.get_running_loop()
        self._stop, self._health_now, self._jobs = asyncio.Event(), asyncio.Event(), asyncio.Queue()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        try:
            self._start()
            self.notifier.ready(f"board on {self.port}")
            logger.info("bridge for %s up (state in %s)", self.port, self.config.state_dir)
            await self._stop.wait()
        finally:
            await self._shutdown()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        return 0

    def stop(self) -> None:
        if self._stop is not None and not self._stop.is_set():
            logger.info("stopping")
            self.notifier.stopping()
            self._stop.set()

    def stop_threadsafe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.stop)

    def _start(self) -> None:
        state_dir = self.config.state_dir
        try:
            os.makedirs(state_dir, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"state_dir {state_dir!r} cannot be created: {err.strerror}") from None
        if not os.access(state_dir, os.W_OK):
            raise ConfigError(f"state_dir {state_dir!r} is not writable by this user")
        out = self.config.outbox
        self.outbox = Outbox(
            os.path.join(state_dir, "outbox.sqlite"), out.max_messages, out.max_age_days * 86400
        )
        self.store = JobStore(os.path.join(state_dir, "jobs"))
        self.inbox = JobInbox(self.store, self._send)
        for job in self.store.pending():
            logger.info(
                "resuming job %s (%d of %d models left)", job.job_id, len(job.remaining), len(job.items)
            )
            self._jobs.put_nowait(job)  # type: ignore[union-attr]
        self.board.open(wait=True)  # the reader thread waits for the port and says HELLO_REQ
        if not self.broker_url:
            self._spawn(self._search_broker())
        self._spawn(self._health_loop())
        self._spawn(self._job_loop())
        if self.notifier.watchdog_s:
            self._spawn(self._watchdog_loop())

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        await self._cancel_tasks()
        await loop.run_in_executor(None, self.board.close)  # a run in flight fails: its job resumes later
        if self.link is not None:
            await loop.run_in_executor(None, self.link.stop)
        if hasattr(self, "outbox"):
            self.outbox.close()
        self.notifier.close()

    # -- the board's identity and the broker ---------------------------------------

    def _on_hello_thread(self, hello: codec.Hello, reset: bool) -> None:  # the reader thread
        if self._loop is not None:
            usb = usb_info(self.port)  # a sysfs scan: here, not on the event loop
            self._loop.call_soon_threadsafe(self._on_hello, hello, reset, usb)

    def _on_port_thread(self, up: bool, reason: str) -> None:  # the reader thread
        if not up and self._loop is not None:
            self._loop.call_soon_threadsafe(self._announce, "offline")

    def _on_hello(self, hello: codec.Hello, reset: bool, usb: Optional[dict[str, Any]]) -> None:
        try:
            device_id = self.fixed_id or records.device_id_for(hello)
        except FleetbenchError as err:
            self._warn_once("id", f"the board on {self.port} cannot join the fleet: {err}")
            return
        self._birth = records.birth(hello, self.port, usb)
        if self.topics is None or self.topics.device_id != device_id:
            if self.topics is not None:
                logger.warning("another board is on %s now: %s (was %s)", self.port, device_id,
                               self.topics.device_id)  # fmt: skip
            self._switch(DeviceTopics(device_id))
        else:
            self._announce("online")
        models = ", ".join(hello.models) or "none"
        logger.info("board %s on %s: %s, %s at %.0f MHz, %s, models: %s", device_id, self.port,
                    hello.board, hello.mcu, hello.clock_hz / 1e6, hello.runtime, models)  # fmt: skip
        assert self._health_now is not None
        self._health_now.set()

    def _switch(self, topics: DeviceTopics) -> None:
        old, self.link, self.topics = self.link, None, topics
        if old is not None:
            old.announce("offline")
            asyncio.get_running_loop().run_in_executor(None, old.stop)
        if self.broker_url:
            self._connect(self.broker_url)

    def _connect(self, url: str) -> None:
        assert self.topics is not None
        settings = BrokerSettings.from_config(self.config.broker, url)
        self.link = MqttLink(
            settings, self.topics, self.outbox, on_message=self._on_message_thread, birth=self._birth,
            client_id=f"fleetbench-bridge-{self.topics.device_id}",
            state="online" if self.board.connected.is_set() else "offline",
        )  # fmt: skip
        self.broker_url = url
        self.link.start()

    def _announce(self, state: str) -> None:
        if self.link is not None:
            self.link.announce(state, self._birth)

    async def _search_broker(self) -> None:
        url = await discovery.search_broker(self.config.discovery.interfaces, self._sleep)
        if url is not None:
            self.broker_url = url
            if self.topics is not None and self.link is None:
                self._connect(url)

    def _send(self, kind: str, data: Any, msg_id: Optional[str] = None) -> None:
        if self.topics is None:
            return  # no HELLO yet: nobody to speak for
        if self.link is not None:
            self.link.send(kind, data, msg_id)
            return
        env = messages.make(kind, self.topics.device_id, data, msg_id)  # no broker yet: queue for later
        self.outbox.put(env.id, self.topics.topic(kind), env.encode())

    def _warn_once(self, key: str, text: str) -> None:
        if key in self._warned:
            logger.debug("%s", text)
        else:
            self._warned.add(key)
            logger.warning("%s", text)

    # -- health ---------------------------------------------------------------------

    async def _health_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.board.connected.is_set():
                try:
                    if not self.board.hello_seen.is_set():  # the greeting was lost: ask again
                        await loop.run_in_executor(None, self.board.hello_request)
                    self.last_health = await loop.run_in_executor(None, self.board.health)
                    self._warned.discard("health")
                except BridgeError as err:
                    self._warn_once("health", f"no health from the board: {err}")
            if self.topics is not None:
                self._send("health", {
                    **records.health_data(self.last_health if self.board.connected.is_set() else None,
                                          self.board.counters()),
                    "outbox": {"pending": len(self.outbox), "dropped_total": self.outbox.dropped_total},
                    "uptime_s": round(time.time() - self.started_at, 1),
                    "job": self.current,
                    "collectors": ["board"],
                })  # fmt: skip
            if await self._sleep(self.config.health.interval_s, self._health_now):
                return

    async def _watchdog_loop(self) -> None:
        assert self.notifier.watchdog_s
        while True:
            if self.board.healthy() and (self.link is None or self.link.healthy()):
                self.notifier.watchdog()
            else:
                logger.error("the serial reader or the MQTT link died; withholding the watchdog ping")
            if await self._sleep(self.notifier.watchdog_s / 2):
                return

    # -- jobs -------------------------------------------------------------------------

    def _on_message_thread(self, topic: str, env: messages.Envelope) -> None:  # paho's thread
        if self._loop is not None and self.topics is not None and topic == self.topics.jobs:
            self._loop.call_soon_threadsafe(self._on_job, env)

    def _on_job(self, env: messages.Envelope) -> None:
        board, defaults = self.board, self.config.bridge
        job = self.inbox.receive(env.data, env.id, lambda d: parse_board_job(d, board.hello, defaults))
        if job is not None:
            assert self._jobs is not None
            self._jobs.put_nowait(job)

    async def _job_loop(self) -> None:
        assert self._jobs is not None
        while True:
            job = await self._jobs.get()
            await self._run_job(job)

    async def _wait_for_board(self) -> bool:
        """Until the board is connected and has said HELLO; False after jobs.max_wait_s."""
        deadline = time.monotonic() + self.config.jobs.max_wait_s
        while not (self.board.connected.is_set() and self.board.hello_seen.is_set()):
            if time.monotonic() >= deadline:
                return False
            if await self._sleep(min(self.config.bridge.reopen_s, max(0.0, deadline - time.monotonic()))):
                raise asyncio.CancelledError
        return True

    async def _run_job(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        failed: list[str] = []
        runs, warmup = int(job.settings["runs"]), int(job.settings["warmup_runs"])
        for name in job.remaining:
            index = job.items.index(name) + 1
            if not await self._wait_for_board():
                self.inbox.finish(job, "failed", error=f"the board on {self.port} was not there for "
                             f"{self.config.jobs.max_wait_s:g} s (jobs.max_wait_s)")  # fmt: skip
                return
            self.current = {"job_id": job.job_id, "model": name, "index": index, "total": len(job.items)}
            self.inbox.ack(job.job_id, "running", model=name, index=index, total=len(job.items))
            try:
                run = await loop.run_in_executor(None, self.board.bench, name, runs, warmup)
            except BridgeError as err:
                assert self._stop is not None
                if self._stop.is_set():  # the link was closed under the run: resume it next time
                    why = "the bridge is stopping; the job resumes when it starts again"
                    self.inbox.ack(job.job_id, "interrupted", model=name, message=why)
                    return
                logger.warning("job %s: %s failed: %s", job.job_id, name, err)
                failed.append(name)
                self.inbox.ack(job.job_id, "model_failed", model=name, error=str(err))
            else:
                self._send_result(job, name, run)
            job = dataclasses.replace(job, done=(*job.done, name))
            self.store.save(job)
        self.current = None
        state = "failed" if failed and len(failed) == len(job.items) else "done"
        self.inbox.finish(job, state, measured=len(job.items) - len(failed), failed=failed)

    def _send_result(self, job: Job, model: str, run: Any) -> None:
        result = records.to_result(run, self.last_health)
        health = self.last_health
        conditions = {
            "die_temp_c": health.die_temp_c if health else None,
            "supply_v": health.supply_v if health else None,
            "clock_hz": run.clock_hz,
            "boot_id": run.hello.boot_id,
        }
        data = {"job_id": job.job_id, "model": model, "conditions": conditions,
                "result": result.to_dict()}  # fmt: skip
        self.inbox.send_result(job.job_id, model, data)
        self.results_sent += 1

