"""The MQTT link: one paho-mqtt 2.x client that owns its connection.

- MQTT 3.1.1 by default (Azure IoT Hub, AWS IoT and most hubs speak it), 5.0 on request;
  TLS, username/password and client certificates from the settings.
- Birth and Last Will: ``status`` is retained ``online`` on every connect and retained
  ``offline`` when the agent stops, crashes or loses its network (the broker publishes
  the Will).
- Everything sent goes through the durable ``Outbox`` first.  A pump thread publishes
  the oldest queued messages with QoS 1, at most ``max_inflight`` at a time, and
  deletes each from the outbox only once the broker has acknowledged it (PUBACK).
  After a disconnect the unacknowledged ones are sent again: at least once, with the
  same id, never lost.
- Reconnects with capped exponential backoff (1 s doubling to ``max_backoff_s``).
- Whatever arrives, nothing escapes into paho's network thread: a message that does not
  decode goes to ``on_malformed`` with the protocol's reason, and a handler that raises
  is logged (and paho's ``suppress_exceptions`` is on besides).  ``healthy()`` tells the
  watchdog whether that thread and the pump still run: a dead network thread used to
  leave a deaf daemon "up".
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import msgspec

from agent.common.errors import UsageError
from agent.protocol.errors import ProtocolError
from agent.protocol.messages import Envelope, StatusMessage, decode, encode, make
from agent.protocol.reports import StatusData
from agent.protocol.topics import DeviceTopics, Topic
from agent.transport.outbox import Outbox, OutboxError

if TYPE_CHECKING:
    from agent.common.config import BrokerConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int = 1883
    tls: bool = False
    username: Optional[str] = None
    password: Optional[str] = None
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    protocol: str = "3.1.1"  # or "5"
    keepalive_s: int = 30
    max_backoff_s: float = 60.0

    @classmethod
    def from_config(cls, b: BrokerConfig, url: str) -> BrokerSettings:
        """Settings from a ``[broker]`` section (agent or coordinator) and the URL to use."""
        return cls.from_url(
            url,
            protocol=b.protocol,
            keepalive_s=b.keepalive_s,
            max_backoff_s=b.max_backoff_s,
            ca_file=b.ca_file,
            cert_file=b.cert_file,
            key_file=b.key_file,
            **({"username": b.username, "password": b.password} if b.username else {}),
        )

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> BrokerSettings:
        """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` (TLS, default port 8883)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise UsageError(f"broker {url!r} is not of the form mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"broker {url!r} has an invalid port") from None
        tls = parts.scheme == "mqtts"
        settings = cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password else None,
        )
        return settings.replace(**overrides) if overrides else settings

    def replace(self, **changes: Any) -> BrokerSettings:
        import dataclasses

        return dataclasses.replace(self, **changes)

    def client(self, client_id: str, **options: Any) -> Any:
        """A paho-mqtt 2.x client for these settings: protocol, capped reconnect backoff,
        credentials and TLS.  ``options`` go to ``paho.mqtt.client.Client`` as they are."""
        import paho.mqtt.client as mqtt

        proto = mqtt.MQTTv5 if self.protocol == "5" else mqtt.MQTTv311
        client = _client_class()(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **options
        )
        client.suppress_exceptions = True  # a callback's exception is logged, never the loop's end
        client.reconnect_delay_set(min_delay=1, max_delay=int(self.max_backoff_s))
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(ca_certs=self.ca_file, certfile=self.cert_file, keyfile=self.key_file)
        return client


_CLIENT: Any = None


def _client_class() -> Any:
    """paho's Client, keeping why the last connection attempt failed (paho swallows it)."""
    global _CLIENT
    if _CLIENT is None:
        import paho.mqtt.client as mqtt

        class Client(mqtt.Client):
            #: the OSError of the last failed connection attempt (refused, TLS, DNS, timeout)
            last_error: Optional[OSError] = None

            def reconnect(self) -> Any:
                try:
                    result = super().reconnect()
                except OSError as err:
                    self.last_error = err
                    raise
                self.last_error = None
                return result

        _CLIENT = Client
    return _CLIENT


def describe_failure(err: Optional[BaseException], host: str, port: int, tls: bool = False) -> str:
    """Why a connection to the broker failed, in words an operator can act on.

    >>> describe_failure(ConnectionRefusedError(111, "Connection refused"), "127.0.0.1", 1)
    'connection refused: nothing listens on 127.0.0.1:1'
    """
    import socket
    import ssl

    if err is None:
        return "the connection failed (no reason given)"
    if isinstance(err, ConnectionRefusedError):
        return f"connection refused: nothing listens on {host}:{port}"
    if isinstance(err, socket.gaierror):
        return f"the name {host!r} does not resolve (DNS): {err.strerror}"
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted ({err.verify_message}); check broker.ca_file"
    if isinstance(err, ssl.SSLError):
        return f"TLS handshake failed: {err.reason or err}"
    if isinstance(err, ConnectionResetError) and tls:
        return ("TLS handshake failed: the broker closed the connection (a plain mqtt:// listener, or it "
                "refused this device's certificate)")  # fmt: skip
    if isinstance(err, (TimeoutError, socket.timeout)):
        return f"no answer from {host}:{port} (timed out)"
    return f"{type(err).__name__}: {err.strerror or err}" if isinstance(err, OSError) else str(err)


#: how often a link that keeps failing for the same reason says so again
REPEAT_S = 300.0


class LinkState:
    """Whether the link is up, since when, and why not: for the log (a failure said once, then
    at most every ``REPEAT_S`` with the count) and for ``fleetbench status``.  ``refused`` and
    ``on_connect_fail`` (a paho callback) turn what paho says into words."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.where = f"{settings.host}:{settings.port}"
        self.connected = False
        self.since = time.time()
        self.error: Optional[str] = None
        self._failures = 0
        self._said_at = 0.0

    def up(self) -> None:
        if self._failures:
            logger.info("connected to %s after %d failed attempt(s)", self.where, self._failures)
        self.connected, self.since, self.error, self._failures = True, time.time(), None, 0

    def down(self, why: str) -> None:
        now = time.monotonic()
        if self.connected or self.error is None:
            self.since = time.time()
        self.connected = False
        self._failures += 1
        if why != self.error or now - self._said_at >= REPEAT_S:
            again = f" ({self._failures} attempts so far)" if why == self.error else ""
            logger.warning("cannot reach the broker %s: %s%s; retrying with backoff", self.where, why, again)
            self._said_at = now
        self.error = why

    def refused(self, reason_code: Any) -> None:
        """The broker answered the connection with a failure code."""
        text = str(reason_code).lower()
        who = ("the certificate or user name and password" if "authori" in text or "password" in text
               else "the broker's settings")  # fmt: skip
        self.down(f"the broker refused the connection: {reason_code} (check {who})")

    def on_connect_fail(self, client: Any, userdata: Any) -> None:
        """paho's ``on_connect_fail``: no connection at all (refused, TLS, DNS, timeout)."""
        s = self.settings
        self.down(describe_failure(getattr(client, "last_error", None), s.host, s.port, s.tls))

    def fields(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "since": self.since,
            "error": self.error,
            "failures": self._failures,
        }


#: a decoded message from the device's jobs or models topic (called in the network thread)
def start_network_thread(client: Any, client_id: str) -> Optional[threading.Thread]:
    """``client.loop_start()``, returning paho's network thread so its health can be watched
    (found by the name paho 2 gives it; None if a paho release names it otherwise)."""
    before = {t.ident for t in threading.enumerate()}
    client.loop_start()
    name = f"paho-mqtt-client-{client_id}"
    started = [t for t in threading.enumerate() if t.ident not in before and t.name == name]
    if len(started) != 1:
        logger.debug("cannot tell paho's network thread; its health is not watched")
        return None
    return started[0]


MessageHandler = Callable[[Envelope], None]
#: a message on those topics that does not decode: (topic kind, the reason, the raw bytes)
MalformedHandler = Callable[[str, str, bytes], None]
#: handlers for topics outside fleetbench's envelope format (Home Assistant's status)
RawHandler = Callable[[bytes], None]


class MqttLink:
    """Publish from an outbox, receive jobs and model pushes, announce online/offline."""

    def __init__(
        self,
        settings: BrokerSettings,
        topics: DeviceTopics,
        outbox: Outbox,
        on_message: Optional[MessageHandler] = None,
        max_inflight: int = 100,
        client_id: Optional[str] = None,
        on_connected: Optional[Callable[[], None]] = None,
        on_malformed: Optional[MalformedHandler] = None,
        raw_handlers: Optional[dict[str, RawHandler]] = None,
        birth: Optional[StatusData] = None,
        state: str = "online",
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.outbox = outbox
        self.on_message = on_message
        self.on_connected = on_connected
        self.on_malformed = on_malformed
        self.raw_handlers = dict(raw_handlers or {})
        #: what the retained status says about the device besides online/offline (identity,
        #: capabilities): a coordinator subscribing later learns the fleet from it
        self.birth = birth or StatusData(state="online", protocol=2)
        #: what the retained status says while connected: "offline" too, for a device the link
        #: speaks for but cannot reach now (a board unplugged from its bridge); see ``announce``
        self.state = state
        self.max_inflight = max_inflight
        self.connected = threading.Event()
        self.sent_total = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pump: Optional[threading.Thread] = None
        self._network: Optional[threading.Thread] = None
        self._drain_timeout_s = 5.0
        self._epoch = 0  # bumped on every (dis)connect: in-flight state from an older epoch is void
        self.client_id = client_id or f"fleetbench-{topics.device_id}"
        self._client = settings.client(self.client_id)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.will_set(topics.status, self._status("offline"), qos=1, retain=True)
        self._client.on_connect = self._on_connect
        #: up or not, since when, and why not (``fleetbench status`` shows it)
        self.state_of_link = LinkState(settings)
        self._client.on_connect_fail = self.state_of_link.on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (the broker may be down; we keep trying) and start pumping."""
        self._client.connect_async(
            self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s
        )
        self._network = start_network_thread(self._client, self.client_id)
        self._pump = threading.Thread(target=self._pump_loop, name="fleetbench-outbox-pump", daemon=True)
        self._pump.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Say ``offline`` (retained), disconnect cleanly, stop the threads.  Queued messages stay on disk."""
        self._drain_timeout_s = timeout_s
        self._stop.set()
        self._wake.set()
        if self._pump:
            self._pump.join(timeout_s + 1.0)
        if self.connected.is_set():
            info = self._client.publish(self.topics.status, self._status("offline"), qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout_s)
        self._client.disconnect()
        self._client.loop_stop()

    def healthy(self) -> bool:
        """The pump and the network threads run (the watchdog asks: a dead pump would silently
        stop sending, a dead network thread would silently stop receiving)."""
        pump = self._pump is not None and self._pump.is_alive()
        return pump and (self._network is None or self._network.is_alive())

    def wake(self) -> None:
        """Something new is in the outbox: send it now rather than at the next poll."""
        self._wake.set()

    def __enter__(self) -> MqttLink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- sending ------------------------------------------------------------------

    def _status(self, state: str) -> bytes:
        data = msgspec.structs.replace(self.birth, state=state)
        return encode(make(StatusMessage, self.topics.device_id, data))

    def _pump_loop(self) -> None:
        inflight: list[tuple[Any, str]] = []  # (MQTTMessageInfo, message id)
        try:
            self._pump_until_stopped(inflight)
        finally:
            # Graceful stop: give what is in flight a bounded chance to be acknowledged, then a
            # last sweep, so what the broker has is not sent again on the next start.
            deadline = time.monotonic() + self._drain_timeout_s
            for info, _ in inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.connected.is_set():
                    break
                try:
                    info.wait_for_publish(remaining)
                except (RuntimeError, ValueError):  # the link went down meanwhile
                    break
            acked = [mid for info, mid in inflight if info.is_published()]
            if acked:
                try:
                    self.outbox.ack(acked)
                    self.sent_total += len(acked)
                except OutboxError as err:
                    logger.warning("%s", err)

    def _pump_until_stopped(self, inflight: list[tuple[Any, str]]) -> None:
        epoch = -1
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if epoch != self._epoch:  # reconnected (or lost the link): resend what was not acked
                inflight.clear()
                epoch = self._epoch
            if not self.connected.is_set():
                continue
            # Partition once: a PUBACK may arrive between two looks at is_published().
            done = [info.is_published() for info, _ in inflight]
            acked = [mid for (_, mid), ok in zip(inflight, done) if ok]
            if acked:
                try:
                    self.outbox.ack(acked)
                except OutboxError as err:  # disk trouble: keep them in flight, try next time
                    logger.warning("%s", err)
                    continue
                self.sent_total += len(acked)
                inflight[:] = [entry for entry, ok in zip(inflight, done) if not ok]
            room = self.max_inflight - len(inflight)
            if room <= 0:
                continue
            busy = {mid for _, mid in inflight}
            for p in self.outbox.peek(room, exclude=busy):
                info = self._client.publish(p.topic, p.payload, qos=p.qos, retain=p.retain)
                if info.rc != 0:  # not connected after all: try again after the next connect
                    break
                inflight.append((info, p.id))

    # -- paho callbacks (network thread: keep them short) --------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.state_of_link.refused(reason_code)
            return
        self.state_of_link.up()
        logger.info("connected to %s:%d", self.settings.host, self.settings.port)
        # Subscribe before saying "online": the broker handles one connection's packets in order,
        # so whoever sees "online" (the coordinator, about to send a job) reaches a subscribed agent.
        client.subscribe([(self.topics.jobs, 1), (self.topics.models, 1)]
                         + [(topic, 1) for topic in self.raw_handlers])  # fmt: skip
        client.publish(self.topics.status, self._status(self.state), qos=1, retain=True)
        self._epoch += 1
        self.connected.set()
        self._wake.set()
        if self.on_connected is not None:
            try:
                self.on_connected()
            except Exception:  # a hook bug must not kill the network thread
                logger.exception("on_connected hook failed")

    def announce(self, state: str, birth: Optional[StatusData] = None) -> None:
        """Change the retained status (and what it says about the device); sent now if connected,
        else at the next connect.  The Last Will stays "offline"."""
        if state not in ("online", "offline"):
            raise ValueError(f"status {state!r} is not online or offline")
        self.state = state
        if birth is not None:
            self.birth = birth
        if self.connected.is_set():
            self._client.publish(self.topics.status, self._status(state), qos=1, retain=True)

    def publish_now(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish without the outbox: for retained state that is rebuilt on every connect
        (Home Assistant discovery configs), never for results or health."""
        self._client.publish(topic, payload, qos=1, retain=retain)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            logger.warning("lost the broker %s:%d (%s); reconnecting with backoff", self.settings.host,
                           self.settings.port, reason_code)  # fmt: skip
            self.state_of_link.down(f"lost the connection: {reason_code}")
        self.connected.clear()
        self._epoch += 1

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._wake.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            self._receive(msg.topic, bytes(msg.payload))
        except Exception:  # nothing a message does may end the network thread
            logger.exception("handling a message on %s failed", msg.topic)

    def _receive(self, topic: str, payload: bytes) -> None:
        raw = self.raw_handlers.get(topic)
        if raw is not None:
            raw(payload)
            return
        kind = self.topics.parse(topic)
        if kind not in ("jobs", "models") or self.on_message is None:
            # Not ours: some brokers (amqtt 0.12) also deliver other devices' retained statuses.
            logger.debug("ignoring a message on %s, which this device did not subscribe to", topic)
            return
        try:
            message = decode(payload, Topic(self.topics.device_id, kind))
        except ProtocolError as err:
            logger.warning("refusing a message on %s: %s", topic, err)
            if self.on_malformed is not None:
                self.on_malformed(kind, str(err), payload)
            return
        self.on_message(message)
