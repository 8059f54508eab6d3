"""How big a day of a fleet is in the coordinator's database, SQLite and PostgreSQL (issue 20).

A Raspberry Pi 4's health message, as its agent sends it (the health collectors read the sysfs
tree captured from a real board, tests/boards.py; the degradation state included), and a
result record with 200 samples, as a benchmark job sends it: ``--rows`` of each stored through
the coordinator's ingest into SQLite and into a throwaway PostgreSQL server (as root: the
cluster runs as the ``postgres`` user).  Prints bytes on disk per row of each table (tables and
indexes) and what a fleet of ``--devices`` reporting health every ``--health-s`` seconds and
``--results`` results a day stores in a day, then in the steady state of the retention
(``retention.health_days`` of raw health, then one sample per device and hour).

    python benchmarks/store_size.py [--rows 20000] [--devices 10000] [--health-s 60] [--results 24]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
import tempfile

from _helpers import load_test_helper


def messages(rows: int) -> tuple[list, int, int]:
    from agent.protocol import messages as m
    from coordinator.store import Message

    wire = load_test_helper("wire")
    data = wire.pi4_health()
    out = []
    for i in range(rows):
        device = f"pi-{i % 500:04d}"
        h = m.make(m.HealthMessage, device, data, f"health:{i}", ts=1.7e9 + i)
        out.append(Message(f"fleetbench/v1/devices/{device}/health", m.encode(h)))
        r = m.make(m.ResultMessage, device, wire.result_data(f"job-{i}", f"model-{i % 50}", samples=200),
                   f"result:{i}")  # fmt: skip
        out.append(Message(f"fleetbench/v1/devices/{device}/results", m.encode(r)))
    return out, len(out[0].payload), len(out[1].payload)


def sizes_sqlite(path: str) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    finally:
        conn.close()
    by: dict[str, int] = {}
    for name, size in rows:  # indexes are named ix_TABLE_... or sqlite_autoindex_TABLE_N
        table = next((t for t in ("health", "results") if t in name), None)
        if table:
            by[table] = by.get(table, 0) + int(size)
    return by


def sizes_postgres(store) -> dict[str, int]:
    import sqlalchemy as sa

    with store.engine.connect() as conn:
        return {
            t: int(conn.execute(sa.text(f"SELECT pg_total_relation_size('{t}')")).scalar())
            for t in ("health", "results")
        }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000, help="health and result rows stored (each)")
    ap.add_argument("--devices", type=int, default=10000)
    ap.add_argument("--health-s", type=float, default=60.0, help="seconds between a device's health reports")
    ap.add_argument("--results", type=float, default=24.0, help="results per device per day")
    ap.add_argument("--health-days", type=float, default=7.0, help="retention.health_days")
    args = ap.parse_args(argv)
    from coordinator.store import ingest_all, open_store

    msgs, health_bytes, result_bytes = messages(args.rows)
    per_day = {"health": args.devices * 86400 / args.health_s, "results": args.devices * args.results}
    reports = []
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="fleetbench-size-"))
        for engine in ("sqlite", "postgresql"):
            if engine == "sqlite":
                path = os.path.join(work, "fleet.sqlite")
                store = open_store(path)
            else:
                store = open_store(stack.enter_context(load_test_helper("postgres").running()).new_database())
                stack.callback(store.engine.dispose)
            ingest_all(store, msgs, batch=1000)
            assert store.count("health") == store.count("results") == args.rows
            if engine == "sqlite":
                store.engine.dispose()
                size = sizes_sqlite(path)
            else:
                import sqlalchemy as sa

                with store.engine.connect() as conn:
                    conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM ANALYZE"))
                size = sizes_postgres(store)
            per_row = {t: size[t] / args.rows for t in size}
            day = {t: per_row[t] * per_day[t] for t in per_row}
            steady_health = (
                per_row["health"] * args.devices * (args.health_days * 86400 / args.health_s + 24 * 365)
            )  # the raw window, and a year of hourly samples
            reports.append({
                "engine": engine, "health_message_bytes": health_bytes, "result_message_bytes": result_bytes,
                "health_row_bytes": round(per_row["health"]), "result_row_bytes": round(per_row["results"]),
                "devices": args.devices, "health_rows_per_day": round(per_day["health"]),
                "gb_per_day": round(sum(day.values()) / 1e9, 2),
                "health_gb_kept_after_a_year": round(steady_health / 1e9, 1),
                "results_gb_per_year": round(day["results"] * 365 / 1e9, 1),
            })  # fmt: skip
    for r in reports:
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
