"""Model pushes on the wire: a signed manifest, then chunks, on the device's ``models`` topic.

    push_manifest  {"push_id": "...", "name": "classifier", "version": "3", "format": "onnx",
                    "size": 5242880, "sha256": "...", "chunk_bytes": 65536, "smoke_runs": 20,
                    "max_latency_ms": null, "signature": "<base64 Ed25519>"}
    push_chunk     {"push_id": "...", "index": 7, "data": "<base64 of at most chunk_bytes>"}

The signature covers every manifest field but itself, serialized canonically (sorted
keys, no spaces), and the manifest names the content's sha256: a signed manifest
vouches for every byte.  Chunks are at most 64 KiB before base64, so a chunk message
stays under the 128 KiB that AWS IoT Core accepts.

The device answers on ``acks`` with ``push_id`` and a state: ``receiving`` (with the
chunk ranges it still misses, so a transfer interrupted by either side resumes),
``installed`` (with the smoke run's latency), ``rolled_back`` or ``rejected`` (with
the reason).  Signing needs the coordinator's private key; verifying needs only the
public key the device pins in its configuration, written ``ed25519:<base64>``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Optional

import msgspec
from msgspec import Meta

from agent.common.errors import FleetbenchError
from agent.protocol.types import Count, Ms, Name, Positive, PushId, Short, Text

MAX_CHUNK_BYTES = 64 * 1024
FORMATS = ("onnx", "tflite")
KEY_PREFIX = "ed25519:"


class PushError(FleetbenchError):
    """A push is not signed by the pinned key, breaks a device's limit, or cannot be stored."""


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the coordinator signs: the model's name, version and exact bytes (size, sha256)."""

    push_id: PushId
    #: the model's name in the device's store: one current version per name
    name: Name
    version: Name
    format: Literal["onnx", "tflite"]
    size: Positive
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$", description="64 lower-case hex digits")]
    chunk_bytes: Annotated[int, Meta(ge=1, le=MAX_CHUNK_BYTES)] = MAX_CHUNK_BYTES
    smoke_runs: Annotated[int, Meta(ge=1, le=1000)] = 20
    #: the smoke run fails (and the device rolls back) when its median is slower than this
    max_latency_ms: Optional[Annotated[float, Meta(gt=0)]] = None
    signature: Annotated[str, Meta(max_length=200, description="base64 Ed25519 signature")] = ""

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk_bytes)

    def chunk_size(self, index: int) -> int:
        return min(self.chunk_bytes, self.size - index * self.chunk_bytes)

    def signed_bytes(self) -> bytes:
        """What the signature covers: every field but the signature, canonically."""
        fields = {k: v for k, v in msgspec.structs.asdict(self).items() if k != "signature"}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    def to_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


class Chunk(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One piece of the model file: bytes ``index * chunk_bytes`` onwards (base64 on the wire)."""

    push_id: PushId
    index: Count
    data: Annotated[bytes, Meta(max_length=MAX_CHUNK_BYTES)]


#: the device's answers to a push, in the order they come
PushState = Literal["receiving", "installing", "installed", "rolled_back", "rejected"]
ENDINGS = ("installed", "rolled_back", "rejected")
Range = Annotated[tuple[Count, Count], Meta(description="[first, last] chunk indices, both included")]


class PushAck(msgspec.Struct, frozen=True, omit_defaults=True):
    push_id: PushId
    state: PushState
    name: Optional[Name] = None
    version: Optional[Name] = None
    #: "receiving": the chunks still missing, as [first, last] runs
    missing: tuple[Range, ...] = ()
    chunks: Optional[Count] = None
    error: Optional[Text] = None
    #: "installed": the smoke run's median, runs and backend; the version it replaced
    p50_ms: Optional[Ms] = None
    runs: Optional[Count] = None
    backend: Optional[Short] = None
    previous: Optional[Name] = None
    #: "rolled_back": the version current again
    current: Optional[Name] = None
    #: the ending of a push that had already ended, said again
    again: bool = False

    def __post_init__(self) -> None:
        if any(first > last for first, last in self.missing):
            raise ValueError("missing ranges must be [first, last] with first <= last")

    def missing_within(self, chunks: int) -> list[int]:
        """The missing indices, if every one is a chunk of a ``chunks``-chunk push; else ValueError.
        (A forged answer must not make the coordinator send a million chunks.)"""
        if any(last >= chunks for _, last in self.missing):
            raise ValueError(f"push {self.push_id}: missing chunks beyond the {chunks} of the push")
        return expand(self.missing)


# -- keys and signatures (cryptography, imported only when a push is signed or checked) --


def public_key_text(raw: bytes) -> str:
    """The one-line form a device pins: ``ed25519:`` and the base64 of the 32 raw bytes."""
    return KEY_PREFIX + base64.b64encode(raw).decode()


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of an ``ed25519:<base64>`` key; PushError if it is not one."""
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        raise PushError(
            f"public key {text!r} must look like 'ed25519:<base64>' (fleetbench keygen prints it)"
        )
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise PushError(f"public key {text!r} is not valid base64") from None
    if len(raw) != 32:
        raise PushError(f"public key {text!r} is {len(raw)} bytes; an Ed25519 key is 32")
    return raw


def verify(manifest: Manifest, public_key: str) -> None:
    """PushError unless ``manifest`` carries a valid signature by ``public_key``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(parse_public_key(public_key))
    try:
        signature = base64.b64decode(manifest.signature.encode("ascii"), validate=True)
        key.verify(signature, manifest.signed_bytes())
    except (binascii.Error, UnicodeEncodeError, InvalidSignature):
        raise PushError(
            f"push {manifest.push_id}: the manifest's signature is not the pinned coordinator key's"
        ) from None


def sign(manifest: Manifest, private_key: Any) -> Manifest:
    """``manifest`` with its signature by ``private_key`` (a cryptography Ed25519PrivateKey)."""
    signature = private_key.sign(msgspec.structs.replace(manifest, signature="").signed_bytes())
    return msgspec.structs.replace(manifest, signature=base64.b64encode(signature).decode())


def ranges(indices: Iterable[int]) -> list[list[int]]:
    """Sorted indices as [first, last] runs, so "what is missing" stays a short message.

    >>> ranges([0, 1, 2, 5, 7, 8])
    [[0, 2], [5, 5], [7, 8]]
    """
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def expand(runs: Iterable[Iterable[int]]) -> list[int]:
    """The inverse of ``ranges``.

    >>> expand([[0, 2], [5, 5]])
    [0, 1, 2, 5]
    """
    return [i for first, last in runs for i in range(first, last + 1)]
