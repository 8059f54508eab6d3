"""Which commands a device obeys: the ones the coordinator key it pins signed for it.

    check(cmd)     stateless: signed by the pinned key, for this device, not expired
    consume(seq)   stateful: a sequence number not seen before, and not older than the
                   window of the last ``WINDOW`` accepted (a replay is refused)
    rotate(grant)  a new key, vouched for by the pinned one, pinned from then on

The key comes from the configuration (``models.public_key``) until the coordinator
rotates it; the rotated key and the sequence numbers seen are kept in
``STATE_DIR/trust.json`` (mode 0600), so neither a restart nor a replay of an old
command undoes them.  An operator who pins a different key in the configuration
starts afresh with it.

Without a pinned key the device obeys nothing, unless ``jobs.allow_unsigned`` is set
(a lab on a trusted network): then every command is taken as it comes, and the log
says so at every start.

Sequence numbers come from the coordinator's clock (``agent.protocol.signing.SeqClock``)
and grow, but two publishing threads may deliver them slightly out of order: any
number not seen before is taken while it is above the oldest of the last ``WINDOW``
taken (the sliding window of IPsec's anti-replay check).
"""

from __future__ import annotations

import bisect
import datetime
import logging
import os
import time
from typing import Any, Optional

import msgspec

from agent.common.errors import FleetbenchError
from agent.common.files import write_bytes_atomic
from agent.protocol.signing import KeyGrant, TrustError, fingerprint, verify

logger = logging.getLogger(__name__)

TRUST_FILE = "trust.json"
WINDOW = 1000


class _State(msgspec.Struct):
    #: the key in the configuration when the state was written (a new one there resets it)
    pinned: Optional[str] = None
    #: the key rotated to, if any
    key: Optional[str] = None
    #: the last WINDOW sequence numbers taken, ascending
    seqs: list[int] = []


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class Trust:
    def __init__(
        self, state_dir: str, pinned: Optional[str], allow_unsigned: bool = False, clock: Any = time.time
    ) -> None:
        self.path = os.path.join(state_dir, TRUST_FILE)
        self.pinned = pinned
        self.allow_unsigned = allow_unsigned and not pinned
        self.clock = clock
        self._state = self._load()

    @property
    def key(self) -> Optional[str]:
        """The key commands must be signed by now: the rotated one, else the configured one."""
        return self._state.key or self.pinned

    @property
    def fingerprint(self) -> Optional[str]:
        return fingerprint(self.key) if self.key else None

    def describe(self) -> str:
        if self.key:
            return f"commands must be signed by key {self.fingerprint}"
        if self.allow_unsigned:
            return (
                "UNSIGNED COMMANDS ARE ALLOWED (jobs.allow_unsigned): anyone on the broker can "
                "command this device"
            )
        return "no coordinator key is pinned (models.public_key): every job and push is refused"

    def check(self, cmd: Any, device_id: Optional[str], what: str) -> None:
        """TrustError unless ``cmd`` is signed by the pinned key, for ``device_id``, unexpired."""
        key = self.key
        if key is None:
            if self.allow_unsigned:
                return
            raise TrustError(
                f"{what} refused: this device pins no coordinator key (models.public_key), so it "
                "takes no jobs or pushes; pin the key `fleetbench keygen --show` prints"
            )
        verify(cmd, key, what)  # first: nothing unsigned is looked at further
        if cmd.device_id is None or cmd.seq is None or cmd.expires_at is None:
            raise TrustError(f"{what} names no device, sequence number and expiry; its coordinator "
                             "is older than this device (upgrade the coordinator)")  # fmt: skip
        if cmd.device_id != device_id:
            raise TrustError(f"{what} is for device {cmd.device_id!r}, not this one ({device_id!r})")
        now = self.clock()
        if now > cmd.expires_at:
            raise TrustError(
                f"{what} expired at {_when(cmd.expires_at)} (this device's clock says {_when(now)})"
            )

    def consume(self, seq: Optional[int], what: str) -> None:
        """Take ``seq`` (TrustError if it was taken before or is older than the window)."""
        if seq is None:  # unsigned commands in a lab (allow_unsigned) carry none
            return
        seqs = self._state.seqs
        i = bisect.bisect_left(seqs, seq)
        if i < len(seqs) and seqs[i] == seq:
            raise TrustError(f"{what} was already taken (sequence number {seq}): a replay is refused")
        if len(seqs) >= WINDOW and i == 0:
            raise TrustError(
                f"{what} is older (sequence number {seq}) than the last {WINDOW} commands this device "
                "took: a replay is refused"
            )
        seqs.insert(i, seq)
        del seqs[:-WINDOW]
        self._save()

    def rotate(self, grant: KeyGrant, device_id: Optional[str]) -> str:
        """Pin ``grant.key`` (signed by the key pinned now); its fingerprint.  TrustError if not."""
        what = f"the new coordinator key {fingerprint(grant.key)}"
        if self.key is None:
            raise TrustError(f"{what} refused: this device pins no key to check it against")
        self.check(grant, device_id, what)
        self.consume(grant.seq, what)
        self._state.key = grant.key
        self._save()
        logger.warning("coordinator key rotated: commands must now be signed by key %s", self.fingerprint)
        return fingerprint(grant.key)

    # -- the state file ---------------------------------------------------------------

    def _load(self) -> _State:
        try:
            with open(self.path, "rb") as fh:
                state = msgspec.json.decode(fh.read(), type=_State)
        except FileNotFoundError:
            return _State(pinned=self.pinned)
        except (OSError, msgspec.DecodeError) as err:
            # Losing the window lets a replay of a command still unexpired through once; losing
            # a rotation makes the device refuse the new key's commands until rotated again.
            logger.error("%s cannot be read (%s); starting with the configured key", self.path, err)
            return _State(pinned=self.pinned)
        if state.pinned != self.pinned:
            if state.key:
                logger.warning("models.public_key changed in the configuration: the rotated key %s is "
                               "dropped", fingerprint(state.key))  # fmt: skip
            return _State(pinned=self.pinned, seqs=state.seqs)
        return state

    def _save(self) -> None:
        try:
            write_bytes_atomic(self.path, msgspec.json.encode(self._state), what="trust file", mode=0o600)
        except FleetbenchError as err:
            logger.error("%s", err)
