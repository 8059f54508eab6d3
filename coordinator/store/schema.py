"""The coordinator's tables and their migrations (SQLAlchemy Core: SQLite and PostgreSQL).

``schema_version`` holds the number of the last migration applied.  A new database is
made at the latest version directly; an older one is migrated step by step, each step
in its own transaction.  Append migrations, never edit a released one.
"""

from __future__ import annotations

from typing import Callable, Optional

import sqlalchemy as sa

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
    sa.Column("capabilities", sa.Text),  # JSON: an agent's capabilities, a board's HELLO, a simulation
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("health", sa.Text),  # JSON of the latest health message's data
    sa.Column("health_at", sa.Float),
    sa.Column("degradation_index", sa.Float),
    #: the newest message version the device reads (its status says; none said means 1)
    sa.Column("protocol", sa.Integer),
    #: the fingerprint of the coordinator key it checks commands by (none: it checks no seal)
    sa.Column("key", sa.String(16)),
)

# Reports are keyed by (device, message id): ids are unique per sender, not across the
# fleet, and a device can only ever collide with itself.
health = sa.Table(
    "health",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("msg_id", sa.String(512), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("degradation_index", sa.Float),
    sa.Column("data", sa.Text, nullable=False),
    sa.Index("ix_health_device_ts", "device_id", "ts"),
)

results = sa.Table(
    "results",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("msg_id", sa.String(512), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("job_id", sa.String(128)),
    sa.Column("model", sa.String(400)),
    sa.Column("space", sa.String(200)),
    sa.Column("arch", sa.String(400)),
    sa.Column("p50_ms", sa.Float),
    sa.Column("data", sa.Text, nullable=False),  # the message as received
    sa.Index("ix_results_device_job", "device_id", "job_id"),
)

acks = sa.Table(
    "acks",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("msg_id", sa.String(512), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # job_ack / push_ack
    sa.Column("job_id", sa.String(128)),
    sa.Column("push_id", sa.String(128)),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # the message as received
    sa.Index("ix_acks_device_job", "device_id", "job_id"),
    sa.Index("ix_acks_device_push", "device_id", "push_id"),
)

#: messages that could not be read or stored, kept (their start) for the operator
dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("topic", sa.String(512), nullable=False),
    sa.Column("device_id", sa.String(64), index=True),  # from the topic, when it names one
    sa.Column("kind", sa.String(16)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),  # bytes received
    sa.Column("payload", sa.LargeBinary, nullable=False),  # at most DEAD_LETTER_BYTES of them
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
    # the 95 % confidence interval of the smoke run's median, as the device reported it
    sa.Column("p50_lo_ms", sa.Float),
    sa.Column("p50_hi_ms", sa.Float),
    sa.Column("detail", sa.Text),
)

#: the re-ranking loop's state per device: probing -> sampling -> building -> deploying -> decided, or failed,
#: or no_budget (``coordinator.reranker``)
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

#: devices removed from the fleet (`fleetbench revoke`): whatever they send is refused
revoked = sa.Table(
    "revoked",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("reason", sa.Text),
)

#: jobs an operator asked for (`fleetbench job`): the running coordinator signs and sends them
outgoing_jobs = sa.Table(
    "outgoing_jobs",
    metadata,
    sa.Column("job_id", sa.String(128), primary_key=True),
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),  # JSON of the JobSpec, unsealed
    sa.Column("state", sa.String(16), nullable=False),  # queued -> sent | failed
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("sent_at", sa.Float),
    sa.Column("detail", sa.Text),
)

#: who runs the loops (re-ranking, rollouts, operators' jobs) when several coordinators share one
#: database: one holder at a time, for ``expires_at``; ``token`` grows at every change of holder,
#: so a former holder that was paused and wakes up finds its token stale (fencing)
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("acquired_at", sa.Float, nullable=False),
)

# Version 1's deployments table (never written by any release): version 2 replaced it.
_deployments_v1 = sa.Table("deployments", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))


def _v2(conn: sa.Connection) -> None:
    _deployments_v1.drop(conn, checkfirst=True)
    for table in (rollouts, deployments, rerank_state, decisions):
        table.create(conn, checkfirst=True)


#: the columns version 2's report tables had, all of which version 3 keeps
_V2_COLUMNS = {
    "health": ("msg_id", "device_id", "ts", "degradation_index", "data"),
    "results": ("msg_id", "device_id", "ts", "job_id", "model", "space", "arch", "p50_ms", "data"),
    "acks": ("msg_id", "device_id", "ts", "job_id", "state", "data"),
}
_V2_INDEXES = ("ix_health_device_id", "ix_results_device_id", "ix_acks_device_id", "ix_acks_job_id")


def _v3(conn: sa.Connection) -> None:
    """Reports keyed by (device, message id); acks say whether they are a job's or a push's;
    devices say which message version they read; dead letters."""
    for name in _V2_INDEXES:
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
    for table in (health, results, acks):
        old = f"{table.name}_v2"
        conn.execute(sa.text(f"ALTER TABLE {table.name} RENAME TO {old}"))
        table.create(conn)
        columns = ", ".join(_V2_COLUMNS[table.name])
        if table is acks:
            # A version-1 push ack carried its push id as job_id too, and "push_id" in its data.
            conn.execute(sa.text(
                f"INSERT INTO acks ({columns}, kind, push_id) SELECT {columns}, "
                "CASE WHEN data LIKE '%\"push_id\":%' THEN 'push_ack' ELSE 'job_ack' END, "
                f"CASE WHEN data LIKE '%\"push_id\":%' THEN job_id END FROM {old} WHERE state IS NOT NULL"
            ))  # fmt: skip
        else:
            conn.execute(sa.text(f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {old}"))
        conn.execute(sa.text(f"DROP TABLE {old}"))
    conn.execute(sa.text("ALTER TABLE devices ADD COLUMN protocol INTEGER"))
    dead_letters.create(conn, checkfirst=True)


def _v4(conn: sa.Connection) -> None:
    """The key each device checks commands by; revoked devices; operators' jobs."""
    conn.execute(sa.text("ALTER TABLE devices ADD COLUMN key VARCHAR(16)"))
    revoked.create(conn, checkfirst=True)
    outgoing_jobs.create(conn, checkfirst=True)


def _v5(conn: sa.Connection) -> None:
    """The noise of each deployment's smoke run: its median's confidence interval."""
    conn.execute(sa.text("ALTER TABLE deployments ADD COLUMN p50_lo_ms FLOAT"))
    conn.execute(sa.text("ALTER TABLE deployments ADD COLUMN p50_hi_ms FLOAT"))


def _v6(conn: sa.Connection) -> None:
    """Leases: one coordinator of several runs the loops."""
    leases.create(conn, checkfirst=True)


#: (version, what it does, how); version 1 is the first schema, which no database needs
#: migrating to (a new database is made at the latest version)
MIGRATIONS: tuple[tuple[int, str, Optional[Callable[[sa.Connection], None]]], ...] = (
    (1, "devices, health, results, acks", None),
    (2, "rollouts, deployments per push, the re-ranking state, decisions", _v2),
    (3, "reports keyed by (device, message id), job and push acks apart, device protocol, dead letters",
     _v3),
    (4, "the key each device checks commands by, revoked devices, operators' jobs", _v4),
    (5, "the noise of each smoke run (its median's 95 % interval)", _v5),
    (6, "leases: one coordinator of several runs the loops", _v6),
)  # fmt: skip
LATEST = MIGRATIONS[-1][0]
