"""``fleetbench train | prune``: weights for the prunable families, and three pruning baselines.

Both need the ``prune`` extra (PyTorch on the CPU); ``prune`` without ``--data`` needs
numpy only.  Heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Optional

from agent.common.args import EXIT_OK, whole
from agent.common.progress import ProgressLine

WEIGHTS_HELP = (
    "Weights files (.npz) hold a family's parameters with batch norm unfolded, named by layer, and a "
    "header (family, widths, classes, input resolution): fleetbench make-model --weights turns one "
    "into ONNX or TFLite."
)
DATA_HELP = (
    "--data: 'digits' is scikit-learn's bundled handwritten digits (1,797 real 8x8 images, no "
    "download), split 80/20 by a fixed, seeded, stratified split; FILE.npz holds x_train, y_train, "
    "x_test, y_test (images (N, H, W) or (N, C, H, W), integer labels from 0). Images are resized to "
    "the network's input and standardized."
)
PRUNE_EXTRA = "training and fine-tuning"


def ratio(text: str) -> float:
    """argparse type: a share of FLOPs, above 0 and at most 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} must be a share of the network's FLOPs: above 0, at most 1")
    return value


def register(sub: Any) -> None:
    from agent.materialize.families import FAMILIES

    tr = sub.add_parser(
        "train",
        help="train a prunable network (resnet20, resnet56, resnet50, mobilenetv1) on the CPU",
        description=(
            "Train a family's network at a width spec from scratch with PyTorch on the CPU (SGD with "
            "momentum, cosine schedule, random shifts) and write its weights; prints the test accuracy. "
            "Needs the prune extra: pip install torch==2.13.0 (the CPU wheel), then "
            "pip install 'fleetbench[prune]'. " + DATA_HELP + " " + WEIGHTS_HELP
        ),
        epilog="Example: fleetbench train --space resnet20 --data digits --epochs 15 -o resnet20.npz",
    )
    tr.add_argument("--space", required=True, choices=FAMILIES, help="the family")
    tr.add_argument(
        "--widths", default="full", metavar="SPEC", help="width spec (default: full; see make-model)"
    )
    tr.add_argument("--data", required=True, metavar="digits|FILE.npz", help="the labelled images")
    tr.add_argument(
        "--epochs", type=whole(1), default=15, metavar="N", help="passes over the data (default 15)"
    )
    tr.add_argument(
        "--resolution",
        type=whole(8),
        default=None,
        metavar="N",
        help="input size (default: the family's; resnet20/56: multiples of 4 from 8)",
    )
    tr.add_argument(
        "--lr", type=float, default=0.05, metavar="X", help="starting learning rate (default 0.05)"
    )
    tr.add_argument("--batch-size", type=whole(1), default=64, metavar="N", help="mini-batch (default 64)")
    tr.add_argument(
        "--seed", type=whole(0), default=0, metavar="N", help="initialization and order (default 0)"
    )
    tr.add_argument("-o", "--output", required=True, metavar="W.npz", help="the weights file to write")
    tr.add_argument("--format", choices=["text", "json"], default="text", help="the summary's form")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")
    tr.set_defaults(func=cmd_train)

    pr = sub.add_parser(
        "prune",
        help="prune a trained network's channels to a FLOPs target (uniform, l1, netadapt)",
        description=(
            "Narrow a network's prunable layers until its FLOPs are at most --flops of what they were, "
            "keeping in each layer the filters of largest L1 norm with their trained weights. uniform: "
            "one ratio for every layer. l1: filters ranked across all layers by L1 norm (relative to "
            "their layer's mean), every layer keeping at least a tenth. netadapt: NetAdapt for one "
            "device, from its width table (fleetbench lut --space FAMILY): each step lowers a latency "
            "budget, narrows each layer alone just enough, fine-tunes each candidate briefly and keeps "
            "the most accurate on a holdout of the training split. With --data the test accuracy is "
            "measured before and after, and --finetune-epochs recovers it. " + DATA_HELP
        ),
        epilog=(
            "--format json prints {flops_ratio, params_ratio, accuracy_before, accuracy_pruned, "
            "accuracy_finetuned, predicted_ms, method, widths}: accuracies as fractions of the test "
            "split, null where not computed (no --data, no fine-tuning, no --lut).\n\nExample: "
            "fleetbench prune --space resnet20 --weights resnet20.npz --method l1 --flops 0.5 "
            "--data digits --finetune-epochs 5 -o pruned.npz --onnx pruned.onnx"
        ),
    )
    pr.add_argument("--space", required=True, choices=FAMILIES, help="the family (must match the weights)")
    pr.add_argument("--weights", required=True, metavar="W.npz", help="the trained network")
    pr.add_argument("--method", required=True, choices=["uniform", "l1", "netadapt"], help="how to prune")
    pr.add_argument(
        "--flops",
        required=True,
        type=ratio,
        metavar="RATIO",
        help="the FLOPs to keep, as a share of the network's (0 < RATIO <= 1)",
    )
    pr.add_argument(
        "--lut",
        metavar="LUT.csv",
        help="the device's width table (netadapt needs it; it prices the result: predicted_ms)",
    )
    pr.add_argument("--data", metavar="digits|FILE.npz", help="labelled images (netadapt needs them)")
    pr.add_argument(
        "--finetune-epochs",
        type=whole(0),
        default=0,
        metavar="N",
        help="fine-tuning epochs after pruning (default 0; needs --data)",
    )
    pr.add_argument(
        "--step",
        type=float,
        default=0.04,
        metavar="X",
        help="netadapt: budget drop per step, share of the starting latency (default 0.04)",
    )
    pr.add_argument(
        "--short-batches",
        type=whole(1),
        default=10,
        metavar="N",
        help="netadapt: mini-batches of each candidate's short fine-tune (default 10)",
    )
    pr.add_argument("--seed", type=whole(0), default=0, metavar="N", help="fine-tuning seed (default 0)")
    pr.add_argument("-o", "--output", required=True, metavar="P.npz", help="the pruned weights to write")
    pr.add_argument(
        "--onnx", metavar="P.onnx", help="also write the pruned network as a model (.onnx or .tflite)"
    )
    pr.add_argument("--format", choices=["text", "json"], default="text", help="the summary's form")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")
    pr.set_defaults(func=cmd_prune)


def _need_torch() -> None:
    from coordinator.extras import need

    need("torch", PRUNE_EXTRA, "prune")
    need("sklearn", PRUNE_EXTRA, "prune")


def load_data(source: str, resolution: int) -> Any:
    _need_torch()
    from coordinator.prune import data

    return data.load(source, resolution)


def cmd_train(args: argparse.Namespace) -> int:
    from agent.common.errors import UsageError
    from agent.common.files import check_writable
    from agent.materialize import families as fam
    from agent.materialize.weights import save

    check_writable(args.output, "--output")
    if not args.lr > 0:
        raise UsageError(f"--lr {args.lr:g} must be above 0")
    _need_torch()
    data = load_data(args.data, args.resolution or fam.DEFAULTS[args.space][1])
    try:
        plan = fam.plan(args.space, args.widths, data.classes, args.resolution)
    except ValueError as err:
        raise UsageError(f"{args.space}: {err}") from None
    from coordinator.prune.torchnet import PlanNet
    from coordinator.prune.train import Schedule, accuracy, train

    progress = ProgressLine(args.quiet)

    def show(epoch: int, epochs: int, done: float, loss: float) -> None:
        progress(f"training {args.space}: epoch {epoch}/{epochs} {done:4.0%}, loss {loss:.3f}")

    started = time.monotonic()
    net = train(PlanNet(plan), data, Schedule(args.epochs, args.lr, args.batch_size, seed=args.seed), show)
    progress.clear()
    acc = accuracy(net, data.x_test, data.y_test)
    took = time.monotonic() - started
    info = {
        "trained_on": data.name,
        "epochs": args.epochs,
        "seed": args.seed,
        "test_accuracy": acc,
        "input_mean": data.mean,
        "input_std": data.std,
    }
    save(args.output, plan, net.params(), info)
    summary = {
        "space": args.space,
        "widths": plan.spec,
        "data": data.name,
        "train": len(data.y_train),
        "test": len(data.y_test),
        "epochs": args.epochs,
        "test_accuracy": round(acc, 6),
        "seconds": round(took, 1),
        "output": args.output,
    }
    if args.format == "json":
        print(json.dumps(summary))
    else:
        print(
            f"{args.space} at widths {plan.spec[:60]}: test accuracy {acc:.2%} on {data.name} "
            f"({len(data.y_test)} images) after {args.epochs} epochs, {took:.0f} s; wrote {args.output}"
        )
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    from agent.common.errors import UsageError
    from agent.common.files import check_writable
    from agent.materialize import format_for
    from agent.materialize.weights import matching, save, to_network
    from coordinator.prune.methods import NetAdaptSettings
    from coordinator.prune.pipeline import prune

    check_writable(args.output, "--output")
    if args.onnx:
        format_for(args.onnx)
        check_writable(args.onnx, "--onnx")
    if args.finetune_epochs and not args.data:
        raise UsageError("--finetune-epochs needs --data (the images to fine-tune on)")
    if not 0 < args.step < 1:
        raise UsageError(f"--step {args.step:g} must be a share of the starting latency, above 0 and below 1")
    if args.method == "netadapt" and (args.lut is None or args.data is None):
        raise UsageError("--method netadapt needs --lut (the device's width table) and --data")
    plan, params = matching(args.weights, args.space, None, None, None)
    lut = None
    if args.lut:
        from coordinator.prune.widthlut import WidthLut

        lut = WidthLut.read(args.lut)
        lut.predict_ms(plan)  # a table of another family or resolution is said before any work
    data = load_data(args.data, plan.resolution) if args.data else None
    if data is not None and data.classes > plan.classes:
        raise UsageError(
            f"--data {args.data} has {data.classes} classes; {args.weights} was trained for {plan.classes}"
        )
    progress = ProgressLine(args.quiet)
    settings = NetAdaptSettings(step=args.step, short_batches=args.short_batches, seed=args.seed)
    outcome = prune(
        plan, params, args.method, args.flops, lut, data, args.finetune_epochs, progress, settings
    )
    progress.clear()
    report = outcome.report()
    accuracies = {k: v for k, v in report.items() if k.startswith("accuracy") and v is not None}
    info = {"pruned_from": args.weights, "method": args.method, "flops_target": args.flops, **accuracies}
    save(args.output, outcome.plan, outcome.params, info)
    if args.onnx:
        from agent.materialize import write_model

        write_model(
            to_network(outcome.plan, outcome.params, f"{args.space} {args.method} {args.flops:g}"), args.onnx
        )
    if args.format == "json":
        print(json.dumps(report))
        return EXIT_OK

    def pct(x: Optional[float]) -> str:
        return "-" if x is None else f"{x:.2%}"

    ms = "" if outcome.predicted_ms is None else f", predicted {outcome.predicted_ms:.3f} ms"
    print(f"{args.method}: widths {outcome.plan.spec}")
    print(f"  FLOPs {outcome.flops_ratio:.3f}, parameters {outcome.params_ratio:.3f} of the original{ms}")
    print(
        f"  accuracy before {pct(outcome.accuracy_before)}, pruned {pct(outcome.accuracy_pruned)}, "
        f"fine-tuned {pct(outcome.accuracy_finetuned)}"
    )
    print(f"fleetbench: wrote {args.output}" + (f" and {args.onnx}" if args.onnx else ""), file=sys.stderr)
    return EXIT_OK
