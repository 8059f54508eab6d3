"""The device daemon both the agent and the firmware bridge are: one asyncio loop.

    start:    state dir -> outbox -> job store (accepted jobs resume) -> the plug-in's
              setup -> broker link (or a broker search) -> supervised tasks -> READY=1
    run:      health every health.interval_s; jobs one at a time, each item measured by
              the plug-in; the supervisor checks the daemon's threads every few seconds
              and pings the systemd watchdog while they are all alive
    commands: a job that does not decode or that this device cannot run is refused on
              ``acks`` (with its id when it can be read); a new one is saved, then accepted
    SIGTERM:  STOPPING=1, the running measurement stops (its job stays on disk and resumes
              at the next start), "offline", unsent messages stay in the outbox
    exit:     0 stopped on request; 1 a background task or a thread it needs died (systemd's
              Restart=on-failure starts it again); 2 a configuration error

A plug-in (``Agent``, ``Bridge``) says who the device is (``birth``), what its health is,
which jobs it can run (``check_job``), and measures one item (``measure``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import threading
import time
from typing import Any, Optional

import msgspec

from agent import __version__
from agent.common.args import EXIT_FAILED, EXIT_OK
from agent.common.config import ConfigError, redact_url
from agent.common.errors import FleetbenchError, WorkerCancelledError
from agent.common.files import write_bytes_atomic
from agent.common.logs import WarnOnce
from agent.common.sdnotify import Notifier
from agent.common.tasks import Supervised
from agent.config import DeviceConfig
from agent.device.jobs import Job, JobError, JobInbox, JobStore
from agent.device.publisher import Publisher
from agent.device.trust import Trust
from agent.protocol.errors import ProtocolError
from agent.protocol.jobs import JobSpec
from agent.protocol.messages import Envelope, HealthMessage, JobMessage, KeyMessage, PushAckMessage, salvage
from agent.protocol.push import PushAck
from agent.protocol.reports import Conditions, CurrentJob, HealthData, OutboxState, ResultData, StatusData
from agent.protocol.signing import TrustError
from agent.protocol.topics import DeviceTopics
from agent.transport import discovery
from agent.transport.mqtt import BrokerSettings, MqttLink
from agent.transport.outbox import Outbox

logger = logging.getLogger(__name__)

STATUS_FILE = "status.json"
#: how often the supervisor looks at the daemon's threads (without a systemd watchdog)
SUPERVISE_S = 5.0


class JobAbort(JobError):
    """The whole job cannot go on (not just this item): it ends ``failed`` with this reason."""


class DeviceDaemon(Supervised):
    name = "device"

    def __init__(self, config: DeviceConfig, notifier: Optional[Notifier] = None) -> None:
        super().__init__()
        self.config = config
        self.notifier = notifier or Notifier()
        self.started_at = time.time()
        self.link: Optional[MqttLink] = None
        self.broker_url: Optional[str] = config.broker.url
        self.topics: Optional[DeviceTopics] = None
        self.current: Optional[CurrentJob] = None
        self.jobs_done = 0
        self._warn = WarnOnce(logger)
        self._cancel = threading.Event()  # set on stop: running measurements end
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        #: accepted jobs waiting their turn, oldest first (at most jobs.max_waiting)
        self._jobs: collections.deque[Job] = collections.deque()
        self._job_ready: Optional[asyncio.Event] = None
        self._busy: Optional[asyncio.Lock] = None  # one measurement at a time

    # -- what a plug-in provides ----------------------------------------------------

    async def setup(self) -> None:
        """After the outbox and the job store exist, before the link: who the device is."""

    async def teardown(self) -> None:
        """Before the link stops."""

    def birth(self) -> StatusData:
        """What the retained status says about the device."""
        raise NotImplementedError

    async def health(self) -> HealthData:
        raise NotImplementedError

    def check_job(self, spec: JobSpec) -> None:
        """JobError if this device cannot run ``spec`` (refused, never run)."""

    async def prepare(self, job: Job) -> Conditions:
        """Wait until the device is fit to measure; JobError fails the job."""
        return Conditions()

    async def measure(self, job: Job, item: str, conditions: Conditions) -> ResultData:
        """Measure one item; FleetbenchError fails the item, JobAbort the job,
        WorkerCancelledError means the daemon is stopping (the job resumes later)."""
        raise NotImplementedError

    def on_push(self, msg: Envelope) -> None:
        """A model push (a manifest or a chunk): devices that take none refuse it."""
        push_id = getattr(getattr(msg, "data", None), "push_id", "unknown")
        self.publisher.send(PushAckMessage, PushAck(push_id=push_id, state="rejected",
                                                    error="this device takes no model pushes"))  # fmt: skip

    def link_options(self) -> dict[str, Any]:
        """More keyword arguments for the MqttLink (client id, raw handlers, initial state)."""
        return {}

    def threads_alive(self) -> bool:
        """The plug-in's own threads run (the supervisor asks)."""
        return True

    def status_fields(self) -> dict[str, Any]:
        """More of the status file."""
        return {}

    # -- lifecycle --------------------------------------------------------------------

    async def run(self, install_signals: bool = True) -> int:
        """Run until stopped; 0 if stopped on request, 1 if the daemon failed."""
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()  # made here: on Python 3.9 they bind to the loop they are made in
        self._job_ready = asyncio.Event()
        self._busy = asyncio.Lock()
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) if install_signals else ()
        for sig in signals:
            if sig == signal.SIGHUP:
                loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self.reload()))
            else:
                loop.add_signal_handler(sig, self.stop)
        try:
            await self._start()
            self.notifier.ready(self.ready_text())
            logger.info("%s %s up (state in %s)", self.name, self.device_id or "(no id yet)",
                        self.config.state_dir)  # fmt: skip
            await self._stop.wait()
        finally:
            await self._shutdown()
            for sig in signals:
                loop.remove_signal_handler(sig)
        if self.failure is not None:
            logger.error("%s stopped: %s", self.name, self.failure)
            return EXIT_FAILED
        return EXIT_OK

    def announced(self, birth: StatusData) -> StatusData:
        """The birth as the retained status says it: with the key this device checks commands by."""
        return msgspec.structs.replace(birth, key=self.trust.fingerprint)

    def ready_text(self) -> str:
        return f"device {self.device_id}, broker {redact_url(self.broker_url) or 'searching'}"

    @property
    def device_id(self) -> Optional[str]:
        return self.topics.device_id if self.topics else None

    def stop(self) -> None:
        """Stop gracefully (call from the loop's thread; from others use ``stop_threadsafe``)."""
        if self._stop is not None and not self._stop.is_set():
            logger.info("stopping")
            self.notifier.stopping()
            self._cancel.set()
            self._stop.set()

    def stop_threadsafe(self) -> None:
        if self._loop is not None and not self._loop.is_closed():  # closed: it has stopped already
            self._loop.call_soon_threadsafe(self.stop)

    async def reload(self) -> None:
        """SIGHUP: the plug-in re-reads its configuration (the default: nothing to reload)."""

    async def _start(self) -> None:
        cfg = self.config
        # Nothing the daemon writes is for other users (keys, the outbox, jobs): the group
        # (the service's, so an operator in it can run `fleetbench status`) may read.
        os.umask(0o027)
        try:
            os.makedirs(cfg.state_dir, mode=0o750, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"state_dir {cfg.state_dir!r} cannot be created: {err.strerror}") from None
        if not os.access(cfg.state_dir, os.W_OK):
            raise ConfigError(f"state_dir {cfg.state_dir!r} is not writable by this user")
        private_to_group(cfg.state_dir)
        self.trust = Trust(cfg.state_dir, cfg.models.public_key, cfg.jobs.allow_unsigned)
        log = logger.warning if self.trust.key is None else logger.info
        log("%s", self.trust.describe())
        self.outbox = Outbox(
            os.path.join(cfg.state_dir, "outbox.sqlite"),
            cfg.outbox.max_messages,
            cfg.outbox.max_age_days * 86400,
            cfg.outbox.max_bytes,
        )
        self.publisher = Publisher(self.outbox)
        self.store = JobStore(os.path.join(cfg.state_dir, "jobs"))
        self.inbox = JobInbox(self.store, self.publisher)
        await self.setup()
        for job in self.store.pending():
            logger.info(
                "resuming job %s (%d of %d items left)", job.job_id, len(job.remaining), len(job.items)
            )
            self.enqueue(job)
        if self.broker_url:
            self.connect_when_ready()
        else:
            self._spawn(self._search_broker())
        self._spawn(self._health_loop())
        self._spawn(self._job_loop())
        self._spawn(self._supervise())
        self.write_status("running")

    async def _shutdown(self) -> None:
        self._cancel.set()
        await self._cancel_tasks()
        await self.teardown()
        if self.link is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.link.stop)
        if hasattr(self, "outbox"):
            self.publisher.close()
            self.write_status("stopped")
            self.outbox.close()
        self.notifier.close()

    # -- the broker -------------------------------------------------------------------

    def use_topics(self, topics: DeviceTopics) -> None:
        """Speak for this device id (the agent's at start; a board's once it said HELLO)."""
        self.topics = topics
        self.publisher.bind(topics)

    def connect_when_ready(self) -> None:
        """Open the broker link once both the device id and a broker are known."""
        if self.link is None and self.topics is not None and self.broker_url:
            self._connect(self.broker_url)

    def _connect(self, url: str) -> None:
        assert self.topics is not None
        settings = BrokerSettings.from_config(self.config.broker, url)
        options = {"on_message": self._on_message_thread, "on_malformed": self._on_malformed_thread,
                   "birth": self.announced(self.birth()), **self.link_options()}  # fmt: skip
        self.link = MqttLink(settings, self.topics, self.outbox, **options)
        self.publisher.wake = self.link.wake
        self.broker_url = url
        self.link.start()
        logger.info("broker %s:%d (%s)", settings.host, settings.port, "TLS" if settings.tls else "plain")

    async def drop_link(self) -> None:
        """Close the link (a new device id, or new broker settings); the outbox keeps what is queued."""
        link, self.link = self.link, None
        self.publisher.wake = lambda: None
        if link is not None:
            await asyncio.get_running_loop().run_in_executor(None, link.stop)

    async def _search_broker(self) -> None:
        cfg = self.config
        tls = bool(cfg.broker.ca_file)
        url = await discovery.search_broker(
            cfg.discovery.interfaces, self._sleep, tls=tls, allow_plain=cfg.discovery.allow_plain
        )
        if url is not None:
            self.broker_url = url
            self.connect_when_ready()
            self.write_status("running")

    # -- commands ---------------------------------------------------------------------

    def _on_message_thread(self, msg: Envelope) -> None:  # paho's thread
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_command, msg)

    def _on_malformed_thread(self, kind: str, error: str, raw: bytes) -> None:  # paho's thread
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_malformed, kind, error, raw)

    def _on_command(self, msg: Envelope) -> None:
        if isinstance(msg, JobMessage):
            spec = msg.data
            what = f"job {spec.job_id}"
            try:
                self.trust.check(spec, self.device_id, what)
            except TrustError as err:
                self.inbox.refuse(spec.job_id, msg.id, str(err))
                return

            def admit(spec: JobSpec) -> None:
                try:
                    self.trust.consume(spec.seq, what)
                except TrustError as err:
                    raise JobError(str(err)) from None
                self.check_job(spec)

            job = self.inbox.receive(spec, msg.id, admit)
            if job is not None:
                self.enqueue(job)
        elif isinstance(msg, KeyMessage):
            try:
                self.trust.rotate(msg.data, self.device_id)
            except TrustError as err:
                self.inbox.refuse(None, msg.id, str(err))
                return
            if self.link is not None:  # the retained status says which key it pins now
                self.link.announce(self.link.state, self.announced(self.birth()))
        else:
            self.on_push(msg)

    def enqueue(self, job: Job) -> None:
        """Queue an accepted job; past jobs.max_waiting waiting, the oldest waiting is dropped."""
        self._jobs.append(job)
        limit = self.config.jobs.max_waiting
        while len(self._jobs) > limit:
            oldest = self._jobs.popleft()
            why = f"dropped unstarted: {limit} newer jobs arrived while it waited (jobs.max_waiting)"
            self._spawn(self.inbox.finish(oldest, "rejected", error=why))
        if self._job_ready is not None:
            self._job_ready.set()

    def _on_malformed(self, kind: str, error: str, raw: bytes) -> None:
        if kind == "jobs":
            job_id, msg_id = salvage(raw)
            self.inbox.refuse(job_id, msg_id, f"not a valid job message: {error}")

    # -- periodic work ----------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            data = await self.health()
            data = msgspec.structs.replace(
                data,
                outbox=OutboxState(len(self.outbox), self.outbox.dropped_total),
                uptime_s=round(time.time() - self.started_at, 1),
                job=self.current,
            )
            try:
                self.publisher.send(HealthMessage, data)
            except ProtocolError as err:  # a sensor reading the contract refuses: this sample is skipped
                self._warn("health", "a health sample cannot be sent: %s", err)
            self.write_status("running")
            if await self._sleep(self.config.health.interval_s, self.health_now):
                return

    #: set to send health now rather than at the next interval (a board that said HELLO)
    health_now: Optional[asyncio.Event] = None

    def healthy(self) -> bool:
        """Every thread the daemon needs runs: the broker link's, and the plug-in's own."""
        return (self.link is None or self.link.healthy()) and self.threads_alive()

    async def _supervise(self) -> None:
        interval = self.notifier.watchdog_s / 2 if self.notifier.watchdog_s else SUPERVISE_S
        while True:
            if self.healthy():
                self.notifier.watchdog()
            else:
                # A dead network or outbox thread is a deaf or mute daemon that still looks up:
                # exit non-zero so systemd (Restart=on-failure) starts a whole one.
                self.fail("a thread the daemon needs (MQTT network, outbox pump, serial reader) died")
                return
            if await self._sleep(interval):
                return

    # -- jobs -------------------------------------------------------------------------

    async def _job_loop(self) -> None:
        assert self._job_ready is not None and self._busy is not None
        while True:
            while not self._jobs:
                self._job_ready.clear()
                await self._job_ready.wait()
            job = self._jobs.popleft()
            async with self._busy:
                await self._run_job(job)

    async def _run_job(self, job: Job) -> None:
        failed: list[str] = []
        try:
            conditions = await self.prepare(job)
        except WorkerCancelledError:
            return
        except JobError as err:
            await self._finish(job, "failed", error=str(err))
            return
        total = len(job.items)
        budget_s = self.config.jobs.max_job_s
        for name in job.remaining:
            index = job.items.index(name) + 1
            if job.spent_s >= budget_s:
                await self._finish(job, "failed", error=(
                    f"the job's device-time budget is spent ({job.spent_s:.0f} s, jobs.max_job_s = "
                    f"{budget_s:g}) with {len(job.remaining)} of {total} items left"))  # fmt: skip
                return
            started = time.monotonic()
            self.current = CurrentJob(job.job_id, name, index, total)
            self.write_status("running")
            self.inbox.ack(job.job_id, "running", model=name, index=index, total=total)
            try:
                result = await self.measure(job, name, conditions)
            except WorkerCancelledError:
                self.inbox.ack(
                    job.job_id,
                    "interrupted",
                    model=name,
                    message=f"the {self.name} is stopping; the job resumes when it starts again",
                )
                self.current = None
                return
            except JobAbort as err:
                self.current = None
                await self._finish(job, "failed", error=str(err))
                return
            except FleetbenchError as err:
                logger.warning("job %s: %s failed: %s", job.job_id, name, err)
                failed.append(name)
                self.inbox.ack(job.job_id, "model_failed", model=name, error=str(err))
            else:
                try:
                    sent = self.inbox.send_result(result)
                    if sent is not None:  # on disk before the job file says the item is done
                        await asyncio.wrap_future(sent)
                except ProtocolError as err:  # e.g. a runtime that reported NaN: the item fails, not the job
                    logger.error("job %s: the result of %s cannot be sent: %s", job.job_id, name, err)
                    failed.append(name)
                    self.inbox.ack(
                        job.job_id, "model_failed", model=name, error=f"the result cannot be sent: {err}"
                    )
            job = job.finished(name, time.monotonic() - started)
            self.store.save(job)
        self.current = None
        state = "failed" if failed and len(failed) == total else "done"
        await self._finish(job, state, measured=total - len(failed), failed=tuple(failed))

    async def _finish(self, job: Job, state: str, **fields: Any) -> None:
        await self.inbox.finish(job, state, **fields)
        self.jobs_done += 1
        self.write_status("running")

    # -- the status file --------------------------------------------------------------

    def write_status(self, state: str) -> None:
        """STATE_DIR/status.json: what ``fleetbench status`` shows."""
        status = {
            "state": state,
            "pid": os.getpid(),
            "version": __version__,
            "device_id": self.device_id,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "health_interval_s": self.config.health.interval_s,
            "broker": redact_url(self.broker_url),
            "connected": bool(self.link and self.link.connected.is_set()),
            #: connected or not, since when, and why not
            "link": self.link.state_of_link.fields() if self.link is not None else None,
            "outbox": {"pending": len(self.outbox), "dropped_total": self.outbox.dropped_total},
            "job": msgspec.to_builtins(self.current),
            "jobs_waiting": len(self._jobs),
            "trust": self.trust.describe() if hasattr(self, "trust") else None,
            "jobs_done": self.jobs_done,
            **self.status_fields(),
        }
        try:
            write_bytes_atomic(
                os.path.join(self.config.state_dir, STATUS_FILE),
                msgspec.json.format(msgspec.json.encode(status), indent=1),
                what="status file",
            )
        except FleetbenchError as err:
            logger.warning("%s", err)


def private_to_group(directory: str) -> None:
    """Take every permission for other users off ``directory`` and what is in it (files an
    older release, or a daemon started with a lax umask, left world-readable)."""
    for root, _dirs, files in os.walk(directory):
        for name in [root, *(os.path.join(root, f) for f in files)]:
            try:
                mode = os.lstat(name).st_mode
                if mode & 0o007 and not os.path.islink(name):
                    os.chmod(name, mode & 0o7770)
            except OSError:
                pass


def read_status(state_dir: str) -> Optional[dict[str, Any]]:
    """A device daemon's last status, with ``alive`` telling whether its process still runs."""
    try:
        with open(os.path.join(state_dir, STATUS_FILE), "rb") as fh:
            status = msgspec.json.decode(fh.read())
    except (OSError, msgspec.DecodeError):
        return None
    if not isinstance(status, dict):
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
