"""Message envelopes: versioned JSON, serialized in one place.

    {"v": 1, "id": "<uuid hex>", "kind": "results", "device_id": "...", "ts": 1763790000.0,
     "data": {...}}

``id`` is unique per message and survives retries, so a receiver drops duplicates:
the transport delivers at least once.  Messages stay under 128 KiB (AWS IoT Core's
limit; Azure IoT Hub's is 256 KiB).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from agent.errors import FleetbenchError

VERSION = 1
MAX_BYTES = 128 * 1024


class MessageError(FleetbenchError):
    """A message cannot be built or read."""


@dataclass(frozen=True)
class Envelope:
    id: str
    kind: str
    device_id: str
    ts: float
    data: Any
    v: int = VERSION

    def encode(self) -> bytes:
        raw = json.dumps(
            {"v": self.v, "id": self.id, "kind": self.kind, "device_id": self.device_id,
             "ts": self.ts, "data": self.data},
            separators=(",", ":"), allow_nan=False,
        ).encode()  # fmt: skip
        if len(raw) > MAX_BYTES:
            raise MessageError(
                f"{self.kind} message {self.id} is {len(raw)} bytes; MQTT hubs accept at most {MAX_BYTES}"
            )
        return raw


def make(kind: str, device_id: str, data: Any, msg_id: Optional[str] = None) -> Envelope:
    return Envelope(id=msg_id or uuid.uuid4().hex, kind=kind, device_id=device_id, ts=time.time(), data=data)


def decode(raw: bytes) -> Envelope:
    """Parse and check an envelope; MessageError says what is wrong."""
    if len(raw) > MAX_BYTES:
        raise MessageError(f"message of {len(raw)} bytes is over the {MAX_BYTES}-byte limit")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise MessageError(f"message is not JSON: {err}") from err
    if not isinstance(obj, dict):
        raise MessageError("message is not a JSON object")
    if obj.get("v") != VERSION:
        raise MessageError(f"message version {obj.get('v')!r} is not {VERSION}")
    for key, typ in (("id", str), ("kind", str), ("device_id", str)):
        if not isinstance(obj.get(key), typ) or not obj[key]:
            raise MessageError(f"message field {key!r} is missing or not a non-empty string")
    ts = obj.get("ts")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        raise MessageError("message field 'ts' is missing or not a number")
    return Envelope(
        id=obj["id"], kind=obj["kind"], device_id=obj["device_id"], ts=float(ts), data=obj.get("data")
    )
