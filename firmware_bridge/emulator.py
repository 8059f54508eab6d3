"""A reference board: speaks PROTOCOL.md on a pseudo-terminal, as firmware would on a UART.

For the tests (the bridge talks to it through a real tty, not a mock), for trying the
bridge without hardware, and for firmware authors who want to see a conversation:

    python -m firmware_bridge.emulator --link /tmp/board --model kws=12.5 --model vww=180
    fleetbench bridge --port /tmp/board --once bench kws

It behaves like a single-core MCU: one loop that reads requests between "inferences",
answers HELLO_REQ/PING/HEALTH_REQ at any time, streams RESULT frames during a run, and
greets with ``0x00`` + HELLO (request id 0) after every reset.  Each run's duration is
the model's latency times (1 + noise), counted in cycles of ``clock_hz`` or in
microseconds.  Faults on demand: corrupted frames, garbage, stalls, resets (now or after
k samples of a run), unplugging and replugging (the pty goes away and comes back).

``baud`` paces what crosses the line at 10 bits per byte (a pty has no baud rate of its
own), so round trips cost what they would on a UART at that rate.  ``realtime`` makes
each run take its latency in wall time; otherwise runs cost no time at all.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import random
import select
import signal
import sys
import threading
import time
import tty
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from agent.common.args import whole
from firmware_bridge import codec
from firmware_bridge.framing import FrameDecoder, encode_frame

logger = logging.getLogger(__name__)

#: what an ESP32's ROM prints at reset: noise without zero bytes, before the greeting
BOOT_BANNER = (
    b"\r\nets Jul 29 2019 12:21:46\r\n\r\nrst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
)
MAX_RUNS = 10_000


@dataclass
class BoardSpec:
    board: str = "fleetbench emulated board"
    mcu: str = "Cortex-M4F (emulated)"
    clock_hz: int = 64_000_000
    timer: str = "cycles"  # or "us": what RESULT's ticks count
    uid: str = "e0a1b2c3d4e5f601"
    firmware: str = "fleetbench-emulator 1"
    runtime: str = "tflite-micro (emulated)"
    arena_bytes: int = 96 * 1024
    #: model id -> latency of one run in milliseconds
    models: dict[str, float] = field(default_factory=lambda: {"kws_micro": 12.5, "person_detect": 180.0})
    noise: float = 0.02  # relative standard deviation of a run
    per_frame: int = 32  # samples per RESULT frame
    baud: Optional[int] = None
    realtime: bool = False
    die_temp_c: Optional[float] = 41.5
    supply_v: Optional[float] = 3.3
    seed: int = 0

    @property
    def timer_hz(self) -> int:
        return self.clock_hz if self.timer == "cycles" else 1_000_000


@dataclass
class _Run:
    rid: int
    model: str
    runs: int
    warmup: int
    produced: int = 0
    pending: list[int] = field(default_factory=list)
    next_due: float = 0.0
    frame_started: float = 0.0


class EmulatedBoard:
    """Start it, talk to ``port``; the fault methods act from any thread and return once done."""

    def __init__(self, spec: Optional[BoardSpec] = None, link: Optional[str] = None) -> None:
        self.spec = spec or BoardSpec()
        self.link = link
        self.decoder = FrameDecoder()
        self.requests = 0
        self.runs_done = 0
        #: set while no run is in progress (tests wait on it after a stall)
        self.idle = threading.Event()
        self.idle.set()
        self.ignored_bytes = 0  # what arrived while stalled or unplugged
        self.boot_id = 0
        self._cause = 1
        self._rng = random.Random(self.spec.seed)
        self._master: Optional[int] = None
        self._slave: Optional[int] = None
        self._tty = ""
        self._run: Optional[_Run] = None
        self._stalled = False
        self._corrupt = 0
        self._reset_after: Optional[int] = None
        self._stall_after: Optional[int] = None
        self._booted_at = time.monotonic()
        self._commands: queue.Queue = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle ----------------------------------------------------------------

    @property
    def port(self) -> str:
        """What the bridge opens: the stable link if there is one, else the pty itself."""
        return self.link or self._tty

    def start(self) -> EmulatedBoard:
        self._plug()
        self._boot(cause=1)
        self._thread = threading.Thread(target=self._loop, name="fleetbench-emulated-board", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(5.0)
        self._unplug()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> EmulatedBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults (any thread) ------------------------------------------------------

    def corrupt_next(self, frames: int = 1) -> None:
        """Flip a bit in each of the next ``frames`` frames the board sends (their CRC fails)."""
        self._call(lambda: setattr(self, "_corrupt", self._corrupt + frames))

    def send_garbage(self, data: bytes) -> None:
        self._call(lambda: self._write(data))

    def stall(self, after_samples: Optional[int] = None) -> None:
        """Stop answering and stop measuring (a hung firmware) until ``resume``: now, or during
        the next run once it has sent ``after_samples`` samples."""
        if after_samples is None:
            self._call(lambda: setattr(self, "_stalled", True))
        else:
            self._call(lambda: setattr(self, "_stall_after", after_samples))

    def resume(self) -> None:
        self._call(lambda: setattr(self, "_stalled", False))

    def reset(self, after_samples: Optional[int] = None) -> None:
        """Restart now, or during the next run once it has measured ``after_samples`` runs."""
        if after_samples is None:
            self._call(lambda: self._boot(cause=5))
        else:
            self._call(lambda: setattr(self, "_reset_after", after_samples))

    def unplug(self) -> None:
        """The USB cable comes out: the tty and the link disappear."""
        self._call(self._unplug)

    def replug(self) -> None:
        """The cable goes back in: a new tty behind the same link, and the board boots."""

        def plug_in() -> None:
            self._plug()
            self._boot(cause=1)

        self._call(plug_in)

    def _call(self, fn: Callable[[], Any]) -> None:
        if self._thread is None or not self._thread.is_alive():
            fn()
            return
        done = threading.Event()
        self._commands.put((fn, done))
        os.write(self._wake_w, b"x")
        done.wait(10.0)

    # -- the pty --------------------------------------------------------------------

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: a UART passes bytes as they are
        self._master, self._slave, self._tty = master, slave, os.ttyname(slave)
        if self.link:
            tmp = f"{self.link}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self._tty, tmp)
            os.replace(tmp, self.link)

    def _unplug(self) -> None:
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._run = None
        self.idle.set()

    def _write(self, data: bytes) -> None:
        if self._master is None:
            return
        if self.spec.baud:
            time.sleep(len(data) * 10 / self.spec.baud)  # the bytes' time on the wire
        try:
            os.write(self._master, data)
        except OSError as err:
            logger.debug("emulated board: write failed: %s", err)

    def _send(self, msg: codec.Message, rid: int) -> None:
        frame = bytearray(encode_frame(codec.encode(msg, rid)))
        if self._corrupt:
            self._corrupt -= 1
            i = len(frame) - 2  # the last CRC byte: COBS stays valid, the CRC check fails
            frame[i] = frame[i] ^ 0x5A or frame[i] ^ 0xA5
        self._write(bytes(frame))

    # -- the firmware ---------------------------------------------------------------

    def _boot(self, cause: int) -> None:
        self.boot_id = self._rng.getrandbits(32)
        self._cause = cause
        self._run = None
        self.idle.set()
        self._stalled = False  # a restart ends a hang
        self._stall_after = self._reset_after = None
        self._booted_at = time.monotonic()
        self.decoder.reset()
        if cause == 5:
            self._write(BOOT_BANNER)
        self._write(b"\x00")
        self._send(self._hello(), 0)

    def _hello(self) -> codec.Hello:
        s = self.spec
        return codec.Hello(self.boot_id, s.clock_hz, s.arena_bytes, self._cause, s.uid, s.board, s.mcu,
                           s.firmware, s.runtime, tuple(s.models))  # fmt: skip

    def _loop(self) -> None:
        while not self._stop.is_set():
            timeout: Optional[float] = None
            run = self._run
            if run is not None and not self._stalled:
                timeout = 0.0
                if self.spec.realtime:
                    due = min(run.next_due, run.frame_started + 1.0) if run.pending else run.next_due
                    timeout = max(0.0, due - time.monotonic())
            fds = [self._wake_r] + ([self._master] if self._master is not None else [])
            try:
                ready, _, _ = select.select(fds, [], [], timeout)
            except (OSError, ValueError):  # the master was closed under us by a command
                continue
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
                while not self._commands.empty():
                    fn, done = self._commands.get()
                    try:
                        fn()
                    finally:
                        done.set()
            if self._master is not None and self._master in ready:
                self._receive()
            if self._run is not None and not self._stalled:
                self._advance()

    def _receive(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except OSError:
            return
        if self._stalled:
            self.ignored_bytes += len(data)
            return
        if self.spec.baud:
            time.sleep(len(data) * 10 / self.spec.baud)
        for packet in self.decoder.feed(data):
            self._handle(packet)

    def _handle(self, packet: bytes) -> None:
        self.requests += 1
        try:
            rid, msg = codec.decode(packet)
        except codec.VersionError:
            self._send(codec.Error(codec.ErrorCode.VERSION, f"this board speaks version {codec.VERSION}"),
                       int.from_bytes(packet[2:4], "little"))  # fmt: skip
            return
        except codec.CodecError as err:
            rid = int.from_bytes(packet[2:4], "little")
            code = codec.ErrorCode.UNKNOWN_KIND if "kind" in str(err) else codec.ErrorCode.BAD_PAYLOAD
            self._send(codec.Error(code, str(err)[:200]), rid)
            return
        if isinstance(msg, codec.HelloRequest):
            self._send(self._hello(), rid)
        elif isinstance(msg, codec.Ping):
            self._send(codec.Pong(msg.nonce), rid)
        elif isinstance(msg, codec.HealthRequest):
            uptime = int((time.monotonic() - self._booted_at) * 1000) & 0xFFFFFFFF
            self._send(codec.Health(self.spec.die_temp_c, self.spec.supply_v, uptime, 18_432), rid)
        elif isinstance(msg, codec.Bench):
            self._bench(rid, msg)
        else:
            self._send(codec.Error(codec.ErrorCode.UNKNOWN_KIND, f"{msg.KIND.name} is not a request"), rid)

    def _bench(self, rid: int, msg: codec.Bench) -> None:
        if self._run is not None:
            if self._run.rid == rid:  # the host retried: the same run, answered again
                self._send(codec.Accept(), rid)
            else:
                self._send(codec.Error(codec.ErrorCode.BUSY, f"running {self._run.model}"), rid)
            return
        if msg.model not in self.spec.models:
            self._send(
                codec.Error(codec.ErrorCode.UNKNOWN_MODEL, f"no model {msg.model!r} in this firmware"), rid
            )
            return
        if msg.runs > MAX_RUNS or msg.warmup > MAX_RUNS:
            self._send(codec.Error(codec.ErrorCode.LIMIT, f"at most {MAX_RUNS} runs and warm-up runs"), rid)
            return
        self._send(codec.Accept(), rid)
        now = time.monotonic()
        latency_s = self.spec.models[msg.model] / 1000.0
        due = now + latency_s * (msg.warmup + 1) if self.spec.realtime else now
        self._run = _Run(rid, msg.model, msg.runs, msg.warmup, next_due=due, frame_started=due)
        self.idle.clear()

    def _sample(self, model: str) -> int:
        scale = max(0.1, 1.0 + self.spec.noise * self._rng.gauss(0.0, 1.0))
        return max(1, round(self.spec.models[model] / 1000.0 * scale * self.spec.timer_hz))

    def _advance(self) -> None:
        run = self._run
        assert run is not None
        now = time.monotonic()
        if self.spec.realtime:
            if now >= run.next_due:  # one inference finished
                if not run.pending:
                    run.frame_started = now
                run.pending.append(self._sample(run.model))
                run.next_due += self.spec.models[run.model] / 1000.0
            elif not (run.pending and now - run.frame_started >= 1.0):
                return
        else:
            while len(run.pending) < self.spec.per_frame and run.produced + len(run.pending) < run.runs:
                run.pending.append(self._sample(run.model))
        done = run.produced + len(run.pending)
        if self._reset_after is not None and done >= self._reset_after:
            self._boot(cause=5)  # the firmware crashed mid-run
            return
        full = len(run.pending) >= self.spec.per_frame or done == run.runs or now - run.frame_started >= 1.0
        frame = None
        if full:
            frame = codec.Result(self.spec.timer_hz, self.spec.clock_hz, run.runs, run.produced,
                                 tuple(run.pending))  # fmt: skip
            run.produced = done
            run.pending = []
        if run.produced == run.runs:  # counted before the last frame goes: its reader sees the run done
            self._run = None
            self.runs_done += 1
        if frame is not None:
            self._send(frame, run.rid)
        if run.produced == run.runs:
            self.idle.set()
        elif self._stall_after is not None and run.produced >= self._stall_after:
            self._stall_after = None
            self._stalled = True


def _model(text: str) -> tuple[str, float]:
    name, sep, ms = text.partition("=")
    try:
        latency = float(ms)
    except ValueError:
        latency = -1.0
    if not sep or not name or not latency > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=MILLISECONDS, e.g. kws=12.5")
    return name, latency


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firmware_bridge.emulator",
        description="An emulated microcontroller that speaks the fleetbench board protocol on a pty.",
        epilog="Then: fleetbench bridge --port LINK --once hello (or --once bench MODEL).",
    )
    parser.add_argument("--link", metavar="PATH", help="a stable symlink to the pty (like /dev/serial/by-id)")
    parser.add_argument("--model", action="append", type=_model, metavar="NAME=MS",
                        help="a model and its latency per run (repeatable; default: kws_micro=12.5, "
                        "person_detect=180)")  # fmt: skip
    parser.add_argument("--board", default=BoardSpec.board)
    parser.add_argument("--mcu", default=BoardSpec.mcu)
    parser.add_argument("--uid", default=BoardSpec.uid, help="the factory unique id it reports (hex)")
    parser.add_argument("--clock", type=whole(1), default=BoardSpec.clock_hz, metavar="HZ")
    parser.add_argument("--timer", choices=["cycles", "us"], default="cycles")
    parser.add_argument("--noise", type=float, default=BoardSpec.noise, help="relative std of a run")
    parser.add_argument("--baud", type=whole(50), help="pace the line like a UART at this rate")
    parser.add_argument("--realtime", action="store_true", help="runs take their latency in wall time")
    args = parser.parse_args(argv)
    spec = BoardSpec(board=args.board, mcu=args.mcu, uid=args.uid, clock_hz=args.clock, timer=args.timer,
                     noise=args.noise, baud=args.baud, realtime=args.realtime)  # fmt: skip
    if args.model:
        spec.models = dict(args.model)
    try:
        board = EmulatedBoard(spec, args.link).start()
    except OSError as err:
        print(f"emulator: error: --link {args.link!r} cannot be made: {err.strerror}", file=sys.stderr)
        return 2
    print(f"emulated board on {board.port}" + (f" ({board._tty})" if args.link else ""), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    board.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
