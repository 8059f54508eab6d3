"""Signed commands: what the coordinator's key vouches for, and the keys themselves.

Every command a device obeys (a job, a model push's manifest, a new key) carries a seal:

    device_id    the one device it is for (a command captured for device A means nothing to B)
    seq          a number that grows with every command the coordinator signs
                 (microseconds since the epoch, or one more than the last: see ``SeqClock``)
    expires_at   seconds since the epoch after which the device refuses it
    signature    Ed25519, by the coordinator's key, over every other field, canonically

The device checks the signature against the key it pins (``models.public_key``,
written ``ed25519:<base64>``), the device id against its own, the expiry against its
clock, and the sequence against the ones it has seen (``agent.device.trust``).  A
device that pins no key takes no command at all unless its operator allows unsigned
ones for a lab (``jobs.allow_unsigned``).

Signing needs ``cryptography`` (imported only when a signature is made or checked);
devices without it can still decode every message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
from typing import Annotated, Any, Optional, TypeVar

import msgspec
from msgspec import Meta

from agent.common.errors import FleetbenchError
from agent.protocol.types import DeviceId, Timestamp

KEY_PREFIX = "ed25519:"
#: a command's sequence number (microseconds since the epoch fit with room to spare)
Seq = Annotated[int, Meta(ge=1, le=2**63 - 1, description="grows with every command signed")]
Signature = Annotated[str, Meta(pattern=r"^[A-Za-z0-9+/]{86}==$", description="base64 Ed25519 signature")]
KeyText = Annotated[
    str, Meta(pattern=r"^ed25519:[A-Za-z0-9+/]{43}=$", description="'ed25519:' and the base64 of 32 bytes")
]


class TrustError(FleetbenchError):
    """A command is not one the pinned coordinator key vouches for (or a key is malformed)."""


S = TypeVar("S", bound=msgspec.Struct)


def canonical(cmd: Any) -> bytes:
    """The bytes a command's signature covers: the command's JSON as it travels, without its
    signature, keys sorted, no spaces (fields at their defaults are left out, on the wire and
    here, so a field added later with a default does not change what an older release checks).
    Another implementation rebuilds it from the JSON it received."""
    default = next(f.default for f in msgspec.structs.fields(cmd) if f.name == "signature")
    return msgspec.json.encode(msgspec.structs.replace(cmd, signature=default), order="sorted")


# -- keys --------------------------------------------------------------------------------


def public_key_text(raw: bytes) -> str:
    """The one-line form a device pins: ``ed25519:`` and the base64 of the 32 raw bytes."""
    return KEY_PREFIX + base64.b64encode(raw).decode()


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of an ``ed25519:<base64>`` key; TrustError if it is not one."""
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        raise TrustError(
            f"public key {text!r} must look like 'ed25519:<base64>' (fleetbench keygen prints it)"
        )
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise TrustError(f"public key {text!r} is not valid base64") from None
    if len(raw) != 32:
        raise TrustError(f"public key {text!r} is {len(raw)} bytes; an Ed25519 key is 32")
    return raw


def fingerprint(public_key: str) -> str:
    """A short name for a public key, for logs, statuses and the fleet table.

    >>> fingerprint("ed25519:" + "A" * 43 + "=")
    '66687aadf862bd77'
    """
    return hashlib.sha256(parse_public_key(public_key)).hexdigest()[:16]


def public_key_of(private_key: Any) -> str:
    """The ``ed25519:<base64>`` text of a cryptography Ed25519PrivateKey's public half."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public_key_text(private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


# -- signatures --------------------------------------------------------------------------


def sign(cmd: S, private_key: Any) -> S:
    """``cmd`` with its signature by ``private_key`` (a cryptography Ed25519PrivateKey).

    Signed as the receiver will decode it: a number given as ``0`` to a float field travels
    as ``0`` but is read back as ``0.0``, so the command goes through JSON first."""
    cmd = msgspec.json.decode(msgspec.json.encode(cmd), type=type(cmd))
    signature = private_key.sign(cmd.signed_bytes())  # type: ignore[attr-defined]
    return msgspec.structs.replace(cmd, signature=base64.b64encode(signature).decode())


def verify(cmd: Any, public_key: str, what: str) -> None:
    """TrustError unless ``cmd`` carries a valid signature by ``public_key``; ``what`` names the
    command in the error ("job j-42", "push p-1")."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not cmd.signature:
        raise TrustError(f"{what} is not signed; this device takes only commands its pinned key signed")
    key = Ed25519PublicKey.from_public_bytes(parse_public_key(public_key))
    try:
        signature = base64.b64decode(cmd.signature.encode("ascii"), validate=True)
        key.verify(signature, cmd.signed_bytes())
    except (binascii.Error, UnicodeEncodeError, InvalidSignature):
        raise TrustError(
            f"{what}: the signature is not by the coordinator key this device pins "
            f"({fingerprint(public_key)})"
        ) from None


def seal(cmd: S, device_id: str, seq: int, ttl_s: float, private_key: Any, now: Optional[float] = None) -> S:
    """``cmd`` bound to ``device_id``, numbered ``seq``, expiring ``ttl_s`` from now, signed."""
    now = time.time() if now is None else now
    bound = msgspec.structs.replace(cmd, device_id=device_id, seq=seq, expires_at=round(now + ttl_s, 3))
    return sign(bound, private_key)


class SeqClock:
    """Sequence numbers that grow: microseconds since the epoch, or one more than the last
    one handed out.  Time-based, so a coordinator whose database was lost or replaced still
    numbers its commands above what devices have seen; a device tolerates the small
    reordering that two publishing threads or processes cause (``agent.device.trust``).

    >>> clock = SeqClock(lambda: 1.0)
    >>> clock.next(), clock.next()
    (1000000, 1000001)
    """

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(int(self._clock() * 1_000_000), self._last + 1)
            return self._last


class KeyGrant(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A new coordinator key, vouched for by the key the device pins now (a key rotation)."""

    key: KeyText
    device_id: Optional[DeviceId] = None
    seq: Optional[Seq] = None
    expires_at: Optional[Timestamp] = None
    signature: Optional[Signature] = None

    def signed_bytes(self) -> bytes:
        return canonical(self)
