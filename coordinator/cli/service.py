"""The coordinator service's commands: coordinator, fleet, push, rollouts, export, explain.

Each reads the coordinator's configuration (``--config``, else
``/etc/fleetbench/coordinator.toml`` if it exists, then ``FLEETBENCH_COORDINATOR_*``),
and flags given on the command line win over it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

from agent.common.args import ago
from agent.common.errors import UsageError
from coordinator.cli.format import describe, interval, print_table
from coordinator.extras import need

EPILOG_CONFIG = "Settings come from --config (default /etc/fleetbench/coordinator.toml), then flags."


def register(sub: Any) -> None:
    coord = sub.add_parser(
        "coordinator",
        help="run the coordinator service: store, re-rank, push",
        description=(
            "Subscribe to every device's status, health, results and acks (a shared subscription, "
            "so several coordinators in one --group split a large fleet) and store them in --db; "
            "re-rank new or degraded devices (sample job -> predicted column -> best architecture "
            "under the budget) and push the chosen models, and the operator's (`fleetbench push`). "
            "Messages are acknowledged to the broker only once stored: nothing is lost if the "
            "coordinator stops, and duplicates are dropped by message id."
        ),
        epilog="Example: fleetbench coordinator --broker mqtt://127.0.0.1:1883 --db fleet.sqlite\n"
        + EPILOG_CONFIG,
    )
    coord.add_argument("--broker", metavar="URL", help="mqtt://HOST[:PORT] or mqtts://... (broker.url)")
    _common(coord)
    coord.add_argument("--client-id", metavar="ID", help="MQTT client id; unique per instance")
    coord.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the dashboard and /metrics here (http.listen; 127.0.0.1:8080)",
    )
    coord.add_argument(
        "--group", metavar="NAME", help="shared-subscription group (default: coordinators; '' for none)"
    )
    coord.set_defaults(func=cmd_coordinator)

    fleet = sub.add_parser(
        "fleet",
        help="list the devices the coordinator knows",
        description=(
            "Every device in --db: online or offline, SKU, latest health and degradation index, results "
            "stored, messages refused from it (kept as dead letters: they could not be read or stored), "
            "and the coordinator key it checks commands by (its fingerprint; 'unsigned': it checks none, "
            "an older release or a lab device with jobs.allow_unsigned)."
        ),
        epilog=EPILOG_CONFIG,
    )
    _common(fleet)
    fleet.add_argument("--format", choices=["table", "json"], default="table")
    fleet.set_defaults(func=cmd_fleet)

    push = sub.add_parser(
        "push",
        help="push a model file to a device or to every device of a SKU",
        description=(
            "Register a rollout of MODEL (.onnx or .tflite); the running coordinator sends it as a "
            "signed manifest and 64 KiB chunks, the device verifies, installs, smoke-runs and acks "
            "installed or rolled_back.  A SKU rollout goes to a canary share first and stops by "
            "itself when too many fail."
        ),
        epilog="Example: fleetbench push classifier.onnx --sku 'Raspberry Pi 4 Model B Rev 1.4' --wait",
    )
    push.add_argument("model", metavar="MODEL")
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="ID")
    target.add_argument("--sku", metavar="SKU")
    push.add_argument("--name", help="the model's name on the device (default: the file's name)")
    push.add_argument("--version", help="its version (default: the start of its sha256)")
    push.add_argument(
        "--max-latency-ms",
        type=float,
        metavar="MS",
        help="a device rolls the model back if its smoke run is slower than MS beyond the run's noise "
        "(the low end of the median's 95 %% interval above MS)",
    )
    push.add_argument("--wait", action="store_true", help="follow the rollout until it ends")
    push.add_argument("--timeout", type=float, default=3600.0, metavar="S", help="for --wait (default 3600)")
    _common(push)
    push.set_defaults(func=cmd_push)

    rollouts = sub.add_parser("rollouts", help="list model rollouts and their deployments")
    rollouts.add_argument("rollout", nargs="?", metavar="ID", help="one rollout, with every device")
    rollouts.add_argument("--format", choices=["table", "json"], default="table")
    _common(rollouts)
    rollouts.set_defaults(func=cmd_rollouts)

    export = sub.add_parser(
        "export",
        help="the fleet's measured latencies as a table monotonicity, predict and rank read",
        description=(
            "Write what the fleet measured as a wide latency table (arch, then one column per device, "
            "or per SKU with --by sku): each device's median over its repeats (a SKU's column: the "
            "median of its devices'). Rows are "
            "architectures (their space's string) and models (their name); --space keeps one space's. "
            "Then rank with the fleet's own data: fleetbench monotonicity latency.csv."
        ),
        epilog="Example: fleetbench export --space nas-bench-201 --by sku -o latency.csv\n" + EPILOG_CONFIG,
    )
    export.add_argument("-o", "--output", required=True, metavar="FILE", help="the CSV to write")
    export.add_argument("--sku", metavar="SKU", help="only this SKU's devices")
    export.add_argument("--space", metavar="NAME", help="only this search space's architectures")
    export.add_argument(
        "--by", choices=["device", "sku"], default="device", help="a column per (default: device)"
    )
    export.add_argument("--metric", choices=["p50_ms", "p90_ms", "mean_ms", "min_ms"], default="p50_ms",
                        help="which of each result's statistics (default p50_ms)")  # fmt: skip
    _common(export)
    export.set_defaults(func=cmd_export)

    explain = sub.add_parser(
        "explain",
        help="why a device got its model: the decision and its inputs",
        description="The re-ranking decisions for DEVICE, newest first, with what they rest on.",
    )
    explain.add_argument("device", metavar="DEVICE")
    explain.add_argument("--all", action="store_true", help="every decision, not only the newest round's")
    explain.add_argument("--format", choices=["table", "json"], default="table")
    _common(explain)
    explain.set_defaults(func=cmd_explain)


def _common(parser: Any) -> None:
    parser.add_argument("--config", metavar="FILE", help="coordinator config (TOML)")
    parser.add_argument("--db", metavar="PATH|URL", help="SQLite file path, or a SQLAlchemy URL")
    parser.add_argument("--state-dir", metavar="DIR", help="keys, model files being pushed (state_dir)")


def _config(args: argparse.Namespace, **flags: Any) -> Any:
    from coordinator.config import load

    return load(args.config, flags={"db": args.db, "state_dir": args.state_dir, **flags})


def _open(config: Any, must_exist: bool = True) -> Any:
    need("sqlalchemy", "the coordinator's database")
    from coordinator.store import open_store

    db = config.db_url
    if must_exist:
        if "://" not in db and not os.path.exists(db):
            raise UsageError(f"--db {db!r} does not exist (the coordinator creates it)")
        store = open_store(db, migrate=False)
        if store.version() == 0:
            raise UsageError(
                f"--db {db!r} is not a fleetbench database (no schema; the coordinator creates it)"
            )
        store.migrate()
        return store
    return open_store(db)


def cmd_coordinator(args: argparse.Namespace) -> int:
    import asyncio

    from agent.common.config import ConfigError
    from agent.transport.mqtt import BrokerSettings
    from coordinator.service import Coordinator

    config = _config(args, **{"broker.url": args.broker, "client_id": args.client_id, "group": args.group,
                              "http.listen": args.http})  # fmt: skip
    if not config.broker.url:
        raise ConfigError("the coordinator needs a broker: --broker URL, or [broker] url in --config")
    # Nothing the coordinator writes is for other users, whoever starts it (the unit's UMask
    # says the same): its key, its database, the models it pushes.
    os.umask(0o077)
    store = _open(config, must_exist=False)
    if config.push.key_file is None and not os.path.exists(config.key_file):
        print(f"fleetbench: note: no signing key at {config.key_file}; pushes wait until "
              "`fleetbench keygen` makes one", file=sys.stderr)  # fmt: skip
    settings = BrokerSettings.from_config(config.broker, config.broker.url)
    return asyncio.run(Coordinator(config, store, settings).run())


def cmd_fleet(args: argparse.Namespace) -> int:
    store = _open(_config(args))
    devices = store.fleet()
    if args.format == "json":
        print(json.dumps([dataclasses.asdict(d) for d in devices], indent=2))
        return 0
    dead = store.dead_letters(limit=1)
    now = time.time()
    if not devices and not dead:
        print("no devices yet", file=sys.stderr)
        _print_leases(store, now)
        return 0
    rows = []
    for d in devices:
        health = (d.health or {}).get("health") or {}
        temps = (health.get("thermal") or {}).get("temperatures_c") or {}
        rows.append((
            d.device_id + (f" ({d.kind})" if d.kind else ""),
            d.state,
            d.sku or "?",
            ago(now - d.last_seen) + " ago",
            f"{max(temps.values()):.1f}" if temps else "-",
            f"{d.degradation_index:.3f}" if d.degradation_index is not None else "-",
            str(d.results),
            str(d.dead_letters) if d.dead_letters else "-",
            d.key[:8] if d.key else "unsigned",
        ))  # fmt: skip
    print_table(
        ("device", "state", "sku", "seen", "hottest C", "degradation", "results", "refused", "key"), rows
    )
    _print_leases(store, now)
    if dead:
        total = store.count("dead_letters")
        last = dead[0]
        newest = ago(now - last.at)
        print(f"\n{total} message(s) refused and kept as dead letters; the newest {newest} ago on "
              f"{last.topic}: {last.reason}", file=sys.stderr)  # fmt: skip
    return 0


def _print_leases(store: Any, now: float) -> None:
    """Which coordinator runs the loops (several may share the database; one leads)."""
    for lease in store.leases():
        if lease.expires_at >= now:
            print(f"\n{lease.name}: run by {lease.holder} since {ago(now - lease.acquired_at)} ago "
                  f"(lease {lease.token}, renewed every tick)")  # fmt: skip
        else:
            print(f"\n{lease.name}: no coordinator runs them (the last, {lease.holder}, stopped renewing "
                  f"{ago(now - lease.expires_at)} ago)")  # fmt: skip


def cmd_push(args: argparse.Namespace) -> int:
    from coordinator.deploy import create_rollout

    config = _config(args)
    if args.max_latency_ms is not None and not args.max_latency_ms > 0:
        raise UsageError(f"--max-latency-ms {args.max_latency_ms} must be above 0")
    store = _open(config)
    row = create_rollout(store, config, args.model, device=args.device, sku=args.sku, name=args.name,
                         version=args.version, max_latency_ms=args.max_latency_ms)  # fmt: skip
    target = f"device {args.device}" if args.device else f"SKU {args.sku!r}"
    print(f"rollout {row.rollout_id}: {row.name} {row.version} ({row.size} bytes) to {target}")
    if not args.wait:
        print("the running coordinator sends it; follow it with: fleetbench rollouts " + row.rollout_id,
              file=sys.stderr)  # fmt: skip
        return 0
    return _follow(store, row.rollout_id, args.timeout)


def _follow(store: Any, rollout_id: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        (report,) = store.rollout_report(rollout_id)
        r, deps = report.rollout, report.deployments
        counts: dict[str, int] = {}
        for d in deps:
            counts[d.state] = counts.get(d.state, 0) + 1
        line = f"{r.state}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        if line != last:
            print(line, file=sys.stderr)
            last = line
        if r.state in ("done", "halted"):
            ok = r.state == "done" and all(d.state == "installed" for d in deps)
            print(f"rollout {rollout_id} {r.state}: {r.detail}")
            return 0 if ok else 1
        if time.monotonic() > deadline:
            print(f"rollout {rollout_id} still {r.state} after {timeout_s:g} s", file=sys.stderr)
            return 1
        time.sleep(1.0)  # polling the database another process writes


def cmd_rollouts(args: argparse.Namespace) -> int:
    store = _open(_config(args))
    report = store.rollout_report(args.rollout)
    if args.rollout and not report:
        raise UsageError(f"rollout {args.rollout!r} does not exist")
    if args.format == "json":
        out = [
            {**dataclasses.asdict(i.rollout), "deployments": [dataclasses.asdict(d) for d in i.deployments]}
            for i in report
        ]
        print(json.dumps(out, indent=2))
        return 0
    if args.rollout:
        (item,) = report
        r = item.rollout
        print(
            f"rollout {r.rollout_id}: {r.name} {r.version} to {r.target_kind} {r.target!r}: "
            f"{r.state} ({r.detail})"
            + (
                f"; a smoke run over {r.max_latency_ms:g} ms beyond its noise rolls it back"
                if r.max_latency_ms
                else ""
            )
        )
        rows: list[tuple[Any, ...]] = [
            (
                d.device_id,
                d.stage,
                d.state,
                d.attempts,
                f"{d.p50_ms:.3f}" if d.p50_ms is not None else "-",
                interval(d) or "-",
                d.detail or "",
            )
            for d in item.deployments
        ]
        print_table(("device", "stage", "state", "attempts", "smoke p50 ms", "95 % interval", "detail"), rows)
        return 0
    rows = [
        (
            i.rollout.rollout_id,
            i.rollout.name,
            i.rollout.version,
            f"{i.rollout.target_kind}:{i.rollout.target}",
            i.rollout.state,
            sum(d.state == "installed" for d in i.deployments),
            len(i.deployments),
        )
        for i in report
    ]
    print_table(("rollout", "name", "version", "target", "state", "installed", "devices"), rows)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import statistics

    import numpy as np

    from agent.common.files import check_writable
    from coordinator.ranking.tables import LatencyTable, write_wide

    check_writable(args.output)
    store = _open(_config(args))
    rows = store.latencies(args.metric, args.space, args.sku)
    if not rows:
        what = " and ".join(f"{k} {v!r}" for k, v in (("--sku", args.sku), ("--space", args.space)) if v)
        raise UsageError(f"the fleet measured nothing{' for ' + what if what else ''} yet")
    repeats: dict[tuple[str, str], list[float]] = {}
    sku_of: dict[str, str] = {}
    for device_id, sku, name, ms in rows:
        repeats.setdefault((name, device_id), []).append(ms)
        sku_of[device_id] = sku or f"{device_id} (no SKU)"
    # each device's median over its repeats; a SKU's column is the median of its devices' (each
    # device counts once, however often it measured)
    cells: dict[tuple[str, str], list[float]] = {}
    for (name, device_id), values in repeats.items():
        column = device_id if args.by == "device" else sku_of[device_id]
        cells.setdefault((name, column), []).append(statistics.median(values))
    archs = sorted({a for a, _ in cells})
    columns = sorted({c for _, c in cells})
    row, col = {a: i for i, a in enumerate(archs)}, {c: j for j, c in enumerate(columns)}
    ms = np.full((len(archs), len(columns)), np.nan)
    for (a, c), values in cells.items():
        ms[row[a], col[c]] = statistics.median(values)
    write_wide(args.output, LatencyTable(tuple(archs), tuple(columns), ms, args.output))
    print(f"wrote {args.output}: {len(archs)} architectures or models x {len(columns)} "
          f"{'devices' if args.by == 'device' else 'SKUs'} ({len(rows)} results, medians of {args.metric})",
          file=sys.stderr)  # fmt: skip
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    store = _open(_config(args))
    found = store.decisions(args.device)
    if not found:
        raise UsageError(f"no decision was made for device {args.device!r} (is it in `fleetbench fleet`?)")
    if not args.all:  # the newest round's decisions: its instant pick, if any, and what refined it
        found = [d for d in found if d.inputs.get("round") == found[0].inputs.get("round")]
    if args.format == "json":
        print(json.dumps([dataclasses.asdict(d) for d in found], indent=2))
        return 0
    for item in found:
        print(describe(item))
    return 0
