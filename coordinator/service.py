"""The coordinator service: subscribe to the fleet, store what it says, nothing lost.

Subscriptions (QoS 1, persistent session, so messages sent while the coordinator is
down wait in the broker):

  $share/{group}/fleetbench/v1/devices/+/{health,results,acks}
      a shared subscription: several coordinator instances in one group split the
      fleet's messages between them
  fleetbench/v1/devices/+/status
      not shared: retained messages are never delivered through a shared subscription
      (MQTT 5, 4.8.2), and every instance needs the whole fleet's birth and Will

Every message is acknowledged to the broker (PUBACK, paho's manual ack) only after
the batch holding it is committed to the database: a coordinator killed mid-batch
gets the unacknowledged messages again, and the idempotent ingest drops what was
already stored.  A message that cannot be read or stored is kept as a dead letter and
acknowledged like the rest, so it costs only itself (see ``coordinator.store.ingest``);
the log says so once per device, then once a minute with the count.

Several coordinators (replicas) may share one database and one broker: each ingests its share
of the messages, and the loops (re-ranking, rollouts, operators' jobs) run in the one holding
the ``loops`` lease in the database (``Store.acquire``), renewed every tick; no loop starts and
no push is sent past the lease's end.  A replica killed or paused stops renewing, and another
takes the lease once it has expired (``lease_s``); a clean stop hands it over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import queue
import signal
import socket
import threading
import time
from typing import Any, Callable, Optional

from agent.common.logs import WarnOnce
from agent.common.sdnotify import Notifier
from agent.protocol.topics import all_devices
from agent.transport.mqtt import BrokerSettings, LinkState, start_network_thread
from coordinator.commands import Commands
from coordinator.config import CoordinatorConfig
from coordinator.deploy import Deployer
from coordinator.errors import CoordinatorError
from coordinator.keys import Signer
from coordinator.reranker import Reranker
from coordinator.store import Fenced, Message, Store
from coordinator.store.ingest import Refusal

#: the lease the loops (re-ranking, rollouts, operators' jobs) run under
LOOPS = "loops"

logger = logging.getLogger(__name__)

SHARED_KINDS = ("health", "results", "acks")
SESSION_EXPIRY_S = 7 * 86400  # MQTT 5: how long the broker keeps messages for a stopped coordinator
#: what keeps happening (dead letters, a database failing a batch) is said once, then at most this often
LOG_EVERY_S = 60.0
#: a batch the database failed to take is tried again after this, doubling up to RETRY_MAX_S
RETRY_MIN_S = 0.05
RETRY_MAX_S = 30.0


def subscriptions(group: str) -> list[tuple[str, int]]:
    """What a coordinator in ``group`` subscribes to.

    >>> subscriptions("coordinators")[0]
    ('$share/coordinators/fleetbench/v1/devices/+/health', 1)
    """
    prefix = f"$share/{group}/" if group else ""  # no group: plain subscriptions (one coordinator)
    return [(f"{prefix}{all_devices(kind)}", 1) for kind in SHARED_KINDS] + [(all_devices("status"), 1)]


class Ingestor:
    """A paho client with manual acks feeding a writer thread that commits in batches."""

    def __init__(
        self,
        settings: BrokerSettings,
        store: Store,
        client_id: str = "fleetbench-coordinator",
        group: str = "coordinators",
        batch: int = 1000,
    ) -> None:
        self.settings, self.store, self.group, self.client_id = settings, store, group, client_id
        self.batch = batch
        self.connected = threading.Event()
        self.stored: dict[str, int] = {}
        self.received = 0
        #: messages kept as dead letters since start
        self.dead_lettered = 0
        self._warn_dead = WarnOnce(logger)
        self._dead_since_log = 0
        self._dead_logged_at = 0.0
        self._network: Optional[threading.Thread] = None
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._stopping = False
        self._writer: Optional[threading.Thread] = None
        # MQTT 3.1.1 persists the session with clean_session=False; MQTT 5 at connect (start()).
        session: dict[str, Any] = {"clean_session": False} if settings.protocol != "5" else {}
        self._client = settings.client(client_id, manual_ack=True, **session)
        self._client.max_inflight_messages_set(1000)
        self._client.on_connect = self._on_connect
        #: up or not, since when, and why not (said once in the log, then every few minutes)
        self.link = LinkState(settings)
        self._client.on_connect_fail = self.link.on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @property
    def client(self) -> Any:
        """The paho client, for publishing jobs and pushes on the same connection."""
        return self._client

    def start(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="fleetbench-ingest", daemon=True)
        self._writer.start()
        if self.settings.protocol == "5":
            # MQTT 5: a persistent session is clean_start=False plus an expiry; and the broker may
            # send up to our Receive Maximum (65,535) unacknowledged messages, where MQTT 3.1.1
            # leaves it to the broker's setting (mosquitto: max_inflight_messages, 20).
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            self._client.connect_async(
                self.settings.host,
                self.settings.port,
                keepalive=self.settings.keepalive_s,
                clean_start=False,
                properties=props,
            )
        else:
            self._client.connect_async(
                self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s
            )
        self._network = start_network_thread(self._client, self.client_id)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Disconnect, then commit (and acknowledge) what was already received."""
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self._stop.set()
        if self._writer is not None:
            self._writer.join(timeout_s)

    def backlog(self) -> int:
        """Messages received and not yet committed: the ingest's lag, in messages."""
        return self._queue.qsize()

    def healthy(self) -> bool:
        """The writer and paho's network thread run (a dead one stops the ingest silently)."""
        writer = self._writer is not None and self._writer.is_alive()
        return writer and (self._network is None or self._network.is_alive())

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.link.refused(reason_code)
            return
        self.link.up()
        client.subscribe(subscriptions(self.group))
        self.connected.set()
        logger.info(
            "coordinator connected to %s:%d (group %s)", self.settings.host, self.settings.port, self.group
        )

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if self.connected.is_set() and not self._stopping:
            logger.warning("lost the broker (%s); reconnecting", reason_code)
            self.link.down(f"lost the connection: {reason_code}")
        self.connected.clear()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self._queue.put((msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _write_loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            items = [first]
            # Take what is already here, and never wait for more: the broker sends only so many
            # unacknowledged messages at a time (mosquitto's max_inflight_messages, 20 by
            # default), and they are acknowledged only after this commit.
            while len(items) < self.batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batch = [Message(topic, payload) for topic, payload, _, _ in items]
            refused: list[Refusal] = []
            added = self._store(batch, refused)
            if added is None:  # stopped while the database failed: the broker redelivers them later
                continue
            for kind, n in added.items():
                self.stored[kind] = self.stored.get(kind, 0) + n
            self.received += len(items)
            if refused:
                self._log_dead(refused)
            for _, _, mid, qos in items:
                if qos > 0:
                    self._client.ack(mid, qos)

    def _store(self, batch: list[Message], refused: list[Refusal]) -> Optional[dict[str, int]]:
        """Store a batch, trying again while the database fails (a deadlock with another
        replica's batch, a server restarting, a full disk): its messages stay unacknowledged
        meanwhile, so nothing is lost, and the broker holds the rest back (its in-flight window).
        Giving a failed batch up would leave its messages unacknowledged until the next
        reconnect, and the window full: the ingest would stall.  None if stopped first."""
        delay, failures, said_at = RETRY_MIN_S, 0, -math.inf
        while True:
            try:
                added = self.store.ingest(batch, refused)
            except Exception as err:  # the database's failure, never a message's (those are dead letters)
                refused.clear()
                failures += 1
                reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                if time.monotonic() - said_at >= LOG_EVERY_S:
                    said_at = time.monotonic()
                    logger.warning("storing %d messages failed (%s); trying again, they stay "
                                   "unacknowledged until stored", len(batch), reason)  # fmt: skip
                if self._stop.wait(delay):
                    return None
                delay = min(2 * delay, RETRY_MAX_S)
                continue
            if failures:
                logger.warning("stored %d messages after %d failed attempt(s)", len(batch), failures)
            return added

    def _log_dead(self, refused: list[Refusal]) -> None:
        """Say once per device that its messages are being refused; then a count a minute."""
        self.dead_lettered += len(refused)
        self._dead_since_log += len(refused)
        for letter in refused:
            self._warn_dead(
                letter.device_id,
                "refused a message on %s (kept as a dead letter; `fleetbench fleet` counts them): %s",
                letter.topic,
                letter.reason,
            )
        now = time.monotonic()
        if now - self._dead_logged_at >= LOG_EVERY_S:
            if self._dead_logged_at:
                logger.warning(
                    "%d message(s) kept as dead letters in the last %.0f s (%d since start)",
                    self._dead_since_log,
                    now - self._dead_logged_at,
                    self.dead_lettered,
                )
            self._dead_logged_at, self._dead_since_log = now, 0


class Coordinator:
    """The service: the ingestor, the re-ranking loop, the rollouts, systemd notify, graceful stop."""

    def __init__(self, config: CoordinatorConfig, store: Store, settings: BrokerSettings) -> None:
        self.config = config
        self.store = store
        self.ingestor = Ingestor(settings, store, client_id=config.client_id, group=config.group)
        client = self.ingestor.client
        #: one signer for every loop: one sequence clock, one view of the keys
        self.signer = Signer.of(config)
        #: the loops' view of the store: their writes are fenced by the lease (Store.for_loops)
        self.loops_store = store.for_loops()
        loops = self.loops_store
        self.deployer = Deployer(loops, config, client, signer=self.signer)
        self.reranker = Reranker(loops, config, client, signer=self.signer) if config.rerank.enabled else None
        self.commands = Commands(loops, config, client, self.signer)
        self.failure: Optional[str] = None
        #: this process, as a lease holder: the loops run only while it holds LOOPS
        self.holder = f"{config.client_id}@{socket.gethostname()}:{os.getpid()}"
        self.lease: Optional[int] = None  # its fencing token while it leads
        self._retained_at = -math.inf  # when old health was last thinned, and up to where
        self._thinned_to = 0.0
        self.notifier = Notifier()
        self._stop: Optional[asyncio.Event] = None
        self._failed_ticks = 0

    def stop(self) -> None:
        if self._stop is not None and not self._stop.is_set():
            self.notifier.stopping()
            self._stop.set()

    def tick(self) -> None:
        """One pass of the loops (blocking: the database), in the coordinator that holds the
        lease; every coordinator ingests.  The lease runs until ``lease_s`` after it was asked
        for (never later than the database has it), and each loop starts only before then: one
        that was paused past it (another may lead by now) does not act on.  The deployer's sender
        keeps to the same end."""
        asked = time.time()
        token = self.store.acquire(LOOPS, self.holder, self.config.lease_s, asked)
        until = asked + self.config.lease_s if token is not None else 0.0
        self.deployer.led(until, new=token != self.lease)
        if token != self.lease:
            if token is not None:
                logger.info("this coordinator (%s) now runs the loops (lease %d)", self.holder, token)
            else:
                logger.warning("this coordinator (%s) no longer runs the loops: another holds the lease",
                               self.holder)  # fmt: skip
            self.lease = token
        self.loops_store.fence = (LOOPS, self.holder, token) if token is not None else None
        if token is None:
            return
        online = self.store.online()  # once per pass, for every loop
        loops: list[Callable[..., None]] = [self.reranker.tick] if self.reranker is not None else []
        loops += [self.deployer.tick, self.commands.tick, self.retain]
        for run in loops:
            if time.time() >= until:
                logger.warning("lease %d ran out during a pass; the loops stop here", token)
                return
            try:
                run(online=online)
            except Fenced as err:  # paused past the lease, and another replica took it meanwhile
                logger.warning("%s; the loops stop here", err)
                return

    def retain(self, online: Any = None) -> None:
        """Every ``retention.every_s``: health older than ``retention.health_days`` thinned to one
        sample per device and hour (the store keeps results, acks, decisions and rollouts)."""
        now = time.time()
        if now - self._retained_at < self.config.retention.every_s:
            return
        before = (now - self.config.retention.health_days * 86400) // 3600 * 3600  # whole hours
        gone = self.loops_store.thin_health(before, since=self._thinned_to)
        self._retained_at, self._thinned_to = now, before
        if gone:
            logger.info("%d health sample(s) older than %g days thinned to one per device and hour", gone,
                        self.config.retention.health_days)  # fmt: skip

    async def _serve(self) -> Any:
        """The dashboard and /metrics, if ``http.listen`` asks for them (in this loop)."""
        if not self.config.http.listen:
            return None
        from coordinator.web.app import Dashboard, serve

        host, port = self.config.http.address()
        try:
            runner = await serve(Dashboard(self.store, self.config, self), host, port)
        except OSError as err:  # in use, or an address this host does not have
            raise CoordinatorError(
                f"http.listen {self.config.http.listen!r} cannot be served: {err.strerror}"
            ) from None
        logger.info("dashboard and /metrics on http://%s/", self.config.http.listen)
        return runner

    async def run(self, install_signals: bool = True) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        web = await self._serve()  # first: a listener that cannot be had stops the start, in a sentence
        self.ingestor.start()
        self.notifier.ready(
            "ingesting" + (f", dashboard on http://{self.config.http.listen}/" if web else "")
        )
        last_ping = 0.0
        try:
            while not self._stop.is_set():
                if self.ingestor.connected.is_set():
                    try:
                        await loop.run_in_executor(None, self.tick)
                        self._failed_ticks = 0
                    except Exception:  # a bad row or a database hiccup: log, and try again next tick
                        self._failed_ticks += 1
                        logger.exception("coordinator loop failed (%d in a row)", self._failed_ticks)
                if not (self.ingestor.healthy() and self.deployer.healthy()):
                    # a dead ingest or push thread is a coordinator that looks up and does nothing:
                    # exit non-zero so systemd (Restart=on-failure) starts a whole one
                    self.failure = "a thread the coordinator needs (MQTT, ingest, push) died"
                    break
                healthy = self._failed_ticks < 10
                if (
                    healthy
                    and self.notifier.watchdog_s
                    and loop.time() - last_ping >= self.notifier.watchdog_s / 2
                ):
                    self.notifier.watchdog()
                    last_ping = loop.time()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.config.tick_s)
        finally:
            if self.lease is not None:  # another coordinator takes the loops at once
                with contextlib.suppress(Exception):  # a database that is gone: it expires instead
                    await loop.run_in_executor(None, self.store.release, LOOPS, self.holder)
            if self.reranker is not None:
                await loop.run_in_executor(None, self.reranker.close)
            if web is not None:
                await web.cleanup()
            await loop.run_in_executor(None, self.deployer.close)
            await loop.run_in_executor(None, self.ingestor.stop)
            logger.info("coordinator stopped; stored %s, %d dead letter(s)", self.ingestor.stored,
                        self.ingestor.dead_lettered)  # fmt: skip
        if self.failure is not None:
            logger.error("coordinator stopped: %s", self.failure)
            return 1
        return 0
