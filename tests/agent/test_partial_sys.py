"""A device that shows only part of /sys and /proc (a container, a chroot, an Android app under
SELinux): `fleetbench bench` and the agent run to a clean end, their sensors "unavailable", and
the results say what could not be read.  No mocks: each run is a real process in a private
mount namespace (``unshare -m``, as root) with an empty tmpfs over /sys/class (no power_supply,
no thermal) and /sys/devices/system/cpu (no cpufreq, no topology), and /dev/null bound over
/proc/loadavg and /proc/meminfo.  (Issue 16: psutil.sensors_battery() raised FileNotFoundError
there, and `fleetbench bench` ended in a traceback.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from broker import Receiver
from daemon_proc import REPO, AgentProcess, eventually, unit_command, write_config
from wire import command, received

HIDE = (
    "mount --make-rprivate / && mount -t tmpfs none /sys/class && mount -t tmpfs none /sys/devices/system/cpu"
    " && mount --bind /dev/null /proc/loadavg && mount --bind /dev/null /proc/meminfo"
)
HIDDEN = ["/sys/class/power_supply (missing)", "/sys/class/thermal (missing)",
          "/sys/devices/system/cpu (empty)", "/proc/loadavg (empty)", "/proc/meminfo (empty)"]  # fmt: skip
DEVICE = "hidden-sys"


def hidden(*argv: str) -> list[str]:
    """``argv`` run with part of /sys and /proc hidden from it (and from nothing else)."""
    return ["unshare", "-m", "sh", "-c", HIDE + ' && exec "$@"', "sh", *argv]


@pytest.fixture(scope="module")
def can_hide():
    why = None
    if shutil.which("unshare") is None:
        why = "unshare (util-linux) is not installed"
    elif os.geteuid() != 0:
        why = "a private mount namespace needs root"
    elif subprocess.run(hidden("true"), capture_output=True).returncode != 0:
        why = "this system does not allow a private mount namespace here"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"{why}; .ci/run runs as root with util-linux")
        pytest.skip(why)


def test_bench_runs_clean_and_says_what_it_could_not_read(can_hide, onnx_model):
    env = {**os.environ, "PYTHONPATH": REPO}
    run = [sys.executable, "-m", "agent", "bench", onnx_model, "--runs", "5", "--min-time", "0"]
    table = subprocess.run(hidden(*run), capture_output=True, text=True, env=env, timeout=300)
    assert table.returncode == 0 and "Traceback" not in table.stderr, table.stderr
    assert f"not readable here: {', '.join(HIDDEN)}" in table.stdout, table.stdout
    out = subprocess.run(
        hidden(*run, "--format", "json"), capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    device = (data[0] if isinstance(data, list) else data)["device"]
    assert device["unreadable"] == HIDDEN
    assert device["temperatures_c"] == [] and device["battery_percent"] is None
    assert device["cores_logical"] == os.cpu_count(), "counted another way when /sys hides the cpus"
    # and with nothing hidden, nothing is said
    plain = subprocess.run(run, capture_output=True, text=True, env=env, timeout=300)
    assert plain.returncode == 0 and "not readable here" not in plain.stdout, plain.stdout


def test_the_agent_registers_reports_probes_and_measures_with_sensors_hidden(
    can_hide, tmp_path, mosquitto, onnx_model
):
    config = write_config(str(tmp_path / "agent.toml"), mosquitto.url)
    with open(config) as fh:  # the degradation probe on (write_config turns it off), never held back
        text = fh.read().replace(
            "[degradation]\nenabled = false\n", "[degradation]\nmax_load_per_core = 100\n"
        )
    with open(config, "w") as fh:
        fh.write(text)
    models = tmp_path / "state" / "models"
    models.mkdir(parents=True)
    shutil.copy(onnx_model, models / "conv.onnx")
    rx = Receiver(mosquitto, f"fleetbench/v1/devices/{DEVICE}/#")
    rx.wait_subscribed()
    agent = AgentProcess(str(tmp_path), config, DEVICE, argv=hidden(*unit_command()))
    try:
        agent.start()
        agent.wait_note("READY=1")
        birth = eventually(
            lambda: [e.data for e in received(rx.payloads, "status") if e.data["state"] == "online"]
        )
        assert birth[0]["capabilities"]["cores_logical"] == os.cpu_count()

        def probed():
            return [
                e.data for e in received(rx.payloads, "health") if e.data["degradation"]["index"] is not None
            ]

        health = eventually(probed, 120)[0]  # the reference workload ran: a baseline, index 1.00
        assert health["degradation"]["index"] == 1.0
        assert not {"battery", "thermal", "load"} & set(health["collectors"]), health["collectors"]
        payload = command(DEVICE, {"job_id": "h-1", "models": ["conv.onnx"],
                                   "settings": {"runs": 5, "warmup_runs": 1, "min_time_s": 0}})  # fmt: skip
        rx.client.publish(f"fleetbench/v1/devices/{DEVICE}/jobs", payload, qos=1).wait_for_publish(10)
        (result,) = eventually(lambda: [e.data for e in received(rx.payloads, "results")], 120)
        assert result["result"]["device"]["unreadable"] == HIDDEN
    finally:
        agent.close()
        rx.close()
    with open(agent.log_path, encoding="utf-8") as fh:
        log = fh.read()
    assert "Traceback" not in log
    assert log.count("this system hides part of /sys and /proc: /sys/class/power_supply (missing)") == 1, log
