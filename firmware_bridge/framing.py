"""Frames on the serial line: COBS, a CRC-32 per frame, ``0x00`` between frames.

    frame = COBS(packet || CRC32(packet) as 4 bytes little-endian) || 0x00

This layer knows bytes only; what a packet means is ``codec``'s business.  The decoder is
fed whatever the serial port returned (a partial frame, several frames, noise) and gives
back the packets that arrived whole and intact.  It never raises on input: a bad frame is
counted in ``stats`` and dropped, because a board that was just plugged in, reset or
garbled by a noisy ground line must cost frames, not the bridge.

Run ``python -m firmware_bridge.framing HEX`` to see how a packet is framed, step by step
(for firmware authors checking their own encoder).
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Optional, Union

from cobs import cobs

from agent.common.errors import FleetbenchError

#: header and payload, the CRC not counted (PROTOCOL.md, section 2)
MAX_PACKET = 1024
CRC_BYTES = 4
#: the longest COBS encoding of a packet and its CRC (one overhead byte per 254), delimiter not counted
MAX_ENCODED = MAX_PACKET + CRC_BYTES + (MAX_PACKET + CRC_BYTES) // 254 + 1
DELIMITER = b"\x00"

Buffer = Union[bytes, bytearray, memoryview]


class FramingError(FleetbenchError):
    """A packet cannot be framed (it is too long)."""


def crc32(data: Buffer) -> int:
    """The CRC-32 of Ethernet and zlib (reflected 0xEDB88320, init and final XOR 0xFFFFFFFF).

    >>> hex(crc32(b"123456789"))
    '0xcbf43926'
    """
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_frame(packet: Buffer) -> bytes:
    """The bytes to write for one packet, delimiter included.

    >>> encode_frame(bytes.fromhex("01010100")).hex()
    '04010101050fe3218100'
    """
    if len(packet) > MAX_PACKET:
        raise FramingError(f"a packet of {len(packet)} bytes is over the protocol's {MAX_PACKET}")
    body = bytes(packet) + crc32(packet).to_bytes(CRC_BYTES, "little")
    return cobs.encode(body) + DELIMITER


@dataclass
class FrameStats:
    """What the decoder has seen; the bridge reports these in the board's health."""

    frames: int = 0  # packets delivered
    crc_errors: int = 0  # COBS was fine, the CRC was not
    malformed: int = 0  # not COBS, or too short to hold a header and a CRC
    oversize: int = 0  # more than MAX_ENCODED bytes without a delimiter
    garbage_bytes: int = 0  # bytes that were not part of a delivered packet

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FrameDecoder:
    """Streaming decoder: ``feed`` bytes in any pieces, get whole packets out."""

    #: a packet shorter than this cannot hold version, kind, request id and CRC
    MIN_BODY = 4 + CRC_BYTES

    def __init__(self) -> None:
        self.stats = FrameStats()
        self._buf = bytearray()
        self._skipping = False  # after an oversize run: drop bytes up to the next delimiter

    def reset(self) -> None:
        """Forget a partial frame (the port was closed and opened again)."""
        self.stats.garbage_bytes += len(self._buf)
        self._buf.clear()
        self._skipping = False

    def feed(self, data: Buffer) -> list[bytes]:
        """The packets completed by ``data`` (CRC checked and removed), in order."""
        out: list[bytes] = []
        view = bytes(data)
        start = 0
        while start <= len(view):
            end = view.find(0, start)
            piece = view[start:] if end < 0 else view[start:end]
            if self._skipping:
                self.stats.garbage_bytes += len(piece)
            else:
                self._buf += piece
                if len(self._buf) > MAX_ENCODED:
                    self.stats.oversize += 1
                    self.stats.garbage_bytes += len(self._buf)
                    self._buf.clear()
                    self._skipping = True
            if end < 0:
                break
            start = end + 1
            if self._skipping:
                self._skipping = False
                continue
            if self._buf:  # an empty frame is a resync, not an error
                packet = self._unframe(bytes(self._buf))
                self._buf.clear()
                if packet is not None:
                    out.append(packet)
        return out

    def _unframe(self, raw: bytes) -> Optional[bytes]:
        try:
            body = cobs.decode(raw)
        except cobs.DecodeError:
            body = b""
        if len(body) < self.MIN_BODY:
            self.stats.malformed += 1
            self.stats.garbage_bytes += len(raw) + 1
            return None
        packet, crc = body[:-CRC_BYTES], body[-CRC_BYTES:]
        if crc32(packet) != int.from_bytes(crc, "little"):
            self.stats.crc_errors += 1
            self.stats.garbage_bytes += len(raw) + 1
            return None
        self.stats.frames += 1
        return packet


def explain(packet: bytes) -> str:
    """The framing of ``packet`` step by step, for a firmware author's eyes."""
    crc = crc32(packet)
    body = packet + crc.to_bytes(CRC_BYTES, "little")
    return "\n".join([
        f"packet          {packet.hex(' ')}",
        f"CRC32           0x{crc:08X}, appended little-endian: {crc.to_bytes(4, 'little').hex(' ')}",
        f"packet + CRC    {body.hex(' ')}",
        f"COBS            {cobs.encode(body).hex(' ')}",
        f"frame on wire   {encode_frame(packet).hex(' ')}",
    ])  # fmt: skip


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m firmware_bridge.framing PACKET_HEX  (e.g. 01010100: HELLO_REQ, id 1)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        packet = bytes.fromhex(argv[0])
        print(explain(packet))
    except (ValueError, FramingError) as err:
        print(f"framing: error: {argv[0]!r} is not a packet in hex: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
