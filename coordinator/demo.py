"""`fleetbench demo`: the whole loop on one machine, with nothing else set up.

    broker       amqtt, embedded, MQTT 3.1.1 on 127.0.0.1 (or --broker URL: a real one)
    coordinator  this process, a SQLite file, a fresh signing key
    devices      one real agent (a `fleetbench agent` process) that materializes and times
                 NAS-Bench-201 models with ONNX Runtime on this machine, and simulated
                 devices answering from the published NAS-Bench-201 latencies of a
                 Raspberry Pi 4 (three boards of one SKU, drifted apart by age) and a
                 Jetson TX2, with noise (labelled simulated everywhere)
    the loop     discover -> sample k architectures -> adapt (predict each device's
                 column from the reference devices) -> choose under the budget -> push
                 (signed) -> install + smoke run -> ack
    the end      a summary table here, and report.html (SRCC heatmap, predicted vs
                 measured, the model each device received) under --out

The simulated devices' source columns are left out of the coordinator's reference
table, so their predictions are honest: the coordinator never saw those numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any, Optional

from agent.common.errors import FleetbenchError, UsageError

logger = logging.getLogger(__name__)

REAL_DEVICE = "this-machine"
RPI_SKU = "Raspberry Pi 4 Model B Rev 1.4 (simulated)"
TX2_SKU = "NVIDIA Jetson TX2 (simulated)"
#: (device id, SKU, published column, drift): three boards of one SKU aged apart, and a GPU
SIMULATED = (
    ("sim-rpi4-a", RPI_SKU, "raspberry_pi4", 1.00),
    ("sim-rpi4-b", RPI_SKU, "raspberry_pi4", 1.12),
    ("sim-rpi4-c", RPI_SKU, "raspberry_pi4", 1.35),
    ("sim-jetson-tx2", TX2_SKU, "jetson_tx2_edgegpu", 1.00),
)
MARKER = ".fleetbench-demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = os.path.abspath(args.out)
        self.started = time.monotonic()
        self.sims: list[Any] = []
        self.agent: Optional[subprocess.Popen] = None
        self.broker: Any = None
        self._said: dict[tuple[str, str], str] = {}

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f} s] {text}", flush=True)

    # -- setup ----------------------------------------------------------------------

    def _prepare_out(self) -> None:
        if (
            os.path.exists(self.out)
            and os.listdir(self.out)
            and not os.path.exists(os.path.join(self.out, MARKER))
        ):
            raise UsageError(
                f"--out {self.out!r} exists and is not a fleetbench demo directory; name another"
            )
        for sub in ("coordinator", "agent", "simulated"):
            shutil.rmtree(os.path.join(self.out, sub), ignore_errors=True)
        try:
            os.makedirs(self.out, exist_ok=True)
            with open(os.path.join(self.out, MARKER), "w") as fh:
                fh.write("made by fleetbench demo; the next run replaces what is here\n")
        except OSError as err:
            raise UsageError(f"--out {self.out!r} cannot be written: {err.strerror}") from None

    async def _start_broker(self) -> str:
        if self.args.broker:
            return str(self.args.broker)
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)
        port = _free_port()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self.broker = Broker(config)
        await self.broker.start()
        self.say(f"embedded MQTT broker (amqtt, MQTT 3.1.1) on 127.0.0.1:{port}")
        return f"mqtt://127.0.0.1:{port}"

    def _calibrate(self) -> float:
        """This machine's budget: the measured latency of a mid-sized NAS-Bench-201 model, so the
        choice lands inside the space rather than at either end of it."""
        import numpy as np

        from agent.bench.settings import BenchSettings
        from agent.bench.worker import call_in_worker
        from agent.measure import bench_target
        from agent.protocol.jobs import ArchItem
        from coordinator.ranking import NB201_LATENCY
        from coordinator.ranking.tables import read_table

        table = read_table(NB201_LATENCY)
        column = table.column("pixel3")
        arch = table.archs[int(np.argsort(column)[int(len(column) * 0.6)])]
        path = os.path.join(self.out, "agent", "calibration.onnx")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        item = ArchItem(space="nas-bench-201", arch=arch, format="onnx")
        settings = BenchSettings(runs=20, warmup_runs=3, min_time_s=0.0, threads=1)
        result = call_in_worker(bench_target, (path, settings, item, 2**31), 300.0, "calibration")
        return round(float(result.stats.p50_ms), 3)

    def _coordinator_config(self, broker: str, budget_ms: float) -> Any:
        from agent.common.config import BrokerConfig
        from coordinator.config import CoordinatorConfig, PushConfig, RerankConfig
        from coordinator.ranking import NB201_LATENCY
        from coordinator.ranking.tables import read_table

        table = read_table(NB201_LATENCY)
        budgets = {REAL_DEVICE: budget_ms}
        for _, sku, column, _ in SIMULATED[: self.args.simulated]:
            budgets[sku] = round(float(sorted(table.column(column))[int(len(table.archs) * 0.6)]), 3)
        state = os.path.join(self.out, "coordinator")
        return CoordinatorConfig(
            db=os.path.join(state, "fleet.sqlite"),
            state_dir=state,
            client_id="fleetbench-demo-coordinator",
            group="",  # amqtt has no shared subscriptions; one coordinator needs none
            tick_s=0.5,
            broker=BrokerConfig(url=broker),
            rerank=RerankConfig(
                exclude=("raspberry_pi4", "jetson_tx2_edgegpu"),
                samples=self.args.samples,
                runs=self.args.runs,
                budgets=budgets,
                model_name="demo-classifier",
            ),
            push=PushConfig(retry_s=30.0, smoke_runs=self.args.runs),
        )

    def _start_agent(self, broker: str, public_key: str) -> None:
        state = os.path.join(self.out, "agent")
        config = os.path.join(state, "agent.toml")
        with open(config, "w") as fh:
            fh.write(f'device_id = "{REAL_DEVICE}"\nstate_dir = "{state}"\n\n[broker]\nurl = "{broker}"\n\n'
                     "[health]\ninterval_s = 5\n\n[degradation]\nenabled = false\n\n"
                     f'[discovery]\nenabled = false\n\n[models]\npublic_key = "{public_key}"\n')  # fmt: skip
        log = open(os.path.join(state, "agent.log"), "w")  # noqa: SIM115 - the agent writes it until stopped
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([_repo(), os.environ.get("PYTHONPATH", "")])}
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "-v", "agent", "--config", config],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        self.say(f"real agent {REAL_DEVICE} started (pid {self.agent.pid}; log {os.path.relpath(log.name)})")

    def _start_simulated(self, broker: str, public_key: str) -> None:
        from agent.transport.mqtt import BrokerSettings
        from coordinator.ranking import NB201_LATENCY
        from coordinator.ranking.tables import read_table
        from coordinator.simulated import SimulatedDevice

        table = read_table(NB201_LATENCY)
        for i, (device_id, sku, column, drift) in enumerate(SIMULATED[: self.args.simulated]):
            values = table.column(column)
            latency = {a: float(v) for a, v in zip(table.archs, values) if v == v}
            state = os.path.join(self.out, "simulated", device_id)
            sim = SimulatedDevice(device_id, sku, latency, f"published NAS-Bench-201 {column}",
                                  BrokerSettings.from_url(broker), state, public_key, drift=drift,
                                  seed=i)  # fmt: skip
            sim.start()
            self.sims.append(sim)
        if self.sims:
            self.say(f"{len(self.sims)} simulated devices (published latencies + drift + noise): "
                     + ", ".join(s.device_id for s in self.sims))  # fmt: skip

    # -- the run --------------------------------------------------------------------

    async def run(self) -> int:
        from coordinator.keys import generate_key
        from coordinator.service import Coordinator
        from coordinator.store import open_store

        self._prepare_out()
        loop = asyncio.get_running_loop()
        self.say(f"fleetbench demo in {self.out}")
        budget_ms = await loop.run_in_executor(None, self._calibrate)
        self.say(f"budget for {REAL_DEVICE}: {budget_ms} ms (a mid-sized model timed here)")
        broker = await self._start_broker()
        config = self._coordinator_config(broker, budget_ms)
        os.makedirs(config.state_dir, exist_ok=True)
        public_key = generate_key(config.key_file)
        from agent.transport.mqtt import BrokerSettings

        store = open_store(config.db_url)
        coordinator = Coordinator(config, store, BrokerSettings.from_url(broker))
        task = asyncio.ensure_future(coordinator.run(install_signals=False))
        code = 1
        try:
            await loop.run_in_executor(None, coordinator.ingestor.connected.wait, 30.0)
            if not coordinator.ingestor.connected.is_set():
                raise FleetbenchError(f"the coordinator cannot reach the broker {broker}")
            self.say(f"coordinator up (database {os.path.relpath(config.db_url)}, signing key made)")
            self._start_agent(broker, public_key)
            self._start_simulated(broker, public_key)
            devices = [REAL_DEVICE] + [s.device_id for s in self.sims]
            finished = await self._watch(store, devices)
            code = 0 if finished else 1
            rows = await loop.run_in_executor(None, self._summary, store, config, devices)
            from coordinator.report import write_report

            path = os.path.join(self.out, "report.html")
            await loop.run_in_executor(None, write_report, path, store, config, rows, self.sims)
            self.say(f"report: {path}")
            if not finished:
                self.say(f"not every device finished within {self.args.timeout:g} s; see the report and logs")
        finally:
            coordinator.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
            await loop.run_in_executor(None, self._stop_devices)
            if self.broker is not None:
                with contextlib.suppress(Exception):
                    await self.broker.shutdown()
        return code

    async def _watch(self, store: Any, devices: list[str]) -> bool:
        """Print each device's decisions and progress until every one's loop has ended."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            states = await loop.run_in_executor(None, _progress, store, devices)
            for device, (lines, _) in states.items():
                for kind, text in lines:
                    if self._said.get((device, kind)) != text:
                        self._said[(device, kind)] = text
                        self.say(f"{device}: {text}")
            if self.agent is not None and self.agent.poll() is not None:
                raise FleetbenchError(f"the real agent exited with status {self.agent.returncode}; "
                                      f"see {os.path.join(self.out, 'agent', 'agent.log')}")  # fmt: skip
            if len(states) == len(devices) and all(done for _, done in states.values()):
                return True
            await asyncio.sleep(0.5)  # polling the database the coordinator writes
        return False

    def _summary(self, store: Any, config: Any, devices: list[str]) -> list[dict[str, Any]]:
        from coordinator.cli.format import basis, decision_verdict, print_table

        rows = []
        fleet = {d.device_id: d for d in store.fleet()}
        states = store.rerank_states()
        for device in devices:
            latest = store.latest_decisions(device)
            d = latest[0] if latest else None
            dep = d.deployment if d else None
            sim = next((s for s in self.sims if s.device_id == device), None)
            arch = d.arch if d else None
            known = fleet.get(device)
            st = states.get(device)
            state = dep.state if dep else ("nothing fits" if d else (st.state if st else "-"))
            if d is not None and d.inputs.get("retry"):
                state += f" (retry {d.inputs['retry']})"
            rows.append(
                {
                    "device": device,
                    "simulated": sim is not None,
                    "sku": known.sku if known else None,
                    "budget_ms": d.budget_ms if d else config.budget_ms(device, known.sku if known else None),
                    "arch": arch,
                    "expected_ms": d.predicted_ms if d else None,
                    "basis": basis(d) if d else None,
                    "accuracy": d.accuracy if d else None,
                    "state": state,
                    "smoke_ms": dep.p50_ms if dep else None,
                    "smoke_interval": (dep.p50_lo_ms, dep.p50_hi_ms) if dep and dep.p50_lo_ms is not None
                                      else None,
                    "within_budget": decision_verdict(d)[1] if d else "-",
                    "true_ms": sim.true_ms(arch) if sim and arch else None,
                    "decision": d,
                }
            )  # fmt: skip
        table = [(r["device"] + (" (sim)" if r["simulated"] else ""),
                  f"{r['budget_ms']:.2f}" if r["budget_ms"] is not None else "-",
                  f"{r['expected_ms']:.2f} {r['basis']}" if r["expected_ms"] else "-",
                  f"{r['smoke_ms']:.2f}" if r["smoke_ms"] else "-",
                  "{:.2f}-{:.2f}".format(*r["smoke_interval"]) if r["smoke_interval"] else "-",
                  r["within_budget"], f"{r['accuracy']:.2f}" if r["accuracy"] else "-", r["state"])
                 for r in rows]  # fmt: skip
        print()
        print_table(("device", "budget ms", "chosen model ms", "smoke run p50 ms", "95 % interval",
                     "within budget", "accuracy %", "deployment"), table)  # fmt: skip
        print("\nchosen model ms: the chosen architecture's latency on the device when it was chosen:\n"
              "measured (by the device itself) or predicted (from the reference devices; the error margin\n"
              "is added when checking the budget). The smoke run is the device timing the model it\n"
              "installed: over the budget beyond its 95 % interval, the device rolls it back and the\n"
              "coordinator chooses again.\n")  # fmt: skip
        return rows

    def _stop_devices(self) -> None:
        for sim in self.sims:
            with contextlib.suppress(Exception):
                sim.stop()
        if self.agent is not None and self.agent.poll() is None:
            self.agent.terminate()
            try:
                self.agent.wait(30)
            except subprocess.TimeoutExpired:
                self.agent.kill()


def decision_line(d: Any) -> str:
    """A decision in one line: what was chosen, and whether its latency was measured or predicted."""
    from coordinator.cli.format import basis

    again = f" again (retry {d.inputs['retry']})" if d.inputs.get("retry") else ""
    verb = "picked at once from its probes" if d.inputs.get("stage") == "instant" else "decided"
    if d.arch is None:
        return f"{verb}{again}: nothing fits the budget of {d.budget_ms:.2f} ms with the error margin"
    i = d.inputs
    if basis(d) == "measured":
        how = f"measured {d.predicted_ms:.2f} ms on the device"
    else:
        how = f"predicted {d.predicted_ms:.2f} ms, {i['with_margin_ms']:.2f} with the error margin"
    return f"{verb}{again}: {d.arch} ({how}; budget {d.budget_ms:.2f} ms)"


def _push_line(d: Any) -> Optional[str]:
    """Where the push of decision ``d`` is, in words (None: there is none)."""
    from coordinator.cli.format import decision_verdict, noise
    from coordinator.reranker import over_budget

    dep = d.deployment
    if dep is None:
        return None
    if dep.state in ("pending", "sending"):
        return "pushing the model (signed, 64 KiB chunks)"
    if dep.state == "installed":
        verdict = decision_verdict(d)[1]
        return f"installed: smoke run p50 {dep.p50_ms:.2f} ms{noise(dep, 2)}; within budget: {verdict}"
    over = over_budget(d)
    if over:
        return f"rolled back by the device: {over}"
    return f"{dep.state}: {dep.detail}"


def _progress(store: Any, devices: list[str]) -> dict[str, tuple[list[tuple[str, str]], bool]]:
    """Each device's newest decision and progress in words, and whether its loop has ended."""
    out: dict[str, tuple[list[tuple[str, str]], bool]] = {}
    states = store.rerank_states()
    for device in devices:
        st = states.get(device)
        if st is None:
            continue
        found = store.latest_decisions(device) if st.state != "probing" else []
        d = found[0] if found else None
        if d is not None and st.state == "sampling" and d.inputs.get("stage") != "instant":
            d = None  # an older round's decision
        lines = [("decision", decision_line(d))] if d is not None else []
        push = _push_line(d) if d is not None else None
        if st.state == "probing":
            lines.append(("progress", f"probing: measuring the probe architectures (job {st.job_id})"))
        elif st.state == "sampling":
            lines.append(("progress", f"sampling: measuring the planned architectures (job {st.job_id})"))
        elif st.state == "building":
            lines.append(("progress", f"building the chosen model: {st.detail.removeprefix('building ')}"))
        elif st.state in ("deploying", "decided"):
            if push is not None:
                lines.append(("progress", push))
        else:  # failed, or no budget
            lines.append(("progress", f"{st.state}: {st.detail}"))
        out[device] = (lines, st.state in ("decided", "failed", "no_budget"))
    return out


def _repo() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
