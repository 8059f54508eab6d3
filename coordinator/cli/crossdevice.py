"""Device features in, design out: probes, train-predictor, train-optimizer, optimize.

``probes`` lists the architectures a device measures to be described; ``train-predictor``
learns the cross-device predictor from any latency table; ``train-optimizer`` learns the
optimizer network from a predictor and an accuracy table; ``optimize`` picks an architecture
for one device and budget from its probes alone.  Heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from agent.common.args import whole
from coordinator.cli.ranking import _add_space, _budget_ms, _warn


def register(sub: Any) -> None:
    probes = sub.add_parser(
        "probes",
        help="the probe architectures a device measures to get its device features",
        description=(
            "Print the probe architectures of the cross-device predictor, one per line: measured on a "
            "device (the agent does it in one `probe` job when it registers), their latencies are the "
            "device's features for `predict`, `optimize` and the coordinator's first pick."
        ),
    )
    _add_space(probes)
    probes.add_argument(
        "--model", metavar="MODEL", help="a predictor from train-predictor (default: the shipped one)"
    )
    probes.set_defaults(func=cmd_probes)

    tp = sub.add_parser(
        "train-predictor",
        help="train the cross-device latency predictor from a latency table",
        description=(
            "Learn (architecture encoding, device features) -> latency from every device column of "
            "TABLE.csv (wide or long form; missing cells are fine, but some architectures must be "
            "measured on every device: the probes are chosen among them). Writes MODEL (.npz) with "
            "its probes, units and normalization. The shipped model was made with: fleetbench "
            "train-predictor coordinator/data/nb201_devices_ms.csv -o coordinator/data/nb201_crossdevice.npz"
        ),
    )
    tp.add_argument("table", metavar="TABLE.csv")
    _add_space(tp)
    tp.add_argument("-o", "--output", required=True, metavar="MODEL")
    tp.add_argument("--rank", type=whole(1), default=16, help="architecture factors (default 16)")
    tp.add_argument(
        "--probes", type=whole(1), default=20, metavar="N", help="probe architectures (default 20)"
    )
    tp.set_defaults(func=cmd_train_predictor)

    to = sub.add_parser(
        "train-optimizer",
        help="train the optimizer network (device features + budget -> architecture)",
        description=(
            "Train the network that maps a device's probe latencies and a latency budget to the most "
            "accurate architecture predicted to fit, for one accuracy metric, over the architectures of "
            "ACC.csv. Labels are exact best-under-budget picks on the predictor's reference devices and "
            "on synthetic devices drawn from its prior over devices."
        ),
    )
    _add_space(to)
    to.add_argument("--accuracy", required=True, metavar="ACC.csv")
    to.add_argument("--metric", required=True, metavar="COLUMN")
    to.add_argument(
        "--predictor", metavar="MODEL", help="predictor from train-predictor (default: the shipped one)"
    )
    to.add_argument(
        "--synthetic", type=whole(1), default=2000, metavar="N", help="synthetic devices (default 2000)"
    )
    to.add_argument("-o", "--output", required=True, metavar="MODEL")
    to.set_defaults(func=cmd_train_optimizer)

    op = sub.add_parser(
        "optimize",
        help="pick an architecture for a device from its probes, in one forward pass",
        description=(
            "The rows of TABLE.csv are the candidates; the measured cells of column DEVICE are its "
            "probes and any further samples (other columns are ignored). Prints the most accurate "
            "candidate predicted to fit --budget-ms, chosen by the optimizer network and checked with "
            "the cross-device predictor. decision_s is the in-process time of the decision alone. "
            "Exit 2, with one sentence, if the probes are not all measured or no candidate is predicted "
            "to fit."
        ),
    )
    op.add_argument("table", metavar="TABLE.csv")
    op.add_argument("--device", required=True, help="the column with the device's probes (and samples)")
    op.add_argument("--budget-ms", type=_budget_ms, required=True, metavar="B", help="latency budget (ms)")
    op.add_argument("--accuracy", required=True, metavar="ACC.csv", help="accuracy table (arch,<metric>,...)")
    op.add_argument(
        "--metric", required=True, metavar="COLUMN", help="its column to maximize, e.g. cifar10_top1"
    )
    _add_space(op)
    op.add_argument(
        "--predictor", metavar="MODEL", help="predictor from train-predictor (default: the shipped one)"
    )
    op.add_argument(
        "--optimizer", metavar="MODEL", help="network from train-optimizer (default: the shipped one)"
    )
    op.add_argument(
        "--method",
        choices=["network", "search"],
        default="network",
        help="network (default): the optimizer network; search: predict every candidate and search",
    )
    op.add_argument("--format", choices=["table", "json"], default="table")
    op.set_defaults(func=cmd_optimize)


def _progress(text: str) -> None:
    print(f"fleetbench: {text}", file=sys.stderr, flush=True)


def _predictor(space: Any, path: Any) -> Any:
    from coordinator.errors import ModelFileError
    from coordinator.ranking import crossdevice

    if path:
        return crossdevice.load(path, space.name)
    trained = crossdevice.shipped(space.name)
    if trained is None:
        raise ModelFileError(
            f"no cross-device predictor is shipped for {space.name}; give one with --predictor"
        )
    return trained


def cmd_probes(args: argparse.Namespace) -> int:
    from coordinator.ranking.spaces import get_space

    space = get_space(args.space)
    for arch in _predictor(space, args.model).probes:
        print(arch)
    return 0


def cmd_train_predictor(args: argparse.Namespace) -> int:
    import numpy as np

    from agent.common.files import check_writable
    from coordinator.ranking.crossdevice import CrossDevicePredictor
    from coordinator.ranking.spaces import get_space
    from coordinator.ranking.tables import read_table

    check_writable(args.output, "-o")
    space = get_space(args.space)
    table = read_table(args.table)
    table.validate_archs(space)
    if len(table.devices) < 2:
        from coordinator.errors import NotEnoughDataError

        raise NotEnoughDataError(
            f"training needs 2 or more devices, got {len(table.devices)} in {args.table}"
        )
    logs = np.log(table.ms)
    _progress(f"training on {len(table.devices)} devices x {len(table.archs)} architectures ({args.table})")
    started = time.monotonic()
    enc = space.encode_all(table.archs)
    if "alive" not in enc:
        from coordinator.errors import UnknownNameError

        raise UnknownNameError(f"the cross-device predictor does not support the {space.name} space yet")
    model = CrossDevicePredictor(rank=args.rank, n_probes=args.probes)
    model.fit(enc["onehot"], enc["alive"], logs, progress=_progress)
    probes = [table.archs[i] for i in model.probe_rows_]
    model.save(args.output, space.name, probes, table.devices)
    _progress(
        f"wrote {args.output} (rank {model.rank_}, {len(probes)} probes, {time.monotonic() - started:.1f} s)"
    )
    return 0


def _accuracy_column(path: str, metric: str, archs: Any) -> Any:
    import numpy as np

    from coordinator.ranking.tables import read_accuracy

    acc_map, _ = read_accuracy(path, metric)
    return np.array([acc_map.get(a, math.nan) for a in archs])


def cmd_train_optimizer(args: argparse.Namespace) -> int:
    import numpy as np

    from agent.common.files import check_writable
    from coordinator.errors import NotEnoughDataError
    from coordinator.extras import need
    from coordinator.ranking import optimizer
    from coordinator.ranking.spaces import get_space
    from coordinator.ranking.tables import read_accuracy

    need("sklearn", "training the optimizer network")
    check_writable(args.output, "-o")
    space = get_space(args.space)
    trained = _predictor(space, args.predictor)
    acc_map, _ = read_accuracy(args.accuracy, args.metric)
    archs = list(acc_map)
    space.validate(archs, source=args.accuracy)
    missing = [p for p in trained.probes if p not in acc_map]
    if missing:
        raise NotEnoughDataError(
            f"{args.accuracy} lacks {len(missing)} of the {len(trained.probes)} probe architectures "
            "(the optimizer is trained over its rows, the probes among them)"
        )
    accuracy = np.array([acc_map[a] for a in archs])
    enc = space.encode_all(archs)
    basis = trained.model.basis(enc["onehot"], enc["alive"])
    rows = {a: i for i, a in enumerate(archs)}
    started = time.monotonic()
    net = optimizer.train(
        trained, basis, enc["onehot"], accuracy, args.metric, [rows[p] for p in trained.probes],
        synthetic=args.synthetic, progress=_progress,
    )  # fmt: skip
    net.save(args.output)
    _progress(f"wrote {args.output} ({args.metric}, {time.monotonic() - started:.0f} s)")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    import numpy as np

    from coordinator.errors import ModelFileError, NotEnoughDataError
    from coordinator.ranking import crossdevice, optimizer
    from coordinator.ranking.spaces import get_space
    from coordinator.ranking.tables import read_table

    space = get_space(args.space)
    table = read_table(args.table)
    table.validate_archs(space)
    y_all = np.log(table.column(args.device))
    trained = _predictor(space, args.predictor)
    rows = crossdevice.probe_rows(trained, table.archs)
    have = [r for r in rows if r is not None and not np.isnan(y_all[r])]
    if len(have) < len(trained.probes):
        listed = sum(r is not None for r in rows)
        where = (
            f"{args.table} lists {listed} of them"
            if listed < len(trained.probes)
            else f"column {args.device} has {len(have)} measured (empty, NaN, zero or negative cells are not)"
        )
        raise NotEnoughDataError(
            f"{args.device} needs its {len(trained.probes)} probe architectures measured and {where} "
            f"(`fleetbench probes --space {space.name}` lists them)"
        )
    accuracy = _accuracy_column(args.accuracy, args.metric, table.archs)
    cand = np.flatnonzero(~np.isnan(accuracy))
    if len(cand) < len(table.archs):
        _warn(f"{len(table.archs) - len(cand)} candidates have no {args.metric} in {args.accuracy}; left out")
    if not len(cand):
        raise NotEnoughDataError(f"no candidate of {args.table} has a {args.metric} in {args.accuracy}")
    net = None
    if args.method == "network":
        path = args.optimizer or optimizer.shipped_path(space.name, args.metric)
        if path is None:
            raise ModelFileError(
                f"no optimizer network is shipped for {args.metric} in {space.name}; train one with "
                "`fleetbench train-optimizer` and give it with --optimizer, or use --method search"
            )
        net = optimizer.load_for(path, trained, args.metric)
    enc_all = space.encode_all(table.archs)
    basis_all = trained.model.basis(enc_all["onehot"], enc_all["alive"])
    basis, onehot = basis_all[cand], enc_all["onehot"][cand]
    measured = np.flatnonzero(~np.isnan(y_all))
    probe_log = y_all[np.array(have)]
    log_budget = math.log(args.budget_ms)
    # -- the decision alone: adapt to the device, then the network (or the search) --------------
    started = time.perf_counter()
    fit = trained.model.adapt(basis_all[measured], y_all[measured])
    if net is not None:
        decision = optimizer.decide(net, trained, fit, probe_log, log_budget, basis, onehot, accuracy[cand])
        row = None if decision is None else decision.row
    else:
        row = optimizer.pick_under_budget(fit.predict(basis), fit.log_std(basis), accuracy[cand], log_budget)
    decision_s = time.perf_counter() - started
    if row is None:
        fastest = float(np.exp(fit.predict(basis).min()))
        raise NotEnoughDataError(
            f"no candidate is predicted to fit {args.budget_ms:g} ms on {args.device} "
            f"(the fastest is predicted at {fastest:.3g} ms)"
        )
    i = int(cand[row])
    predicted_ms = float(np.exp(fit.predict(basis[row : row + 1])[0]))
    out = {
        "arch": table.archs[i],
        "predicted_ms": round(predicted_ms, 4),
        "accuracy": float(accuracy[i]),
        "decision_s": decision_s,
        "metric": args.metric,
        "method": args.method,
        "measured_ms": None if np.isnan(y_all[i]) else float(np.exp(y_all[i])),
    }
    if args.format == "json":
        print(json.dumps(out))
    else:
        seen = f", measured {out['measured_ms']:.3f} ms" if out["measured_ms"] is not None else ""
        print(
            f"{args.device}, budget {args.budget_ms:g} ms: {out['arch']}  "
            f"predicted {predicted_ms:.3f} ms{seen}  {args.metric} {out['accuracy']:.2f}  "
            f"(decided in {decision_s * 1000:.2f} ms)"
        )
    return 0
