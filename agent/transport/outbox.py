"""The durable outbox: every result and health sample is on disk before it is sent.

SQLite in WAL mode with ``synchronous=FULL``: a message ``put`` here survives
``kill -9`` and a power cut (Raspberry Pis in sheds lose power).  It leaves only when
the broker has acknowledged it (``ack``), so a broker outage of hours or a reboot
loses nothing; a message may be sent twice (after a reconnect), never zero times, and
its id lets the receiver drop the duplicate.

The outbox is bounded by count, by bytes and by age.  When a bound is hit, messages
marked ``droppable`` (health samples: the next one says the same, newer) go first,
oldest first, then the oldest of the rest; how many were dropped is counted on disk,
logged, and reported in health.  ``put`` costs the same at any size: the count and
the bytes are kept in memory (read once at open), and dropping takes the oldest rows
through the index, never a scan.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Optional

from agent.common.errors import FleetbenchError

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    created_at REAL NOT NULL,
    droppable  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
#: made after the column exists (an outbox of fleetbench 0.2 gets the column first)
_INDEX = "CREATE INDEX IF NOT EXISTS ix_droppable ON messages (droppable, seq)"
#: how often (puts) the age bound is looked at
AGE_CHECK_EVERY = 1000
#: drops are logged at most this often (the first at once)
REPORT_EVERY_S = 60.0
#: SQLite 3.35 (2021) and later say what a DELETE removed (RETURNING); Raspberry Pi OS bullseye
#: has 3.34, which gets the same figures from a SELECT in the same transaction
RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


class OutboxError(FleetbenchError):
    """The outbox file cannot be opened or written."""


@dataclass(frozen=True)
class Pending:
    seq: int
    id: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_at: float


class Outbox:
    """A bounded on-disk FIFO queue, safe to use from several threads."""

    def __init__(
        self,
        path: str,
        max_messages: int = 100_000,
        max_age_s: float = 7 * 86400,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        if max_messages < 1 or max_age_s <= 0 or max_bytes < 1:
            raise OutboxError("outbox bounds must be positive")
        self.path = path
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._puts = 0
        self._returning = RETURNING
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
            if "droppable" not in columns:  # an outbox written by fleetbench 0.2
                self._db.execute("ALTER TABLE messages ADD COLUMN droppable INTEGER NOT NULL DEFAULT 0")
            self._db.execute(_INDEX)
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages"
            ).fetchone()
            row = self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        except (OSError, sqlite3.Error) as err:
            raise OutboxError(f"outbox {path!r} cannot be opened: {err}") from err
        self._count, self._bytes = int(count), int(size)
        self._dropped = int(row[0]) if row else 0
        self._unreported, self._reported_at = [0, 0, 0, 0], 0.0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------

    def put(
        self,
        msg_id: str,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        droppable: bool = False,
    ) -> bool:
        """Store a message durably; False if a message with this id is already queued.
        ``droppable``: dropped before the others when a bound is hit (health samples)."""
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO messages (id, topic, payload, qos, retain, created_at, droppable) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (msg_id, topic, payload, qos, int(retain), time.time(), int(droppable)),
                )
            except sqlite3.Error as err:
                raise OutboxError(f"outbox {self.path!r} cannot store a message: {err}") from err
            added = cur.rowcount == 1
            if added:
                self._count += 1
                self._bytes += len(payload)
                self._puts += 1
            over = self._count > self.max_messages or self._bytes > self.max_bytes
            aged = self._puts % AGE_CHECK_EVERY == 0
        if added and (over or aged):
            self.enforce_bounds(age=aged)
        return added

    def ack(self, msg_ids: list[str]) -> int:
        """Forget messages the broker has acknowledged; returns how many were queued."""
        if not msg_ids:
            return 0
        with self._lock, self._transaction("forget acknowledged messages"):
            n = freed = 0
            for i in range(0, len(msg_ids), 500):
                chunk = msg_ids[i : i + 500]
                count, size = self._delete(f"id IN ({','.join('?' * len(chunk))})", chunk)
                n += count
                freed += size
            self._count -= n
            self._bytes -= freed
            return n

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[None]:
        """BEGIN ... COMMIT, rolled back when anything in it fails (the connection stays usable)."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException as err:
            self._db.execute("ROLLBACK")
            # the counts in memory may have moved with rows that are back: count again
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages"
            ).fetchone()
            self._count, self._bytes = int(count), int(size)
            if isinstance(err, sqlite3.Error):
                raise OutboxError(f"outbox {self.path!r} cannot {what}: {err}") from err
            raise
        self._db.execute("COMMIT")

    def _delete(self, where: str, params: Sequence[object]) -> tuple[int, int]:
        """Delete the rows ``where`` selects, in the caller's transaction: (count, payload bytes)."""
        if self._returning:
            rows = self._db.execute(f"DELETE FROM messages WHERE {where} RETURNING LENGTH(payload)", params)
            sizes = [size for (size,) in rows.fetchall()]
            return len(sizes), sum(sizes)
        count, size = self._db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages WHERE {where}", params
        ).fetchone()
        if count:
            self._db.execute(f"DELETE FROM messages WHERE {where}", params)
        return int(count), int(size)

    def _drop_oldest(self, droppable_only: bool, limit: int) -> tuple[int, int]:
        """Delete up to ``limit`` of the oldest messages (droppable ones only, if asked): (count, bytes)."""
        where = "WHERE droppable = 1 " if droppable_only else ""
        return self._delete(f"seq IN (SELECT seq FROM messages {where}ORDER BY seq LIMIT ?)", (limit,))

    def enforce_bounds(self, age: bool = True) -> int:
        """Drop what is older than the age bound (``age``), then, while over the count or byte
        bound, the oldest droppable messages, then the oldest of the rest."""
        with self._lock, self._transaction("drop messages beyond its bounds"):
            old = 0
            cutoff = time.time() - self.max_age_s
            oldest = None
            if age:  # only every AGE_CHECK_EVERY puts: an outbox at its bound drops on every put
                oldest = self._db.execute("SELECT created_at FROM messages ORDER BY seq LIMIT 1").fetchone()
            if oldest is not None and oldest[0] < cutoff:
                # seq follows time: the too-old rows are the first ones (a bounded look, never a scan)
                old, size = self._delete(
                    "seq IN (SELECT seq FROM (SELECT seq, created_at FROM messages ORDER BY seq LIMIT 10000) "
                    "WHERE created_at < ?)",
                    (cutoff,),
                )
                self._count -= old
                self._bytes -= size
            health = over = 0
            for droppable_only in (True, False):
                while self._count > self.max_messages or self._bytes > self.max_bytes:
                    # as many as the count is over, or as the bytes over are at the average size
                    average = max(1, self._bytes // max(1, self._count))
                    excess = max(
                        self._count - self.max_messages, -(-(self._bytes - self.max_bytes) // average), 1
                    )
                    n, size = self._drop_oldest(droppable_only, min(excess, 10_000))
                    if n == 0:
                        break
                    self._count -= n
                    self._bytes -= size
                    if droppable_only:
                        health += n
                    else:
                        over += n
            dropped = old + health + over
            if dropped:
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('dropped', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                    (dropped,),
                )
                self._dropped += dropped
        if dropped:
            self._report(dropped, old, health, over)
        return dropped

    def _report(self, dropped: int, old: int, health: int, over: int) -> None:
        """Warn of drops at once, then at most once a minute with the sums (an outbox held at
        its bound drops on every put: one line each would flood the journal)."""
        self._unreported = [a + b for a, b in zip(self._unreported, (dropped, old, health, over))]
        now = time.monotonic()
        if now - self._reported_at < REPORT_EVERY_S:
            return
        dropped, old, health, over = self._unreported
        logger.warning(
            "outbox %s dropped %d message(s)%s: %d older than %.0f s, %d health samples and %d others "
            "beyond %d messages or %d bytes",
            self.path, dropped, " in the last minute" if self._reported_at else "", old, self.max_age_s,
            health, over, self.max_messages, self.max_bytes,
        )  # fmt: skip
        self._unreported, self._reported_at = [0, 0, 0, 0], now

    # -- reading ------------------------------------------------------------------

    def peek(self, limit: int = 100, exclude: Optional[set[str]] = None) -> list[Pending]:
        """The oldest queued messages (not removed), skipping ids in ``exclude``."""
        exclude = exclude or set()
        out: list[Pending] = []
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, topic, payload, qos, retain, created_at FROM messages ORDER BY seq LIMIT ?",
                (limit + len(exclude),),
            ).fetchall()
        for seq, msg_id, topic, payload, qos, retain, created in rows:
            if msg_id in exclude:
                continue
            out.append(Pending(seq, msg_id, topic, bytes(payload), qos, bool(retain), created))
            if len(out) >= limit:
                break
        return out

    def __len__(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        """The payload bytes queued."""
        return self._bytes

    @property
    def dropped_total(self) -> int:
        return self._dropped
