"""Evaluation of the cross-device predictor and the optimizer network (issue 17).

Data: ``coordinator/data/nb201_devices_ms.csv`` (29 distinct devices; 27 over all 15,625
NAS-Bench-201 architectures, the Jetson TX2 and Coral over 1,999) and the CIFAR-10 accuracies
of all 15,625.  Every part trains on the reference devices only; the probes are chosen by the
trained model, as the shipped ones are, among the 1,999 architectures of the public table
(``nb201_latency_ms.csv``) that every reference device *and* the held-out device have
measured (which cells were measured, never their values).

  predictor  leave one device out, all 28 others as references: SRCC of the held-out device's
             predicted column over its measured architectures other than those used, from the
             probes only and from the probes + 10 random architectures (--seeds draws)
  help       HELP's Table 3 split: its 13 reference devices; each of its 6 test devices gives
             the probes + 10 random architectures; SRCC over the rest
  refs       leave one device out with 6, 15 and 28 references drawn at random (--draws)
  optimizer  leave one device out; budgets at the 25/50/75th percentile of the held-out
             device's true latencies: the share of picks whose true latency exceeds the budget
             by more than 5 %, regret against the best truly fitting architecture, decision
             time; the network against predict-then-search on the same splits
  throughput decisions per second for --pairs device-budget pairs (the network, batched)

    python benchmarks/crossdevice_eval.py predictor help refs optimizer throughput
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy.stats import spearmanr

from coordinator.ranking import (
    NB201_DEVICES,
    NB201_FULL_ACCURACY,
    NB201_LATENCY,
    SHIPPED_OPTIMIZERS,
    crossdevice,
    optimizer,
)
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import read_accuracy, read_table

HELP_TRAIN = ("1080ti_1", "1080ti_32", "1080ti_256", "silver_4114", "silver_4210r", "samsung_a50", "pixel3",
              "essential_ph_1", "samsung_s7", "titanx_1", "titanx_32", "titanx_256", "gold_6240")  # fmt: skip
#: HELP's published Table 3 (10 samples per device), from its README
HELP_TEST = {"titan_rtx_256": 0.987, "gold_6226": 0.989, "fpga": 0.985, "pixel2": 0.802, "raspi4": 0.890,
             "eyeriss": 0.940}  # fmt: skip
SPACE = "nas-bench-201"


class Data:
    def __init__(self) -> None:
        table = read_table(NB201_DEVICES)
        self.devices = list(table.devices)
        self.archs = table.archs
        self.logs = np.log(table.ms)
        enc = get_space(SPACE).encode_all(table.archs)
        self.onehot, self.alive = enc["onehot"], enc["alive"]
        acc, _ = read_accuracy(NB201_FULL_ACCURACY, "cifar10_top1")
        self.accuracy = np.array([acc[a] for a in table.archs])
        public = set(read_table(NB201_LATENCY).archs)
        self.public = np.array([a in public for a in table.archs])

    def fit(self, refs: list[int], target: int) -> crossdevice.CrossDevicePredictor:
        return crossdevice.CrossDevicePredictor().fit(
            self.onehot,
            self.alive,
            self.logs[:, refs],
            probe_candidates=self.public & ~np.isnan(self.logs[:, target]),
        )

    def srcc(self, model: crossdevice.CrossDevicePredictor, target: int, extra: int, seed: int) -> float:
        basis = model.basis(self.onehot, self.alive)
        measured = np.flatnonzero(~np.isnan(self.logs[:, target]))
        rows = model.probe_rows_
        if extra:
            rng = np.random.default_rng(seed)
            rows = np.r_[rows, rng.choice(np.setdiff1d(measured, rows), extra, replace=False)]
        fit = model.adapt(basis[rows], self.logs[rows, target])
        held = np.setdiff1d(measured, rows)
        return float(spearmanr(fit.predict(basis[held]), self.logs[held, target]).correlation)


def _say(text: str) -> None:
    print(text, flush=True)


def part_predictor(data: Data, args: argparse.Namespace) -> None:
    d = len(data.devices)
    rows = []
    for t in range(d):
        model = data.fit([j for j in range(d) if j != t], t)
        only = data.srcc(model, t, 0, 0)
        more = float(np.mean([data.srcc(model, t, 10, s) for s in range(args.seeds)]))
        rows.append((only, more))
        _say(f"  {data.devices[t]:20s} probes only {only:.3f}   probes + 10 {more:.3f}")
    r = np.array(rows)
    _say(f"predictor LODO ({d} devices): probes only mean {r[:, 0].mean():.4f} worst {r[:, 0].min():.4f} "
         f"({data.devices[int(r[:, 0].argmin())]}); probes + 10 mean {r[:, 1].mean():.4f} "
         f"worst {r[:, 1].min():.4f}")  # fmt: skip


def part_help(data: Data, args: argparse.Namespace) -> None:
    refs = [data.devices.index(n) for n in HELP_TRAIN]
    wins, scores = 0, []
    for name, published in HELP_TEST.items():
        t = data.devices.index(name)
        model = data.fit(refs, t)
        s = float(np.mean([data.srcc(model, t, 10, seed) for seed in range(args.seeds)]))
        scores.append(s)
        wins += s > published
        _say(f"  {name:14s} {s:.3f}  (HELP {published:.3f})")
    _say(f"HELP Table 3 split: mean {np.mean(scores):.4f} (HELP 0.932); above HELP on {wins} of 6")


def part_refs(data: Data, args: argparse.Namespace) -> None:
    d = len(data.devices)
    rng = np.random.default_rng(0)
    for count in (6, 15, 28):
        scores = []
        for _ in range(args.draws if count < d - 1 else 1):
            for t in range(d):
                others = [j for j in range(d) if j != t]
                refs = sorted(rng.choice(others, count, replace=False)) if count < len(others) else others
                scores.append(data.srcc(data.fit(list(refs), t), t, 0, 0))
        _say(f"  {count:2d} references: mean SRCC {np.mean(scores):.4f}  worst {np.min(scores):.4f}  "
             f"({len(scores)} held-out evaluations)")  # fmt: skip


def part_optimizer(data: Data, args: argparse.Namespace) -> None:
    d = len(data.devices)
    over5 = np.log(1.05)
    results: dict[str, list[tuple[float, float, float]]] = {"network": [], "search": []}
    fallbacks = 0
    for t in range(d):
        refs = [j for j in range(d) if j != t]
        model = data.fit(refs, t)
        trained = crossdevice.TrainedPredictor(
            model,
            SPACE,
            tuple(data.archs[i] for i in model.probe_rows_),
            tuple(data.devices[j] for j in refs),
            "-",
        )
        basis = model.basis(data.onehot, data.alive)
        started = time.monotonic()
        net = optimizer.train(trained, basis, data.onehot, data.accuracy, "cifar10_top1", model.probe_rows_,
                              synthetic=args.synthetic, seed=t)  # fmt: skip
        train_s = time.monotonic() - started
        measured = np.flatnonzero(~np.isnan(data.logs[:, t]))
        truth = data.logs[measured, t]
        probe_log = data.logs[model.probe_rows_, t]
        cand_basis, cand_onehot, cand_acc = basis[measured], data.onehot[measured], data.accuracy[measured]
        for q in (25, 50, 75):
            log_budget = float(np.log(np.percentile(np.exp(truth), q)))
            best = cand_acc[truth <= log_budget].max()
            t0 = time.perf_counter()
            fit = model.adapt(basis[model.probe_rows_], probe_log)
            dec = optimizer.decide(
                net, trained, fit, probe_log, log_budget, cand_basis, cand_onehot, cand_acc
            )
            t_net = time.perf_counter() - t0
            t0 = time.perf_counter()
            fit = model.adapt(basis[model.probe_rows_], probe_log)
            row = optimizer.pick_under_budget(
                fit.predict(cand_basis), fit.log_std(cand_basis), cand_acc, log_budget
            )
            t_search = time.perf_counter() - t0
            for name, r, took in (
                ("network", None if dec is None else dec.row, t_net),
                ("search", row, t_search),
            ):
                if r is None:  # nothing predicted to fit: counts as over budget, no regret
                    results[name].append((1.0, 0.0, took))
                else:
                    results[name].append((float(truth[r] > log_budget + over5), best - cand_acc[r], took))
            fallbacks += bool(dec is not None and dec.fallback)
        n = results["network"][-3:]
        s = results["search"][-3:]
        _say(f"  {data.devices[t]:20s} network: over {sum(x[0] for x in n):.0f}/3 regret "
             f"{np.mean([x[1] for x in n]):5.2f}   search: over {sum(x[0] for x in s):.0f}/3 regret "
             f"{np.mean([x[1] for x in s]):5.2f}   (trained in {train_s:.0f} s)")  # fmt: skip
    for name, rows in results.items():
        r = np.array(rows)
        _say(f"optimizer LODO, {name}: over budget by > 5 %: {r[:, 0].mean() * 100:.1f} % of {len(r)} picks; "
             f"regret mean {r[:, 1].mean():.3f} points (max {r[:, 1].max():.2f}); decision "
             f"median {np.median(r[:, 2]) * 1000:.2f} ms, max {r[:, 2].max() * 1000:.2f} ms")  # fmt: skip
    _say(f"  the network's shortlist had no fitting architecture (predict-then-search decided): {fallbacks}")


def part_throughput(data: Data, args: argparse.Namespace) -> None:
    trained = crossdevice.shipped(SPACE)
    assert trained is not None
    net = optimizer.load(SHIPPED_OPTIMIZERS[(SPACE, "cifar10_top1")], SPACE)
    model = trained.model
    basis = model.basis(data.onehot, data.alive)
    rows = crossdevice.probe_rows(trained, data.archs)
    probe_basis = basis[np.array(rows)]
    rng = np.random.default_rng(1)
    chunk = 1000
    n = args.pairs
    done = 0
    started = time.perf_counter()
    while done < n:
        m = min(chunk, n - done)
        w = rng.multivariate_normal(model.prior_mean_, model.prior_cov_, size=m)
        probe_log = probe_basis[:, 1:] @ w.T  # (p, m)
        centre = probe_log.mean(axis=0)
        budgets = centre + rng.uniform(-1.0, 1.0, m)
        net.shortlist(optimizer.features(probe_log.T, budgets), data.onehot, k=1)
        done += m
    took = time.perf_counter() - started
    _say(f"throughput: {n} device-budget pairs, network forward + decoding over all 15,625 candidates, "
         f"batches of {chunk}: {took:.1f} s, {n / took:,.0f} decisions/s")  # fmt: skip
    # the whole space is every op on every edge: its most likely architecture is each edge's argmax
    chunk, done, started = 10_000, 0, time.perf_counter()
    while done < n:
        m = min(chunk, n - done)
        w = rng.multivariate_normal(model.prior_mean_, model.prior_cov_, size=m)
        probe_log = probe_basis[:, 1:] @ w.T
        budgets = probe_log.mean(axis=0) + rng.uniform(-1.0, 1.0, m)
        logp = net.edge_log_probs(optimizer.features(probe_log.T, budgets))
        logp.reshape(m, 6, 5).argmax(axis=2)
        done += m
    took = time.perf_counter() - started
    _say(f"throughput: {n} device-budget pairs, network forward + each edge's most likely op (the whole "
         f"space), batches of {chunk}: {took:.1f} s, {n / took:,.0f} decisions/s")  # fmt: skip
    # the full decision (posterior + network + shortlist check) and predict-then-search, one at a time
    fits = []
    for _ in range(200):
        w = rng.multivariate_normal(model.prior_mean_, model.prior_cov_)
        y = probe_basis[:, 1:] @ w
        fits.append((y, float(y.mean() + rng.uniform(-1, 1))))
    t0 = time.perf_counter()
    for y, b in fits:
        fit = model.adapt(probe_basis, y)
        optimizer.decide(net, trained, fit, y, b, basis, data.onehot, data.accuracy)
    t_net = (time.perf_counter() - t0) / len(fits)
    t0 = time.perf_counter()
    for y, b in fits:
        fit = model.adapt(probe_basis, y)
        optimizer.pick_under_budget(fit.predict(basis), fit.log_std(basis), data.accuracy, b)
    t_search = (time.perf_counter() - t0) / len(fits)
    _say(f"one at a time (adapt + decide, 15,625 candidates): network {t_net * 1000:.2f} ms "
         f"({1 / t_net:,.0f}/s; 10^6 pairs in {t_net * 1e6 / 60:.0f} min), predict-then-search "
         f"{t_search * 1000:.2f} ms ({1 / t_search:,.0f}/s; 10^6 pairs in {t_search * 1e6 / 60:.0f} min); "
         f"ratio {t_search / t_net:.2f}")  # fmt: skip


PARTS = {"predictor": part_predictor, "help": part_help, "refs": part_refs, "optimizer": part_optimizer,
         "throughput": part_throughput}  # fmt: skip


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", metavar="PART", help=f"any of {', '.join(PARTS)} (default: all)")
    ap.add_argument("--seeds", type=int, default=5, help="draws of the 10 random samples (default 5)")
    ap.add_argument("--draws", type=int, default=3, help="draws of the reference devices (default 3)")
    ap.add_argument("--synthetic", type=int, default=1000, help="synthetic devices per optimizer fold")
    ap.add_argument("--pairs", type=int, default=1_000_000, help="device-budget pairs for throughput")
    args = ap.parse_args(argv)
    data = Data()
    for part in args.parts or PARTS:
        started = time.monotonic()
        _say(f"== {part}")
        PARTS[part](data, args)
        _say(f"   ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
