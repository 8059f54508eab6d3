"""Packets: a 4-byte header (version, kind, request id) and a payload per kind.

The message types here are the whole vocabulary of PROTOCOL.md, section 4; ``encode``
and ``decode`` are the only places that know their byte layout.  ``decode`` raises
``CodecError`` (and only that) for a packet it cannot read: a firmware bug or a line
error that slipped past the CRC must not take the bridge down.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Optional, TypeVar, Union

from agent.common.errors import FleetbenchError
from firmware_bridge.framing import MAX_PACKET

VERSION = 1
HEADER = struct.Struct("<BBH")
MAX_PAYLOAD = MAX_PACKET - HEADER.size
MAX_SAMPLES = 250  # per RESULT frame
MAX_PING = 64
TEMP_UNKNOWN = -32768
FREE_UNKNOWN = 0xFFFFFFFF


class CodecError(FleetbenchError):
    """A packet is not a message of this protocol."""


class VersionError(CodecError):
    """The packet is of another protocol version."""

    def __init__(self, version: int) -> None:
        super().__init__(f"the packet is protocol version {version}; this bridge speaks version {VERSION}")
        self.version = version


class Kind(IntEnum):
    HELLO_REQ = 0x01
    HELLO = 0x02
    PING = 0x03
    PONG = 0x04
    HEALTH_REQ = 0x05
    HEALTH = 0x06
    BENCH = 0x10
    ACCEPT = 0x11
    RESULT = 0x12
    ERROR = 0x7F


class ErrorCode(IntEnum):
    UNKNOWN_KIND = 1
    BAD_PAYLOAD = 2
    UNKNOWN_MODEL = 3
    BUSY = 4
    NO_MEMORY = 5
    RUNTIME = 6
    VERSION = 7
    LIMIT = 8


RESET_CAUSES = ("unknown", "power-on", "reset pin", "watchdog", "brown-out", "software", "lockup or fault")


class _Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def int(self, fmt: str, value: int, name: str) -> _Writer:
        try:
            self.parts.append(struct.pack("<" + fmt, value))
        except struct.error:
            raise CodecError(f"{name} {value!r} does not fit the protocol's field") from None
        return self

    def str(self, text: str, name: str) -> _Writer:
        raw = text.encode("utf-8")
        if len(raw) > 255:
            raise CodecError(f"{name} {text[:40]!r}... is {len(raw)} bytes of UTF-8; at most 255 fit")
        self.parts.append(bytes([len(raw)]) + raw)
        return self

    def raw(self, data: bytes) -> _Writer:
        self.parts.append(data)
        return self

    def done(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    def __init__(self, data: bytes, kind: str) -> None:
        self.data, self.pos, self.kind = data, 0, kind

    def int(self, fmt: str) -> int:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise CodecError(f"{self.kind} payload of {len(self.data)} bytes is too short")
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return int(value)

    def str(self) -> str:
        n = self.int("B")
        if self.pos + n > len(self.data):
            raise CodecError(f"{self.kind} payload ends inside a string")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError(f"{self.kind} payload holds a string that is not UTF-8") from None

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


# -- the messages ------------------------------------------------------------------------

_E = TypeVar("_E", bound="_Empty")


class _Empty:
    """A message with no payload (a request for HELLO or HEALTH, an ACCEPT)."""

    def payload(self) -> bytes:
        return b""

    @classmethod
    def parse(cls: type[_E], r: _Reader) -> _E:
        return cls()


@dataclass(frozen=True)
class HelloRequest(_Empty):
    KIND: ClassVar[Kind] = Kind.HELLO_REQ


@dataclass(frozen=True)
class Hello:
    KIND: ClassVar[Kind] = Kind.HELLO
    boot_id: int
    clock_hz: int
    arena_bytes: int
    reset_cause: int
    uid: str
    board: str
    mcu: str
    firmware: str
    runtime: str
    models: tuple[str, ...] = ()

    @property
    def reset_cause_text(self) -> str:
        return (
            RESET_CAUSES[self.reset_cause] if self.reset_cause < len(RESET_CAUSES) else str(self.reset_cause)
        )

    def payload(self) -> bytes:
        w = _Writer().int("I", self.boot_id, "boot_id").int("I", self.clock_hz, "clock_hz")
        w.int("I", self.arena_bytes, "arena_bytes").int("B", self.reset_cause, "reset_cause")
        for name in ("uid", "board", "mcu", "firmware", "runtime"):
            w.str(getattr(self, name), name)
        w.int("B", len(self.models), "number of models")
        for m in self.models:
            w.str(m, "model id")
        return w.done()

    @classmethod
    def parse(cls, r: _Reader) -> Hello:
        boot_id, clock_hz, arena_bytes, reset_cause = r.int("I"), r.int("I"), r.int("I"), r.int("B")
        uid, board, mcu, firmware, runtime = (r.str() for _ in range(5))
        models = tuple(r.str() for _ in range(r.int("B")))
        return cls(boot_id, clock_hz, arena_bytes, reset_cause, uid, board, mcu, firmware, runtime, models)


@dataclass(frozen=True)
class Ping:
    KIND: ClassVar[Kind] = Kind.PING
    nonce: bytes = b""

    def payload(self) -> bytes:
        if len(self.nonce) > MAX_PING:
            raise CodecError(f"a PING carries at most {MAX_PING} bytes, not {len(self.nonce)}")
        return bytes(self.nonce)

    @classmethod
    def parse(cls, r: _Reader) -> Ping:
        return cls(r.rest())


@dataclass(frozen=True)
class Pong:
    KIND: ClassVar[Kind] = Kind.PONG
    nonce: bytes = b""

    def payload(self) -> bytes:
        return bytes(self.nonce)

    @classmethod
    def parse(cls, r: _Reader) -> Pong:
        return cls(r.rest())


@dataclass(frozen=True)
class HealthRequest(_Empty):
    KIND: ClassVar[Kind] = Kind.HEALTH_REQ


@dataclass(frozen=True)
class Health:
    KIND: ClassVar[Kind] = Kind.HEALTH
    die_temp_c: Optional[float]
    supply_v: Optional[float]
    uptime_ms: int
    free_bytes: Optional[int]

    def payload(self) -> bytes:
        temp = TEMP_UNKNOWN if self.die_temp_c is None else round(self.die_temp_c * 100)
        mv = 0 if self.supply_v is None else round(self.supply_v * 1000)
        free = FREE_UNKNOWN if self.free_bytes is None else self.free_bytes
        w = _Writer().int("h", temp, "die_temp").int("H", mv, "supply_mv")
        return w.int("I", self.uptime_ms, "uptime_ms").int("I", free, "free_bytes").done()

    @classmethod
    def parse(cls, r: _Reader) -> Health:
        temp, mv, uptime, free = r.int("h"), r.int("H"), r.int("I"), r.int("I")
        return cls(
            die_temp_c=None if temp == TEMP_UNKNOWN else temp / 100.0,
            supply_v=None if mv == 0 else mv / 1000.0,
            uptime_ms=uptime,
            free_bytes=None if free == FREE_UNKNOWN else free,
        )


@dataclass(frozen=True)
class Bench:
    KIND: ClassVar[Kind] = Kind.BENCH
    model: str
    runs: int
    warmup: int = 0

    def payload(self) -> bytes:
        if self.runs < 1:
            raise CodecError(f"runs must be at least 1, not {self.runs}")
        w = _Writer().str(self.model, "model id").int("H", self.runs, "runs")
        return w.int("H", self.warmup, "warmup").done()

    @classmethod
    def parse(cls, r: _Reader) -> Bench:
        return cls(r.str(), r.int("H"), r.int("H"))


@dataclass(frozen=True)
class Accept(_Empty):
    KIND: ClassVar[Kind] = Kind.ACCEPT


@dataclass(frozen=True)
class Result:
    KIND: ClassVar[Kind] = Kind.RESULT
    timer_hz: int
    clock_hz: int
    runs_total: int
    first: int
    ticks: tuple[int, ...]

    def payload(self) -> bytes:
        if not 1 <= len(self.ticks) <= MAX_SAMPLES:
            raise CodecError(f"a RESULT carries 1-{MAX_SAMPLES} samples, not {len(self.ticks)}")
        w = _Writer().int("I", self.timer_hz, "timer_hz").int("I", self.clock_hz, "clock_hz")
        w.int("H", self.runs_total, "runs_total").int("H", self.first, "first").int(
            "B", len(self.ticks), "count"
        )
        try:
            return w.raw(struct.pack(f"<{len(self.ticks)}I", *self.ticks)).done()
        except struct.error:
            raise CodecError("a RESULT sample does not fit 32 bits") from None

    @classmethod
    def parse(cls, r: _Reader) -> Result:
        timer_hz, clock_hz, total, first, count = r.int("I"), r.int("I"), r.int("H"), r.int("H"), r.int("B")
        if count == 0:
            raise CodecError("RESULT holds no samples")
        if timer_hz == 0:
            raise CodecError("RESULT gives a timer of 0 Hz")
        if first + count > total:
            raise CodecError(f"RESULT samples {first}..{first + count - 1} go past runs_total {total}")
        raw = r.rest()
        if len(raw) < 4 * count:
            raise CodecError(f"RESULT payload holds {len(raw) // 4} of its {count} samples")
        return cls(timer_hz, clock_hz, total, first, struct.unpack_from(f"<{count}I", raw))

    @property
    def last(self) -> bool:
        return self.first + len(self.ticks) == self.runs_total


@dataclass(frozen=True)
class Error:
    KIND: ClassVar[Kind] = Kind.ERROR
    code: int
    text: str = ""

    @property
    def name(self) -> str:
        try:
            return ErrorCode(self.code).name.lower().replace("_", " ")
        except ValueError:
            return f"firmware error {self.code}"

    def payload(self) -> bytes:
        return _Writer().int("H", self.code, "code").str(self.text, "text").done()

    @classmethod
    def parse(cls, r: _Reader) -> Error:
        return cls(r.int("H"), r.str())


Message = Union[HelloRequest, Hello, Ping, Pong, HealthRequest, Health, Bench, Accept, Result, Error]
_TYPES: dict[int, Any] = {
    t.KIND: t for t in (HelloRequest, Hello, Ping, Pong, HealthRequest, Health, Bench, Accept, Result, Error)
}


def encode(msg: Message, request_id: int) -> bytes:
    """The packet for ``msg`` (to be framed by ``framing.encode_frame``).

    >>> encode(Bench("kws", runs=100, warmup=10), 7).hex()
    '01100700036b777364000a00'
    """
    if not 0 <= request_id <= 0xFFFF:
        raise CodecError(f"request id {request_id} is not a 16-bit number")
    payload = msg.payload()
    if len(payload) > MAX_PAYLOAD:
        raise CodecError(f"{msg.KIND.name} payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    return HEADER.pack(VERSION, msg.KIND, request_id) + payload


def decode(packet: bytes) -> tuple[int, Message]:
    """(request id, message) of a packet; CodecError if it is not one of ours."""
    if len(packet) < HEADER.size:
        raise CodecError(f"a packet of {len(packet)} bytes has no room for the header")
    version, kind, request_id = HEADER.unpack_from(packet)
    if version != VERSION:
        raise VersionError(version)
    tp = _TYPES.get(kind)
    if tp is None:
        raise CodecError(f"packet kind 0x{kind:02x} is not one of this protocol's")
    return request_id, tp.parse(_Reader(packet[HEADER.size :], Kind(kind).name))
