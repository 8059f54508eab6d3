"""Storing what devices report: idempotent, in batches, and a bad message costs only itself.

Every message is decoded with the wire contract (``agent.protocol``) against the topic
it came on: the topic names the device, and the message must say the same device.
What does not decode, or what the database refuses, becomes a dead letter (its topic,
its first ``DEAD_LETTER_BYTES``, the reason, when) and is acknowledged like the rest: a
message that can never be stored must not be redelivered forever, nor hold back the
fleet's other messages.  Only the database being unusable (it cannot be reached, the
disk is full) stops a batch: then nothing is stored and nothing acknowledged.

Ingest is idempotent on (device, message id): devices deliver at least once, and a
message seen twice is stored once (``INSERT ... ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import msgspec
import sqlalchemy as sa

from agent.protocol.errors import ProtocolError
from agent.protocol.messages import (
    HealthMessage,
    JobAckMessage,
    PushAckMessage,
    ResultMessage,
    StatusMessage,
    decode,
)
from agent.protocol.topics import parse_topic
from coordinator.store.schema import acks, dead_letters, devices, health, results, revoked

logger = logging.getLogger(__name__)

#: how much of a dead letter is kept (enough to see what it was)
DEAD_LETTER_BYTES = 4096
#: the newest dead letters kept; older ones are deleted as new ones come
DEAD_LETTERS_KEPT = 10_000


@dataclass(frozen=True)
class Message:
    """One MQTT message as received: the topic tells device and kind."""

    topic: str
    payload: bytes


@dataclass(frozen=True)
class Refusal:
    """A message that became a dead letter: where it came from, and why."""

    topic: str
    device_id: Optional[str]
    reason: str


@dataclass
class Batch:
    """What a batch of messages becomes: rows per table, statuses in order, dead letters."""

    health: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[StatusMessage] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)

    def add_dead(self, msg: Message, device_id: Optional[str], kind: Optional[str], reason: str) -> None:
        self.dead.append(
            {
                "at": time.time(),
                "topic": msg.topic[:512],
                "device_id": device_id,
                "kind": kind,
                "reason": reason[:2000],
                "size": len(msg.payload),
                "payload": bytes(msg.payload[:DEAD_LETTER_BYTES]),
            }
        )

    def report(self, refused: Optional[list[Refusal]]) -> None:
        """Once stored: tell the caller which messages became dead letters."""
        if refused is not None:
            refused.extend(Refusal(d["topic"], d["device_id"], d["reason"]) for d in self.dead)


def plan(msg: Message, batch: Batch, revoked: frozenset[str] = frozenset()) -> None:
    """Decode one message into its row (or its dead letter) in ``batch``; a device in
    ``revoked`` is no longer one of the fleet, and what it sends is refused."""
    topic = parse_topic(msg.topic)
    if topic is None or not topic.is_report:
        batch.add_dead(msg, None, None, "not a topic fleetbench devices report on")
        return
    if topic.device_id in revoked:
        batch.add_dead(msg, topic.device_id, topic.kind, f"device {topic.device_id} is revoked")
        return
    try:
        m = decode(msg.payload, topic)
    except ProtocolError as err:
        batch.add_dead(msg, topic.device_id, topic.kind, str(err))
        return
    row: dict[str, Any] = {"device_id": m.device_id, "msg_id": m.id, "ts": m.ts}
    if isinstance(m, StatusMessage):
        batch.statuses.append(m)
    elif isinstance(m, HealthMessage):
        index = m.data.degradation.index if m.data.degradation is not None else None
        row.update(degradation_index=index, data=msgspec.json.encode(m.data).decode())
        batch.health.append(row)
    elif isinstance(m, ResultMessage):
        arch = m.data.architecture
        row.update(job_id=m.data.job_id, model=m.data.model, space=arch.space if arch else None,
                   arch=arch.arch if arch else None, p50_ms=m.data.p50_ms,
                   data=bytes(msg.payload).decode("utf-8"))  # fmt: skip
        batch.results.append(row)
    elif isinstance(m, JobAckMessage):
        row.update(kind="job_ack", job_id=m.data.job_id, push_id=None, state=m.data.state,
                   data=bytes(msg.payload).decode("utf-8"))  # fmt: skip
        batch.acks.append(row)
    elif isinstance(m, PushAckMessage):
        row.update(kind="push_ack", job_id=None, push_id=m.data.push_id, state=m.data.state,
                   data=bytes(msg.payload).decode("utf-8"))  # fmt: skip
        batch.acks.append(row)


#: what a database raises for one row it will not take (SQLite and PostgreSQL alike)
ROW_REFUSED = (sa.exc.IntegrityError, sa.exc.DataError)


class Ingesting:
    """The store's ingest (a part of ``Store``)."""

    engine: sa.Engine
    _insert: Any

    def revoked_ids(self) -> frozenset[str]:
        """The revoked devices (a short table, read once per batch)."""
        with self.engine.connect() as conn:
            return frozenset(d for (d,) in conn.execute(sa.select(revoked.c.device_id)))

    @property
    def _sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def ingest(self, messages: Sequence[Message], refused: Optional[list[Refusal]] = None) -> dict[str, int]:
        """Store a batch in one transaction; counts of new rows by kind (duplicates count 0)
        and of dead letters ("dead").  Raises only when the database itself is unusable.

        ``refused``, if given, gets what became a dead letter, for the caller to report."""
        batch = Batch()
        revoked = self.revoked_ids()
        for msg in messages:
            plan(msg, batch, revoked)
        try:
            with self.engine.begin() as conn:
                added = self._write(conn, batch)
            batch.report(refused)
            return added
        except ROW_REFUSED as err:
            # One message's row broke the transaction (a value or a constraint the database
            # refuses): store the batch message by message, so only that one becomes a dead
            # letter.  Anything else (a lost server, a full disk, a table gone) is the database's,
            # not a message's: it raises, nothing is stored and nothing acknowledged.
            logger.warning("a batch of %d could not be stored together (%s); storing one by one",
                           len(messages), type(err).__name__)  # fmt: skip
            return self._ingest_each(messages, refused)

    def _ingest_each(self, messages: Sequence[Message], refused: Optional[list[Refusal]]) -> dict[str, int]:
        total: dict[str, int] = {}
        revoked = self.revoked_ids()
        for msg in messages:
            one = Batch()
            plan(msg, one, revoked)
            try:
                with self.engine.begin() as conn:
                    added = self._write(conn, one)
                one.report(refused)
            except ROW_REFUSED as err:
                dead = Batch()
                parsed = parse_topic(msg.topic)
                reason = f"the database refused it: {getattr(err, 'orig', None) or err}"
                dead.add_dead(
                    msg, parsed.device_id if parsed else None, parsed.kind if parsed else None, reason
                )
                with self.engine.begin() as conn:
                    added = self._write(conn, dead)
                dead.report(refused)
            for kind, n in added.items():
                total[kind] = total.get(kind, 0) + n
        return total

    def _write(self, conn: sa.Connection, batch: Batch) -> dict[str, int]:
        # Rows go in key order, in every table: two replicas' batches then take their row locks
        # in one order, and neither waits for a lock the other holds while holding one it wants
        # (PostgreSQL ends such a deadlock by failing one of them; the ingest tries it again).
        added: dict[str, int] = {}
        for kind, table, rows in (("health", health, batch.health), ("results", results, batch.results),
                                  ("acks", acks, batch.acks)):  # fmt: skip
            rows = sorted(rows, key=lambda r: (r["device_id"], r["msg_id"]))
            if rows:
                stmt = self._insert(table).on_conflict_do_nothing(index_elements=["device_id", "msg_id"])
                if self._sqlite:  # SQLite before 3.35 (Debian bullseye) has no RETURNING
                    added[kind] = conn.execute(stmt, rows).rowcount
                else:  # psycopg's executemany rowcount is -1: count what RETURNING gives back
                    added[kind] = len(conn.execute(stmt.returning(table.c.msg_id), rows).all())
        self._touch(conn, batch.health, batch.results + batch.acks)
        for status in batch.statuses:
            self._status(conn, status)
        added["status"] = len(batch.statuses)
        if batch.dead:
            conn.execute(dead_letters.insert(), batch.dead)
            newest = conn.execute(sa.select(sa.func.max(dead_letters.c.id))).scalar() or 0
            if newest > DEAD_LETTERS_KEPT:
                conn.execute(dead_letters.delete().where(dead_letters.c.id <= newest - DEAD_LETTERS_KEPT))
        added["dead"] = len(batch.dead)
        return added

    def _touch(
        self, conn: sa.Connection, health_rows: list[dict[str, Any]], other_rows: list[dict[str, Any]]
    ) -> None:
        """A device that sends anything exists and was heard from; its newest health replaces
        an older one.  One upsert per device per batch, all in one executemany."""
        now = time.time()
        per_device: dict[str, dict[str, Any]] = {}
        for row in other_rows + health_rows:
            d = per_device.setdefault(row["device_id"], {
                "device_id": row["device_id"], "state": "online", "state_at": row["ts"], "first_seen": now,
                "last_seen": row["ts"], "health": None, "health_at": None, "degradation_index": None,
            })  # fmt: skip
            d["last_seen"] = max(d["last_seen"], row["ts"])
        for row in health_rows:
            d = per_device[row["device_id"]]
            if d["health_at"] is None or d["health_at"] < row["ts"]:
                d.update(health=row["data"], health_at=row["ts"], degradation_index=row["degradation_index"])
        if not per_device:
            return
        stmt = self._insert(devices)
        new = stmt.excluded
        latest = sa.func.max if self._sqlite else sa.func.greatest
        newer = sa.and_(
            new.health_at.is_not(None),
            sa.or_(devices.c.health_at.is_(None), devices.c.health_at < new.health_at),
        )
        update: dict[str, Any] = {"last_seen": latest(devices.c.last_seen, new.last_seen)}
        for key in ("health", "health_at", "degradation_index"):
            update[key] = sa.case((newer, getattr(new, key)), else_=getattr(devices.c, key))
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["device_id"], set_=update),
            [per_device[d] for d in sorted(per_device)],  # in key order (_write says why)
        )

    def _status(self, conn: sa.Connection, status: StatusMessage) -> None:
        # Statuses apply in arrival order, stamped with the arrival time: the broker keeps
        # one topic's messages in order, and a Last Will's own "ts" is when the device
        # connected (the payload is fixed then), not when the broker published it.
        now = time.time()
        d = status.data
        values: dict[str, Any] = {"state": d.state, "state_at": now, "protocol": d.protocol, "key": d.key}
        for key in ("platform", "sku", "version"):
            if getattr(d, key):
                values[key] = getattr(d, key)
        described = d.capabilities or d.board or d.simulation
        if described is not None:
            values["capabilities"] = msgspec.json.encode(described).decode()
        stmt = self._insert(devices).values(
            device_id=status.device_id, first_seen=now, last_seen=now, **values
        )
        conn.execute(stmt.on_conflict_do_update(index_elements=["device_id"], set_=values))


def ingest_all(store: Any, msgs: Sequence[Message], batch: int = 500) -> dict[str, int]:
    """``ingest`` in batches; total new rows by kind."""
    from collections import Counter

    total: Counter = Counter()
    for i in range(0, len(msgs), batch):
        total.update(store.ingest(msgs[i : i + batch]))
    return dict(total)
