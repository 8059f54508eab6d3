"""``fleetbench make-model | lut``: search-space architectures as models, layer lookup tables."""

from __future__ import annotations

import argparse
import os
import sys

from agent.common.args import EXIT_OK, seconds, whole
from agent.common.files import check_writable, write_text_atomic


def register(sub: argparse._SubParsersAction) -> None:
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
    make.add_argument("--seed", type=whole(0), default=0, metavar="N", help="weight seed (default: 0)")
    make.add_argument(
        "--classes",
        type=whole(1),
        default=None,
        metavar="N",
        help="classifier outputs (nas-bench-201: 10, 100 or 120, default 10; mobilenetv2: default 1000)",
    )
    make.add_argument(
        "--resolution",
        type=whole(8),
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
        "--sample", type=whole(2), default=30, metavar="N", help="architectures to sample (default: 30)"
    )
    lut.add_argument("--seed", type=whole(0), default=0, metavar="N", help="sampling seed (default: 0)")
    lut.add_argument(
        "--format",
        choices=["onnx", "tflite"],
        default="onnx",
        help="model format, and so the runtime (default: onnx)",
    )
    lut.add_argument("--threads", type=whole(1), default=1, metavar="N", help="runtime threads (default: 1)")
    lut.add_argument(
        "--runs", type=whole(1), default=20, metavar="N", help="measured runs per model (default: 20)"
    )
    lut.add_argument(
        "--min-time",
        type=seconds,
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

    from agent.bench.settings import BenchSettings
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
