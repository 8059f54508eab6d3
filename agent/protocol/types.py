"""Constrained field types of the wire contract, shared by every message class.

Each alias is a plain Python type for code and type checkers, and carries its
constraints (pattern, length, range) for ``msgspec``, which checks them while decoding
and writes them into the JSON Schema.  Numbers on the wire are always finite: JSON has
no NaN or infinity, and a number too large for a float is refused.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

#: a device: safe in MQTT topics, file names and AWS IoT / Azure IoT Hub client ids
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
DeviceId = Annotated[str, Meta(pattern=DEVICE_ID_PATTERN, description="a device's id")]
#: a message id: unique per sender, kept across retries so a receiver drops duplicates
MessageId = Annotated[str, Meta(pattern=r"^[!-~]{1,512}$", description="printable ASCII, 1-512 characters")]
#: a job id becomes part of file names and message ids
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
JobId = Annotated[
    str, Meta(pattern=JOB_ID_PATTERN, description="1-128 letters, digits, '.', '_', ':' or '-'")
]
PushId = Annotated[
    str, Meta(pattern=JOB_ID_PATTERN, description="1-128 letters, digits, '.', '_', ':' or '-'")
]
#: a model's name or version on a device: it becomes a file name
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Name = Annotated[str, Meta(pattern=NAME_PATTERN, description="1-64 letters, digits, '.', '_' or '-'")]
#: what a job item is called in acks and results: a model path, an architecture's key, a lut
ItemName = Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f]{1,400}$", description="1-400 characters")]
#: short free text: SKUs, platforms, versions, backends
Short = Annotated[str, Meta(max_length=200)]
#: a sentence for people: errors, reasons
TEXT_MAX = 4000
Text = Annotated[str, Meta(max_length=TEXT_MAX)]


def clip(text: str, limit: int = TEXT_MAX) -> str:
    """``text`` cut to fit a Text field (a runtime's error message can be pages long).

    >>> clip("x" * 5000)[-12:]
    'x (cut here)'
    """
    return text if len(text) <= limit else text[: limit - 11] + " (cut here)"


Count = Annotated[int, Meta(ge=0)]
Positive = Annotated[int, Meta(ge=1)]
Seed = Annotated[int, Meta(ge=0, le=2**32 - 1)]
NonNegative = Annotated[float, Meta(ge=0)]
#: seconds since the epoch, as the sender's clock says
Timestamp = Annotated[float, Meta(ge=0, description="seconds since 1970-01-01 UTC, the sender's clock")]
Ms = Annotated[float, Meta(ge=0, description="milliseconds")]
