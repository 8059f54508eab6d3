"""HDAP on an emulated drifted fleet of real agents on this machine (issue 19).

A real mosquitto, a real coordinator (re-ranking off) and ten real agents, each an emulated board
of one SKU whose conditions diverge the way aged boards do:

  healthy-1..3    nothing
  throttled-1..3  a CPU quota (cgroup v1 cpu, 2 ms period) of 55, 65 and 75 % of one core: a
                  throttled clock (the agent sees the quota and times groups of runs lasting two
                  periods, so short layers are slowed as evenly as whole models)
  onecore-1..2    one usable core of two (cgroup v1 cpuset): a board with a core gone or taken
  noisy-1..2      a memory-bandwidth hog on the other core while the board measures (one and two
                  copy streams): a noisy neighbour, or worn memory

Every job runs with two threads.  The two cores are shared, so the devices are measured one at a
time (the hog runs only while its board measures); nothing else runs meanwhile.

For each network (mobilenetv1 at 224 px: latency only; resnet56 at 32 px, trained on digits):
  1. the oracle's tables: a full width table (25/50/75/100 % grid) from every board; from them,
     how unevenly each condition changes the per-layer costs (per layer kind, against the healthy
     boards' median)
  2. HDAP through ``coordinator.hdap.live`` (profile jobs, clustering, the representatives' own
     width tables, the search), and the baselines: uniform, l1, NetAdapt on one healthy board's
     table (with digits for resnet56), and the oracle's search on every board's table
  3. every method's network timed on every board: one job per board and round with the five
     width specs, 5 rounds in rotated order; a board's latency is the median of its rounds' p50,
     and the rounds' spread is reported
  4. resnet56: each pruned network fine-tuned 5 epochs on digits, its test accuracy

The last lines are one JSON object per network.

    python benchmarks/hdap_fleet.py [--networks mobilenetv1 resnet56] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
from _helpers import REPO, load_test_helper

from agent.materialize import families as fam
from agent.materialize.lut import KINDS, kind
from agent.materialize.weights import load, seeded

CPU = "/sys/fs/cgroup/cpu"
CPUSET = "/sys/fs/cgroup/cpuset"
BOARDS = [
    ("healthy-1", "healthy", 0),
    ("healthy-2", "healthy", 0),
    ("healthy-3", "healthy", 0),
    ("throttled-1", "throttled", 0.55),
    ("throttled-2", "throttled", 0.65),
    ("throttled-3", "throttled", 0.75),
    ("onecore-1", "onecore", 0),
    ("onecore-2", "onecore", 0),
    ("noisy-1", "noisy", 1),
    ("noisy-2", "noisy", 2),
]
SETTINGS = {
    "threads": 2,
    "runs": 10,
    "warmup_runs": 2,
    "warmup_time_s": 0.02,
    "min_time_s": 0.05,
    "max_time_s": 5.0,
}
#: a memory-bandwidth hog: copying 64 MB over and over
HOG = "import numpy as np\na = np.ones(1 << 24, np.float32)\nb = np.empty_like(a)\nwhile 1: np.copyto(b, a)\n"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Board:
    """One emulated board: its agent process and its condition."""

    def __init__(self, name: str, condition: str, level: float, agent: Any) -> None:
        self.name, self.condition, self.level, self.agent = name, condition, level, agent
        self.groups: list[str] = []
        self.hogs: list[subprocess.Popen] = []

    def constrain(self) -> None:
        pid = str(self.agent.proc.pid)
        if self.condition == "throttled":
            path = os.path.join(CPU, f"fleetbench-{self.name}")
            os.makedirs(path, exist_ok=True)
            _write(os.path.join(path, "cpu.cfs_period_us"), "2000")
            _write(os.path.join(path, "cpu.cfs_quota_us"), str(int(2000 * self.level)))
            _write(os.path.join(path, "cgroup.procs"), pid)
            self.groups.append(path)
        elif self.condition == "onecore":
            path = os.path.join(CPUSET, f"fleetbench-{self.name}")
            os.makedirs(path, exist_ok=True)
            _write(os.path.join(path, "cpuset.cpus"), "0")
            _write(os.path.join(path, "cpuset.mems"), "0")
            _write(os.path.join(path, "cgroup.procs"), pid)
            self.groups.append(path)

    def __enter__(self) -> Board:
        if self.condition == "noisy":
            for _ in range(int(self.level)):
                self.hogs.append(subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", HOG]))
        return self

    def __exit__(self, *exc: Any) -> None:
        for hog in self.hogs:
            hog.kill()
            hog.wait()
        self.hogs = []

    def release(self) -> None:
        for path in self.groups:
            root = os.path.dirname(path)
            try:
                with open(os.path.join(path, "cgroup.procs")) as fh:
                    for pid in fh.read().split():
                        with contextlib.suppress(OSError):  # gone meanwhile
                            _write(os.path.join(root, "cgroup.procs"), pid)
                os.rmdir(path)
            except OSError as err:
                log(f"could not remove {path}: {err}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


class Fleet:
    """The broker, the coordinator and the boards; jobs go to one board at a time."""

    def __init__(self, work: str) -> None:
        self.work = work
        broker_mod, self.dp = load_test_helper("broker"), load_test_helper("daemon_proc")
        self.broker = broker_mod.Mosquitto(work)
        self.broker.start()
        self.config = os.path.join(work, "coordinator.toml")
        with open(self.config, "w") as fh:
            fh.write(
                f'db = "{work}/fleet.sqlite"\nstate_dir = "{work}/coord"\ntick_s = 0.2\n'
                f'[broker]\nurl = "{self.broker.url}"\n[rerank]\nenabled = false\n'
            )
        out = self.dp.fleetbench("keygen", "--config", self.config)
        public = out.stdout.split('public_key = "')[1].split('"')[0]
        self.coord = self.dp.start_configured_coordinator(self.config)
        self.boards: list[Board] = []
        for name, condition, level in BOARDS:
            d = os.path.join(work, name)
            os.makedirs(d, exist_ok=True)
            cfg = self.dp.write_config(
                os.path.join(d, "agent.toml"), self.broker.url, f'[models]\npublic_key = "{public}"\n'
            )
            agent = self.dp.AgentProcess(d, cfg, name)
            agent.start()
            self.boards.append(Board(name, condition, level, agent))
        for b in self.boards:
            b.agent.wait_note("READY=1")
            b.constrain()
        from coordinator.store import open_store

        self.dp.eventually(lambda: os.path.exists(f"{work}/fleet.sqlite"), 60)
        self.store = open_store(f"{work}/fleet.sqlite", migrate=False)
        names = {b.name for b in self.boards}

        def registered() -> Any:
            found = [d for d in self.store.fleet() if d.device_id in names]
            return found if len(found) == len(names) else None

        seen = self.dp.eventually(registered, 60)
        (self.sku,) = {d.sku for d in seen}
        self.by_name = {b.name: b for b in self.boards}

    def dispatch(self, store: Any, spec: Any, targets: list[str], timeout_s: float) -> dict[str, Any]:
        from coordinator.fleetjobs import follow, queue

        answers = {}
        for name in targets:
            with self.by_name[name]:
                queue(store, spec, [name])
                answers.update(follow(store, spec.job_id, [name], timeout_s, poll_s=0.2))
        return answers

    def close(self) -> None:
        for b in self.boards:
            b.__exit__()
            b.release()
            b.agent.close()
        self.coord.terminate()
        self.coord.wait(30)
        self.broker.stop()


def job(**fields: Any) -> Any:
    import msgspec

    from agent.protocol.jobs import JobSettings, JobSpec
    from coordinator.fleetjobs import new_job_id

    return JobSpec(job_id=new_job_id("bench"), settings=msgspec.convert(SETTINGS, JobSettings), **fields)


def full_tables(fleet: Fleet, family: str) -> dict[str, Any]:
    from agent.materialize.lut import from_rows
    from agent.protocol.jobs import WidthLutItem
    from coordinator.prune.widthlut import WidthLut

    tables = {}
    for b in fleet.boards:
        started = time.monotonic()
        answers = fleet.dispatch(
            fleet.store, job(width_lut=WidthLutItem(space=family, sample=3)), [b.name], 3600
        )
        rows = next(r["lut"]["rows"] for r in answers[b.name].results if r.get("lut"))
        tables[b.name] = WidthLut(from_rows(rows), b.name)
        log(f"{family}: {b.name}'s full width table in {time.monotonic() - started:.0f} s")
    return tables


def unevenness(fleet: Fleet, tables: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Per condition and layer kind: the median and range of the per-layer slowdown against the
    healthy boards' median."""
    healthy = [n for n, c, _ in BOARDS if c == "healthy"]
    keys = sorted(tables[healthy[0]].table)
    base = {k: statistics.median(tables[h].table[k] for h in healthy) for k in keys}
    out: dict[str, dict[str, list[float]]] = {}
    for condition in dict.fromkeys(c for _, c, _ in BOARDS if c != "healthy"):
        names = [n for n, c, _ in BOARDS if c == condition]
        per_kind: dict[str, list[float]] = {}
        for k in keys:
            ratio = statistics.median(tables[n].table[k] for n in names) / base[k]
            per_kind.setdefault(kind(k), []).append(ratio)
        out[condition] = {
            kd: [round(statistics.median(v), 3), round(min(v), 3), round(max(v), 3)]
            for kd, v in per_kind.items()
        }
    return out


def measure(
    fleet: Fleet, family: str, specs: dict[str, str], rounds: int
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Every board's p50 of every method's network, the median over ``rounds`` jobs, order rotated;
    and per method the spread of the rounds (max - min over median, the median over boards)."""
    from agent.protocol.jobs import ArchItem

    distinct = list(dict.fromkeys(specs.values()))
    p50: dict[str, dict[str, list[float]]] = {b.name: {s: [] for s in distinct} for b in fleet.boards}
    for r in range(rounds):
        order = distinct[r % len(distinct) :] + distinct[: r % len(distinct)]
        for b in fleet.boards:
            archs = tuple(ArchItem(space=family, arch=s) for s in order)
            answers = fleet.dispatch(fleet.store, job(architectures=archs), [b.name], 3600)
            for res in answers[b.name].results:
                if res.get("result") and res.get("architecture"):
                    p50[b.name][res["architecture"]["arch"]].append(res["result"]["stats"]["p50_ms"])
        log(f"{family}: round {r + 1}/{rounds} measured on every board")
    spread = {
        m: round(
            statistics.median((max(p50[b][s]) - min(p50[b][s])) / statistics.median(p50[b][s]) for b in p50),
            4,
        )
        for m, s in specs.items()
    }
    return {b: {m: statistics.median(p50[b][s]) for m, s in specs.items()} for b in p50}, spread


def accuracy_after(plan: Any, params: Any, widths: tuple[int, ...], data: Any, epochs: int) -> float:
    from coordinator.prune.pipeline import recover
    from coordinator.prune.slicing import narrow_to

    tuned = recover(*narrow_to(plan, params, widths), data, epochs)[2]
    assert tuned is not None
    return tuned


def run_network(fleet: Fleet, family: str, args: argparse.Namespace) -> dict[str, Any]:
    from coordinator.hdap.fleetmodel import FleetModel
    from coordinator.hdap.live import LiveOptions, run
    from coordinator.hdap.search import search
    from coordinator.prune.methods import NetAdaptSettings, l1_widths, netadapt, uniform_widths

    plan = fam.plan(family)
    data = None
    if family == "resnet56":
        weights = os.path.join(args.work, "resnet56.npz")
        if not os.path.exists(weights):
            log("training resnet56 on digits")
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "agent",
                    "train",
                    "--space",
                    "resnet56",
                    "--data",
                    "digits",
                    "--epochs",
                    str(args.epochs),
                    "-o",
                    weights,
                    "-q",
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": REPO},
            )
            if out.returncode:
                raise SystemExit(out.stderr)
        plan, params, _ = load(weights)
        from coordinator.prune import data as datasets

        data = datasets.load("digits", plan.resolution)
    else:
        params = seeded(plan, 0)
    judge = None
    if data is not None:
        from coordinator.prune.pipeline import accuracy_judge

        judge = accuracy_judge(plan, params, data)
    tables = full_tables(fleet, family)
    uneven = unevenness(fleet, tables)
    log(f"{family}: per-kind slowdowns (median, min, max over layers): {json.dumps(uneven)}")
    started = time.monotonic()
    live = run(
        fleet.store,
        fleet.sku,
        plan,
        params,
        args.flops,
        LiveOptions(sample=3, settings=SETTINGS, timeout_s=3600, seed=0),
        log,
        fleet.dispatch,
        judge=judge,
    )
    log(
        f"{family}: HDAP planned in {time.monotonic() - started:.0f} s with "
        f"{live.planned.clusters.k} full tables "
        f"({', '.join(live.representatives)})"
    )
    widths = {
        "hdap": live.planned.result.widths,
        "uniform": uniform_widths(plan, args.flops),
        "l1": l1_widths(plan, params, args.flops),
    }
    one = "healthy-1"
    settings = NetAdaptSettings(step=0.04, short_batches=10)
    widths["netadapt"] = netadapt(plan, params, args.flops, tables[one], data, settings, log)[0].widths
    names = [b.name for b in fleet.boards]
    truth = FleetModel([tables[n] for n in names], np.arange(len(names)), np.ones((len(names), len(KINDS))))
    widths["oracle"] = search(plan, params, args.flops, truth, judge=judge).widths
    specs = {m: fam.format_widths(w) for m, w in widths.items()}
    for m, s in specs.items():
        log(f"{family}: {m} widths {s} (FLOPs {fam.plan(family, s).macs / plan.macs:.3f})")
    measured, spread = measure(fleet, family, specs, args.rounds)
    report: dict[str, Any] = {"network": family}
    for m in specs:
        per_board = np.array([measured[n][m] for n in names])
        report[f"{m}_ms"] = round(float(per_board.mean()), 4)
        report[f"{m}_p90_ms"] = round(float(np.quantile(per_board, 0.9)), 4)
        report[f"{m}_slowest_ms"] = round(float(per_board.max()), 4)
    report["measured_share"] = round(live.planned.clusters.k / len(names), 3)
    report["clusters"] = live.planned.clusters.k
    report["predicted_hdap_ms"] = round(live.planned.result.mean_ms, 4)
    for m in specs:
        report[f"{m}_acc"] = None
        if data is not None:
            report[f"{m}_acc"] = round(accuracy_after(plan, params, widths[m], data, args.finetune), 4)
            log(f"{family}: {m} accuracy after {args.finetune} epochs: {report[f'{m}_acc']}")
    report["round_spread"] = spread
    if judge is not None:
        report["judged_acc"] = {m: round(judge(widths[m]), 4) for m in specs}
    report["per_board_ms"] = {n: {m: round(measured[n][m], 4) for m in specs} for n in names}
    report["unevenness"] = uneven
    report["widths"] = specs
    return report


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--networks", nargs="+", default=["mobilenetv1", "resnet56"], choices=["mobilenetv1", "resnet56"]
    )
    ap.add_argument(
        "--work", default=None, help="keep the fleet's files here (default: a temporary directory)"
    )
    ap.add_argument("--flops", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=15, help="resnet56 training epochs")
    ap.add_argument("--finetune", type=int, default=5, help="fine-tuning epochs of each pruned resnet56")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the emulated conditions need root (cgroup v1 cpu and cpuset)")
    work = args.work or tempfile.mkdtemp(prefix="fleetbench-hdap-")
    os.makedirs(work, exist_ok=True)
    args.work = work
    fleet = Fleet(work)
    reports = []
    try:
        for family in args.networks:
            reports.append(run_network(fleet, family, args))
            log(f"{family} done: {json.dumps(reports[-1])}")
    finally:
        fleet.close()
    keys = (
        "network",
        "hdap_ms",
        "uniform_ms",
        "l1_ms",
        "netadapt_ms",
        "oracle_ms",
        "measured_share",
        "hdap_acc",
        "uniform_acc",
        "l1_acc",
        "netadapt_acc",
        "oracle_acc",
        "hdap_p90_ms",
        "l1_p90_ms",
    )
    for r in reports:
        print(json.dumps(r), flush=True)
    for r in reports:
        print(json.dumps({k: r[k] for k in keys}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
