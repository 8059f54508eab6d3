"""Evaluation harness for the ranking core: leave one device out of the public table.

For each held-out device of ``coordinator/data/nb201_latency_ms.csv``, the other
devices are the references (a reference with gaps, the Coral, is completed from its
own lookup table first).  k architectures of the held-out device are "measured"
(chosen at random, or by a planner: doptimal, spread), each method predicts the rest, and:

  SRCC    on the architectures not sampled; mean over seeds, then the mean over
          devices and the worst device
  regret  picking the most accurate architecture (CIFAR-10) whose *predicted* latency
          fits a budget at the 25th/50th/75th percentile of the device's true
          latencies: accuracy lost against the best architecture that truly fits, and
          how often the pick's true latency breaks the budget

Two settings: every other device as a reference (``predict`` without --proxy), and
one proxy only (``predict --proxy``; the proxy is the best-agreeing reference).

    python benchmarks/ranking_eval.py [--seeds 10] [--ks 5,10,20,50]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from coordinator.ranking import NB201_ACCURACY, NB201_LATENCY, planning, uncertainty
from coordinator.ranking.fill import order_by_agreement
from coordinator.ranking.monotonicity import spearman
from coordinator.ranking.pareto import best_under_budget
from coordinator.ranking.predictors import Design, LookupTable, make
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import read_accuracy, read_table

MULTI_METHODS = ("none", "lut", "adaproxy", "multiref", "hier", "fleet")
PROXY_METHODS = ("none", "adaproxy", "multiref", "hier", "fleet")
BUDGET_PCTS = (25, 50, 75)


def completed_logs(table, base):
    """Log-latency with gappy columns completed from their own lookup tables (for use as references)."""
    logs = np.log(table.ms)
    out = logs.copy()
    for j in range(len(table.devices)):
        gaps = np.isnan(logs[:, j])
        if gaps.any():
            out[gaps, j] = LookupTable().fit(base, logs[:, j]).predict(base)[gaps]
    return logs, out


def run(args):
    table = read_table(NB201_LATENCY)
    space = get_space("nas-bench-201")
    acc_map, _ = read_accuracy(NB201_ACCURACY, "cifar10_top1")
    acc = np.array([acc_map[a] for a in table.archs])
    base = Design.build(space, table.archs, None)
    logs, refs_all = completed_logs(table, base)
    d = len(table.devices)
    # results[(setting, planner, method, k)] -> list over devices of per-seed lists
    srcc: dict = {}
    budget: dict = {}
    for t in range(d):
        others = order_by_agreement(table, [j for j in range(d) if j != t and table.measured[:, j].sum() > 0])
        settings = {"multi": others, "proxy": others[:1]}
        y = logs[:, t]
        avail = np.flatnonzero(~np.isnan(y))
        true_ms = table.ms[:, t]
        budgets = np.percentile(true_ms[avail], BUDGET_PCTS)
        for setting, refs in settings.items():
            design = base.with_refs(refs_all[:, refs])
            methods = MULTI_METHODS if setting == "multi" else PROXY_METHODS
            for planner in ("random", "doptimal", "spread"):
                if setting == "proxy" and planner != "random" and not args.proxy_planned:
                    continue
                for k in args.ks:
                    for seed in range(args.seeds):
                        idx = planning.plan(design, k, planner, seed=seed, candidates=avail)
                        ys = np.full_like(y, np.nan)
                        ys[idx] = y[idx]
                        test = np.setdiff1d(avail, idx)
                        for m in methods:
                            est = make(m).fit(design, ys)
                            pred = est.predict(design)
                            key = (setting, planner, m, k)
                            srcc.setdefault(key, {}).setdefault(t, []).append(spearman(pred[test], y[test]))
                            if k != 10 or planner != "random":
                                continue
                            # The pick as `predict` + `rank` make it: measured cells keep their value;
                            # predicted ones get no margin, or the auto margin from the CV error.
                            ms = np.where(np.isnan(ys), np.exp(pred), true_ms)[avail]
                            predicted = np.isnan(ys)[avail]
                            sigma = uncertainty.cv_log_error(est, design, ys)
                            policies = {"none": 1.0, "auto": uncertainty.margin_factor(sigma)}
                            for policy, factor in policies.items():
                                scaled = np.where(predicted, ms * factor, ms)
                                for b, pct in zip(budgets, BUDGET_PCTS):
                                    fits = true_ms[avail] <= b
                                    best = acc[avail][fits].max()
                                    i = best_under_budget(scaled, acc[avail], b)
                                    picked = acc[avail][i] if i is not None else acc[avail][fits].min()
                                    broken = i is not None and true_ms[avail][i] > b
                                    budget.setdefault((*key, policy, pct), []).append(
                                        (best - picked, broken, i is None)
                                    )
        print(f"  {table.devices[t]} done", file=sys.stderr)
    return table, srcc, budget


def summary(per_device):
    means = [float(np.mean(v)) for v in per_device.values()]
    return float(np.mean(means)), float(np.min(means))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--ks", default="5,10,20,50")
    ap.add_argument("--proxy-planned", action="store_true", help="also planned samples in the proxy setting")
    args = ap.parse_args()
    args.ks = [int(k) for k in args.ks.split(",")]
    t0 = time.time()
    table, srcc, budget = run(args)
    print(f"leave-one-device-out on {len(table.devices)} devices x {len(table.archs)} architectures, "
          f"{args.seeds} seeds")  # fmt: skip
    print("SRCC on the architectures not sampled: mean over devices (worst device)")
    for setting, title in (("multi", "every other device a reference"), ("proxy", "one proxy (--proxy)")):
        for planner in ("random", "doptimal", "spread"):
            keys = [k for k in srcc if k[0] == setting and k[1] == planner]
            if not keys:
                continue
            methods = list(dict.fromkeys(k[2] for k in keys))
            print(f"\n{title}, {planner} samples")
            print("method    " + "".join(f"{'k=' + str(k):>16}" for k in args.ks))
            for m in methods:
                cells = [summary(srcc[(setting, planner, m, k)]) for k in args.ks]
                print(f"{m:<10}" + "".join(f"{mean:>9.3f} ({worst:.3f})" for mean, worst in cells))
    print("\nper device, fleet, k=10, every other device a reference:")
    for planner in ("random", "doptimal", "spread"):
        per = srcc.get(("multi", planner, "fleet", 10), {})
        print(f"  {planner:<8}" + "  ".join(f"{table.devices[t]} {np.mean(v):.3f}" for t, v in per.items()))
    print("\nbudgeted pick at k=10, random samples (cifar10_top1): mean regret in points / share of picks")
    print("breaking the budget, at budgets = the 25th/50th/75th percentile of the device's true latencies")
    for setting in ("multi", "proxy"):
        for policy, title in (("none", "no margin"), ("auto", "auto margin (rank's default)")):
            methods = [m for m in (MULTI_METHODS if setting == "multi" else PROXY_METHODS)
                       if (setting, "random", m, 10, policy, BUDGET_PCTS[0]) in budget]  # fmt: skip
            print(
                f"  {setting}, {title}:"
                + "".join(f"{'p' + str(p):>15}" for p in BUDGET_PCTS)
                + f"{'all':>22}"
            )
            for m in methods:
                parts, pooled = [], []
                for pct in BUDGET_PCTS:
                    v = budget[(setting, "random", m, 10, policy, pct)]
                    pooled += v
                    parts.append(
                        f"{np.mean([r for r, _, _ in v]):>8.2f} /{100 * np.mean([b for _, b, _ in v]):>3.0f}%"
                    )
                regret = np.mean([r for r, _, _ in pooled])
                broken = 100 * np.mean([b for _, b, _ in pooled])
                none = 100 * np.mean([n for _, _, n in pooled])
                print(f"    {m:<10}" + "".join(f"{p:>15}" for p in parts)
                      + f"   {regret:.2f} / {broken:.1f}% (no pick {none:.1f}%)")  # fmt: skip
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
