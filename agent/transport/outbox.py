"""The durable outbox: every result and health sample is on disk before it is sent.

SQLite in WAL mode with ``synchronous=FULL``: a message ``put`` here survives
``kill -9`` and a power cut (Raspberry Pis in sheds lose power).  It leaves only when
the broker has acknowledged it (``ack``), so a broker outage of hours or a reboot
loses nothing; a message may be sent twice (after a reconnect), never zero times, and
its id lets the receiver drop the duplicate.

The outbox is bounded by count and by age.  When a bound is hit the oldest messages
go first; how many were dropped is counted on disk, logged, and reported in health.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
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
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


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

    def __init__(self, path: str, max_messages: int = 100_000, max_age_s: float = 7 * 86400) -> None:
        if max_messages < 1 or max_age_s <= 0:
            raise OutboxError("outbox bounds must be positive")
        self.path = path
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise OutboxError(f"outbox {path!r} cannot be opened: {err}") from err

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------

    def put(self, msg_id: str, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Store a message durably; False if a message with this id is already queued."""
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO messages (id, topic, payload, qos, retain, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (msg_id, topic, payload, qos, int(retain), time.time()),
                )
            except sqlite3.Error as err:
                raise OutboxError(f"outbox {self.path!r} cannot store a message: {err}") from err
            added = cur.rowcount == 1
        if added:
            self.enforce_bounds()
        return added

    def ack(self, msg_ids: list[str]) -> int:
        """Forget messages the broker has acknowledged; returns how many were queued."""
        if not msg_ids:
            return 0
        with self._lock:
            self._db.execute("BEGIN")
            n = 0
            for i in range(0, len(msg_ids), 500):
                chunk = msg_ids[i : i + 500]
                cur = self._db.execute(
                    f"DELETE FROM messages WHERE id IN ({','.join('?' * len(chunk))})", chunk
                )
                n += cur.rowcount
            self._db.execute("COMMIT")
            return n

    def enforce_bounds(self) -> int:
        """Drop the oldest messages beyond the count bound and older than the age bound."""
        with self._lock:
            self._db.execute("BEGIN")
            old = self._db.execute(
                "DELETE FROM messages WHERE created_at < ?", (time.time() - self.max_age_s,)
            ).rowcount
            over = self._db.execute(
                "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq DESC "
                "LIMIT -1 OFFSET ?)",
                (self.max_messages,),
            ).rowcount
            dropped = old + over
            if dropped:
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('dropped', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                    (dropped,),
                )
            self._db.execute("COMMIT")
        if dropped:
            logger.warning(
                "outbox %s dropped %d message(s): %d older than %.0f s, %d beyond %d queued",
                self.path, dropped, old, self.max_age_s, over, self.max_messages,
            )  # fmt: skip
        return dropped

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
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    @property
    def dropped_total(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        return int(row[0]) if row else 0
