"""Every message between devices and the coordinator: one envelope, one class per kind.

    {"kind": "result", "v": 2, "id": "result:j-42:mobilenet.tflite", "device_id": "shed-pi-3",
     "ts": 1763790000.0, "data": {...}}

    kind           topic    data            sent by
    status         status   StatusData      a device: retained birth ("online"), Last Will ("offline")
    health         health   HealthData      a device, every health.interval_s
    result         results  ResultData      a device, one per measured job item
    job_ack        acks     JobAck          a device, about a job
    push_ack       acks     PushAck         a device, about a model push
    job            jobs     JobSpec         the coordinator (signed)
    key            jobs     KeyGrant        the coordinator: a new key, signed by the old one
    push_manifest  models   Manifest        the coordinator (signed)
    push_chunk     models   Chunk           the coordinator

The rules, in one place:

- ``id`` is unique per sender and survives retries, so a receiver drops duplicates by
  (device, id): delivery is at least once.
- ``device_id`` is the device a message is from (reports) or for (commands); it must be
  the device its topic names.
- A message is at most ``MAX_BYTES`` (128 KiB, AWS IoT Core's limit; Azure's is 256); a
  status at most 16 KiB and a health sample 32 KiB (``KIND_MAX_BYTES``).
- Numbers are finite (JSON has no NaN; a number too large for a float is refused).
- Unknown fields: reports ignore them (a device one release newer may add optional
  fields); commands refuse them (a typo must not silently change what a device does).
- ``decode`` raises nothing but ``ProtocolError``, for any bytes at all.
- ``encode`` sends nothing the other side would refuse: it decodes what it wrote.

Versions, and the rule for rolling upgrades: this release writes version 2 and reads
versions 1 and 2.  A version-1 message (fleetbench 0.1's format: the topic's kind in
``kind``, acks of jobs and pushes alike) is converted on arrival and then checked like a
version-2 one.  Devices announce the newest version they read in their status
(``protocol``; a version-1 status says nothing, which means 1), and the coordinator
writes each device's commands in that version.  Any other version is refused with a
``ProtocolError`` that names it (the coordinator logs it and keeps the message as a dead
letter; a device acks the job ``rejected``).  Upgrade the coordinator first, then the
devices; the release after this one reads version 2 only.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, ClassVar, Literal, Optional, TypeVar, Union

import msgspec

from agent.protocol.errors import ProtocolError
from agent.protocol.jobs import JobSpec
from agent.protocol.push import Chunk, Manifest, PushAck
from agent.protocol.reports import HealthData, JobAck, ResultData, StatusData
from agent.protocol.signing import KeyGrant
from agent.protocol.topics import Topic
from agent.protocol.types import JOB_ID_PATTERN, DeviceId, MessageId, Timestamp

VERSION: Literal[2] = 2
#: the message versions this release reads (1 is converted on arrival)
READS = (1, 2)
MAX_BYTES = 128 * 1024
#: smaller limits for the kinds a device sends all the time and a coordinator keeps per
#: device: a status or health sample is a few KiB; more is a mistake or an attack
KIND_MAX_BYTES = {"status": 16 * 1024, "health": 32 * 1024}


class MessageTooLarge(ProtocolError):
    """A message would be over ``MAX_BYTES``: the sender must make it smaller."""


class Envelope(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """What every message has; ``kind`` (the tag) says which class, and so what ``data`` is."""

    v: Literal[2]
    id: MessageId
    device_id: DeviceId
    ts: Timestamp

    #: the topic kind the message travels on
    TOPIC: ClassVar[str] = ""

    @property
    def kind(self) -> str:
        return kind_of(type(self))


def kind_of(cls: type[Envelope]) -> str:
    """The ``kind`` a message class is tagged with: ``kind_of(ResultMessage) == "result"``."""
    return str(cls.__struct_config__.tag)


class StatusMessage(Envelope, frozen=True, kw_only=True, tag="status"):
    data: StatusData
    TOPIC: ClassVar[str] = "status"


class HealthMessage(Envelope, frozen=True, kw_only=True, tag="health"):
    data: HealthData
    TOPIC: ClassVar[str] = "health"


class ResultMessage(Envelope, frozen=True, kw_only=True, tag="result"):
    data: ResultData
    TOPIC: ClassVar[str] = "results"


class JobAckMessage(Envelope, frozen=True, kw_only=True, tag="job_ack"):
    data: JobAck
    TOPIC: ClassVar[str] = "acks"


class PushAckMessage(Envelope, frozen=True, kw_only=True, tag="push_ack"):
    data: PushAck
    TOPIC: ClassVar[str] = "acks"


class JobMessage(Envelope, frozen=True, kw_only=True, tag="job", forbid_unknown_fields=True):
    data: JobSpec
    TOPIC: ClassVar[str] = "jobs"


class KeyMessage(Envelope, frozen=True, kw_only=True, tag="key", forbid_unknown_fields=True):
    data: KeyGrant
    TOPIC: ClassVar[str] = "jobs"


class PushManifestMessage(
    Envelope, frozen=True, kw_only=True, tag="push_manifest", forbid_unknown_fields=True
):
    data: Manifest
    TOPIC: ClassVar[str] = "models"


class PushChunkMessage(Envelope, frozen=True, kw_only=True, tag="push_chunk", forbid_unknown_fields=True):
    data: Chunk
    TOPIC: ClassVar[str] = "models"


REPORTS = (StatusMessage, HealthMessage, ResultMessage, JobAckMessage, PushAckMessage)
COMMANDS = (JobMessage, KeyMessage, PushManifestMessage, PushChunkMessage)
CLASSES: tuple[type[Envelope], ...] = REPORTS + COMMANDS
BY_KIND: dict[str, type[Envelope]] = {kind_of(cls): cls for cls in CLASSES}
Message = Union[
    StatusMessage,
    HealthMessage,
    ResultMessage,
    JobAckMessage,
    PushAckMessage,
    JobMessage,
    KeyMessage,
    PushManifestMessage,
    PushChunkMessage,
]
E = TypeVar("E", bound=Envelope)


def _decoder(classes: tuple[type[Envelope], ...]) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(classes[0] if len(classes) == 1 else Union[classes])


#: the classes each topic carries, and a decoder for exactly those
BY_TOPIC: dict[str, tuple[type[Envelope], ...]] = {}
for _cls in CLASSES:
    BY_TOPIC[_cls.TOPIC] = (*BY_TOPIC.get(_cls.TOPIC, ()), _cls)
_DECODERS = {topic: _decoder(classes) for topic, classes in BY_TOPIC.items()}
_ANY = _decoder(CLASSES)
_ENCODER = msgspec.json.Encoder()


class _Head(msgspec.Struct):
    """Just enough of a message to tell its version, when it does not decode as this one."""

    v: Any = None


_HEAD = msgspec.json.Decoder(_Head)
_JOB_ID = re.compile(JOB_ID_PATTERN)


def make(
    cls: type[E], device_id: str, data: Any, msg_id: Optional[str] = None, ts: Optional[float] = None
) -> E:
    """A new message of ``cls``: a fresh id unless one is given (retries keep theirs)."""
    return cls(
        v=VERSION,
        id=msg_id or uuid.uuid4().hex,
        device_id=device_id,
        ts=time.time() if ts is None else ts,
        data=data,
    )  # type: ignore[call-arg]


def encode(msg: Envelope, version: int = VERSION) -> bytes:
    """The wire bytes of ``msg`` in message ``version`` (2, or 1 for a device that reads only 1).

    ProtocolError if the message breaks the contract (MessageTooLarge if it is too big):
    what this writes is decoded again here, so a NaN that JSON would carry as null, or a
    field out of range, is caught at the sender and not refused by the receiver."""
    try:
        if version == VERSION:
            raw = _ENCODER.encode(msg)
        elif version == 1:
            from agent.protocol import compat

            raw = _ENCODER.encode(compat.to_v1(msg))
        else:
            raise ProtocolError(f"message version {version} cannot be written; this release writes {READS}")
    except (TypeError, ValueError, msgspec.EncodeError) as err:  # a value of no JSON type (a numpy float...)
        raise ProtocolError(f"{msg.kind} message {msg.id} cannot be encoded: {err}") from None
    if len(raw) > MAX_BYTES:
        raise MessageTooLarge(
            f"{msg.kind} message {msg.id} is {len(raw)} bytes; MQTT hubs accept at most {MAX_BYTES}"
        )
    try:
        decode(raw, msg.TOPIC)
    except ProtocolError as err:
        raise ProtocolError(f"{msg.kind} message {msg.id} cannot be sent: {err}") from None
    return raw


def decode(raw: Any, topic: Union[Topic, str, None] = None) -> Message:
    """The message in ``raw``, checked; ProtocolError (only) says what is wrong with it.

    ``topic``: the ``Topic`` it arrived on (its kind must travel there, and its device_id
    must be the topic's device), or just a topic kind; None accepts any kind."""
    try:
        return _decode(raw, topic)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("message is nested too deeply") from None
    except Exception as err:  # the promise: nothing but ProtocolError, whatever the bytes
        raise ProtocolError(f"message cannot be read: {type(err).__name__}: {err}") from None


def _decode(raw: Any, topic: Union[Topic, str, None]) -> Message:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"a message is bytes, not {type(raw).__name__}")
    if len(raw) > MAX_BYTES:
        raise ProtocolError(f"message of {len(raw)} bytes is over the {MAX_BYTES}-byte limit")
    kind = topic.kind if isinstance(topic, Topic) else topic
    decoder = _ANY if kind is None else _DECODERS.get(kind)
    if decoder is None:
        raise ProtocolError(f"no fleetbench message travels on a {kind!r} topic")
    try:
        msg = decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as err:
        msg = _other_version(raw, kind, topic, err)
    limit = KIND_MAX_BYTES.get(msg.kind, MAX_BYTES)
    if len(raw) > limit:
        raise ProtocolError(
            f"{msg.kind} message of {len(raw)} bytes is over the {limit}-byte limit of its kind"
        )
    if isinstance(topic, Topic) and msg.device_id != topic.device_id:
        raise ProtocolError(
            f"{msg.kind} message {msg.id} names device {msg.device_id!r} but came on the topic of "
            f"{topic.device_id!r}"
        )
    return msg


def _other_version(raw: Any, kind: Optional[str], topic: Union[Topic, str, None], err: Exception) -> Any:
    """A message that is not a valid version-2 one: a version-1 one to convert, or an error."""
    try:
        version = _HEAD.decode(raw).v
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise ProtocolError(describe(err)) from None
    if version == 1:
        from agent.protocol import compat

        upgraded = compat.from_v1(raw, kind, topic.device_id if isinstance(topic, Topic) else None)
        decoder = _ANY if kind is None else _DECODERS[kind]
        try:
            return decoder.decode(_ENCODER.encode(upgraded))
        except (msgspec.ValidationError, msgspec.DecodeError) as err1:
            raise ProtocolError(f"version-1 message: {describe(err1)}") from None
    if version != VERSION:
        raise ProtocolError(
            f"message version {version!r} is not one this fleetbench reads "
            f"({' or '.join(map(str, READS))}); upgrade the coordinator first, then the devices"
        )
    raise ProtocolError(describe(err))


def describe(err: Exception) -> str:
    """msgspec's error as a sentence naming the field: "data.settings.runs: Expected `int` >= 1"."""
    text = str(err)
    if not isinstance(err, msgspec.ValidationError):  # (a ValidationError is a DecodeError too)
        return f"message is not valid JSON: {text}"
    message, sep, where = text.rpartition(" - at `$")
    if not sep:
        return f"message: {text}"
    path = where.rstrip("`").lstrip(".")
    return f"{path or 'message'}: {message}"


def salvage(raw: Any) -> tuple[Optional[str], Optional[str]]:
    """The (job_id, message id) of a message that did not decode, where they can be read,
    so the refusal can name them.  Never raises."""
    try:
        obj = msgspec.json.decode(raw) if len(raw) <= MAX_BYTES else None
    except Exception:  # malformed, too deep: nothing can be read
        return None, None
    if not isinstance(obj, dict):
        return None, None
    data = obj.get("data")
    job_id = data.get("job_id") if isinstance(data, dict) else None
    msg_id = obj.get("id")
    ok_job = isinstance(job_id, str) and _JOB_ID.match(job_id) is not None
    ok_id = isinstance(msg_id, str) and 0 < len(msg_id) <= 512 and msg_id.isprintable()
    return (job_id if ok_job else None), (msg_id if ok_id else None)
