"""Model pushes on the wire: a signed manifest, then chunks, on the device's ``models`` topic.

    {"type": "manifest", "manifest": {"push_id": "...", "name": "classifier", "version": "3",
        "format": "onnx", "size": 5242880, "sha256": "...", "chunk_bytes": 65536,
        "smoke_runs": 20, "max_latency_ms": null, "signature": "<base64 Ed25519>"}}
    {"type": "chunk", "push_id": "...", "index": 7, "data": "<base64 of at most chunk_bytes>"}

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
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

from agent.errors import FleetbenchError

MAX_CHUNK_BYTES = 64 * 1024
FORMATS = ("onnx", "tflite")
KEY_PREFIX = "ed25519:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PUSH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PushError(FleetbenchError):
    """A push message is malformed, not signed by the pinned key, or breaks a limit."""


@dataclass(frozen=True)
class Manifest:
    push_id: str
    name: str  # the model's name in the device's store: one current version per name
    version: str
    format: str
    size: int
    sha256: str
    chunk_bytes: int = MAX_CHUNK_BYTES
    smoke_runs: int = 20
    #: the smoke run fails (and the device rolls back) when its median is slower than this
    max_latency_ms: Optional[float] = None
    signature: str = ""

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk_bytes)

    def chunk_size(self, index: int) -> int:
        return min(self.chunk_bytes, self.size - index * self.chunk_bytes)

    def signed_bytes(self) -> bytes:
        """What the signature covers: every field but the signature, canonically."""
        fields = {k: v for k, v in asdict(self).items() if k != "signature"}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """A checked manifest; PushError names the first field that is wrong."""
        if not isinstance(data, Mapping):
            raise PushError("the manifest is not a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise PushError(f"the manifest has unknown field(s): {', '.join(unknown)}")
        try:
            manifest = cls(**data)
        except TypeError:
            missing = sorted(
                k for k in ("push_id", "name", "version", "format", "size", "sha256") if k not in data
            )
            raise PushError(f"the manifest lacks field(s): {', '.join(missing)}") from None
        return manifest.checked()

    def checked(self) -> Manifest:
        def whole(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        checks = [
            (isinstance(self.push_id, str) and bool(_PUSH_ID.match(self.push_id)),
             "push_id must be 1-128 letters, digits, '.', '_', ':' or '-'"),
            (isinstance(self.name, str) and bool(_NAME.match(self.name)),
             "name must be 1-64 letters, digits, '.', '_' or '-' (it becomes a file name)"),
            (isinstance(self.version, str) and bool(_NAME.match(self.version)),
             "version must be 1-64 letters, digits, '.', '_' or '-'"),
            (self.format in FORMATS, f"format must be one of {', '.join(FORMATS)}"),
            (whole(self.size) and self.size > 0, "size must be a whole number of bytes above 0"),
            (isinstance(self.sha256, str) and bool(_SHA256.match(self.sha256)),
             "sha256 must be 64 lower-case hex digits"),
            (whole(self.chunk_bytes) and 0 < self.chunk_bytes <= MAX_CHUNK_BYTES,
             f"chunk_bytes must be 1-{MAX_CHUNK_BYTES}"),
            (whole(self.smoke_runs) and 1 <= self.smoke_runs <= 1000, "smoke_runs must be 1-1000"),
            (self.max_latency_ms is None
             or (isinstance(self.max_latency_ms, (int, float)) and not isinstance(self.max_latency_ms, bool)
                 and self.max_latency_ms > 0), "max_latency_ms must be a number above 0, or null"),
            (isinstance(self.signature, str), "signature must be a base64 string"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise PushError(f"manifest {getattr(self, 'push_id', '?')!r}: {message}")
        return self


def manifest_message(manifest: Manifest) -> dict[str, Any]:
    return {"type": "manifest", "manifest": manifest.to_dict()}


def chunk_message(push_id: str, index: int, data: bytes) -> dict[str, Any]:
    return {"type": "chunk", "push_id": push_id, "index": index, "data": base64.b64encode(data).decode()}


def parse_chunk(data: Mapping[str, Any]) -> tuple[str, int, bytes]:
    push_id, index, text = data.get("push_id"), data.get("index"), data.get("data")
    if not isinstance(push_id, str) or not isinstance(index, int) or isinstance(index, bool):
        raise PushError("a chunk needs a string push_id and a whole-number index")
    if not isinstance(text, str):
        raise PushError(f"chunk {index} of {push_id}: data must be a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise PushError(f"chunk {index} of {push_id}: data is not base64") from None
    return push_id, index, raw


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
    signature = private_key.sign(replace(manifest, signature="").signed_bytes())
    return replace(manifest, signature=base64.b64encode(signature).decode())


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
