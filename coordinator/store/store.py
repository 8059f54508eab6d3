"""The coordinator's store: the only code that speaks SQL.

SQLAlchemy Core, so the same code runs on SQLite (the embedded default: a file path) and
on PostgreSQL (a ``postgresql://`` URL) for fleets that outgrow one machine.  Everything
else reads and changes the coordinator's state through these methods and the typed
records of ``coordinator.store.records``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional

import sqlalchemy as sa

from agent.protocol.errors import ProtocolError
from agent.protocol.messages import PushAckMessage, decode
from coordinator.errors import CoordinatorError
from coordinator.store.ingest import Ingesting
from coordinator.store.records import (
    ACTIVE_ROLLOUT,
    DeadLetter,
    DecisionRecord,
    Deployment,
    Device,
    JobEnding,
    JobReport,
    Lease,
    OnlineDevice,
    OutgoingJob,
    ReceivedPushAck,
    RerankState,
    ResultRow,
    Rollout,
    RolloutReport,
)
from coordinator.store.schema import (
    LATEST,
    MIGRATIONS,
    acks,
    dead_letters,
    decisions,
    deployments,
    devices,
    health,
    leases,
    metadata,
    outgoing_jobs,
    rerank_state,
    results,
    revoked,
    rollouts,
    schema_version,
)

logger = logging.getLogger(__name__)


class StoreError(CoordinatorError):
    """The database cannot be opened or written."""


class Fenced(StoreError):
    """A loop's write refused: the lease it was made under is no longer this coordinator's."""


def engine_url(db: str) -> str:
    """A SQLAlchemy URL from ``--db``: a URL as is, a plain path as a SQLite file."""
    return db if "://" in db else f"sqlite:///{os.path.abspath(db)}"


def _record(cls: Any, row: Any, **extra: Any) -> Any:
    return cls(**{**dict(row._mapping), **extra})


class Store(Ingesting):
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._insert = self._dialect_insert()
        #: (lease, holder, token): this view's writes are made only while that lease is held so
        #: (``for_loops``); None: unfenced (the ingest, the CLI, the dashboard)
        self.fence: Optional[tuple[str, str, int]] = None

    def for_loops(self) -> Store:
        """A view of this store, on the same engine, for the loops one replica runs under a lease:
        once ``fence`` is set, each of its writes first checks, in its own transaction, that the
        lease is still that holder's with that token and has not run out, and raises ``Fenced``
        otherwise.  On PostgreSQL the check locks the lease row, so no other replica can take the
        lease while the write is being made: a leader paused mid-loop writes nothing on waking."""
        view = copy.copy(self)
        view.fence = None
        return view

    @contextlib.contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """A write transaction; fenced (see ``for_loops``) when ``fence`` is set."""
        with self.engine.begin() as conn:
            if self.fence is not None:
                name, holder, token = self.fence
                q = sa.select(leases.c.holder, leases.c.token, leases.c.expires_at).where(
                    leases.c.name == name
                )
                row = conn.execute(q if self._sqlite else q.with_for_update()).first()
                if row is None or (row.holder, row.token) != (holder, token) or row.expires_at < time.time():
                    raise Fenced(
                        f"the {name!r} lease (token {token}) is no longer {holder}'s: write not made"
                    )
            yield conn

    def _dialect_insert(self) -> Any:
        name = self.engine.dialect.name
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
        else:
            raise StoreError(f"database {name!r} is not supported (use SQLite or PostgreSQL)")
        return insert

    # -- schema ---------------------------------------------------------------------

    def version(self) -> int:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("schema_version"):
                return 0
            value = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
            return int(value or 0)

    def migrate(self) -> list[int]:
        """Bring the schema to the latest version; the versions applied now.  On PostgreSQL under
        an advisory lock: replicas started together migrate one after the other (the second finds
        nothing left to do); SQLite's writes are one at a time anyway."""
        if self.engine.dialect.name != "postgresql":
            return self._migrate()
        with self.engine.connect() as lock:
            lock.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATE_LOCK})
            try:
                return self._migrate()
            finally:
                lock.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATE_LOCK})
                lock.commit()

    def _migrate(self) -> list[int]:
        current = self.version()
        if current > LATEST:
            raise StoreError(
                f"the database is at schema version {current}, newer than this fleetbench knows "
                f"({LATEST}); upgrade fleetbench"
            )
        if current == 0:  # a new database: the latest schema at once
            with self.engine.begin() as conn:
                metadata.create_all(conn)
                conn.execute(schema_version.insert().values(version=LATEST))
            logger.info("database created at schema version %d", LATEST)
            return [LATEST]
        applied = []
        for version, what, step in MIGRATIONS:
            if version <= current or step is None:
                continue
            with self.engine.begin() as conn:
                step(conn)
                conn.execute(schema_version.delete())
                conn.execute(schema_version.insert().values(version=version))
            logger.info("database migrated to version %d (%s)", version, what)
            applied.append(version)
        return applied

    # -- retention ------------------------------------------------------------------

    def thin_health(self, before: float, since: float = 0.0, bucket_s: int = 3600) -> int:
        """Health from ``since`` to ``before`` thinned to the last sample of each device and
        ``bucket_s`` (an hour): how many rows went.  Newer health, and everything else, is kept.
        ``since``: where the last thinning stopped, so each pass reads only the hours that have
        aged since."""
        bucket = sa.cast(health.c.ts, sa.BigInteger) // bucket_s  # whole hours on both engines
        window = (health.c.ts >= since, health.c.ts < before)
        newest = (
            sa.select(health.c.device_id, bucket.label("bucket"), sa.func.max(health.c.ts).label("ts"))
            .where(*window)
            .group_by(health.c.device_id, bucket)
            .subquery()
        )
        keep = (
            sa.select(newest.c.ts)
            .where(newest.c.device_id == health.c.device_id, newest.c.bucket == bucket)
            .scalar_subquery()
        )
        with self._begin() as conn:
            return int(conn.execute(health.delete().where(*window, health.c.ts < keep)).rowcount)

    # -- leases: one coordinator of several runs the loops ------------------------------

    def acquire(self, name: str, holder: str, ttl_s: float, now: float) -> Optional[int]:
        """Keep, or take once it has expired, the lease ``name`` for ``holder`` until ``now +
        ttl_s``: its fencing token, or None while another holder's lease runs.  Taking it
        raises the token; keeping it does not.  One transaction, so of two coordinators
        taking an expired lease at once exactly one gets it (PostgreSQL re-checks a row a
        concurrent update changed; SQLite writes one at a time)."""
        until = now + ttl_s
        with self.engine.begin() as conn:
            conn.execute(
                self._insert(leases)
                .values(name=name, holder=holder, token=1, expires_at=until, acquired_at=now)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            kept = conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.holder == holder)
                .values(expires_at=until)
            ).rowcount
            if not kept:
                conn.execute(
                    leases.update()
                    .where(leases.c.name == name, leases.c.holder != holder, leases.c.expires_at < now)
                    .values(holder=holder, token=leases.c.token + 1, expires_at=until, acquired_at=now)
                )
            row = conn.execute(sa.select(leases).where(leases.c.name == name)).one()
        return int(row.token) if row.holder == holder else None

    def release(self, name: str, holder: str) -> None:
        """Give the lease up at once (a clean stop), so another coordinator need not wait it out."""
        with self.engine.begin() as conn:
            conn.execute(
                leases.update().where(leases.c.name == name, leases.c.holder == holder).values(expires_at=0.0)
            )

    def leases(self) -> list[Lease]:
        with self.engine.connect() as conn:
            return [_record(Lease, r) for r in conn.execute(sa.select(leases).order_by(leases.c.name))]

    # -- the fleet ------------------------------------------------------------------

    def fleet(self) -> list[Device]:
        """Every device with its state, SKU, capabilities, latest health and degradation."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(devices).order_by(devices.c.device_id)).all()
            counted = sa.select(results.c.device_id, sa.func.count()).group_by(results.c.device_id)
            counts: dict[str, int] = {d: n for d, n in conn.execute(counted).all()}
            dead_q = sa.select(dead_letters.c.device_id, sa.func.count()).group_by(dead_letters.c.device_id)
            dead: dict[Any, int] = {d: n for d, n in conn.execute(dead_q).all()}
        out = []
        for row in rows:
            item = dict(row._mapping)
            for key in ("capabilities", "health"):
                item[key] = json.loads(item[key]) if item[key] else None
            out.append(
                Device(**item, results=counts.get(row.device_id, 0), dead_letters=dead.get(row.device_id, 0))
            )
        return out

    def online(self) -> list[OnlineDevice]:
        """The online devices' id, SKU, degradation index and message version: what the loops
        look at every tick (``fleet()`` also decodes every health sample and counts results)."""
        cols = (devices.c.device_id, devices.c.sku, devices.c.degradation_index, devices.c.protocol,
                devices.c.key)  # fmt: skip
        with self.engine.connect() as conn:
            q = sa.select(*cols).where(devices.c.state == "online").order_by(devices.c.device_id)
            return [OnlineDevice(d, sku, index, protocol or 1, key)
                    for d, sku, index, protocol, key in conn.execute(q)]  # fmt: skip

    def device(self, device_id: str) -> Optional[OnlineDevice]:
        """One device's id, SKU, degradation, message version and key, online or not."""
        cols = (devices.c.device_id, devices.c.sku, devices.c.degradation_index, devices.c.protocol,
                devices.c.key)  # fmt: skip
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*cols).where(devices.c.device_id == device_id)).first()
        return OnlineDevice(row[0], row[1], row[2], row[3] or 1, row[4]) if row else None

    # -- revocation -----------------------------------------------------------------

    def revoke(self, device_id: str, now: float, reason: str) -> bool:
        """Take a device out of the fleet: what it sends from now on is refused, its pushes in
        flight are cancelled, its jobs not yet sent dropped.  False if it was already revoked."""
        with self._begin() as conn:
            if conn.execute(sa.select(revoked.c.device_id).where(revoked.c.device_id == device_id)).first():
                return False
            conn.execute(revoked.insert().values(device_id=device_id, at=now, reason=reason))
            conn.execute(devices.delete().where(devices.c.device_id == device_id))
            conn.execute(rerank_state.delete().where(rerank_state.c.device_id == device_id))
            conn.execute(deployments.update().where(
                deployments.c.device_id == device_id, deployments.c.state.in_(("pending", "sending"))
            ).values(state="cancelled", updated_at=now, detail="the device was revoked"))  # fmt: skip
            conn.execute(outgoing_jobs.update().where(
                outgoing_jobs.c.device_id == device_id, outgoing_jobs.c.state == "queued"
            ).values(state="failed", detail="the device was revoked"))  # fmt: skip
        return True

    def reinstate(self, device_id: str) -> bool:
        """A revoked device may join again (enrolled anew); False if it was not revoked."""
        with self._begin() as conn:
            return bool(conn.execute(revoked.delete().where(revoked.c.device_id == device_id)).rowcount)

    # -- operators' jobs ------------------------------------------------------------

    def queue_jobs(self, jobs: Sequence[OutgoingJob]) -> None:
        with self._begin() as conn:
            conn.execute(outgoing_jobs.insert(), [dataclasses.asdict(job) for job in jobs])

    def queued_jobs(self) -> list[OutgoingJob]:
        with self.engine.connect() as conn:
            q = outgoing_jobs.select().where(outgoing_jobs.c.state == "queued").order_by(
                outgoing_jobs.c.created_at)  # fmt: skip
            return [_record(OutgoingJob, r) for r in conn.execute(q)]

    def outgoing_jobs(self, job_id: str) -> list[OutgoingJob]:
        """An operator's job, one row per device it went to."""
        with self.engine.connect() as conn:
            q = (
                outgoing_jobs.select()
                .where(outgoing_jobs.c.job_id == job_id)
                .order_by(outgoing_jobs.c.device_id)
            )
            return [_record(OutgoingJob, r) for r in conn.execute(q)]

    def job_sent(
        self, job: OutgoingJob, now: float, state: str = "sent", detail: Optional[str] = None
    ) -> None:
        with self._begin() as conn:
            conn.execute(outgoing_jobs.update().where(
                outgoing_jobs.c.job_id == job.job_id, outgoing_jobs.c.device_id == job.device_id
            ).values(state=state, sent_at=now, detail=detail))  # fmt: skip

    def job_reports(self, job_ids: Sequence[str], after: float = 0.0) -> list[JobReport]:
        """What devices said about these jobs (acks and results) after ``after``, oldest first."""
        out: list[JobReport] = []
        with self.engine.connect() as conn:
            for kind, table in (("job_ack", acks), ("result", results)):
                q = sa.select(table.c.device_id, table.c.ts, table.c.data).where(
                    table.c.job_id.in_(list(job_ids)), table.c.ts > after)  # fmt: skip
                if table is acks:
                    q = q.where(acks.c.kind == "job_ack")
                for device_id, ts, data in conn.execute(q):
                    out.append(JobReport(device_id, ts, kind, json.loads(data)["data"]))
        return sorted(out, key=lambda r: r.ts)

    def devices_of_sku(self, sku: str) -> list[str]:
        with self.engine.connect() as conn:
            q = sa.select(devices.c.device_id).where(devices.c.sku == sku).order_by(devices.c.device_id)
            return [d for (d,) in conn.execute(q)]

    def degradation_history(self, device_id: str, limit: int = 500) -> list[tuple[float, float]]:
        """A device's degradation index over time, (ts, index), oldest first: its newest ``limit``."""
        q = (sa.select(health.c.ts, health.c.degradation_index)
             .where(health.c.device_id == device_id, health.c.degradation_index.is_not(None))
             .order_by(health.c.ts.desc()).limit(limit))  # fmt: skip
        with self.engine.connect() as conn:
            return [(float(ts), float(i)) for ts, i in reversed(conn.execute(q).all())]

    def device_counts(self) -> list[tuple[str, Optional[str], int]]:
        """(state, SKU, how many devices): what a metrics scrape needs, without reading health."""
        with self.engine.connect() as conn:
            q = sa.select(devices.c.state, devices.c.sku, sa.func.count()).group_by(
                devices.c.state, devices.c.sku
            )
            return [(state, sku, int(n)) for state, sku, n in conn.execute(q)]

    def rollout_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            q = sa.select(rollouts.c.state, sa.func.count()).group_by(rollouts.c.state)
            return {state: int(n) for state, n in conn.execute(q)}

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters kept, per topic kind (the newest DEAD_LETTERS_KEPT)."""
        with self.engine.connect() as conn:
            q = sa.select(dead_letters.c.kind, sa.func.count()).group_by(dead_letters.c.kind)
            return {kind or "unknown": int(n) for kind, n in conn.execute(q)}

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(metadata.tables[table])).scalar() or 0
            )

    def report_counts(self, since: float, bucket_s: float = 60.0) -> dict[float, int]:
        """Health and result reports stamped at or after ``since``, counted per ``bucket_s`` of
        their stamps (bucket start -> reports): how much the fleet sent, and, asked again and
        again, how long its reports took to arrive (benchmarks/fleet_scale.py)."""
        out: dict[float, int] = {}
        ms = max(1, round(bucket_s * 1000))
        with self.engine.connect() as conn:
            for table in (health, results):
                bucket = sa.cast(table.c.ts * 1000, sa.BigInteger) // ms  # whole ms on both engines
                q = sa.select(bucket, sa.func.count()).where(table.c.ts >= since).group_by(bucket)
                for b, n in conn.execute(q):
                    out[int(b) * ms / 1000] = out.get(int(b) * ms / 1000, 0) + int(n)
        return out

    def report_keys(self, since: float) -> dict[str, list[tuple[str, str]]]:
        """The (device, message id) of every health and result report stamped at or after
        ``since``, per table: what was stored, to reconcile with what devices sent."""
        with self.engine.connect() as conn:
            return {
                table.name: [
                    (d, i)
                    for d, i in conn.execute(
                        sa.select(table.c.device_id, table.c.msg_id).where(table.c.ts >= since)
                    )
                ]
                for table in (health, results)
            }

    def results_for(self, device_id: str, job_id: Optional[str] = None) -> list[ResultRow]:
        cols = [c for c in results.c if c.name != "data"]
        q = sa.select(*cols).where(results.c.device_id == device_id)
        if job_id is not None:
            q = q.where(results.c.job_id == job_id)
        with self.engine.connect() as conn:
            return [_record(ResultRow, r) for r in conn.execute(q.order_by(results.c.ts))]

    def measured(self, device_id: str, job_id: str, space: str) -> dict[str, float]:
        """What a job measured on a device: architecture -> median latency (ms)."""
        q = sa.select(results.c.arch, results.c.p50_ms).where(
            results.c.device_id == device_id, results.c.job_id == job_id, results.c.space == space
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return {arch: float(ms) for arch, ms in rows if arch and ms is not None and ms > 0}

    def latencies(
        self, metric: str = "p50_ms", space: Optional[str] = None, sku: Optional[str] = None
    ) -> list[tuple[str, Optional[str], str, float]]:
        """Every measured latency: (device, its SKU, the architecture or model, ``metric`` in ms),
        of ``space``'s architectures only if given, of ``sku``'s devices only if given."""
        item = sa.func.coalesce(results.c.arch, results.c.model)
        cols = [results.c.device_id, devices.c.sku, item]
        cols.append(results.c.p50_ms if metric == "p50_ms" else results.c.data)
        q = sa.select(*cols).select_from(
            results.outerjoin(devices, devices.c.device_id == results.c.device_id)
        )
        if space is not None:
            q = q.where(results.c.space == space)
        if sku is not None:
            q = q.where(devices.c.sku == sku)
        out = []
        with self.engine.connect() as conn:
            for device_id, device_sku, name, value in conn.execute(q):
                if metric != "p50_ms":  # from the result record as it arrived
                    stats = ((json.loads(value).get("data") or {}).get("result") or {}).get("stats") or {}
                    value = stats.get(metric)
                if name and isinstance(value, (int, float)) and value > 0:
                    out.append((device_id, device_sku, name, float(value)))
        return out

    def dead_letters(self, limit: int = 100, device_id: Optional[str] = None) -> list[DeadLetter]:
        """The newest dead letters first."""
        q = sa.select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
        if device_id is not None:
            q = q.where(dead_letters.c.device_id == device_id)
        with self.engine.connect() as conn:
            return [_record(DeadLetter, r) for r in conn.execute(q)]

    # -- rollouts and deployments -----------------------------------------------------

    def add_rollout(self, rollout: Rollout) -> None:
        with self._begin() as conn:
            conn.execute(rollouts.insert().values(**rollout.__dict__))

    def rollouts(self, rollout_id: Optional[str] = None, active: bool = False) -> list[Rollout]:
        """Rollouts, newest first (one, or only those still going)."""
        q = sa.select(rollouts).order_by(rollouts.c.created_at.desc())
        if rollout_id is not None:
            q = q.where(rollouts.c.rollout_id == rollout_id)
        if active:
            q = q.where(rollouts.c.state.in_(ACTIVE_ROLLOUT))
        with self.engine.connect() as conn:
            return [_record(Rollout, r) for r in conn.execute(q)]

    def update_rollout(self, rollout_id: str, now: float, state: str, detail: str) -> None:
        with self._begin() as conn:
            conn.execute(rollouts.update().where(rollouts.c.rollout_id == rollout_id)
                         .values(state=state, detail=detail, updated_at=now))  # fmt: skip

    def deployments(self, rollout_id: str) -> list[Deployment]:
        q = (
            sa.select(deployments)
            .where(deployments.c.rollout_id == rollout_id)
            .order_by(deployments.c.device_id)
        )
        with self.engine.connect() as conn:
            return [_record(Deployment, r) for r in conn.execute(q)]

    def add_deployments(self, new: Iterable[Deployment]) -> None:
        rows = [d.__dict__ for d in new]
        if rows:
            with self._begin() as conn:
                conn.execute(deployments.insert(), rows)

    def update_deployment(self, push_id: str, now: float, **values: Any) -> None:
        with self._begin() as conn:
            conn.execute(deployments.update().where(deployments.c.push_id == push_id)
                         .values(updated_at=now, **values))  # fmt: skip

    def cancel_pending(self, rollout_id: str, now: float, detail: str) -> None:
        with self._begin() as conn:
            conn.execute(
                deployments.update()
                .where(deployments.c.rollout_id == rollout_id, deployments.c.state == "pending")
                .values(state="cancelled", updated_at=now, detail=detail)
            )

    def rollout_report(self, rollout_id: Optional[str] = None) -> list[RolloutReport]:
        """Rollouts (newest first) with their deployments."""
        return [RolloutReport(r, tuple(self.deployments(r.rollout_id))) for r in self.rollouts(rollout_id)]

    def push_acks(self, pushes: Sequence[tuple[str, str]], after: float = 0.0) -> list[ReceivedPushAck]:
        """The answers to these (device, push id) pushes from those very devices, oldest first:
        an ack published under another device's topic is that device's, and changes nothing here."""
        if not pushes:
            return []
        q = (
            sa.select(acks.c.device_id, acks.c.ts, acks.c.data)
            .where(acks.c.kind == "push_ack", sa.tuple_(acks.c.device_id, acks.c.push_id).in_(list(pushes)))
            .order_by(acks.c.ts)
        )
        if after:
            q = q.where(acks.c.ts > after)
        out = []
        with self.engine.connect() as conn:
            for device_id, ts, data in conn.execute(q):
                try:  # stored as received (version 1 or 2), decoded as on arrival
                    msg = decode(data.encode("utf-8"), "acks")
                except ProtocolError as err:  # (it decoded when it was stored: a bug if this happens)
                    logger.error("a stored push ack of %s no longer decodes: %s", device_id, err)
                    continue
                if isinstance(msg, PushAckMessage):
                    out.append(ReceivedPushAck(device_id, ts, msg.data))
        return out

    # -- the re-ranking loop ----------------------------------------------------------

    def rerank_states(self) -> dict[str, RerankState]:
        with self.engine.connect() as conn:
            return {r.device_id: _record(RerankState, r) for r in conn.execute(sa.select(rerank_state))}

    def set_rerank(self, device_id: str, now: float, **values: Any) -> None:
        """Change (or start) a device's re-ranking state."""
        with self._begin() as conn:
            updated = conn.execute(rerank_state.update().where(rerank_state.c.device_id == device_id)
                                   .values(updated_at=now, **values)).rowcount  # fmt: skip
            if not updated:
                conn.execute(rerank_state.insert().values(device_id=device_id, updated_at=now, **values))

    def job_ending(self, device_id: str, job_id: str) -> Optional[JobEnding]:
        """How ``job_id`` ended on ``device_id`` (by that device's own acks), or None yet."""
        q = sa.select(acks.c.state, acks.c.data).where(
            acks.c.kind == "job_ack", acks.c.device_id == device_id, acks.c.job_id == job_id,
            acks.c.state.in_(("done", "failed", "rejected")),
        )  # fmt: skip
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            return None
        try:
            error = (json.loads(row.data).get("data") or {}).get("error")
        except (ValueError, AttributeError):
            error = None
        return JobEnding(row.state, error if isinstance(error, str) else None)

    def add_decision(
        self,
        device_id: str,
        now: float,
        space: str,
        arch: Optional[str],
        budget_ms: float,
        predicted_ms: Optional[float],
        accuracy: Optional[float],
        rollout_id: Optional[str],
        inputs: dict[str, Any],
    ) -> None:
        with self._begin() as conn:
            conn.execute(decisions.insert().values(
                device_id=device_id, at=now, space=space, arch=arch, budget_ms=budget_ms,
                predicted_ms=predicted_ms, accuracy=accuracy, rollout_id=rollout_id,
                inputs=json.dumps(inputs, default=float),
            ))  # fmt: skip

    def decisions(self, device_id: str) -> list[DecisionRecord]:
        """Every decision for ``device_id`` (newest first), with its inputs and its push's fate."""
        return self._decisions(
            sa.select(decisions).where(decisions.c.device_id == device_id).order_by(decisions.c.id.desc())
        )

    def latest_decisions(self, device_id: Optional[str] = None) -> list[DecisionRecord]:
        """Each device's newest decision (``device_id``'s only, if given) with its push's fate, in
        one query: the dashboard reads it for the whole fleet, the re-ranking loop every tick."""
        newest = sa.select(sa.func.max(decisions.c.id).label("id")).group_by(decisions.c.device_id)
        if device_id is not None:
            newest = newest.where(decisions.c.device_id == device_id)
        sub = newest.subquery()
        return self._decisions(
            sa.select(decisions).join(sub, decisions.c.id == sub.c.id).order_by(decisions.c.device_id)
        )

    def _decisions(self, query: sa.Select) -> list[DecisionRecord]:
        """The decisions ``query`` selects, each joined with its device's deployment of its rollout."""
        dep_cols = [c.label(f"dep_{c.name}") for c in deployments.c]
        q = query.add_columns(*dep_cols).outerjoin(
            deployments,
            sa.and_(deployments.c.rollout_id == decisions.c.rollout_id,
                    deployments.c.device_id == decisions.c.device_id),
        )  # fmt: skip
        out = []
        with self.engine.connect() as conn:
            for row in conn.execute(q):
                values = dict(row._mapping)
                dep = {c.name: values.pop(f"dep_{c.name}") for c in deployments.c}
                values["inputs"] = json.loads(values["inputs"])
                out.append(DecisionRecord(**values, deployment=Deployment(**dep) if dep["push_id"] else None))
        return out


#: the PostgreSQL advisory lock migrations take (any number no other tool on the database uses)
MIGRATE_LOCK = 0x666C6565  # "flee"


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
