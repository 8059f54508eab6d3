"""``fleetbench bench``: time models on this device."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from agent.common.args import EXIT_INTERRUPTED, EXIT_OK, seconds, whole
from agent.common.errors import FleetbenchError, UsageError
from agent.common.files import check_writable, write_text_atomic


def register(sub: argparse._SubParsersAction) -> None:
    from agent.bench import BACKEND_NAMES

    bench = sub.add_parser(
        "bench",
        help="time models on this device",
        description=(
            "Time one or more models on this device. Warm-up runs come first (until both "
            "--warmup and --warmup-time are met), then measured runs until both --runs and "
            "--min-time are met, capped by --max-time. Each run is timed by fleetbench's native "
            "timer; results carry a snapshot of the device (governor, frequencies, temperatures, "
            "throttling) and warnings about anything that makes them less trustworthy. Under a "
            "CPU quota (a container's --cpus, systemd's CPUQuota=) a sample is the mean of a group "
            "of runs lasting two quota periods (protocol.runs_per_sample), and --runs counts groups."
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
        help="runtime threads (default: the number of physical cores; under a CPU quota at most "
        "its cores, rounded up)",
    )
    arg(
        "--runs",
        type=whole(0),
        default=50,
        metavar="N",
        help="minimum measured runs (default: 50)",
    )
    arg(
        "--warmup",
        type=whole(0),
        default=5,
        metavar="N",
        help="minimum warm-up runs (default: 5)",
    )
    arg(
        "--warmup-time",
        type=seconds,
        default=0.5,
        metavar="S",
        help="minimum warm-up seconds (default: 0.5)",
    )
    arg(
        "--min-time",
        type=seconds,
        default=1.0,
        metavar="S",
        help="minimum measuring seconds (default: 1)",
    )
    arg(
        "--max-time",
        type=seconds,
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
        type=whole(0),
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
        type=whole(1),
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
