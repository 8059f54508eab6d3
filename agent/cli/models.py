"""``fleetbench make-model | lut``: search-space architectures as models, layer lookup tables."""

from __future__ import annotations

import argparse
import os
import sys

from agent.common.args import EXIT_OK, percent_grid, seconds, whole
from agent.common.files import check_writable
from agent.common.progress import ProgressLine


def register(sub: argparse._SubParsersAction) -> None:
    from agent.materialize import SPACES

    make = sub.add_parser(
        "make-model",
        help="write a search-space architecture or a prunable network as a runnable .onnx or .tflite model",
        description=(
            "Build the network an arch string names, with random seeded weights (latency does "
            "not depend on their values), and write it as ONNX (NCHW) or TFLite (NHWC), chosen "
            "by the extension of -o. Batch norm is folded; edges cut off by 'none' are removed "
            "and the model says so in its metadata. The prunable families (resnet20, resnet56: "
            "CIFAR shapes; resnet50: ImageNet shapes; mobilenetv1) take --widths instead of an "
            "arch, and --weights to carry trained weights (fleetbench train, fleetbench prune)."
        ),
        epilog=WIDTHS_HELP + "\n\nExamples:\n  fleetbench make-model --space nas-bench-201 "
        "'|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|' "
        "-o cell.tflite\n  fleetbench make-model --space mobilenetv2 "
        "d:23423-k:35737353373537-e:34646436463464 -o mbv2.onnx\n"
        "  fleetbench make-model --space mobilenetv1 --widths x0.5 --resolution 160 -o mbv1.tflite\n"
        "  fleetbench make-model --space resnet20 --weights pruned.npz -o pruned.onnx",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    make.add_argument(
        "arch", metavar="ARCH", nargs="?", help="the architecture, in the space's arch-string syntax"
    )
    make.add_argument(
        "--space", choices=SPACES, default="nas-bench-201", help="search space (default: nas-bench-201)"
    )
    make.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="model file to write: .onnx or .tflite"
    )
    make.add_argument(
        "--widths", metavar="SPEC", help="a prunable family's width spec (default: full; see below)"
    )
    make.add_argument(
        "--weights",
        metavar="W.npz",
        help="a prunable family's trained weights (its widths, unless --widths names the same)",
    )
    make.add_argument("--seed", type=whole(0), default=0, metavar="N", help="weight seed (default: 0)")
    make.add_argument(
        "--classes",
        type=whole(1),
        default=None,
        metavar="N",
        help="classifier outputs (nas-bench-201: 10, 100 or 120, default 10; resnet20/56: default 10; "
        "mobilenetv2, resnet50, mobilenetv1: default 1000)",
    )
    make.add_argument(
        "--resolution",
        type=whole(8),
        default=None,
        metavar="N",
        help="input height and width (default: 32 for nas-bench-201, resnet20 and resnet56; 224 otherwise)",
    )
    make.set_defaults(func=cmd_make_model)

    lut = sub.add_parser(
        "lut",
        help="build a layer lookup table for a search space or a prunable family on this device",
        description=(
            "Sample architectures of a search space, time every distinct layer they contain as a "
            "one-layer model, and write the table (one row per layer, its p50 in ms). The sampled "
            "architectures are also timed whole, and the command reports how well the sum of "
            "their layers ranks them (SRCC): the table's fitness for ranking on this device. "
            "For a prunable family it is a width table: every layer at every width of --widths "
            "(percent of each prunable layer's full width), checked against --sample width specs "
            "drawn on that grid; fleetbench prune --method netadapt reads it."
        ),
        epilog="Examples: fleetbench lut --space nas-bench-201 --sample 30 --threads 1 -o lut.csv;  "
        "fleetbench lut --space resnet56 --widths 25,50,75,100 -o resnet56-lut.csv",
    )
    lut.add_argument(
        "--space", choices=SPACES, default="nas-bench-201", help="search space (default: nas-bench-201)"
    )
    lut.add_argument(
        "--widths",
        type=percent_grid,
        default=None,
        metavar="GRID",
        help="a family's candidate widths, percent of each prunable layer, comma-separated "
        "(default: 25,50,75,100)",
    )
    lut.add_argument(
        "--resolution",
        type=whole(8),
        default=None,
        metavar="N",
        help="a family's input height and width (default: 32 for resnet20/56, 224 for the others)",
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


WIDTHS_HELP = """\
Width specs (--widths) of the prunable families:
  full          every prunable layer at its full width (the default)
  x0.5          every prunable layer at round(0.5 x full), at least 1 channel: MobileNetV1's
                width multiplier, or uniform pruning (above 0, at most 2)
  16,8,...      the channels of every prunable layer in order (resnet20: 9 layers, resnet56: 27,
                resnet50: 32, mobilenetv1: 14), each from 1 to twice its full width
Prunable layers: channels tied by a residual addition are never pruned, so in a basic block
(resnet20/56) the first convolution is, in a bottleneck (resnet50) the first two are, and in
mobilenetv1 the stem and every pointwise convolution are (a depthwise one keeps its input's)."""


def cmd_make_model(args: argparse.Namespace) -> int:
    from agent.common.errors import UsageError
    from agent.materialize import format_for, materialize, write_model
    from agent.materialize.families import FAMILIES

    format_for(args.output)  # a wrong extension is said before any work
    check_writable(args.output, "--output")
    if args.space in FAMILIES:
        if args.arch is not None:
            raise UsageError(f"{args.space} takes --widths SPEC, not an arch ({args.arch[:40]!r})")
        if args.weights is not None:
            from agent.materialize.weights import matching, to_network

            plan, params = matching(args.weights, args.space, args.widths, args.classes, args.resolution)
            net = to_network(plan, params, f"{args.space} widths={plan.spec} weights={args.weights}")
        else:
            spec = args.widths or "full"
            net = materialize(
                args.space, spec, seed=args.seed, classes=args.classes, resolution=args.resolution
            )
    else:
        if args.widths is not None or args.weights is not None:
            families = ", ".join(FAMILIES)
            raise UsageError(
                f"--widths and --weights are for the prunable families ({families}), not {args.space}"
            )
        if args.arch is None:
            raise UsageError(f"{args.space} needs an ARCH (the architecture's arch string)")
        net = materialize(
            args.space, args.arch, seed=args.seed, classes=args.classes, resolution=args.resolution
        )
    write_model(net, args.output)
    size_kb = os.path.getsize(args.output) / 1024
    print(f"fleetbench: wrote {args.output} ({size_kb:.0f} KiB, {len(net.layers)} layers)", file=sys.stderr)
    for note in net.notes:
        print(f"fleetbench: note: {note}", file=sys.stderr)
    return EXIT_OK


def cmd_lut(args: argparse.Namespace) -> int:
    from agent.bench.settings import BenchSettings
    from agent.common.errors import UsageError
    from agent.materialize import lut, sample
    from agent.materialize.families import DEFAULT_GRID, FAMILIES

    check_writable(args.output)
    family = args.space in FAMILIES
    if not family and (args.widths is not None or args.resolution is not None):
        raise UsageError(f"--widths and --resolution are for the prunable families ({', '.join(FAMILIES)}), "
                         f"not {args.space}")  # fmt: skip
    settings = BenchSettings(
        backend="auto",
        threads=args.threads,
        runs=args.runs,
        warmup_runs=3,
        warmup_time_s=0.1,
        min_time_s=args.min_time,
        max_time_s=max(10.0, args.min_time),
    )
    progress = ProgressLine(args.quiet)

    if family:
        grid = args.widths or DEFAULT_GRID
        try:
            result = lut.run_widths(args.space, grid, args.sample, args.seed, args.format,
                                    settings.validate(), progress, args.resolution)  # fmt: skip
        except ValueError as err:  # a resolution or grid the family cannot take
            raise UsageError(f"{args.space}: {err}") from None
        what = f"{args.sample} {args.space} width specs on the {','.join(map(str, grid))} % grid"
    else:
        archs = sample(args.space, args.sample, args.seed)
        result = lut.run(args.space, archs, args.format, settings.validate(), progress)
        what = f"{len(archs)} {args.space} archs"
    progress.clear()
    rows = lut.to_rows(result.table, result.uses)
    lut.write_csv(args.output, rows)
    print(f"fleetbench: wrote {len(rows)} layers to {args.output}", file=sys.stderr)
    whole, sums = result.measured_ms, result.predicted_ms
    print(
        f"sum of layers vs whole models ({what}, {args.format}, "
        f"{args.threads} thread(s)): SRCC {result.srcc:.3f}; whole p50 {min(whole):.3f}-{max(whole):.3f} ms, "
        f"sums {min(sums):.3f}-{max(sums):.3f} ms"
    )
    return EXIT_OK
