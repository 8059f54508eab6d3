"""The coordinator's store: devices, health samples, results, acks and deployments.

SQLAlchemy Core, so the same code runs on SQLite (the embedded default: a file path)
and on PostgreSQL (a ``postgresql://`` URL) for fleets that outgrow one machine.
Ingest is idempotent on the message id: agents deliver at least once, and a message
seen twice is stored once (``INSERT ... ON CONFLICT DO NOTHING``).

Migrations are versioned: ``schema_version`` holds the number of the last one applied,
and ``open_store`` applies the missing ones in order, each in its own transaction.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import sqlalchemy as sa

from agent.transport import messages
from coordinator.errors import CoordinatorError

logger = logging.getLogger(__name__)

metadata = sa.MetaData()

schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # online / offline
    sa.Column("state_at", sa.Float, nullable=False),
    sa.Column("platform", sa.String(32)),
    sa.Column("sku", sa.String(200)),
    sa.Column("version", sa.String(32)),
    sa.Column("capabilities", sa.Text),  # JSON
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("health", sa.Text),  # JSON of the latest health sample
    sa.Column("health_at", sa.Float),
    sa.Column("degradation_index", sa.Float),
)

health = sa.Table(
    "health",
    metadata,
    sa.Column("msg_id", sa.String(200), primary_key=True),
    sa.Column("device_id", sa.String(64), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("degradation_index", sa.Float),
    sa.Column("data", sa.Text, nullable=False),
)

results = sa.Table(
    "results",
    metadata,
    sa.Column("msg_id", sa.String(400), primary_key=True),
    sa.Column("device_id", sa.String(64), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("job_id", sa.String(128)),
    sa.Column("model", sa.String(400)),
    sa.Column("space", sa.String(32)),
    sa.Column("arch", sa.String(400)),
    sa.Column("p50_ms", sa.Float),
    sa.Column("data", sa.Text, nullable=False),
)

acks = sa.Table(
    "acks",
    metadata,
    sa.Column("msg_id", sa.String(200), primary_key=True),
    sa.Column("device_id", sa.String(64), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("job_id", sa.String(128), index=True),
    sa.Column("state", sa.String(32)),
    sa.Column("data", sa.Text, nullable=False),
)

# Version 1's deployments table (never written by any release): version 2 replaces it.
_deployments_v1 = sa.Table(
    "deployments",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(64), nullable=False, index=True),
    sa.Column("model", sa.String(400), nullable=False),
    sa.Column("version", sa.String(64)),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("detail", sa.Text),
)

rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("rollout_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("blob", sa.Text, nullable=False),  # path of the model file the coordinator keeps
    sa.Column("target_kind", sa.String(16), nullable=False),  # device / sku
    sa.Column("target", sa.String(200), nullable=False),
    # new -> canary -> rolling -> done | halted
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("canary_fraction", sa.Float, nullable=False),
    sa.Column("max_failure_share", sa.Float, nullable=False),
    sa.Column("max_latency_ms", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("detail", sa.Text),
)

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("push_id", sa.String(128), primary_key=True),  # {rollout_id}:{device_id}
    sa.Column("rollout_id", sa.String(32), nullable=False, index=True),
    sa.Column("device_id", sa.String(64), nullable=False, index=True),
    sa.Column("stage", sa.String(16), nullable=False),  # canary / rest
    # pending -> sending -> installed | rolled_back | rejected | failed | cancelled
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("sent_at", sa.Float),
    sa.Column("last_ack_ts", sa.Float),  # acks up to this time are handled
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("p50_ms", sa.Float),
    sa.Column("detail", sa.Text),
)

#: the re-ranking loop's state per device: idle -> sampling -> decided | failed | no_budget
rerank_state = sa.Table(
    "rerank_state",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("job_id", sa.String(128)),
    sa.Column("space", sa.String(32)),
    sa.Column("rounds", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("degradation_index", sa.Float),  # when the round started
    sa.Column("detail", sa.Text),
)

#: every decision with its inputs, for `fleetbench explain`
decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(64), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("space", sa.String(32), nullable=False),
    sa.Column("arch", sa.String(400)),
    sa.Column("budget_ms", sa.Float, nullable=False),
    sa.Column("predicted_ms", sa.Float),
    sa.Column("accuracy", sa.Float),
    sa.Column("rollout_id", sa.String(32)),
    sa.Column("inputs", sa.Text, nullable=False),  # JSON: the Decision, the reference, the job
)


def _v1(conn: sa.Connection) -> None:
    for table in (devices, health, results, acks, _deployments_v1):
        table.create(conn, checkfirst=True)


def _v2(conn: sa.Connection) -> None:
    _deployments_v1.drop(conn, checkfirst=True)
    for table in (rollouts, deployments, rerank_state, decisions):
        table.create(conn, checkfirst=True)


#: (version, what it does, how); append, never edit a released one
MIGRATIONS: tuple[tuple[int, str, Callable[[sa.Connection], None]], ...] = (
    (1, "devices, health, results, acks, deployments", _v1),
    (2, "rollouts, deployments per push, the re-ranking state, decisions", _v2),
)


class StoreError(CoordinatorError):
    """The database cannot be opened or written."""


def engine_url(db: str) -> str:
    """A SQLAlchemy URL from ``--db``: a URL as is, a plain path as a SQLite file."""
    return db if "://" in db else f"sqlite:///{os.path.abspath(db)}"


@dataclass(frozen=True)
class Message:
    """One MQTT message as received: the topic tells device and kind."""

    topic: str
    payload: bytes


def _device_and_kind(topic: str) -> tuple[Optional[str], Optional[str]]:
    parts = topic.split("/")
    # fleetbench/v1/devices/{device_id}/{kind}
    if len(parts) == 5 and parts[2] == "devices":
        return parts[3], parts[4]
    return None, None


class Store:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._insert = self._dialect_insert()

    def _dialect_insert(self) -> Any:
        name = self.engine.dialect.name
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
        else:
            raise StoreError(f"database {name!r} is not supported (use SQLite or PostgreSQL)")
        return insert

    # -- schema -------------------------------------------------------------------

    def version(self) -> int:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("schema_version"):
                return 0
            value = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
            return int(value or 0)

    def migrate(self) -> list[int]:
        """Apply the migrations not yet applied; the versions applied now."""
        applied = []
        current = self.version()
        for version, what, step in MIGRATIONS:
            if version <= current:
                continue
            with self.engine.begin() as conn:
                schema_version.create(conn, checkfirst=True)
                step(conn)
                conn.execute(schema_version.delete())
                conn.execute(schema_version.insert().values(version=version))
            logger.info("database migrated to version %d (%s)", version, what)
            applied.append(version)
        if current > MIGRATIONS[-1][0]:
            raise StoreError(
                f"the database is at schema version {current}, newer than this fleetbench knows "
                f"({MIGRATIONS[-1][0]}); upgrade fleetbench"
            )
        return applied

    # -- ingest -------------------------------------------------------------------

    def ingest(self, batch: Sequence[Message]) -> dict[str, int]:
        """Store a batch in one transaction; counts of new rows by kind (duplicates count 0).

        Malformed messages are logged and skipped: one bad agent must not stop the fleet.
        """
        rows: dict[str, list[dict[str, Any]]] = {"health": [], "results": [], "acks": []}
        statuses: list[tuple[str, dict[str, Any]]] = []
        for msg in batch:
            device_id, kind = _device_and_kind(msg.topic)
            if device_id is None:
                continue
            if kind == "status":
                try:
                    status = json.loads(msg.payload)
                except ValueError:
                    logger.warning("ignoring a status of %s that is not JSON", device_id)
                    continue
                if isinstance(status, dict) and status.get("state") in ("online", "offline"):
                    statuses.append((device_id, status))
                continue
            if kind not in rows:
                continue
            try:
                env = messages.decode(msg.payload)
            except messages.MessageError as err:
                logger.warning("ignoring a %s message from %s: %s", kind, device_id, err)
                continue
            data = env.data if isinstance(env.data, dict) else {}
            row: dict[str, Any] = {
                "msg_id": env.id,
                "device_id": device_id,
                "ts": env.ts,
                # health keeps its data (the registry shows it); the rest keeps the envelope as sent
                "data": json.dumps(env.data) if kind == "health" else msg.payload.decode("utf-8", "replace"),
            }
            if kind == "health":
                row["degradation_index"] = (data.get("degradation") or {}).get("index")
            elif kind == "results":
                arch = data.get("architecture") or {}
                stats = (data.get("result") or {}).get("stats") or {}
                row.update(
                    job_id=data.get("job_id"),
                    model=data.get("model"),
                    space=arch.get("space"),
                    arch=arch.get("arch"),
                    p50_ms=stats.get("p50_ms"),
                )
            else:
                row.update(job_id=data.get("job_id"), state=data.get("state"))
            rows[kind].append(row)
        added = {}
        with self.engine.begin() as conn:
            for kind, table in (("health", health), ("results", results), ("acks", acks)):
                if rows[kind]:
                    stmt = self._insert(table).on_conflict_do_nothing(index_elements=["msg_id"])
                    added[kind] = conn.execute(stmt, rows[kind]).rowcount
            self._touch(conn, rows["health"], rows["results"] + rows["acks"])
            for device_id, status in statuses:
                self._status(conn, device_id, status)
        added["status"] = len(statuses)
        return added

    def _touch(
        self, conn: sa.Connection, health_rows: list[dict[str, Any]], other_rows: list[dict[str, Any]]
    ) -> None:
        """A device that sends anything exists and was heard from; its newest health replaces
        an older one.  One upsert per device per batch, all in one executemany."""
        now = time.time()
        per_device: dict[str, dict[str, Any]] = {}
        for row in other_rows + health_rows:
            d = per_device.setdefault(
                row["device_id"],
                {
                    "device_id": row["device_id"],
                    "state": "online",
                    "state_at": row["ts"],
                    "first_seen": now,
                    "last_seen": row["ts"],
                    "health": None,
                    "health_at": None,
                    "degradation_index": None,
                },
            )
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
            stmt.on_conflict_do_update(index_elements=["device_id"], set_=update), list(per_device.values())
        )

    @property
    def _sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def _status(self, conn: sa.Connection, device_id: str, status: dict[str, Any]) -> None:
        # Statuses apply in arrival order, stamped with the arrival time: the broker keeps
        # one topic's messages in order, and a Last Will's own "ts" is when the agent
        # connected (the payload is fixed then), not when the broker published it.
        now = time.time()
        caps = status.get("capabilities")
        values: dict[str, Any] = {"state": status["state"], "state_at": now}
        for key in ("platform", "sku", "version"):
            if isinstance(status.get(key), str):
                values[key] = status[key]
        if caps is not None:
            values["capabilities"] = json.dumps(caps)
        stmt = self._insert(devices).values(device_id=device_id, first_seen=now, last_seen=now, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=["device_id"], set_=values))

    # -- queries ------------------------------------------------------------------

    def fleet(self) -> list[dict[str, Any]]:
        """Every device with its state, SKU, capabilities, latest health and degradation."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(devices).order_by(devices.c.device_id)).mappings().all()
            per_device = sa.select(results.c.device_id, sa.func.count()).group_by(results.c.device_id)
            counts: dict[str, int] = {device: n for device, n in conn.execute(per_device).all()}
        out = []
        for row in rows:
            item = dict(row)
            for key in ("capabilities", "health"):
                item[key] = json.loads(item[key]) if item[key] else None
            item["results"] = counts.get(row["device_id"], 0)
            out.append(item)
        return out

    def online(self) -> list[dict[str, Any]]:
        """The online devices' id, SKU and degradation index: what the loops look at every tick
        (``fleet()`` also decodes every health sample and counts every result)."""
        cols = (devices.c.device_id, devices.c.sku, devices.c.degradation_index)
        with self.engine.connect() as conn:
            q = sa.select(*cols).where(devices.c.state == "online").order_by(devices.c.device_id)
            return [dict(r) for r in conn.execute(q).mappings()]

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(metadata.tables[table])).scalar() or 0
            )

    def results_for(self, device_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    sa.select(results).where(results.c.device_id == device_id).order_by(results.c.ts)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]


def open_store(db: str, migrate: bool = True) -> Store:
    """Open (and by default migrate) the database ``db``: a SQLite path or a SQLAlchemy URL."""
    url = engine_url(db)
    try:
        engine = sa.create_engine(url)
        if engine.dialect.name == "sqlite":
            path = engine.url.database or ""
            directory = os.path.dirname(os.path.abspath(path)) if path else ""
            if path and not os.path.isdir(directory):
                raise StoreError(f"--db {db!r}: directory {directory!r} does not exist")

            @sa.event.listens_for(engine, "connect")
            def _wal(dbapi_conn: Any, record: Any) -> None:  # readers never block the ingest
                dbapi_conn.execute("PRAGMA journal_mode=WAL")
                dbapi_conn.execute("PRAGMA synchronous=NORMAL")

        store = Store(engine)
        if migrate:
            store.migrate()
        return store
    except sa.exc.ArgumentError as err:
        raise StoreError(f"--db {db!r} is not a database URL or path: {err}") from None
    except sa.exc.OperationalError as err:
        raise StoreError(f"--db {db!r} cannot be opened: {err.orig}") from None
    except (ModuleNotFoundError, sa.exc.NoSuchModuleError) as err:
        raise StoreError(f"--db {db!r} needs a database driver that is not installed: {err}") from None


def ingest_all(store: Store, msgs: Sequence[Message], batch: int = 500) -> dict[str, int]:
    """``ingest`` in batches; total new rows by kind."""
    from collections import Counter

    total: Counter = Counter()
    for i in range(0, len(msgs), batch):
        total.update(store.ingest(msgs[i : i + batch]))
    return dict(total)
