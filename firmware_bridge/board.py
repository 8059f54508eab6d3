"""One board on one serial line: a reader thread, requests with ids, timeouts, retries.

``BoardLink`` owns the port (pyserial's ``serial_for_url``: a device path, ``loop://``,
``socket://HOST:PORT``, ``rfc2217://HOST:PORT``).  Its reader thread feeds the framing
layer, decodes packets and hands each reply to the request waiting for its id.  What it
survives, and how (PROTOCOL.md, section 5):

- noise, partial frames, CRC failures: dropped and counted by the framing layer;
- a request that goes unanswered: sent again with the same id, ``retries`` times;
- a stalled run (no frame for ``stall_timeout_s``): the run fails, HELLO_REQ resyncs;
- a board reset (HELLO with id 0, or a new boot id): a run in progress fails and its
  samples are discarded, never half-counted;
- the port disappearing (USB unplugged): the run in progress fails; the reader thread
  tries to open the port again every ``reopen_s`` until it is back, then says HELLO_REQ.

Calls block their own thread (the bridge daemon runs them in an executor); several may be
in flight at once, told apart by request id.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, cast

from agent.common.errors import FleetbenchError, UsageError
from firmware_bridge import codec
from firmware_bridge.framing import FrameDecoder, encode_frame

logger = logging.getLogger(__name__)

DEFAULT_BAUD = 115200
#: a run that lost more than this share of its samples to corrupted frames is failed
MAX_MISSING_SHARE = 0.1


class BridgeError(FleetbenchError):
    """Talking to the board failed; the message names the port and what happened."""


class PortError(BridgeError):
    """The serial port cannot be opened, or it went away."""


class BoardTimeoutError(BridgeError):
    """The board did not answer, or stopped sending in the middle of a run."""


class BoardResetError(BridgeError):
    """The board restarted while a request was in flight."""


class BoardError(BridgeError):
    """The board answered ERROR."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class BoardRun:
    """One BENCH as the board measured it: per-run durations, converted to nanoseconds."""

    model: str
    runs: int
    warmup: int
    samples_ns: tuple[int, ...]
    timer_hz: int
    clock_hz: int
    missing: int  # samples lost to corrupted frames
    hello: codec.Hello
    started_at: float  # time.time() at ACCEPT
    ended_at: float
    clocks_hz: tuple[int, ...] = ()  # every core clock the RESULT frames reported


@dataclass
class LinkStats:
    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    stalls: int = 0
    resets: int = 0
    reopens: int = 0
    stale: int = 0  # frames for a request nobody waits for (late, or after a failed run)
    undecodable: int = 0  # CRC fine, but not a packet of this protocol

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class _Gone:
    reason: str


@dataclass(frozen=True)
class _Reset:
    hello: codec.Hello


@dataclass
class _Waiter:
    replies: queue.Queue = field(default_factory=queue.Queue)


def open_serial(port: str, baud: int, write_timeout_s: float) -> Any:
    """The pyserial object for a path or URL; PortError (one sentence) if it cannot be opened."""
    import serial

    options: dict[str, Any] = {"baudrate": baud, "timeout": 0.2, "write_timeout": write_timeout_s}
    if "://" not in port:
        options["exclusive"] = True  # a second bridge on the same port would garble both
    try:
        return serial.serial_for_url(port, **options)
    except ValueError as err:
        raise UsageError(f"serial port {port!r}: {err}") from None
    except (serial.SerialException, OSError) as err:
        text = str(err)
        if getattr(err, "errno", None) == errno.ENOENT:
            text = "it does not exist (is the board plugged in? `fleetbench bridge --list` shows the ports)"
        elif getattr(err, "errno", None) == errno.EACCES:
            text = "this user may not open it (add the user to the port's group, usually dialout)"
        elif "Inappropriate ioctl" in text:
            text = "it is not a serial port"
        elif "exclusively lock" in text or "Resource temporarily unavailable" in text:
            text = "another program (a second bridge, a serial monitor) has it open"
        raise PortError(f"serial port {port!r} cannot be opened: {text}") from None


class BoardLink:
    def __init__(
        self,
        port: str,
        baud: int = DEFAULT_BAUD,
        timeout_s: float = 2.0,
        retries: int = 3,
        stall_timeout_s: float = 30.0,
        reopen_s: float = 1.0,
        on_hello: Optional[Callable[[codec.Hello, bool], None]] = None,
        on_port: Optional[Callable[[bool, str], None]] = None,
    ) -> None:
        self.port, self.baud = port, baud
        self.timeout_s, self.retries = timeout_s, retries
        self.stall_timeout_s, self.reopen_s = stall_timeout_s, reopen_s
        self.on_hello, self.on_port = on_hello, on_port
        self.decoder = FrameDecoder()
        self.stats = LinkStats()
        self.hello: Optional[codec.Hello] = None  # the last one received (kept across unplugging)
        self.connected = threading.Event()
        self.hello_seen = threading.Event()
        self._ser: Any = None
        self._lock = threading.Lock()  # _pending, _next, hello
        self._wlock = threading.Lock()  # one frame at a time on the wire
        self._pending: dict[int, _Waiter] = {}
        self._next = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._opened_once = False
        self._warned_open = False

    # -- lifecycle ----------------------------------------------------------------

    def open(self, wait: bool = False) -> None:
        """Open the port and start the reader.  ``wait``: a missing port is waited for
        (the daemon); otherwise PortError now (a manual run)."""
        if not wait:
            self._attach(open_serial(self.port, self.baud, self.timeout_s))
        self._thread = threading.Thread(target=self._read_loop, name="fleetbench-bridge-reader", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._detach("the bridge is stopping")

    def __enter__(self) -> BoardLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def counters(self) -> dict[str, Any]:
        """Link and framing counters, for the board's health report."""
        return {**self.stats.to_dict(), **self.decoder.stats.to_dict(), "connected": self.connected.is_set()}

    # -- requests -----------------------------------------------------------------

    def hello_request(self) -> codec.Hello:
        """Ask the board who it is."""
        reply = self._request(codec.HelloRequest(), codec.Hello)
        assert isinstance(reply, codec.Hello)
        return reply

    def wait_hello(self, timeout_s: float) -> codec.Hello:
        """The board's HELLO since the port was last opened, asked for until ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.hello is not None and self.hello_seen.is_set():
                return self.hello
            try:
                return self.hello_request()
            except (BoardTimeoutError, PortError):
                if time.monotonic() >= deadline:
                    raise
                self.connected.wait(max(0.0, min(self.reopen_s, deadline - time.monotonic())))

    def ping(self, nonce: bytes = b"fleetbench") -> float:
        """Round-trip seconds of one PING."""
        start = time.perf_counter()
        reply = self._request(codec.Ping(nonce), codec.Pong)
        assert isinstance(reply, codec.Pong)
        if reply.nonce != nonce:
            raise BridgeError(f"the board on {self.port} answered PING with other bytes than it was sent")
        return time.perf_counter() - start

    def health(self) -> codec.Health:
        reply = self._request(codec.HealthRequest(), codec.Health)
        assert isinstance(reply, codec.Health)
        return reply

    def bench(
        self,
        model: str,
        runs: int,
        warmup: int = 0,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> BoardRun:
        """One BENCH: ACCEPT, then RESULT frames until the last sample; see the module doc
        for every way it fails (each a BridgeError naming the port, model and progress)."""
        if not 1 <= runs <= 0xFFFF or not 0 <= warmup <= 0xFFFF:
            raise UsageError(f"runs must be 1-65535 and warm-up 0-65535 (got {runs} and {warmup})")
        hello = self.hello or self.hello_request()
        rid, waiter = self._register()
        try:
            # A RESULT for this id also says "accepted": the ACCEPT itself may have been garbled.
            first = self._exchange(
                rid, waiter, codec.Bench(model, runs, warmup), (codec.Accept, codec.Result)
            )
            started = time.time()
            samples: dict[int, int] = {}
            timer_hz, clocks = 0, []
            where = f"the board on {self.port}"
            early: list[Any] = [first] if isinstance(first, codec.Result) else []
            while True:
                try:
                    item = early.pop() if early else waiter.replies.get(timeout=self.stall_timeout_s)
                except queue.Empty:
                    self.stats.stalls += 1
                    self._send_quietly(codec.HelloRequest())  # resync; its answer updates self.hello
                    raise BoardTimeoutError(
                        f"{where} stalled during {model!r}: nothing for {self.stall_timeout_s:g} s after "
                        f"{len(samples)} of {runs} runs; the run is discarded"
                    ) from None
                if isinstance(item, _Gone):
                    raise PortError(f"{where} went away during {model!r} after {len(samples)} of {runs} "
                                    f"runs ({item.reason}); the run is discarded")  # fmt: skip
                if isinstance(item, _Reset):
                    raise BoardResetError(
                        f"{where} restarted during {model!r} after {len(samples)} of {runs} runs "
                        f"(reset cause: {item.hello.reset_cause_text}); its samples are discarded"
                    )
                if isinstance(item, codec.Error):
                    raise self._board_error(item, f"during {model!r}")
                if not isinstance(item, codec.Result):
                    continue  # a second ACCEPT, answering a retried BENCH
                if item.runs_total != runs:
                    raise BridgeError(
                        f"{where} reports {item.runs_total} runs of {model!r}; {runs} were asked"
                    )
                timer_hz = timer_hz or item.timer_hz
                if item.clock_hz not in clocks:
                    clocks.append(item.clock_hz)
                for i, ticks in enumerate(item.ticks):
                    samples[item.first + i] = round(ticks * 1e9 / item.timer_hz)
                if progress is not None:
                    progress(len(samples), runs)
                if item.last:
                    break
            missing = runs - len(samples)
            if missing > MAX_MISSING_SHARE * runs:
                raise BridgeError(
                    f"{missing} of {runs} samples of {model!r} from {where} were lost to corrupted "
                    "frames; the run is discarded (check the cable and the baud rate)"
                )
            return BoardRun(
                model=model, runs=runs, warmup=warmup,
                samples_ns=tuple(samples[i] for i in sorted(samples)),
                timer_hz=timer_hz, clock_hz=clocks[-1], missing=missing, hello=hello,
                started_at=started, ended_at=time.time(), clocks_hz=tuple(clocks),
            )  # fmt: skip
        finally:
            self._unregister(rid)

    # -- request machinery ----------------------------------------------------------

    def _register(self) -> tuple[int, _Waiter]:
        with self._lock:
            for _ in range(0x10000):
                self._next = self._next % 0xFFFF + 1  # 1..65535, never 0 (the board's own)
                if self._next not in self._pending:
                    break
            waiter = self._pending[self._next] = _Waiter()
            self.stats.requests += 1
            return self._next, waiter

    def _unregister(self, rid: int) -> None:
        with self._lock:
            self._pending.pop(rid, None)

    def _request(self, msg: codec.Message, expect: type | tuple[type, ...]) -> codec.Message:
        rid, waiter = self._register()
        try:
            return self._exchange(rid, waiter, msg, expect)
        finally:
            self._unregister(rid)

    def _exchange(
        self, rid: int, waiter: _Waiter, msg: codec.Message, expect: type | tuple[type, ...]
    ) -> codec.Message:
        frame = encode_frame(codec.encode(msg, rid))
        name = msg.KIND.name
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
                logger.debug("no answer to %s %d from %s; sending it again", name, rid, self.port)
            self._write(frame)
            deadline = time.monotonic() + self.timeout_s
            while True:
                try:
                    reply: Any = waiter.replies.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if isinstance(reply, _Gone):
                    raise PortError(f"the board on {self.port} went away ({reply.reason})")
                if isinstance(reply, _Reset):
                    if isinstance(msg, codec.HelloRequest):
                        return reply.hello  # a fresh greeting answers the question
                    raise BoardResetError(f"the board on {self.port} restarted while answering {name}")
                if isinstance(reply, codec.Error):
                    raise self._board_error(reply, f"to {name}")
                if not isinstance(reply, expect):
                    logger.debug("ignoring %s for request %d (%s)", type(reply).__name__, rid, name)
                    continue
                return cast(codec.Message, reply)
            self.stats.timeouts += 1
        raise BoardTimeoutError(
            f"the board on {self.port} did not answer {name} within {self.timeout_s:g} s "
            f"({self.retries + 1} tries): is it running the fleetbench protocol at {self.baud} baud?"
        )

    def _board_error(self, err: codec.Error, when: str) -> BoardError:
        text = f": {err.text}" if err.text else ""
        return BoardError(f"the board on {self.port} answered ERROR {err.code} ({err.name}) {when}{text}",
                          err.code)  # fmt: skip

    def _write(self, frame: bytes) -> None:
        import serial

        with self._wlock:
            ser = self._ser
            if ser is None:
                raise PortError(f"serial port {self.port!r} is not open (unplugged?)")
            try:
                ser.write(frame)
            except serial.SerialTimeoutException:
                raise BoardTimeoutError(f"the board on {self.port} is not reading its serial line") from None
            except (serial.SerialException, OSError) as err:
                raise PortError(f"serial port {self.port!r} failed while writing: {err}") from None

    def _send_quietly(self, msg: codec.Message) -> None:
        """Send without waiting for the answer (it arrives as an update: a HELLO)."""
        rid, _ = self._register()
        self._unregister(rid)
        try:
            self._write(encode_frame(codec.encode(msg, rid)))
        except BridgeError as err:
            logger.debug("%s", err)

    # -- the reader thread ----------------------------------------------------------

    def _attach(self, ser: Any) -> None:
        self._ser = ser
        if self._opened_once:
            self.stats.reopens += 1
            logger.warning("serial port %s is back", self.port)
        self._opened_once = True
        self._warned_open = False
        self.connected.set()
        if self.on_port is not None:
            self.on_port(True, "")

    def _detach(self, reason: str) -> None:
        with self._wlock:
            ser, self._ser = self._ser, None
        if ser is None:
            return
        try:
            ser.close()
        except Exception as err:  # closing a vanished device can fail in many ways; it is gone anyway
            logger.debug("closing %s: %s", self.port, err)
        self.connected.clear()
        self.hello_seen.clear()  # whoever is plugged in next must say who it is
        self.decoder.reset()
        with self._lock:
            waiters = list(self._pending.values())
        for w in waiters:
            w.replies.put(_Gone(reason))
        if self.on_port is not None:
            self.on_port(False, reason)

    def _read_loop(self) -> None:
        import serial

        while not self._stop.is_set():
            if self._ser is None:
                try:
                    self._attach(open_serial(self.port, self.baud, self.timeout_s))
                except FleetbenchError as err:
                    if not self._warned_open:
                        logger.warning("%s; trying again every %g s", err, self.reopen_s)
                        self._warned_open = True
                    self._stop.wait(self.reopen_s)
                    continue
                self._send_quietly(codec.HelloRequest())
            ser = self._ser
            try:
                data = ser.read(ser.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as err:
                # TypeError/AttributeError: pyserial's posix read after another thread closed the fd
                if not self._stop.is_set():
                    logger.warning("serial port %s went away: %s", self.port, err)
                    self._detach(f"port error: {err}")
                continue
            if data:
                for packet in self.decoder.feed(data):
                    self._dispatch(packet)

    def _dispatch(self, packet: bytes) -> None:
        try:
            rid, msg = codec.decode(packet)
        except codec.VersionError as err:
            self.stats.undecodable += 1
            logger.error("the board on %s speaks another protocol: %s", self.port, err)
            return
        except codec.CodecError as err:
            self.stats.undecodable += 1
            logger.debug("undecodable packet from %s: %s", self.port, err)
            return
        if isinstance(msg, codec.Hello):
            self._on_hello(rid, msg)
        with self._lock:
            waiter = self._pending.get(rid) if rid else None
        if waiter is not None:
            waiter.replies.put(msg)
        elif not isinstance(msg, codec.Hello):
            self.stats.stale += 1

    def _on_hello(self, rid: int, hello: codec.Hello) -> None:
        with self._lock:
            previous, self.hello = self.hello, hello
            reset = previous is not None and (rid == 0 or previous.boot_id != hello.boot_id)
            waiters = list(self._pending.values()) if reset else []
        if reset:
            self.stats.resets += 1
            logger.warning("the board on %s restarted (reset cause: %s)", self.port, hello.reset_cause_text)
        for w in waiters:
            w.replies.put(_Reset(hello))
        self.hello_seen.set()
        if self.on_hello is not None:
            try:
                self.on_hello(hello, reset)
            except Exception:  # a callback bug must not kill the reader
                logger.exception("on_hello callback failed")
