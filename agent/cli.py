"""The ``fleetbench`` command line: the only place that prints for people or exits.

Exit codes: 0 everything ran; 1 a model or runtime failed (other models still
ran and are reported); 2 a usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, Callable, ClassVar, NoReturn, Optional, TextIO

from agent import __version__
from agent.config import DEFAULT_PATH, SERVICE_STATE_DIR
from agent.errors import FleetbenchError, UsageError
from agent.files import check_writable, write_text_atomic

logger = logging.getLogger("fleetbench")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_NOT_RUNNING = 3  # `fleetbench status`, as `systemctl status` says "inactive"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like our own usage errors
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _whole(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{text!r} is negative" if minimum == 0 else f"{text!r} is less than {minimum}"
            )
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite, non-negative number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    from agent.bench import BACKEND_NAMES

    parser = _Parser(
        prog="fleetbench",
        description="Fit neural networks to fleets of edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"fleetbench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    bench = sub.add_parser(
        "bench",
        help="time models on this device",
        description=(
            "Time one or more models on this device. Warm-up runs come first (until both "
            "--warmup and --warmup-time are met), then measured runs until both --runs and "
            "--min-time are met, capped by --max-time. Each run is timed by fleetbench's native "
            "timer; results carry a snapshot of the device (governor, frequencies, temperatures, "
            "throttling) and warnings about anything that makes them less trustworthy."
        ),
        epilog=(
            "MODEL is a .onnx or .tflite file, or example:NAME for a real model shipped with the "
            "onnx package (see --list-examples).  Example: "
            "fleetbench bench example:squeezenet --threads 1 --runs 200.  "
            "Exit status: 0 all models ran, 1 a model or runtime failed (the others are still "
            "reported), 2 usage error, 130 interrupted."
        ),
    )
    arg = bench.add_argument
    arg("models", nargs="*", metavar="MODEL", help="model file(s) to time")
    arg(
        "--backend",
        default="auto",
        choices=["auto", *BACKEND_NAMES],
        help="runtime to use (default: auto, by the model's format)",
    )
    arg(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="runtime threads (default: the number of physical cores)",
    )
    arg(
        "--runs",
        type=_whole(0),
        default=50,
        metavar="N",
        help="minimum measured runs (default: 50)",
    )
    arg(
        "--warmup",
        type=_whole(0),
        default=5,
        metavar="N",
        help="minimum warm-up runs (default: 5)",
    )
    arg(
        "--warmup-time",
        type=_seconds,
        default=0.5,
        metavar="S",
        help="minimum warm-up seconds (default: 0.5)",
    )
    arg(
        "--min-time",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="minimum measuring seconds (default: 1)",
    )
    arg(
        "--max-time",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="cap on warm-up seconds and on measuring seconds (default: 60)",
    )
    arg(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=DxD...",
        help="size of an input with dynamic dimensions, e.g. data=1x3x224x224; repeatable, "
        "applies to every MODEL",
    )
    arg(
        "--providers",
        default="",
        metavar="LIST",
        help="onnxruntime execution providers in priority order, e.g. cuda,cpu (default: cpu)",
    )
    arg(
        "--delegate",
        choices=["edgetpu"],
        default=None,
        help="LiteRT delegate: edgetpu loads the Coral Edge TPU delegate (libedgetpu)",
    )
    arg(
        "--seed",
        type=_whole(0),
        default=0,
        metavar="N",
        help="seed for the generated inputs (default: 0)",
    )
    arg(
        "--isolate",
        action="store_true",
        help="run each model in a worker process, so a runtime crash cannot take fleetbench down",
    )
    arg("--profile", action="store_true", help="also report the slowest operators")
    arg(
        "--profile-top",
        type=_whole(1),
        default=10,
        metavar="N",
        help="operators listed by --profile (default: 10)",
    )
    arg(
        "--format",
        choices=["table", "json", "csv"],
        default=None,
        help="output format (default: table, or by --output's extension .json/.csv)",
    )
    arg(
        "-o",
        "--output",
        default=None,
        metavar="FILE",
        help="write results to FILE (atomically) instead of stdout",
    )
    arg("--no-samples", action="store_true", help="leave per-run samples out of JSON")
    arg("-q", "--quiet", action="store_true", help="no progress line on stderr")
    arg("--list-examples", action="store_true", help="list the example:NAME models and exit")
    bench.set_defaults(func=cmd_bench)
    _add_daemon_commands(sub)
    _add_model_commands(sub)
    _add_plugin_commands(sub)
    return parser


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"agent configuration (TOML; default: $FLEETBENCH_CONFIG, else {DEFAULT_PATH} if it exists)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        default=None,
        help="outbox, baseline, jobs and status live here (default: $STATE_DIRECTORY under systemd, "
        "/var/lib/fleetbench as root, ~/.local/state/fleetbench otherwise)",
    )


def _add_daemon_commands(sub: argparse._SubParsersAction) -> None:
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
    _add_config_args(agent)
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
    _add_config_args(status)
    status.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    status.set_defaults(func=cmd_status)

    discover = sub.add_parser(
        "discover",
        help="list fleetbench agents and MQTT brokers on the LAN (zeroconf)",
        description="Browse _fleetbench._tcp and _mqtt._tcp with mDNS and list what answers.",
    )
    discover.add_argument(
        "--timeout", type=_seconds, default=3.0, metavar="S", help="seconds to listen (default: 3)"
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


class _JournalFormatter(logging.Formatter):
    """sd-daemon(3) priority prefixes, so journald files each line at its level."""

    _PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def cmd_agent(args: argparse.Namespace) -> int:
    import asyncio

    from agent.daemon import Agent

    cfg = _load_config(args)
    root = logging.getLogger()
    if args.verbose == 0:
        root.setLevel(cfg.log_level.upper())
    if os.environ.get("JOURNAL_STREAM"):  # stderr goes to the journal: no timestamps, priorities
        for handler in root.handlers:
            handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    agent = Agent(cfg, reload=lambda: _load_config(args))
    return asyncio.run(agent.run())


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def cmd_status(args: argparse.Namespace) -> int:
    import json
    import time

    from agent.daemon import read_status

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
        state = f"running (pid {status['pid']}, up {_ago(now - status['started_at'])})"
        stale = now - status["updated_at"] > 3 * status.get("health_interval_s", 60)
        if stale:
            state += f"; no update for {_ago(now - status['updated_at'])}: the agent may be stuck"
    else:
        state = f"not running (last seen {_ago(now - status['updated_at'])} ago)"
    rows = [("agent", f"{status['device_id']}: {state}"), *_status_rows(status)]
    for key, value in rows:
        print(f"{key + ':':<13}{value}")
    return EXIT_OK if status["alive"] else EXIT_NOT_RUNNING


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
    broker = (status.get("broker") or "none yet") + (" (connected)" if status.get("connected") else "")
    return [
        ("device", f"{status['sku']} ({status['platform']}), fleetbench {status['version']}"),
        ("broker", broker),
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


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    from agent.materialize import SPACES

    make = sub.add_parser(
        "make-model",
        help="write a search-space architecture as a runnable .onnx or .tflite model",
        description=(
            "Build the network an arch string names, with random seeded weights (latency does "
            "not depend on their values), and write it as ONNX (NCHW) or TFLite (NHWC), chosen "
            "by the extension of -o. Batch norm is folded; edges cut off by 'none' are removed "
            "and the model says so in its metadata."
        ),
        epilog="Example: fleetbench make-model --space nas-bench-201 "
        "'|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|' "
        "-o cell.tflite;  fleetbench make-model --space mobilenetv2 "
        "d:23423-k:35737353373537-e:34646436463464 -o mbv2.onnx",
    )
    make.add_argument("arch", metavar="ARCH", help="the architecture, in the space's arch-string syntax")
    make.add_argument(
        "--space", choices=SPACES, default="nas-bench-201", help="search space (default: nas-bench-201)"
    )
    make.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="model file to write: .onnx or .tflite"
    )
    make.add_argument("--seed", type=_whole(0), default=0, metavar="N", help="weight seed (default: 0)")
    make.add_argument(
        "--classes",
        type=_whole(1),
        default=None,
        metavar="N",
        help="classifier outputs (nas-bench-201: 10, 100 or 120, default 10; mobilenetv2: default 1000)",
    )
    make.add_argument(
        "--resolution",
        type=_whole(8),
        default=None,
        metavar="N",
        help="input height and width (default: 32 for nas-bench-201, 224 for mobilenetv2)",
    )
    make.set_defaults(func=cmd_make_model)

    lut = sub.add_parser(
        "lut",
        help="build a layer lookup table for a search space on this device",
        description=(
            "Sample architectures of a search space, time every distinct layer they contain as a "
            "one-layer model, and write the table (one row per layer, its p50 in ms). The sampled "
            "architectures are also timed whole, and the command reports how well the sum of "
            "their layers ranks them (SRCC): the table's fitness for ranking on this device."
        ),
        epilog="Example: fleetbench lut --space nas-bench-201 --sample 30 --threads 1 -o lut.csv",
    )
    lut.add_argument(
        "--space", choices=SPACES, default="nas-bench-201", help="search space (default: nas-bench-201)"
    )
    lut.add_argument(
        "--sample", type=_whole(2), default=30, metavar="N", help="architectures to sample (default: 30)"
    )
    lut.add_argument("--seed", type=_whole(0), default=0, metavar="N", help="sampling seed (default: 0)")
    lut.add_argument(
        "--format",
        choices=["onnx", "tflite"],
        default="onnx",
        help="model format, and so the runtime (default: onnx)",
    )
    lut.add_argument("--threads", type=_whole(1), default=1, metavar="N", help="runtime threads (default: 1)")
    lut.add_argument(
        "--runs", type=_whole(1), default=20, metavar="N", help="measured runs per model (default: 20)"
    )
    lut.add_argument(
        "--min-time",
        type=_seconds,
        default=0.2,
        metavar="S",
        help="minimum measuring seconds per model (default: 0.2)",
    )
    lut.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the table, as CSV (written atomically)"
    )
    lut.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")
    lut.set_defaults(func=cmd_lut)


def cmd_make_model(args: argparse.Namespace) -> int:
    from agent.materialize import format_for, materialize, write_model

    format_for(args.output)  # a wrong extension is said before any work
    check_writable(args.output, "--output")
    net = materialize(args.space, args.arch, seed=args.seed, classes=args.classes, resolution=args.resolution)
    write_model(net, args.output)
    size_kb = os.path.getsize(args.output) / 1024
    print(f"fleetbench: wrote {args.output} ({size_kb:.0f} KiB, {len(net.layers)} layers)", file=sys.stderr)
    for note in net.notes:
        print(f"fleetbench: note: {note}", file=sys.stderr)
    return EXIT_OK


def cmd_lut(args: argparse.Namespace) -> int:
    import csv
    import io

    from agent.bench.runner import BenchSettings
    from agent.materialize import lut, sample

    check_writable(args.output)
    archs = sample(args.space, args.sample, args.seed)
    settings = BenchSettings(
        backend="auto",
        threads=args.threads,
        runs=args.runs,
        warmup_runs=3,
        warmup_time_s=0.1,
        min_time_s=args.min_time,
        max_time_s=max(10.0, args.min_time),
    )
    show = sys.stderr.isatty() and not args.quiet

    def progress(text: str) -> None:
        if show:
            sys.stderr.write(f"\r\x1b[K{text}")
            sys.stderr.flush()

    result = lut.run(args.space, archs, args.format, settings.validate(), progress)
    if show:
        sys.stderr.write("\r\x1b[K")
    rows = lut.to_rows(result.table, result.uses)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(args.output, out.getvalue())
    print(f"fleetbench: wrote {len(rows)} layers to {args.output}", file=sys.stderr)
    whole, sums = result.measured_ms, result.predicted_ms
    print(
        f"sum of layers vs whole models ({len(archs)} {args.space} archs, {args.format}, "
        f"{args.threads} thread(s)): SRCC {result.srcc:.3f}; whole p50 {min(whole):.3f}-{max(whole):.3f} ms, "
        f"sums {min(sums):.3f}-{max(sums):.3f} ms"
    )
    return EXIT_OK


def _add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Commands of other fleetbench packages (the coordinator's ranking tools), found through
    the ``fleetbench.commands`` entry point so the agent never imports them itself."""
    from importlib.metadata import entry_points

    eps: Any = entry_points()
    if hasattr(eps, "select"):
        group = eps.select(group="fleetbench.commands")
    else:  # Python 3.9 returns a dict of lists
        group = eps.get("fleetbench.commands", [])
    for ep in sorted(group, key=lambda e: e.name):
        try:
            ep.load()(sub)
        except Exception as err:  # a broken plugin must not take `fleetbench bench` down
            logger.warning("fleetbench commands from %s are unavailable: %s", ep.value, err)


class _TTYProgress:
    """One self-rewriting status line on stderr, only when stderr is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.model = ""
        self.shown = False

    def __call__(self, phase: str, done: int, wanted: int, elapsed_s: float) -> None:
        if phase == "measure":
            text = f"measuring: {done} runs (--runs {wanted}), {elapsed_s:.1f} s"
        elif phase == "warm-up":
            text = f"warming up: {done} runs, {elapsed_s:.1f} s"
        elif phase == "loaded":
            text = f"loaded in {elapsed_s:.2f} s"
        else:
            text = f"{phase}..."
        self.stream.write(f"\r\x1b[K{self.model}: {text}")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def cmd_bench(args: argparse.Namespace) -> int:
    from agent.bench import examples, report
    from agent.bench.inputs import parse_shape_args
    from agent.bench.runner import BenchSettings, run_benchmark
    from agent.bench.worker import run_isolated

    if args.list_examples:
        for name, path in examples.available().items():
            print(f"example:{name:<16} {path}")
        return EXIT_OK
    if not args.models:
        raise UsageError("bench needs at least one MODEL (a .onnx or .tflite file, or example:NAME)")
    if args.output:
        check_writable(args.output)  # before minutes of benchmarking, not after
    fmt = args.format
    if fmt is None:
        ext = os.path.splitext(args.output or "")[1].lower()
        fmt = {".json": "json", ".csv": "csv"}.get(ext, "table")
    settings = BenchSettings(
        backend=args.backend,
        threads=args.threads,
        runs=args.runs,
        warmup_runs=args.warmup,
        warmup_time_s=args.warmup_time,
        min_time_s=args.min_time,
        max_time_s=args.max_time,
        shapes=parse_shape_args(args.shape),
        providers=tuple(p for p in args.providers.split(",") if p.strip()),
        delegate=args.delegate,
        seed=args.seed,
        profile=args.profile,
        isolate=args.isolate,
    ).validate()

    progress = _TTYProgress(sys.stderr) if sys.stderr.isatty() and not args.quiet else None
    results, worst = [], EXIT_OK
    try:
        for model in args.models:
            try:
                path = examples.resolve(model)
                if progress:
                    progress.model = model
                run = run_isolated if settings.isolate else run_benchmark
                results.append(run(path, settings, progress))
            except FleetbenchError as err:
                if progress:
                    progress.clear()
                print(f"fleetbench: error: {err}", file=sys.stderr)
                worst = max(worst, err.exit_code)
            if progress:
                progress.clear()
    except KeyboardInterrupt:
        if progress:
            progress.clear()
        print("fleetbench: interrupted; reporting the models finished so far", file=sys.stderr)
        worst = EXIT_INTERRUPTED

    if results:
        if fmt == "json":
            text = report.to_json(results, samples=not args.no_samples)
        elif fmt == "csv":
            text = report.to_csv(results)
        else:
            text = report.to_table(results, profile_top=args.profile_top)
        if args.output:
            write_text_atomic(args.output, text)
            print(f"fleetbench: wrote {len(results)} result(s) to {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
    return worst


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except FleetbenchError as err:
        print(f"fleetbench: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("fleetbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `fleetbench ... | head`: the reader left; that is not an error.  Point stdout at
        # /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__: list[str] = ["build_parser", "main"]
