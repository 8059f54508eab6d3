"""``fleetbench agent | status | discover``: the device agent and what it advertises."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from agent.common.args import EXIT_NOT_RUNNING, EXIT_OK, add_config_args, ago, seconds
from agent.common.config import redact_url
from agent.common.errors import UsageError
from agent.common.logs import daemon_logging
from agent.config import DEFAULT_PATH, SERVICE_STATE_DIR


def register(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser(
        "agent",
        help="run the device agent (the daemon behind fleetbench-agent.service)",
        description=(
            "Run the agent: report this device's health and degradation over MQTT, run benchmark "
            "jobs the coordinator sends, advertise the device with zeroconf. Everything sent is "
            "queued on disk first, so broker outages and restarts lose nothing. Configuration: "
            "defaults < the TOML file < FLEETBENCH_* environment variables < these flags."
        ),
        epilog=(
            "Signals: SIGTERM/SIGINT stop gracefully (a running job resumes at the next start), "
            "SIGHUP reloads the configuration. Exit status: 0 stopped cleanly, 2 configuration error."
        ),
    )
    add_config_args(agent, DEFAULT_PATH)
    agent.add_argument(
        "--broker",
        metavar="URL",
        default=None,
        help="mqtt://[USER[:PASS]@]HOST[:PORT] or mqtts://... (default: from the config; "
        "none: look for _mqtt._tcp on the LAN)",
    )
    agent.add_argument("--device-id", metavar="ID", default=None, help="override the derived device id")
    agent.set_defaults(func=cmd_agent)

    status = sub.add_parser(
        "status",
        help="show the local agent's state",
        description="Show what the agent on this device is doing, from its status file.",
        epilog="Exit status: 0 the agent runs, 3 it does not (or never ran with this state directory).",
    )
    add_config_args(status, DEFAULT_PATH)
    status.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    status.set_defaults(func=cmd_status)

    discover = sub.add_parser(
        "discover",
        help="list fleetbench agents and MQTT brokers on the LAN (zeroconf)",
        description="Browse _fleetbench._tcp and _mqtt._tcp with mDNS and list what answers.",
    )
    discover.add_argument(
        "--timeout", type=seconds, default=3.0, metavar="S", help="seconds to listen (default: 3)"
    )
    discover.add_argument(
        "--interface",
        action="append",
        type=_ip_address,
        default=[],
        metavar="IP",
        help="listen on this interface address only (repeatable; default: all)",
    )
    discover.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    discover.set_defaults(func=cmd_discover)


def _ip_address(text: str) -> str:
    from agent.transport.discovery import check_interface

    try:
        return check_interface(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _load_config(args: argparse.Namespace) -> Any:
    from agent import config

    path = args.config or os.environ.get("FLEETBENCH_CONFIG") or None
    flags = {
        "state_dir": args.state_dir,
        "broker.url": getattr(args, "broker", None),
        "device_id": getattr(args, "device_id", None),
    }
    return config.load(path, flags=flags)


def cmd_agent(args: argparse.Namespace) -> int:
    import asyncio

    from agent.daemon import Agent

    cfg = _load_config(args)
    daemon_logging(cfg.log_level, args.verbose)
    agent = Agent(cfg, reload=lambda: _load_config(args))
    return asyncio.run(agent.run())


def cmd_status(args: argparse.Namespace) -> int:
    import json
    import time

    from agent.device.daemon import read_status

    cfg = _load_config(args)
    status = read_status(cfg.state_dir)
    if status is None and args.state_dir is None and cfg.state_dir != SERVICE_STATE_DIR:
        status = read_status(SERVICE_STATE_DIR)  # a user asking about the system service
    if status is None:
        hint = ""
        if os.path.isdir(SERVICE_STATE_DIR) and not os.access(SERVICE_STATE_DIR, os.R_OK):
            hint = f"; the service's state is in {SERVICE_STATE_DIR}: try sudo fleetbench status"
        print(f"fleetbench: no agent has run with state directory {cfg.state_dir}{hint}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    if args.format == "json":
        print(json.dumps(status, indent=2))
        return EXIT_OK if status["alive"] else EXIT_NOT_RUNNING
    now = time.time()
    if status["alive"]:
        state = f"running (pid {status['pid']}, up {ago(now - status['started_at'])})"
        stale = now - status["updated_at"] > 3 * status.get("health_interval_s", 60)
        if stale:
            state += f"; no update for {ago(now - status['updated_at'])}: the agent may be stuck"
    else:
        state = f"not running (last seen {ago(now - status['updated_at'])} ago)"
    rows = [("agent", f"{status['device_id']}: {state}"), *_status_rows(status)]
    for key, value in rows:
        print(f"{key + ':':<13}{value}")
    return EXIT_OK if status["alive"] else EXIT_NOT_RUNNING


def _link_text(status: dict[str, Any]) -> str:
    """ " (connected for 5 min)", or " (NOT connected for 25 s: connection refused: ...)"."""
    import time

    link = status.get("link") or {}
    since = link.get("since")
    took = f" for {ago(time.time() - since)}" if isinstance(since, (int, float)) else ""
    if status.get("connected"):
        return f" (connected{took})"
    if not status.get("broker"):
        return ""
    why = link.get("error") or "connecting"
    return f" (NOT connected{took}: {why})"


def _status_rows(status: dict[str, Any]) -> list[tuple[str, str]]:
    out = status.get("outbox") or {}
    health = status.get("health") or {}
    temps = list(((health.get("thermal") or {}).get("temperatures_c") or {}).values())
    load, battery = health.get("load"), health.get("battery") or {}
    sensors = [
        f"hottest {max(temps):.1f} C" if temps else "",
        f"load {load['load_1m']:.2f}" if load else "",
        f"battery {battery['percent']:.0f} %" if battery.get("percent") is not None else "",
    ]
    deg, job = status.get("degradation") or {}, status.get("job")
    broker = (redact_url(status.get("broker")) or "none yet") + _link_text(status)
    return [
        ("device", f"{status['sku']} ({status['platform']}), fleetbench {status['version']}"),
        ("broker", broker),
        ("commands", status.get("trust") or "?"),
        ("outbox", f"{out.get('pending', 0)} waiting, {out.get('dropped_total', 0)} dropped by bounds"),
        ("health", ", ".join(part for part in sensors if part) or "no sensors"),
        (
            "degradation",
            f"index {deg['index']:.3f} (reference workload {deg['last_ms']:.3f} ms, "
            f"baseline {deg['baseline_ms']:.3f} ms)"
            if deg.get("index") is not None
            else "no baseline yet",
        ),
        (
            "probe",
            f"postponed: {status['probe_postponed']}" if status.get("probe_postponed") else "not waiting",
        ),
        (
            "job",
            f"{job['job_id']}: model {job['index']}/{job['total']} {job['model']}"
            if job
            else f"idle ({status.get('jobs_done', 0)} done, {status.get('jobs_waiting', 0)} waiting)",
        ),
    ]


def cmd_discover(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from agent.transport import discovery

    peers = asyncio.run(discovery.browse(timeout_s=args.timeout, interfaces=args.interface))
    if args.format == "json":
        print(json.dumps([dataclasses.asdict(p) for p in peers], indent=2))
        return EXIT_OK
    if not peers:
        print(f"fleetbench: nothing answered within {args.timeout:g} s", file=sys.stderr)
        return EXIT_OK
    for p in peers:
        if p.service == discovery.FLEETBENCH:
            props = p.properties
            print(
                f"agent   {p.name:<28} {props.get('sku', '?')} ({props.get('platform', '?')}), "
                f"fleetbench {props.get('version', '?')}, backends: {props.get('backends') or 'none'}"
            )
        else:
            print(f"broker  {p.name:<28} {p.url}")
    return EXIT_OK
