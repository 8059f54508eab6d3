"""The bridge: the device daemon (``agent.device.daemon``) for one board on one serial port.

    setup:  the board link (its reader thread waits for the port and asks HELLO)
    HELLO:  the device id (--device-id, else board name + factory id) -> the MQTT link,
            whose retained status carries the HELLO (``fleetbench fleet`` shows it)
    health: HEALTH from the board every health.interval_s (die temperature, supply, and the
            link's counters)
    jobs:   naming the board's models, one model at a time; each finished run is a result
            record in the durable outbox under the board's device id
    unplug: status "offline" (retained), the run in progress fails, the port is awaited;
            a board that comes back says HELLO and is "online" again
    SIGTERM: stop; a job in progress stays on disk and resumes with its unfinished models

The board link's blocking calls run in the default executor; its reader thread is one of
the threads the supervisor watches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

from agent.common.errors import FleetbenchError, WorkerCancelledError
from agent.common.logs import WarnOnce
from agent.common.sdnotify import Notifier
from agent.device.daemon import DeviceDaemon, JobAbort
from agent.device.jobs import Job
from agent.protocol.jobs import JobSpec
from agent.protocol.reports import Conditions, HealthData, ResultData, StatusData
from agent.protocol.topics import DeviceTopics
from firmware_bridge import codec, records
from firmware_bridge.board import BoardLink, BridgeError
from firmware_bridge.config import BridgeDaemonConfig
from firmware_bridge.jobs import board_settings
from firmware_bridge.ports import usb_info

logger = logging.getLogger(__name__)


class Bridge(DeviceDaemon):
    name = "bridge"

    def __init__(
        self,
        config: BridgeDaemonConfig,
        port: str,
        device_id: Optional[str] = None,
        notifier: Optional[Notifier] = None,
    ) -> None:
        super().__init__(config, notifier)
        self.config: BridgeDaemonConfig = config
        self.port, self.fixed_id = port, device_id
        b = config.bridge
        self.board = BoardLink(
            port, b.baud, b.timeout_s, b.retries, b.stall_timeout_s, b.reopen_s,
            on_hello=self._on_hello_thread, on_port=self._on_port_thread,
        )  # fmt: skip
        self.last_health: Optional[codec.Health] = None
        self.results_sent = 0
        self._birth: Optional[StatusData] = None
        self._warn = WarnOnce(logger)

    def ready_text(self) -> str:
        return f"board on {self.port}"

    # -- the plug-in --------------------------------------------------------------------

    async def setup(self) -> None:
        self.health_now = asyncio.Event()
        self.board.open(wait=True)  # the reader thread waits for the port and says HELLO_REQ

    async def teardown(self) -> None:
        # a run in flight fails: its job resumes later
        await asyncio.get_running_loop().run_in_executor(None, self.board.close)

    def birth(self) -> StatusData:
        assert self._birth is not None
        return self._birth

    def link_options(self) -> dict[str, Any]:
        assert self.topics is not None
        return {"client_id": f"fleetbench-bridge-{self.topics.device_id}",
                "state": "online" if self.board.connected.is_set() else "offline"}  # fmt: skip

    def threads_alive(self) -> bool:
        return self.board.healthy()

    def check_job(self, spec: JobSpec) -> None:
        board_settings(spec, self.board.hello, self.config.bridge)

    async def health(self) -> HealthData:
        loop = asyncio.get_running_loop()
        if self.board.connected.is_set():
            try:
                if not self.board.hello_seen.is_set():  # the greeting was lost: ask again
                    await loop.run_in_executor(None, self.board.hello_request)
                self.last_health = await loop.run_in_executor(None, self.board.health)
                self._warn.forget("health")
            except BridgeError as err:
                self._warn("health", "no health from the board: %s", err)
        current = self.last_health if self.board.connected.is_set() else None
        return records.health_data(current, self.board.counters())

    def status_fields(self) -> dict[str, Any]:
        return {"port": self.port, "board_connected": self.board.connected.is_set(),
                "results_sent": self.results_sent}  # fmt: skip

    # -- the board's identity -----------------------------------------------------------

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
            self._warn("id", "the board on %s cannot join the fleet: %s", self.port, err)
            return
        self._birth = records.birth(hello, self.port, usb)
        if self.topics is None or self.topics.device_id != device_id:
            if self.topics is not None:
                logger.warning("another board is on %s now: %s (was %s)", self.port, device_id,
                               self.topics.device_id)  # fmt: skip
            self._spawn(self._switch(DeviceTopics(device_id)))
        else:
            self._announce("online")
        models = ", ".join(hello.models) or "none"
        logger.info("board %s on %s: %s, %s at %.0f MHz, %s, models: %s", device_id, self.port,
                    hello.board, hello.mcu, hello.clock_hz / 1e6, hello.runtime, models)  # fmt: skip
        assert self.health_now is not None
        self.health_now.set()

    async def _switch(self, topics: DeviceTopics) -> None:
        if self.link is not None:
            self.link.announce("offline")
        await self.drop_link()
        self.use_topics(topics)
        self.connect_when_ready()

    def _announce(self, state: str) -> None:
        if self.link is not None:
            self.link.announce(state, self.announced(self._birth) if self._birth is not None else None)

    # -- jobs ---------------------------------------------------------------------------

    async def _wait_for_board(self) -> bool:
        """Until the board is connected and has said HELLO; False after jobs.max_wait_s."""
        deadline = time.monotonic() + self.config.jobs.max_wait_s
        while not (self.board.connected.is_set() and self.board.hello_seen.is_set()):
            if time.monotonic() >= deadline:
                return False
            if await self._sleep(min(self.config.bridge.reopen_s, max(0.0, deadline - time.monotonic()))):
                raise WorkerCancelledError("stopping while waiting for the board")
        return True

    async def measure(self, job: Job, item: str, conditions: Conditions) -> ResultData:
        if not await self._wait_for_board():
            raise JobAbort(f"the board on {self.port} was not there for {self.config.jobs.max_wait_s:g} s "
                           "(jobs.max_wait_s)")  # fmt: skip
        settings = board_settings(job.spec, self.board.hello, self.config.bridge)
        try:
            run = await asyncio.get_running_loop().run_in_executor(
                None, self.board.bench, item, settings.runs, settings.warmup_runs
            )
        except BridgeError as err:
            assert self._stop is not None
            if self._stop.is_set():  # the link was closed under the run: resume it next time
                raise WorkerCancelledError(str(err)) from None
            raise
        self.results_sent += 1
        return ResultData(job_id=job.job_id, model=item, result=records.to_result(run, self.last_health),
                          conditions=records.conditions(run, self.last_health))  # fmt: skip
