"""The coordinator's signing keys, and sealing commands with the key each device pins.

    STATE_DIR/coordinator.key            the key commands are signed with (PEM, 0600)
    STATE_DIR/coordinator.key.retired/   keys rotated out, named by fingerprint, kept so
                                         that devices still pinning one can be told the
                                         new key under its signature (and, until then,
                                         still be commanded)

``fleetbench keygen`` makes the first key; ``fleetbench keygen --rotate`` retires it and
makes a new one.  The running coordinator notices the new file, signs every device's
commands with the key that device pins (its status says which, by fingerprint), and
sends each device still on a retired key a ``key`` command signed by that key; the
device pins the new key and says so in its next status.

A device whose status names no key (fleetbench 0.2, or a lab device with
``jobs.allow_unsigned``) gets its commands as 0.2 wrote them: jobs unsealed, manifests
signed without the 0.3 fields.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Optional

import msgspec

from agent.common.errors import UsageError
from agent.protocol.jobs import JobSpec
from agent.protocol.push import Manifest
from agent.protocol.signing import KeyGrant, SeqClock, fingerprint, public_key_of, seal, sign
from coordinator.errors import CoordinatorError
from coordinator.store.records import OnlineDevice

logger = logging.getLogger(__name__)


class SigningKeyError(CoordinatorError):
    """The signing key is missing or unreadable."""


def generate_key(path: str) -> str:
    """Write a new Ed25519 private key (PEM, mode 0600) to ``path``; its public key text."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    if os.path.exists(path):
        raise UsageError(f"key file {path!r} already exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
    except OSError as err:
        raise UsageError(f"key file {path!r} cannot be written: {err.strerror}") from None
    return public_key_of(key)


def load_key(path: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        with open(path, "rb") as fh:
            key = load_pem_private_key(fh.read(), password=None)
    except FileNotFoundError:
        raise SigningKeyError(
            f"signing key {path!r} does not exist; make one with `fleetbench keygen`"
        ) from None
    except (OSError, ValueError, TypeError) as err:
        raise SigningKeyError(f"signing key {path!r} cannot be read: {err}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path!r} is not an Ed25519 key")
    return key


def retired_dir(path: str) -> str:
    return path + ".retired"


def rotate_key(path: str) -> tuple[str, str]:
    """Retire the key at ``path`` (kept under ``path.retired/``) and make a new one there;
    (the old public key, the new one)."""
    old = load_key(path)
    old_public = public_key_of(old)
    directory = retired_dir(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.replace(path, os.path.join(directory, f"{fingerprint(old_public)}.key"))
    except OSError as err:
        raise UsageError(f"key file {path!r} cannot be retired: {err.strerror}") from None
    return old_public, generate_key(path)


class Signer:
    """Seals commands for devices (thread-safe: the deployer, the re-ranker and the job
    sender share one), with a sequence clock so every command's number grows."""

    def __init__(self, key_file: str, ttl_s: float, clock: Callable[[], float] = time.time):
        self.key_file, self.ttl_s, self.clock = key_file, ttl_s, clock
        self.seq = SeqClock(clock)
        self._lock = threading.Lock()
        self._mtime: Optional[float] = None
        self._current: Any = None
        self._keys: dict[str, Any] = {}

    @classmethod
    def of(cls, config: Any, clock: Callable[[], float] = time.time) -> Signer:
        """The signer a coordinator configuration describes (its key file, its commands' lifetime)."""
        return cls(config.key_file, config.command_ttl_s, clock)

    def _seal(self, cmd: Any, device: OnlineDevice, key: Any) -> Any:
        return seal(cmd, device.device_id, self.seq.next(), self.ttl_s, key, self.clock())

    def _refresh(self) -> None:
        """(Re)load the keys when the key file changed (``keygen --rotate`` while running)."""
        try:
            mtime = os.stat(self.key_file).st_mtime
        except OSError:
            mtime = None
        if self._current is not None and mtime == self._mtime:
            return
        current = load_key(self.key_file)
        keys = {fingerprint(public_key_of(current)): current}
        directory = retired_dir(self.key_file)
        if os.path.isdir(directory):
            for name in sorted(os.listdir(directory)):
                try:
                    old = load_key(os.path.join(directory, name))
                except SigningKeyError as err:
                    logger.warning("a retired key is unusable: %s", err)
                    continue
                keys.setdefault(fingerprint(public_key_of(old)), old)
        if self._current is not None:
            logger.warning("signing key changed: commands are now signed by %s",
                           fingerprint(public_key_of(current)))  # fmt: skip
        self._current, self._keys, self._mtime = current, keys, mtime

    @property
    def current(self) -> Any:
        with self._lock:
            self._refresh()
            return self._current

    @property
    def fingerprint(self) -> str:
        return fingerprint(public_key_of(self.current))

    def key_for(self, device: OnlineDevice) -> Any:
        """The key ``device`` checks commands by, if this coordinator holds it; else the current
        one (the device refuses, and says so in its ack)."""
        with self._lock:
            self._refresh()
            key = self._keys.get(device.key or "")
            if key is None:
                logger.debug("%s pins key %s, which this coordinator does not hold", device.device_id,
                             device.key)  # fmt: skip
                return self._current
            return key

    def job(self, spec: JobSpec, device: OnlineDevice) -> JobSpec:
        """``spec`` sealed for ``device``; as it is for a device that checks no seal."""
        if device.key is None:
            return spec
        return self._seal(spec, device, self.key_for(device))

    def manifest(self, manifest: Manifest, device: OnlineDevice) -> Manifest:
        """``manifest`` sealed for ``device``; for a device that checks no seal, signed in the
        0.2 form (without device, sequence, expiry, release and digests)."""
        if device.key is None:
            legacy = msgspec.structs.replace(manifest, release=None, chunk_digests=None)
            return sign(legacy, self.current)
        return self._seal(manifest, device, self.key_for(device))

    def grant(self, device: OnlineDevice) -> Optional[KeyGrant]:
        """The current key, signed by the retired key ``device`` still pins; None when it pins
        the current key, no key, or one this coordinator does not hold."""
        current = public_key_of(self.current)
        if device.key is None or device.key == fingerprint(current):
            return None
        with self._lock:
            old = self._keys.get(device.key)
        return None if old is None else self._seal(KeyGrant(key=current), device, old)
