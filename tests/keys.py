"""Real Ed25519 key pairs for tests: (private key, the public key text a device pins).

``FLEET_KEY`` / ``FLEET_PUBLIC``: the coordinator key the tests' devices pin (as the demo
pins its coordinator's), so every job a test sends is signed as a coordinator signs it.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.protocol import signing


def key_pair() -> tuple[Ed25519PrivateKey, str]:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, signing.public_key_text(raw)


FLEET_KEY, FLEET_PUBLIC = key_pair()
_SEQ = signing.SeqClock()


def sealed(cmd: Any, device_id: str, key: Optional[Any] = None, ttl_s: float = 3600.0,
           seq: Optional[int] = None, now: Optional[float] = None) -> Any:  # fmt: skip
    """``cmd`` sealed for ``device_id`` as the coordinator seals it (by FLEET_KEY unless ``key``)."""
    return signing.seal(cmd, device_id, seq or _SEQ.next(), ttl_s, key or FLEET_KEY,
                        time.time() if now is None else now)  # fmt: skip


def write_private(path: str, key: Optional[Any] = None) -> str:
    """Write ``key`` (FLEET_KEY by default) as the coordinator keeps its signing key: PEM, 0600."""
    import os

    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    pem = (key or FLEET_KEY).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return path
