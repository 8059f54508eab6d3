"""The ranking core's commands: monotonicity, plan-samples, predict, rank.

These names, flags and output formats are a contract other tools drive: change them
only with care.  Heavy imports (numpy work, scipy, matplotlib) happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from coordinator.extras import need
from coordinator.plots import heatmap


def register(sub: Any) -> None:
    """Add the ranking commands to the ``fleetbench`` subparsers."""
    mono = sub.add_parser(
        "monotonicity",
        help="how well latency rankings agree across devices (SRCC)",
        description=(
            "SRCC matrix between every pair of devices of a latency table, each over the "
            "architectures measured on both (with the counts), the suggested proxy device (best "
            "mean agreement) and which devices may reuse its ranking unadapted (SRCC >= 0.9)."
        ),
    )
    mono.add_argument("table", metavar="TABLE.csv", help="latency table, wide or long form")
    mono.add_argument("--format", choices=["table", "json"], default="table")
    mono.add_argument("--kendall", action="store_true", help="also compute Kendall tau (slower)")
    mono.add_argument("--png", metavar="FILE", help="also draw the SRCC heatmap (needs matplotlib)")
    mono.set_defaults(func=cmd_monotonicity)

    plan = sub.add_parser(
        "plan-samples",
        help="which architectures to measure on a new device",
        description=(
            "Print K architectures, one per line, to measure on DEVICE so that `predict` can adapt "
            "to it best. DEVICE may be new (not a column yet); if it is a column, architectures "
            "already measured on it are not proposed again."
        ),
    )
    plan.add_argument("table", metavar="TABLE.csv")
    plan.add_argument("--target", required=True, metavar="DEVICE")
    plan.add_argument("-k", type=int, required=True, metavar="K", help="how many architectures")
    plan.add_argument("--seed", type=int, default=0, metavar="S")
    _add_space(plan)
    plan.add_argument("--planner", default=None, help="random, spread or doptimal (default: doptimal)")
    plan.set_defaults(func=cmd_plan)

    pred = sub.add_parser(
        "predict",
        help="fill every missing cell of a latency table",
        description=(
            "Write OUT.csv with the same rows and columns as TABLE.csv and every cell filled; "
            "measured cells keep their value. With --proxy, each target column is predicted from "
            "that one proxy column and the target's own measured cells; without it, every fully "
            "measured column is used."
        ),
    )
    pred.add_argument("table", metavar="TABLE.csv")
    _add_space(pred)
    pred.add_argument("-o", "--output", required=True, metavar="OUT.csv")
    pred.add_argument("--proxy", metavar="DEVICE")
    pred.add_argument(
        "--method",
        default=None,
        help="none, lut, adaproxy, multiref, hier, fleet or crossdevice (default: crossdevice for a column "
        "with every probe measured, see `fleetbench probes`; fleet for the others)",
    )
    pred.add_argument(
        "--predictor",
        metavar="MODEL",
        help="cross-device predictor from train-predictor (default: the shipped one)",
    )
    pred.set_defaults(func=cmd_predict)

    rank = sub.add_parser(
        "rank",
        help="best architecture for a device under a latency budget; Pareto front",
        description=(
            "Join a device's latencies (measured or from `predict`) with an accuracy table. "
            "--budget-ms picks the most accurate architecture within the budget; --pareto lists "
            "the latency/accuracy Pareto front (the default when neither is given)."
        ),
    )
    rank.add_argument("table", metavar="TABLE.csv")
    rank.add_argument("--device", required=True)
    rank.add_argument("--accuracy", required=True, metavar="ACC.csv")
    rank.add_argument("--metric", required=True, metavar="COLUMN")
    rank.add_argument("--budget-ms", type=_budget_ms, default=None, metavar="X")
    rank.add_argument("--pareto", action="store_true")
    rank.add_argument(
        "--margin",
        type=_margin,
        default="auto",
        metavar="auto|PCT",
        help="safety margin on predicted latencies for --budget-ms: auto (default) sizes it from the "
        "prediction error `predict` recorded in TABLE.csv.meta.json (none for measured cells); a number "
        "is a percentage added to every predicted latency (0 disables)",
    )
    rank.add_argument("--format", choices=["table", "json"], default="table")
    rank.set_defaults(func=cmd_rank)


def _add_space(parser: Any) -> None:
    parser.add_argument("--space", default="nas-bench-201", help="search space (default: nas-bench-201)")


def _budget_ms(text: str) -> float:
    """argparse type: a latency budget, a finite number of milliseconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of milliseconds")
    return value


def _margin(text: str) -> Any:
    """argparse type: ``auto``, or a safety margin in per cent (0 or more)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not 'auto' or a percentage of 0 or more")
    return value


def _warn(text: str) -> None:
    print(f"fleetbench: warning: {text}", file=sys.stderr)


def _short(name: str, width: int = 12) -> str:
    return name if len(name) <= width else name[: width - 1] + "~"


def cmd_monotonicity(args: argparse.Namespace) -> int:
    from coordinator.ranking.monotonicity import REUSE_SRCC, monotonicity
    from coordinator.ranking.tables import read_table

    table = read_table(args.table)
    for dev, n in table.missing_counts().items():
        if n:
            _warn(f"{dev}: {n} of {len(table.archs)} cells missing (not used)")
    if args.kendall:
        need("scipy", "--kendall")
    result = monotonicity(table, kendall=args.kendall)
    if args.png:
        heatmap(result.devices, result.srcc, args.png)
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    names = [_short(d) for d in table.devices]
    w = max(12, *(len(n) for n in names))
    print("SRCC (pairwise-complete)")
    print(" " * w + "  " + "  ".join(n.rjust(w) for n in names))
    for name, row in zip(names, result.srcc):
        print(name.ljust(w) + "  " + "  ".join(("n/a" if v != v else f"{v:.3f}").rjust(w) for v in row))
    if result.kendall is not None:
        print("\nKendall tau")
        for name, row in zip(names, result.kendall):
            print(name.ljust(w) + "  " + "  ".join(("n/a" if v != v else f"{v:.3f}").rjust(w) for v in row))
    print("\narchitectures measured on both")
    for name, row in zip(names, result.counts):
        print(name.ljust(w) + "  " + "  ".join(str(int(v)).rjust(w) for v in row))
    print("\nmean SRCC with the other devices")
    for dev, v in zip(table.devices, result.mean_agreement):
        print(f"  {dev}: {v:.3f}")
    reuse = result.reuse()
    ok = [d for d, r in reuse.items() if r]
    print(f"\nproxy: {result.proxy}")
    print(f"reuse its ranking unadapted (SRCC >= {REUSE_SRCC}): {', '.join(ok) or 'none'}")
    print(f"adapt with a few measurements: {', '.join(d for d, r in reuse.items() if not r) or 'none'}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import numpy as np

    from coordinator.errors import NotEnoughDataError
    from coordinator.ranking import planning
    from coordinator.ranking.predictors import Design
    from coordinator.ranking.spaces import get_space
    from coordinator.ranking.tables import read_table

    space = get_space(args.space)
    table = read_table(args.table)
    table.validate_archs(space)
    if args.k < 1:
        raise NotEnoughDataError(f"-k must be at least 1 (got {args.k})")
    target = table.devices.index(args.target) if args.target in table.devices else None
    refs = [j for j in table.fully_measured() if j != target]
    if not refs:
        _warn("no fully measured device to plan with: samples are spread over op counts only")
    candidates = np.arange(len(table.archs))
    if target is not None:
        candidates = np.flatnonzero(~table.measured[:, target])
        if len(candidates) < args.k:
            raise NotEnoughDataError(
                f"{args.target} has only {len(candidates)} unmeasured architectures; cannot propose {args.k}"
            )
    design = Design.build(space, table.archs, np.log(table.ms[:, refs]) if refs else None)
    chosen = planning.plan(design, args.k, args.planner or planning.DEFAULT_PLANNER, args.seed, candidates)
    for i in chosen:
        print(table.archs[i])
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from agent.common.files import check_writable, write_text_atomic
    from coordinator.ranking import crossdevice
    from coordinator.ranking.fill import fill_table
    from coordinator.ranking.spaces import get_space
    from coordinator.ranking.tables import read_table, write_wide

    check_writable(args.output, "-o")
    space = get_space(args.space)
    table = read_table(args.table)
    predictor = crossdevice.load(args.predictor, space.name) if args.predictor else None
    filled, report = fill_table(table, space, method=args.method, proxy=args.proxy, predictor=predictor)
    write_wide(args.output, filled)
    method = args.method or "auto"
    write_text_atomic(args.output + ".meta.json", json.dumps(report.metadata(table, method)) + "\n", "-o")
    for w in report.warnings:
        _warn(w)
    missing = table.missing_counts()
    for dev in table.devices:
        how = report.method.get(dev, "measured (reference)")
        err = report.log_error.get(dev)
        spread = f", typical error +-{(math.exp(err) - 1) * 100:.0f} %" if err is not None else ""
        print(
            f"{dev}: {len(table.archs) - missing[dev]} measured, {missing[dev]} predicted ({how}{spread})",
            file=sys.stderr,
        )
    print(f"fleetbench: wrote {args.output} ({len(table.archs)} x {len(table.devices)})", file=sys.stderr)
    return 0


def _margins(args: argparse.Namespace, table: Any) -> Any:
    """Per-row multiplier for the device's latencies before the budget test."""
    import numpy as np

    from coordinator.errors import TableError
    from coordinator.ranking import fill, uncertainty

    ones = np.ones(len(table.archs))
    meta_path = args.table + ".meta.json"
    meta = None
    if os.path.exists(meta_path):
        try:
            with open(meta_path, encoding="utf-8") as fh:
                meta = json.load(fh)
        except (OSError, ValueError) as err:
            raise TableError(f"{meta_path!r} cannot be read: {err}") from err
        if (
            not isinstance(meta, dict)
            or meta.get("schema") != fill.META_SCHEMA
            or meta.get("rows") != len(table.archs)
        ):
            _warn(f"{meta_path} does not describe {args.table}; ignoring it")
            meta = None
    info = (meta or {}).get("devices", {}).get(args.device)
    if args.margin == "auto":
        if info is None:
            return ones  # a measured table (or no record of what was predicted): no margin
        sigma = info.get("log_error_std")
        factor = uncertainty.margin_factor(sigma)
        if sigma is None and info.get("predicted_rows"):
            _warn(
                f"no error estimate for {args.device}'s predicted latencies; using a "
                f"{uncertainty.FALLBACK_MARGIN:.0%} margin"
            )
    else:
        factor = 1.0 + args.margin / 100.0
        if info is None:
            return ones * factor
    out = ones.copy()
    out[info.get("predicted_rows", [])] = factor
    return out


def cmd_rank(args: argparse.Namespace) -> int:
    import numpy as np

    from coordinator.errors import NotEnoughDataError
    from coordinator.ranking.pareto import best_under_budget, pareto_front
    from coordinator.ranking.tables import read_accuracy, read_table

    table = read_table(args.table)
    lat_all = table.column(args.device)
    acc_map, _ = read_accuracy(args.accuracy, args.metric)
    rows = [i for i, a in enumerate(table.archs) if a in acc_map and not np.isnan(lat_all[i])]
    no_lat = int(np.isnan(lat_all).sum())
    no_acc = sum(1 for a in table.archs if a not in acc_map)
    if no_lat:
        _warn(
            f"{no_lat} architectures have no latency on {args.device} and are left out "
            "(fill them with `fleetbench predict`)"
        )
    if no_acc:
        _warn(f"{no_acc} architectures have no {args.metric} in {args.accuracy} and are left out")
    if not rows:
        raise NotEnoughDataError(f"no architecture has both a latency on {args.device} and a {args.metric}")
    archs = [table.archs[i] for i in rows]
    lat = lat_all[rows]
    acc = np.array([acc_map[a] for a in archs])
    factor = _margins(args, table)[rows]
    out: dict[str, Any] = {"device": args.device, "metric": args.metric, "candidates": len(rows)}
    show_front = args.pareto or args.budget_ms is None
    if args.budget_ms is not None:
        out["budget_ms"] = args.budget_ms
        i = best_under_budget(lat * factor, acc, args.budget_ms)
        out["pick"] = (
            None
            if i is None
            else {
                "arch": archs[i],
                "latency_ms": float(lat[i]),
                args.metric: float(acc[i]),
                "predicted": bool(factor[i] != 1.0),
                "latency_with_margin_ms": float(lat[i] * factor[i]),
            }
        )
    if show_front:
        out["pareto"] = [
            {"arch": archs[i], "latency_ms": float(lat[i]), args.metric: float(acc[i])}
            for i in pareto_front(lat, acc)
        ]
    if args.format == "json":
        print(json.dumps(out, indent=2))
    else:
        if "pick" in out:
            if out["pick"] is None:
                print(
                    f"no architecture fits {args.budget_ms:g} ms on {args.device} "
                    f"(fastest: {lat.min():.3f} ms)"
                )
            else:
                p = out["pick"]
                note = ""
                if p["predicted"]:
                    pct = (p["latency_with_margin_ms"] / p["latency_ms"] - 1) * 100
                    note = f" (predicted; fits with a {pct:.0f} % margin for prediction error)"
                print(
                    f"best under {args.budget_ms:g} ms on {args.device}: {p['arch']}  "
                    f"{p['latency_ms']:.3f} ms{note}  {args.metric} {p[args.metric]:.2f}"
                )
        if "pareto" in out:
            print(f"Pareto front on {args.device} ({len(out['pareto'])} of {len(rows)} architectures):")
            for p in out["pareto"]:
                print(f"  {p['latency_ms']:10.3f} ms  {p[args.metric]:7.2f}  {p['arch']}")
    if args.budget_ms is not None and out.get("pick") is None:
        return 1
    return 0
