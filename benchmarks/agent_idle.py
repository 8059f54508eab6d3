"""Idle agent footprint: resident memory and CPU share of `fleetbench agent` doing nothing.

Starts a real mosquitto on a free loopback port and the agent as its systemd unit
starts it (default settings: health every 60 s, zeroconf on 127.0.0.1, degradation
probe on), waits until it is online and its first degradation probe (a worker
process) has finished, then samples the agent process for ``--seconds``: RSS at the
end and at its peak, USS (memory only it uses), and CPU time over wall time.
Targets (issue 4): RSS <= 40 MB, CPU <= 1 % of a core over 60 s.

    python benchmarks/agent_idle.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import psutil
from _helpers import load_test_helper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    broker_mod, daemon_proc = load_test_helper("broker"), load_test_helper("daemon_proc")

    with tempfile.TemporaryDirectory() as tmp:
        broker = broker_mod.Mosquitto(tmp)
        broker.start()
        config = os.path.join(tmp, "agent.toml")
        with open(config, "w") as fh:
            fh.write(f'[broker]\nurl = "{broker.url}"\n[discovery]\ninterfaces = ["127.0.0.1"]\n')
        state = os.path.join(tmp, "state")
        env = {**os.environ, "FLEETBENCH_CONFIG": config, "STATE_DIRECTORY": state, "PYTHONPATH": REPO}
        env.pop("NOTIFY_SOCKET", None)
        log = open(os.path.join(tmp, "agent.log"), "wb")  # noqa: SIM115
        proc = subprocess.Popen(daemon_proc.unit_command(), env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            status_path = os.path.join(state, "status.json")
            degradation_path = os.path.join(state, "degradation.json")
            deadline = time.monotonic() + 120
            while not (os.path.exists(degradation_path) and os.path.exists(status_path)):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the agent did not come up; see its log")
                time.sleep(0.2)
            p = psutil.Process(proc.pid)
            while any("spawn_main" in " ".join(c.cmdline()) for c in p.children()):
                time.sleep(0.2)  # until the probe's worker has exited
            with open(status_path) as fh:
                connected = json.load(fh)["connected"]
            cpu0, t0 = p.cpu_times(), time.monotonic()
            peak = 0
            while time.monotonic() - t0 < args.seconds:
                peak = max(peak, p.memory_info().rss)
                time.sleep(1.0)
            cpu1, wall = p.cpu_times(), time.monotonic() - t0
            full = p.memory_full_info()
            cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            # multiprocessing's resource tracker outlives the first worker; count it apart
            helpers = [(" ".join(c.cmdline()[-2:]), c.memory_full_info()) for c in p.children()]
            print(f"agent pid {proc.pid}, connected to the broker: {connected}, threads: {p.num_threads()}")
            print(f"window: {wall:.1f} s")
            print(f"RSS: {full.rss / 2**20:.1f} MB (peak {max(peak, full.rss) / 2**20:.1f} MB), "
                  f"USS: {full.uss / 2**20:.1f} MB")  # fmt: skip
            print(f"CPU: {cpu_s:.3f} s over {wall:.1f} s = {100 * cpu_s / wall:.2f} % of one core")
            for name, mem in helpers:
                print(f"helper process {name!r}: RSS {mem.rss / 2**20:.1f} MB, USS {mem.uss / 2**20:.1f} MB")
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
