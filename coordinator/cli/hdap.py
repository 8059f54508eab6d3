"""``fleetbench hdap``: one pruned model for a SKU whose boards have drifted apart (HDAP).

``--sku SKU`` plans for the real fleet through the running coordinator (profile jobs, the
representatives' width tables, then ``--push`` to roll the model out); ``--simulate
FLEET.json`` plans for a described fleet and compares every method by its truth.  Heavy
imports happen inside the command.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional

from agent.common.args import EXIT_OK, percent_grid, whole
from agent.common.progress import ProgressLine
from coordinator.cli.prune import DATA_HELP, ratio
from coordinator.cli.service import _common, _config, _open
from coordinator.hdap import TOL


def register(sub: Any) -> None:
    from agent.materialize.families import FAMILIES

    hd = sub.add_parser(
        "hdap",
        help="prune one model for a whole SKU whose boards have drifted apart (HDAP)",
        description=(
            "Homogeneous-device aware pruning: cluster the SKU's devices on short profiles (a few "
            "probe layers), take a full width table from one representative per cluster, estimate "
            "every device from its representative's table corrected by its own profile, and search "
            "the per-layer widths that make the fleet fastest on average under the FLOPs target, "
            "removing no more filter importance (the l1 criterion) than l1 does. With --simulate "
            "FLEET.json the fleet is described, and HDAP is compared with uniform, l1, NetAdapt tuned "
            "on one board and an oracle that knows every board, by the fleet's truth. " + DATA_HELP
        ),
        epilog=FLEET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hd.add_argument("--space", choices=FAMILIES, help="the family (must match the weights)")
    hd.add_argument("--weights", metavar="W.npz", help="the trained network")
    hd.add_argument("--flops", type=ratio, metavar="RATIO", help="FLOPs to keep (0 < RATIO <= 1)")
    where = hd.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--sku", metavar="SKU", help="plan for this SKU's devices, through the running coordinator"
    )
    where.add_argument("--simulate", metavar="FLEET.json", help="plan for a described fleet (below)")
    where.add_argument(
        "--recheck",
        metavar="P.plan.json",
        help="profile the plan's SKU again and say whether the plan still describes it: every "
        "device within --tol of its representative and of its own profile when planned, none new, "
        "none gone (exit 0) or not (exit 4); for a timer, or after the fleet's degradation alerts",
    )
    where.add_argument(
        "--explain",
        metavar="P.plan.json",
        help="show a --sku plan: its clusters and representatives, and each device's predicted "
        "latency against what it measured when the model was rolled out (--push)",
    )
    hd.add_argument(
        "--objective",
        choices=["mean", "p90", "mean+p90"],
        default="mean",
        help="what to minimize: the fleet average (default), the 90th percentile board, or both",
    )
    hd.add_argument(
        "--tol",
        type=float,
        default=None,
        metavar="X",
        help=f"a device within this RMS log slowdown of its representative is described by it "
        f"(default {TOL}; --recheck: the plan's)",
    )
    hd.add_argument(
        "--per-cluster",
        action="store_true",
        help="also a model per cluster, each searched for its own devices, written as P.clusterK.npz "
        "(and .onnx) beside P.npz: --simulate compares it with the one model, --sku lists each "
        "cluster's devices in the plan",
    )
    hd.add_argument(
        "--no-oracle", action="store_true", help="skip the oracle (it searches on every board's truth)"
    )
    hd.add_argument(
        "--data",
        metavar="digits|FILE.npz",
        help="images to check candidates' accuracy on (their training split: a candidate more than "
        "0.5 points less accurate than l1's widths, batch norms re-estimated, is not chosen) and to "
        "fine-tune the result on",
    )
    hd.add_argument(
        "--finetune-epochs", type=whole(0), default=0, metavar="N", help="fine-tuning epochs (default 0)"
    )
    hd.add_argument(
        "--seed", type=whole(0), default=0, metavar="N", help="clustering and search seed (default 0)"
    )
    hd.add_argument(
        "--widths",
        type=percent_grid,
        default=None,
        metavar="GRID",
        help="--sku: the representatives' width-table grid, percent (default 25,50,75,100)",
    )
    hd.add_argument(
        "--sample",
        type=whole(2),
        default=30,
        metavar="N",
        help="--sku: width specs each representative times whole to check its table (default 30)",
    )
    hd.add_argument(
        "--runs", type=whole(1), metavar="N", help="--sku: measured runs per layer (device default)"
    )
    hd.add_argument("--min-time", type=float, metavar="S", help="--sku: measuring seconds per layer at least")
    hd.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="S",
        help="--sku: how long to wait for each step's answers (default 3600)",
    )
    hd.add_argument("--push", action="store_true", help="--sku: roll the model out to the SKU (needs --onnx)")
    _common(hd)
    hd.add_argument(
        "-o",
        "--output",
        metavar="P.npz",
        help="write the pruned network's weights (and, with --sku, its plan as P.plan.json)",
    )
    hd.add_argument("--onnx", metavar="P.onnx", help="also write it as a model (.onnx or .tflite)")
    hd.add_argument("--format", choices=["text", "json"], default="text", help="the report's form")
    hd.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")
    hd.set_defaults(func=cmd_hdap)


FLEET_HELP = """\
FLEET.json (--simulate):
  {"space": "resnet56", "base_lut": "resnet56-lut.csv",
   "conditions": {"healthy": {}, "throttled": {"conv": 1.6, "pointwise": 1.5, "memory": 1.1},
                  "worn-memory": {"memory": 1.9, "pointwise": 1.3}},
   "generate": {"devices": 10000, "mix": {"healthy": 0.6, "throttled": 0.25, "worn-memory": 0.15}},
   "jitter": 0.02, "shape_noise": 0.05, "profile_noise": 0.01, "seed": 0}
base_lut: a width table measured on one healthy board (fleetbench lut --space FAMILY), relative to
the file. conditions: slowdowns by layer kind (conv, pointwise, depthwise, memory, head; 1 if left
out); shape_noise: each condition also slows each layer shape by its own log-normal factor.
devices: a list of {"id", "condition"} or {"id", "slowdown": {kind: factor}}, or generate: a count
and the conditions' shares. jitter: each board's own log-normal variation per kind; profile_noise:
the measurement noise of a profile.

Examples:
  fleetbench hdap --space resnet56 --weights resnet56.npz --flops 0.5 --simulate fleet.json
  fleetbench hdap --sku 'Raspberry Pi 4 Model B' --space resnet56 --weights resnet56.npz --flops 0.5 \
      --data digits --finetune-epochs 5 -o hdap.npz --onnx hdap.tflite --push
  fleetbench hdap --explain hdap.plan.json      # predicted against measured, once rolled out
  fleetbench hdap --recheck hdap.plan.json      # still the fleet it was planned for?

Exit status: 0 done (--recheck: the plan holds), 1 the fleet could not be planned (no profile or
table came back), 2 usage error, 4 --recheck: re-plan advised (a device drifted, joined or left)."""


def cmd_hdap(args: argparse.Namespace) -> int:
    from agent.common.errors import UsageError
    from agent.common.files import check_writable
    from agent.materialize import format_for
    from agent.materialize.weights import matching
    from coordinator.hdap import simulate as sim
    from coordinator.hdap.planning import simulate

    if args.tol is not None and not 0 < args.tol < 1:
        raise UsageError(f"--tol {args.tol:g} must be above 0 and below 1")
    if args.explain is not None:
        return _explain(args)
    if args.recheck is not None:
        return _recheck(args)
    for flag in ("space", "weights", "flops"):
        if getattr(args, flag) is None:
            raise UsageError(f"--{flag} is needed to plan (with --sku or --simulate)")
    if args.tol is None:
        args.tol = TOL
    for path, flag in ((args.output, "--output"), (args.onnx, "--onnx")):
        if path:
            check_writable(path, flag)
    if args.onnx:
        format_for(args.onnx)
    if args.finetune_epochs and not args.data:
        raise UsageError("--finetune-epochs needs --data (the images to fine-tune on)")
    plan, params = matching(args.weights, args.space, None, None, None)
    data = _data(args, plan)  # read once: the search's accuracy check and every model's fine-tuning
    judge = None
    if data is not None:
        from coordinator.prune.pipeline import accuracy_judge

        judge = accuracy_judge(plan, params, data, args.seed)
    if args.sku is not None:
        return _live(args, plan, params, data, judge)
    for flag in ("widths", "runs", "min_time"):
        if getattr(args, flag) is not None:
            raise UsageError(f"--{flag.replace('_', '-')} is for --sku (a real fleet)")
    if args.push:
        raise UsageError("--push is for --sku (a real fleet)")
    fleet = sim.load(args.simulate)
    if fleet.space != args.space:
        raise UsageError(f"{args.simulate} describes a {fleet.space} fleet, not {args.space}")
    progress = ProgressLine(args.quiet)
    fleet.base.predict_ms(plan)  # a table of another resolution is said before any work
    report = simulate(
        fleet,
        plan,
        params,
        args.flops,
        args.objective,
        args.tol,
        args.seed,
        progress,
        oracle=not args.no_oracle,
        clusters_own=args.per_cluster,
        judge=judge,
    )
    progress.clear()
    if args.output or args.onnx or data is not None:
        _write(args, plan, params, data, report["hdap_widths"], args.output, args.onnx, report, progress)
        own = [
            {"cluster": k + 1, "widths": spec} for k, spec in enumerate(report.get("per_cluster_widths", []))
        ]
        _write_clusters(args, plan, params, data, own, progress)
    if args.format == "json":
        print(json.dumps(report))
        return EXIT_OK
    methods = ["hdap", "uniform", "l1", "netadapt"] + ([] if args.no_oracle else ["oracle"])
    if args.per_cluster:
        methods.append("per_cluster")
    print(
        f"{report['network']}: {report['devices']} devices in {report['conditions']} condition(s); "
        f"{report['clusters']} cluster(s), full width tables from {report['full_luts']} device(s) "
        f"({report['measured_share']:.2%}); planned in {report['planning_s']:.1f} s"
    )
    print(f"{'method':<11} {'FLOPs':>6} {'fleet mean ms':>14} {'p90 ms':>8} {'slowest 10% ms':>15}")
    for m in methods:
        print(
            f"{m:<11} {report[m + '_flops']:>6.3f} {report[m + '_ms']:>14.4f} {report[m + '_p90_ms']:>8.4f} "
            f"{report[m + '_slowest_decile_ms']:>15.4f}"
        )
    best = min(report[m + "_ms"] for m in ("uniform", "l1", "netadapt"))
    print(f"hdap vs the best baseline: {100 * (report['hdap_ms'] / best - 1):+.1f} %")
    return EXIT_OK


def _live(args: argparse.Namespace, plan: Any, params: Any, data: Any, judge: Any) -> int:
    from agent.common.errors import UsageError
    from agent.materialize import families as fam
    from coordinator.hdap.live import LiveOptions, run

    if not args.output:
        raise UsageError("--sku needs -o P.npz: where the pruned model and its plan go")
    if args.push and not args.onnx:
        raise UsageError("--push needs --onnx P.onnx (or .tflite): the model file to roll out")
    if args.push and args.per_cluster:
        raise UsageError(
            "--push rolls out the SKU's one model; push each cluster's own (P.clusterK.onnx) to its "
            "devices, listed in the plan, with fleetbench push --device"
        )
    if plan.resolution != fam.DEFAULTS[args.space][1]:
        raise UsageError(
            f"{args.weights} is for {plan.resolution} px input; the devices' tables are measured at "
            f"the family's {fam.DEFAULTS[args.space][1]} px"
        )
    config = _config(args)
    store = _open(config)
    options = LiveOptions(
        grid=args.widths or fam.DEFAULT_GRID,
        sample=args.sample,
        settings=_job_settings(args),
        timeout_s=args.timeout,
        objective=args.objective,
        tol=args.tol,
        seed=args.seed,
    )
    progress = ProgressLine(args.quiet)
    say = _say(progress)
    live = run(store, args.sku, plan, params, args.flops, options, say, judge=judge)
    report = live.as_json(plan)
    report.update(
        network=args.space, sku=args.sku, devices=len(live.devices), planning_s=round(live.planned.seconds, 2)
    )
    report["hdap_widths"] = report["widths"]
    if args.per_cluster:
        from coordinator.hdap.planning import cluster_ms, per_cluster

        planned = live.planned
        results = per_cluster(planned, plan, params, args.flops, args.objective, args.seed, say, judge=judge)
        own = cluster_ms(planned.surrogate, planned.clusters, [r.widths for r in results], plan)
        report["per_cluster"] = [
            {
                "cluster": k + 1,
                "widths": fam.format_widths(r.widths),
                "devices": [live.devices[i] for i in planned.clusters.members(k)],
                "predicted_ms": {
                    live.devices[i]: round(float(own[i]), 6) for i in planned.clusters.members(k)
                },
            }
            for k, r in enumerate(results)
        ]
        _write_clusters(args, plan, params, data, report["per_cluster"], progress)
    _write(args, plan, params, data, report["hdap_widths"], args.output, args.onnx, report, progress)
    if args.push:
        from coordinator.deploy import create_rollout

        row = create_rollout(store, config, args.onnx, sku=args.sku, name=f"{args.space}-hdap")
        report["rollout"] = row.rollout_id
        say(
            f"rollout {row.rollout_id}: {row.name} {row.version} to SKU {args.sku!r}; follow it with "
            f"fleetbench rollouts {row.rollout_id}"
        )
    from agent.common.files import write_text_atomic

    plan_path = (args.output[: -len(".npz")] if args.output.endswith(".npz") else args.output) + ".plan.json"
    write_text_atomic(plan_path, json.dumps(report, indent=1) + "\n")
    say(f"the plan: {plan_path} (fleetbench hdap --explain {plan_path} once the model is out)")
    if args.format == "json":
        print(json.dumps(report))
        return EXIT_OK
    print(
        f"{args.space} for {args.sku!r}: {report['devices']} device(s) in {len(report['clusters'])} "
        f"cluster(s); full width tables from {', '.join(c['representative'] for c in report['clusters'])}"
    )
    print(
        f"widths {report['widths']} (FLOPs {report['flops_ratio']:.3f}): predicted fleet average "
        f"{report['predicted_fleet_ms']:.3f} ms, 90th percentile {report['predicted_p90_ms']:.3f} ms"
    )
    for d, why in live.left_out.items():
        print(f"left out: {d}: {why}")
    return EXIT_OK


#: --recheck: the plan no longer describes the fleet (a device drifted, joined or is gone)
EXIT_REPLAN = 4


def _read_plan(path: str, flag: str) -> dict[str, Any]:
    """A plan ``fleetbench hdap --sku`` wrote, or a one-sentence UsageError."""
    from agent.common.errors import UsageError

    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
        if not all(
            isinstance(report[k], t) for k, t in
            (("clusters", list), ("predicted_ms", dict), ("sku", str), ("network", str))
        ):  # fmt: skip
            raise TypeError
        return dict(report)
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot be read ({err.strerror or err})") from None
    except (ValueError, KeyError, TypeError):
        raise UsageError(
            f"{flag} {path} is not a plan that fleetbench hdap --sku wrote (P.plan.json)"
        ) from None


def _recheck(args: argparse.Namespace) -> int:
    from agent.common.errors import UsageError
    from coordinator.hdap.live import LiveOptions, recheck

    saved = _read_plan(args.recheck, "--recheck")
    if not saved.get("profiles"):
        raise UsageError(
            f"--recheck {args.recheck} holds no profiles (written by an older fleetbench); plan again"
        )
    store = _open(_config(args))
    tol = args.tol if args.tol is not None else float(saved.get("tol", TOL))
    options = LiveOptions(settings=_job_settings(args), timeout_s=args.timeout, tol=tol)
    found = recheck(store, saved, options, _say(ProgressLine(args.quiet)))
    if args.format == "json":
        print(json.dumps(found.as_json()))
    else:
        print(
            f"{'device':<24} {'cluster':>7} {'status':>8} {'to rep.':>8} {'change':>7}  nearest "
            "representative"
        )
        for d, row in found.rows.items():
            cluster = row["cluster"] + 1 if row["cluster"] is not None else "-"
            dist, change = (f"{row[k]:.3f}" if row[k] is not None else "-" for k in ("distance", "change"))
            print(f"{d:<24} {cluster:>7} {row['status']:>8} {dist:>8} {change:>7}  {row['nearest'] or '-'}")
        for d in found.gone:
            print(f"{d:<24} {'':>7} {'gone':>8} {'-':>8} {'-':>7}  (sent no profile)")
        print(
            "to rep.: RMS log slowdown against its representative now; change: against its own "
            "profile when planned"
        )
        print(
            f"the plan holds: every device within {found.tol:g} of its representative"
            if found.holds
            else f"re-plan advised: the plan no longer describes {saved['sku']!r} (tolerance {found.tol:g}): "
            f"fleetbench hdap --sku {saved['sku']!r} ..."
        )
    return EXIT_OK if found.holds else EXIT_REPLAN


def _explain(args: argparse.Namespace) -> int:
    """``--explain P.plan.json``: the plan's clusters, and each device predicted against measured."""
    from agent.common.errors import UsageError

    report = _read_plan(args.explain, "--explain")
    clusters, predicted, sku, network = (
        report["clusters"],
        report["predicted_ms"],
        report["sku"],
        report["network"],
    )
    measured: dict[str, float] = {}
    rollout = report.get("rollout")
    if rollout:
        store = _open(_config(args))
        if not store.rollouts(rollout):
            raise UsageError(f"rollout {rollout} of {args.explain} is not in the coordinator's database")
        measured = {d.device_id: d.p50_ms for d in store.deployments(rollout) if d.p50_ms is not None}
    both = [d for d in predicted if d in measured]
    out: dict[str, Any] = {
        "network": network,
        "sku": sku,
        "widths": report.get("widths"),
        "rollout": rollout,
        "clusters": clusters,
        "devices": {
            d: {
                "cluster": next((k for k, c in enumerate(clusters) if d in c["devices"]), None),
                "predicted_ms": ms,
                "measured_ms": measured.get(d),
            }
            for d, ms in predicted.items()
        },
        "predicted_fleet_ms": report.get("predicted_fleet_ms"),
        # over the devices that measured it, so the two averages are of the same boards
        "predicted_measured_devices_ms": round(sum(predicted[d] for d in both) / len(both), 6)
        if both
        else None,
        "measured_fleet_ms": round(sum(measured[d] for d in both) / len(both), 6) if both else None,
    }
    if args.format == "json":
        print(json.dumps(out))
        return EXIT_OK
    print(f"{network} for {sku!r}: widths {out['widths']}")
    for k, c in enumerate(clusters):
        print(f"cluster {k + 1}: {len(c['devices'])} device(s), representative {c['representative']} "
              f"(its full width table): {', '.join(c['devices'])}")  # fmt: skip
    print(f"{'device':<24} {'cluster':>7} {'predicted ms':>13} {'measured ms':>12} {'error':>8}")
    for d, row in out["devices"].items():
        got = row["measured_ms"]
        error = f"{100 * (row['predicted_ms'] / got - 1):+.1f} %" if got else "-"
        cluster = row["cluster"] + 1 if row["cluster"] is not None else "-"
        shown = f"{got:.3f}" if got else "-"
        print(f"{d:<24} {cluster:>7} {row['predicted_ms']:>13.3f} {shown:>12} {error:>8}")
    if both:
        p, m = out["predicted_measured_devices_ms"], out["measured_fleet_ms"]
        print(f"{'fleet average':<24} {'':>7} {p:>13.3f} {m:>12.3f} {100 * (p / m - 1):>+6.1f} %")
        print(f"measured: the smoke runs of rollout {rollout} (p50 on each of {len(both)} device(s) that "
              "installed it)")  # fmt: skip
    else:
        print("nothing measured yet: " + (f"no device of rollout {rollout} has installed it" if rollout
              else "the model was not rolled out (fleetbench hdap --sku ... --push)"))  # fmt: skip
    return EXIT_OK


def _data(args: argparse.Namespace, plan: Any) -> Any:
    """``--data`` at the network's resolution, None without it."""
    if not args.data:
        return None
    from coordinator.cli.prune import load_data

    return load_data(args.data, plan.resolution)


def _job_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The jobs' settings ``--runs`` and ``--min-time`` ask for (the device's defaults otherwise)."""
    return {k: v for k, v in (("runs", args.runs), ("min_time_s", args.min_time)) if v is not None}


def _say(progress: Any) -> Any:
    """A line on stderr that does not tangle with the progress line."""

    def say(text: str) -> None:
        progress.clear()
        print(f"fleetbench: {text}", file=sys.stderr)

    return say


def _write(
    args: argparse.Namespace,
    plan: Any,
    params: Any,
    data: Any,
    spec: str,
    output: Optional[str],
    onnx: Optional[str],
    report: dict,
    progress: Any,
) -> None:
    """The network at ``spec``, fine-tuned on ``data`` when given (its accuracies into ``report``),
    written to ``output`` (with ``report`` as its plan) and ``onnx``."""
    from agent.materialize import families as fam
    from agent.materialize.weights import save, to_network
    from coordinator.prune.pipeline import recover
    from coordinator.prune.slicing import narrow_to

    small, small_params = narrow_to(plan, params, fam.parse_widths(args.space, spec))
    if data is not None:
        small_params, pruned, tuned = recover(
            small, small_params, data, args.finetune_epochs, progress, args.seed
        )
        progress.clear()
        report["hdap_acc_pruned"] = round(pruned, 6) if pruned is not None else None
        if tuned is not None:
            report["hdap_acc"] = round(tuned, 6)
    if output:
        meta = {
            "method": "hdap",
            "flops_target": args.flops,
            "fleet": args.simulate or args.sku,
            "plan": report,
        }
        save(output, small, small_params, meta)
    if onnx:
        from agent.materialize import write_model

        write_model(to_network(small, small_params, f"{args.space} hdap {args.flops:g}"), onnx)
    print(f"fleetbench: wrote {' and '.join(p for p in (output, onnx) if p)}", file=sys.stderr)


def _write_clusters(
    args: argparse.Namespace, plan: Any, params: Any, data: Any, entries: list[dict[str, Any]], progress: Any
) -> None:
    """Each cluster's own model (``entries``: cluster, widths) beside -o and --onnx, as
    P.clusterK.npz and P.clusterK.onnx; the paths go into its entry."""
    for k, entry in enumerate(entries):
        entry["model"], entry["onnx"] = _cluster_paths(args.output, k), _cluster_paths(args.onnx, k)
        if entry["model"] or entry["onnx"]:
            _write(args, plan, params, data, entry["widths"], entry["model"], entry["onnx"], entry, progress)


def _cluster_paths(path: Optional[str], k: int) -> Optional[str]:
    """P.npz -> P.cluster2.npz: where cluster ``k``'s own model goes."""
    if not path:
        return None
    stem, dot, ext = path.rpartition(".")
    return f"{stem}.cluster{k + 1}.{ext}" if dot else f"{path}.cluster{k + 1}"
