"""Prunable networks and the single-device pruning baselines on this machine (issue 18).

Every figure comes from the ``fleetbench`` commands a user runs, in a work directory
(--work, default /tmp/fleetbench-prune-eval); later parts reuse what earlier ones wrote.

  train  fleetbench train --space resnet20 --data digits --epochs 15: test accuracy, time
  prune  the three methods at 50 % FLOPs of that network (the netadapt one from a resnet20
         width table built here first), accuracy before, right after, and after --finetune
         epochs of fine-tuning; each pruned network written as ONNX
  speed  the unpruned and the three pruned ONNX models timed side by side with fleetbench
         bench: --rounds rounds, the models' order rotated each round, each model's p50 as a
         ratio to the unpruned one's in the same round; the median ratio, and its spread
  lut    width tables at the 25/50/75/100 % grid: resnet56 and mobilenetv1 with their
         additivity (SRCC of the sum of layers against 30 whole width specs), resnet50 and
         mobilenetv1 build times

    python benchmarks/prune_eval.py train prune speed lut
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

METHODS = ("uniform", "l1", "netadapt")
GRID = "25,50,75,100"


def fleetbench(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "agent", *args]
    print("$ fleetbench " + " ".join(args), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"fleetbench {args[0]} failed ({out.returncode}): {out.stderr.strip()}")
    return out


def part_train(args: argparse.Namespace) -> None:
    started = time.monotonic()
    out = fleetbench(
        "train",
        "--space",
        "resnet20",
        "--data",
        "digits",
        "--epochs",
        str(args.epochs),
        "-o",
        os.path.join(args.work, "resnet20.npz"),
        "--format",
        "json",
    )
    summary = json.loads(out.stdout)
    print(
        f"resnet20 on digits, {args.epochs} epochs: test accuracy {summary['test_accuracy']:.4f} "
        f"({summary['test']} images), {time.monotonic() - started:.0f} s"
    )


def part_prune(args: argparse.Namespace) -> None:
    w = args.work
    started = time.monotonic()
    out = fleetbench(
        "lut", "--space", "resnet20", "--widths", GRID, "--sample", "30", "-o", f"{w}/resnet20-lut.csv"
    )
    print(f"  {out.stdout.strip()} ({time.monotonic() - started:.0f} s)")
    fleetbench("make-model", "--space", "resnet20", "--weights", f"{w}/resnet20.npz", "-o", f"{w}/full.onnx")
    rows = []
    for method in METHODS:
        started = time.monotonic()
        out = fleetbench(
            "prune",
            "--space",
            "resnet20",
            "--weights",
            f"{w}/resnet20.npz",
            "--method",
            method,
            "--flops",
            "0.5",
            "--lut",
            f"{w}/resnet20-lut.csv",
            "--data",
            "digits",
            "--finetune-epochs",
            str(args.finetune),
            "-o",
            f"{w}/{method}.npz",
            "--onnx",
            f"{w}/{method}.onnx",
            "--format",
            "json",
        )
        report = json.loads(out.stdout)
        report["seconds"] = round(time.monotonic() - started)
        rows.append(report)
        print(json.dumps(report))
    print(
        f"\n| method | FLOPs | params | accuracy before | pruned | fine-tuned ({args.finetune} epochs) | "
        "predicted ms | time |\n|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['method']} | {r['flops_ratio']:.3f} | {r['params_ratio']:.3f} | "
            f"{r['accuracy_before']:.4f} | "
            f"{r['accuracy_pruned']:.4f} | {r['accuracy_finetuned']:.4f} | {r['predicted_ms']:.3f} | "
            f"{r['seconds']} s |"
        )


def part_speed(args: argparse.Namespace) -> None:
    w = args.work
    names = ["full", *METHODS]
    for threads in (1, 2):
        ratios: dict[str, list[float]] = {m: [] for m in METHODS}
        p50s: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            out = fleetbench(
                "bench",
                *(f"{w}/{n}.onnx" for n in order),
                "--threads",
                str(threads),
                "--runs",
                "300",
                "--min-time",
                "1",
                "--format",
                "json",
                "--no-samples",
                "-q",
            )
            parsed = json.loads(out.stdout)
            results = parsed if isinstance(parsed, list) else [parsed]
            by_name = {
                os.path.splitext(os.path.basename(x["model"]["path"]))[0]: x["stats"]["p50_ms"]
                for x in results
            }
            for n in names:
                p50s[n].append(by_name[n])
            for m in METHODS:
                ratios[m].append(by_name["full"] / by_name[m])
        print(
            f"\n{threads} thread(s), {args.rounds} rounds: "
            f"unpruned p50 median {statistics.median(p50s['full']):.3f} ms"
        )
        for m in METHODS:
            rs = sorted(ratios[m])
            print(
                f"  {m}: p50 median {statistics.median(p50s[m]):.3f} ms; "
                f"speed-up {statistics.median(rs):.2f}x "
                f"(rounds {rs[0]:.2f}-{rs[-1]:.2f})"
            )


def part_lut(args: argparse.Namespace) -> None:
    w = args.work
    for family in ("resnet56", "mobilenetv1", "resnet50"):
        started = time.monotonic()
        out = fleetbench(
            "lut",
            "--space",
            family,
            "--widths",
            GRID,
            "--sample",
            str(args.sample),
            "-o",
            f"{w}/{family}-lut.csv",
        )
        took = time.monotonic() - started
        print(
            f"  {family}: {out.stderr.strip().splitlines()[-1]}; {out.stdout.strip()}; built in {took:.0f} s"
        )


PARTS = {"train": part_train, "prune": part_prune, "speed": part_speed, "lut": part_lut}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", metavar="PART", help=f"any of {', '.join(PARTS)} (default: all)")
    ap.add_argument("--work", default="/tmp/fleetbench-prune-eval", help="where the files go")
    ap.add_argument("--epochs", type=int, default=15, help="training epochs (default 15)")
    ap.add_argument("--finetune", type=int, default=5, help="fine-tuning epochs after pruning (default 5)")
    ap.add_argument("--rounds", type=int, default=7, help="speed: rounds (default 7)")
    ap.add_argument("--sample", type=int, default=30, help="lut: width specs timed whole (default 30)")
    args = ap.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    for part in args.parts or PARTS:
        if part not in PARTS:
            ap.error(f"unknown part {part!r}")
        print(f"== {part} ==", flush=True)
        PARTS[part](args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
