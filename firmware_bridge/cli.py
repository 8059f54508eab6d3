"""``fleetbench bridge``: list serial ports, run the bridge daemon, or ask a board once.

Registered through the ``fleetbench.commands`` entry point, like the coordinator's
commands: the agent's CLI never imports this package itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

from agent.common.args import EXIT_OK, add_config_args, seconds, whole
from agent.common.errors import UsageError
from agent.common.logs import daemon_logging
from agent.config import DEFAULT_PATH

REQUESTS = ("hello", "health", "ping", "bench")


def _device_id(text: str) -> str:
    from agent.protocol.topics import check_device_id

    try:
        return check_device_id(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bridge",
        help="bring a microcontroller on a serial line into the fleet",
        description=(
            "Speak the fleetbench board protocol (firmware_bridge/PROTOCOL.md) with a microcontroller "
            "on a serial port. As a daemon it publishes the board's HELLO, health and benchmark results "
            "over MQTT under the board's own device id, queued on disk first, and runs the jobs sent to "
            "that id; it rides out noise, board resets and unplugging. With --once it asks the board one "
            "thing and prints the answer. With --list it lists this host's serial ports."
        ),
        epilog=(
            "Examples:\n"
            "  fleetbench bridge --list\n"
            "  fleetbench bridge --port /dev/ttyACM0 --once hello\n"
            "  fleetbench bridge --port /dev/ttyACM0 --once bench kws_micro --runs 100\n"
            "  fleetbench bridge --port /dev/ttyACM0 --broker mqtt://hub.local   (the daemon)\n"
            "The port may also be a pyserial URL: socket://HOST:PORT, rfc2217://HOST:PORT.\n"
            "No board at hand? python -m firmware_bridge.emulator --link /tmp/board emulates one.\n"
            "Exit status: 0 done (the daemon: stopped cleanly), 1 the board or port failed, "
            "2 a usage or configuration error."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--list", action="store_true", help="list serial ports with their USB ids, and exit")
    p.add_argument(
        "--port", metavar="PORT", help="the board's serial port: /dev/ttyACM0, /dev/serial/by-id/..."
    )
    p.add_argument("--baud", type=whole(50), metavar="N", help="baud rate (default: bridge.baud, 115200)")
    p.add_argument("--device-id", type=_device_id, metavar="ID",
                   help="its fleet device id (default: its HELLO's board name and unique id)")  # fmt: skip
    p.add_argument("--once", action="store_true",
                   help="ask one REQUEST, print the answer: hello, health, ping or bench MODEL")  # fmt: skip
    p.add_argument(
        "request", nargs="*", metavar="REQUEST", help="with --once: hello | health | ping | bench MODEL"
    )
    p.add_argument(
        "--runs", type=whole(1), metavar="N", help="bench: measured runs (default: bridge.runs, 50)"
    )
    p.add_argument("--warmup", type=whole(0), metavar="N",
                   help="bench: warm-up runs (default: bridge.warmup_runs, 5)")  # fmt: skip
    p.add_argument("--timeout", type=seconds, metavar="S", help="seconds to wait for an answer (default: 2)")
    p.add_argument("--retries", type=whole(0), metavar="N", help="times to ask again (default: 3)")
    p.add_argument("--stall-timeout", type=seconds, metavar="S",
                   help="a run silent this long has stalled (default: 30)")  # fmt: skip
    p.add_argument(
        "--broker", metavar="URL", help="the daemon's MQTT broker (default: from the agent config)"
    )
    p.add_argument(
        "--format", choices=["table", "json", "csv"], default="table", help="output of --once/--list"
    )
    add_config_args(p, DEFAULT_PATH)
    p.set_defaults(func=cmd_bridge)


def _config(args: argparse.Namespace) -> Any:
    from firmware_bridge import config

    if args.timeout == 0 or args.stall_timeout == 0:
        raise UsageError("--timeout and --stall-timeout must be more than 0 seconds")
    flags = {
        "broker.url": args.broker,
        "bridge.baud": args.baud,
        "bridge.timeout_s": args.timeout,
        "bridge.retries": args.retries,
        "bridge.stall_timeout_s": args.stall_timeout,
    }
    return config.load(args.config or os.environ.get("FLEETBENCH_CONFIG") or None, flags=flags)


def state_dir_for(port: str, configured: str, flag: str | None, env: dict[str, str]) -> str:
    """--state-dir, else systemd's StateDirectory=, else a directory per port under the agent's
    (the agent's own outbox must never be shared).

    >>> state_dir_for("/dev/ttyACM0", "/var/lib/fleetbench", None, {})
    '/var/lib/fleetbench/bridge-ttyACM0'
    >>> state_dir_for("socket://10.0.0.5:4000", "/s", None, {})
    '/s/bridge-socket-10.0.0.5-4000'
    """
    if flag:
        return flag
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]
    name = port.rsplit("/", 1)[-1] if "://" not in port else port
    return os.path.join(configured, "bridge-" + re.sub(r"[^A-Za-z0-9._]+", "-", name).strip("-"))


def cmd_bridge(args: argparse.Namespace) -> int:
    if args.list:
        if args.port or args.once or args.request:
            raise UsageError("--list takes no --port, --once or REQUEST")
        return _list(args.format)
    if not args.port:
        raise UsageError("give --port PORT (the board's serial port), or --list to see the ports")
    if args.request and not args.once:
        raise UsageError(f"REQUEST {' '.join(args.request)!r} needs --once (the daemon takes no requests)")
    cfg = _config(args)
    if args.once:
        return _once(args, cfg)
    import asyncio

    from firmware_bridge.bridge import Bridge

    cfg = cfg.replace(state_dir=state_dir_for(args.port, cfg.state_dir, args.state_dir, dict(os.environ)))
    daemon_logging(cfg.log_level, args.verbose)
    return asyncio.run(Bridge(cfg, args.port, args.device_id).run())


def _list(fmt: str) -> int:
    from firmware_bridge.ports import list_ports

    ports = list_ports()
    if fmt == "json":
        print(json.dumps(ports, indent=2))
        return EXIT_OK
    if not ports:
        print("fleetbench: no serial ports found", file=sys.stderr)
        return EXIT_OK
    head = ("port", "usb id", "serial number", "product", "stable name")
    rows = [
        (p["device"], p["usb"] or "-", p["serial_number"] or "-",
         p["product"] or p["description"] or "-", p["by_id"] or "-")
        for p in ports
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    for r in (head, *rows):
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return EXIT_OK


def _once(args: argparse.Namespace, cfg: Any) -> int:
    from firmware_bridge.board import BoardLink

    if not args.request or args.request[0] not in REQUESTS:
        raise UsageError(f"--once needs a REQUEST: {', '.join(REQUESTS[:-1])} or bench MODEL")
    what, rest = args.request[0], args.request[1:]
    if args.format == "csv" and what != "bench":
        raise UsageError("--format csv is for bench results; use table or json")
    if (what == "bench") != (len(rest) == 1) or len(rest) > 1:
        raise UsageError("bench takes one MODEL id; hello, health and ping take nothing")
    b = cfg.bridge
    with BoardLink(args.port, b.baud, b.timeout_s, b.retries, b.stall_timeout_s, b.reopen_s) as link:
        hello = link.wait_hello(b.timeout_s * (b.retries + 1))
        if what == "hello":
            return _show(args.format, _hello_rows(hello))
        if what == "health":
            h = link.health()
            return _show(args.format, [
                ("die temperature", "unknown" if h.die_temp_c is None else f"{h.die_temp_c:.2f} C"),
                ("supply", "unknown" if h.supply_v is None else f"{h.supply_v:.3f} V"),
                ("uptime", f"{h.uptime_ms / 1000:.1f} s"),
                ("free memory", "unknown" if h.free_bytes is None else f"{h.free_bytes} bytes"),
            ])  # fmt: skip
        if what == "ping":
            rtt = link.ping()
            return _show(args.format, [("pong", f"{hello.board} answered in {rtt * 1000:.2f} ms")])
        warmup = b.warmup_runs if args.warmup is None else args.warmup
        return _bench(args, link, rest[0], args.runs or b.runs, warmup)


def _bench(args: argparse.Namespace, link: Any, model: str, runs: int, warmup: int) -> int:
    from agent.bench import report
    from firmware_bridge.records import to_result

    progress = None
    if sys.stderr.isatty():

        def progress(done: int, total: int) -> None:
            print(f"\r{model}: {done}/{total} runs", end="", file=sys.stderr, flush=True)

    try:
        run = link.bench(model, runs, warmup, progress)
    finally:
        if progress is not None:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    result = to_result(run, link.health())
    out = {"json": report.to_json, "csv": report.to_csv}.get(args.format, report.to_table)
    sys.stdout.write(out([result]))
    return EXIT_OK


def _hello_rows(hello: Any) -> list[tuple[str, str]]:
    from firmware_bridge.records import device_id_for, sku_of

    try:
        device_id = device_id_for(hello)
    except UsageError as err:
        device_id = f"none ({err})"
    return [
        ("board", sku_of(hello)),
        ("device id", device_id),
        ("clock", f"{hello.clock_hz / 1e6:g} MHz"),
        ("arena", f"{hello.arena_bytes} bytes" if hello.arena_bytes else "n/a"),
        ("firmware", hello.firmware),
        ("runtime", hello.runtime),
        ("unique id", hello.uid),
        ("last reset", hello.reset_cause_text),
        ("models", ", ".join(hello.models) or "none"),
    ]


def _show(fmt: str, rows: list[tuple[str, str]]) -> int:
    if fmt == "json":
        print(json.dumps(dict(rows), indent=2))
        return EXIT_OK
    width = max(len(k) for k, _ in rows) + 1
    for k, v in rows:
        print(f"{k + ':':<{width}} {v}")
    return EXIT_OK
