"""Model pushes on the wire: a signed manifest, then chunks, on the device's ``models`` topic.

    push_manifest  {"push_id": "...", "name": "classifier", "version": "3", "format": "onnx",
                    "size": 5242880, "sha256": "...", "chunk_bytes": 65536, "smoke_runs": 20,
                    "device_id": "shed-pi-3", "seq": 1764240000000000, "expires_at": 1764326400.0,
                    "release": 1764240000000000, "chunk_digests": "<base64, 16 bytes a chunk>",
                    "signature": "<base64 Ed25519>"}
    push_chunk     {"push_id": "...", "index": 7, "data": "<base64 of at most chunk_bytes>"}

The signature covers every manifest field but itself, serialized canonically (sorted
keys, no spaces), and the manifest names the content's sha256 and each chunk's digest:
a signed manifest vouches for every byte, and a chunk that is not the signed one is
dropped when it arrives.  The seal (``agent.protocol.signing``) binds the manifest to
one device and an expiry; ``release`` grows with every push of a name, and a device
refuses a release that is not above the highest it has installed (anti-rollback, as
TUF and Uptane do).  Chunks are at most 64 KiB before base64, so a chunk message stays
under the 128 KiB that AWS IoT Core accepts.

The device answers on ``acks`` with ``push_id`` and a state: ``receiving`` (with the
chunk ranges it still misses, so a transfer interrupted by either side resumes),
``installed`` (with the smoke run's median and its 95 % confidence interval),
``rolled_back`` or ``rejected`` (with the reason).  A manifest's ``max_latency_ms`` is
checked against that interval: a model whose median is over the limit beyond the run's
noise (the interval's low end above it) is rolled back.  Signing needs the coordinator's
private key; verifying needs only the public key the device pins in its configuration,
written ``ed25519:<base64>``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Annotated, Literal, Optional

import msgspec
from msgspec import Meta

from agent.common.errors import FleetbenchError
from agent.protocol.signing import Seq, canonical
from agent.protocol.types import Count, DeviceId, Ms, Name, Positive, PushId, Short, Text, Timestamp

MAX_CHUNK_BYTES = 64 * 1024
#: a push with chunk digests has at most this many chunks (256 MiB at 64 KiB a chunk)
MAX_CHUNKS = 4096
#: bytes of each chunk's digest in ``chunk_digests``: the start of its sha256
DIGEST_BYTES = 16
FORMATS = ("onnx", "tflite")
#: the fields fleetbench 0.3 added; left out of what is signed while unset, so a 0.2 device
#: checks the signature of a manifest written for it exactly as before
SEAL_FIELDS = ("device_id", "seq", "expires_at", "release", "chunk_digests")


class PushError(FleetbenchError):
    """A push is not signed by the pinned key, breaks a device's limit, or cannot be stored."""


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What the coordinator signs: the model's name, version and exact bytes (size, sha256),
    the device it is for, when it expires, and its release number."""

    push_id: PushId
    #: the model's name in the device's store: one current version per name
    name: Name
    version: Name
    format: Literal["onnx", "tflite"]
    size: Positive
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$", description="64 lower-case hex digits")]
    chunk_bytes: Annotated[int, Meta(ge=1, le=MAX_CHUNK_BYTES)] = MAX_CHUNK_BYTES
    smoke_runs: Annotated[int, Meta(ge=1, le=1000)] = 20
    #: the smoke run fails (and the device rolls back) when its median is slower than this beyond
    #: the run's noise: the low end of the median's 95 % confidence interval is above it
    max_latency_ms: Optional[Annotated[float, Meta(gt=0)]] = None
    signature: Annotated[str, Meta(max_length=200, description="base64 Ed25519 signature")] = ""
    #: the seal (agent.protocol.signing): the one device it is for, its sequence number, expiry
    device_id: Optional[DeviceId] = None
    seq: Optional[Seq] = None
    expires_at: Optional[Timestamp] = None
    #: grows with every push of this name: a device refuses a release not above the highest it
    #: installed (anti-rollback); going back to an older model is a new push with a new release
    release: Optional[Seq] = None
    #: the first 16 bytes of each chunk's sha256, in order: a chunk that does not match is
    #: dropped on arrival, so a forged chunk cannot spoil a genuine push
    chunk_digests: Optional[Annotated[bytes, Meta(max_length=MAX_CHUNKS * DIGEST_BYTES)]] = None

    def __post_init__(self) -> None:
        if self.chunk_digests is not None and len(self.chunk_digests) != self.chunks * DIGEST_BYTES:
            raise ValueError(
                f"chunk_digests holds {len(self.chunk_digests) // DIGEST_BYTES} digests; the push has "
                f"{self.chunks} chunks"
            )

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk_bytes)

    def chunk_size(self, index: int) -> int:
        return min(self.chunk_bytes, self.size - index * self.chunk_bytes)

    def digest_ok(self, index: int, data: bytes) -> bool:
        """Is ``data`` chunk ``index`` as signed?  (True when the manifest lists no digests.)"""
        if self.chunk_digests is None:
            return True
        wanted = self.chunk_digests[index * DIGEST_BYTES : (index + 1) * DIGEST_BYTES]
        return hashlib.sha256(data).digest()[:DIGEST_BYTES] == wanted

    def signed_bytes(self) -> bytes:
        """What the signature covers: the manifest as it travels, without its signature, keys
        sorted, no spaces (``agent.protocol.signing.canonical``).  A manifest without a seal
        is signed in fleetbench 0.2's form, which 0.2 devices check: every 0.2 field, the
        defaults included."""
        if self.device_id is not None:
            return canonical(self)
        fields = {k: v for k, v in msgspec.structs.asdict(self).items()
                  if k != "signature" and k not in SEAL_FIELDS}  # fmt: skip
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    def same_push(self, other: Manifest) -> bool:
        """The same transfer, whatever its seal: a retry is signed again with a new sequence
        number and expiry, and resumes what the first one started."""
        again = msgspec.structs.replace(other, signature=self.signature, seq=self.seq,
                                        expires_at=self.expires_at)  # fmt: skip
        return again == self


def chunk_digests(data: bytes, chunk_bytes: int) -> bytes:
    """The ``chunk_digests`` of a model file cut into ``chunk_bytes`` pieces."""
    return b"".join(
        hashlib.sha256(data[i : i + chunk_bytes]).digest()[:DIGEST_BYTES]
        for i in range(0, len(data), chunk_bytes)
    )


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
    #: "installed" (or "rolled_back" for being over the limit): the smoke run's median, the 95 %
    #: confidence interval of that median (the device's own noise), runs and backend; the version
    #: it replaced
    p50_ms: Optional[Ms] = None
    p50_interval_ms: Optional[tuple[Ms, Ms]] = None
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
        if self.p50_interval_ms is not None and self.p50_interval_ms[0] > self.p50_interval_ms[1]:
            raise ValueError("p50_interval_ms must be [low, high] with low <= high")

    def missing_within(self, chunks: int) -> list[int]:
        """The missing indices, if every one is a chunk of a ``chunks``-chunk push; else ValueError.
        (A forged answer must not make the coordinator send a million chunks.)"""
        if any(last >= chunks for _, last in self.missing):
            raise ValueError(f"push {self.push_id}: missing chunks beyond the {chunks} of the push")
        return expand(self.missing)


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
