"""Health collectors and capabilities on every board tree, and on a bare VM."""

from __future__ import annotations

import json
import logging

import boards
import pytest
from sysfs_tree import make_tree

from agent.collectors import health, identity, power
from agent.collectors._sysfs import SysfsReader

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)


def no_helpers(argv):
    return None


def monitor(tmp_path, tree, run=no_helpers):
    return health.HealthMonitor(make_tree(tmp_path, tree), run=run)


@pytest.mark.parametrize("board", sorted(boards.ALL))
def test_every_board_reads_and_serializes(tmp_path, board):
    sample = monitor(tmp_path, boards.ALL[board]).sample()
    json.dumps(sample.to_dict(), allow_nan=False)  # what goes on the wire


def test_raspberry_pi_4(tmp_path):
    m = monitor(tmp_path, boards.RPI4)
    assert m.names == ("thermal", "throttling", "load")
    s = m.sample()
    assert s.max_temperature_c == 48.7
    assert s.throttling.now == ("under-voltage", "throttled")
    assert s.throttling.since_boot == ("under-voltage", "throttled")
    assert s.throttling.policies[0].governor == "ondemand" and s.throttling.policies[0].max_mhz == 1500.0
    assert (s.load.load_1m, s.load.mem_total_mb, s.load.mem_available_mb) == (0.08, 3793.1, 3390.8)
    assert s.battery is None and s.power_mode is None


def test_rpi_throttled_since_boot_only(tmp_path):
    tree = {**boards.RPI4, "/sys/devices/platform/soc/soc:firmware/get_throttled": "0x80000\n"}
    s = monitor(tmp_path, tree).sample()
    assert s.throttling.now == () and s.throttling.since_boot == ("soft temperature limit",)


def test_jetson_power_mode_and_the_fake_pmic_zone(tmp_path):
    m = monitor(tmp_path, boards.JETSON_NANO)
    assert "power_mode" in m.names
    s = m.sample()
    assert s.power_mode == power.PowerMode(1, "5W")
    # PMIC-Die always says 100 C on a Nano; it must not make the board look hot.
    assert "PMIC-Die" not in s.thermal.temperatures_c and s.max_temperature_c == 41.0


def test_jetson_power_mode_newer_status_format_and_unknown_name(tmp_path):
    tree = {**boards.JETSON_NANO, "/var/lib/nvpmodel/status": "pmode:0003 fmode:quiet\n"}
    assert monitor(tmp_path, tree).sample().power_mode == power.PowerMode(3, None)


def test_coral_dev_board_edgetpu_temperature_and_capabilities(tmp_path):
    reader = make_tree(tmp_path, boards.CORAL_DEV_BOARD)
    s = health.HealthMonitor(reader, run=no_helpers).sample()
    assert s.thermal.temperatures_c["apex_0"] == 41.2
    caps = identity.capabilities(reader)
    assert caps.accelerators == ("edgetpu:pcie:apex_0",)
    assert (caps.cores_logical, caps.mem_total_mb) == (4, 987.1)


def test_jetson_gpu_capability(tmp_path):
    assert identity.capabilities(make_tree(tmp_path, boards.JETSON_NANO)).accelerators == ("jetson-gpu",)


def test_phone_battery_wear_from_sysfs(tmp_path):
    s = monitor(tmp_path, boards.PIXEL3).sample()
    assert s.battery == power.BatteryState(64.0, False, 0.816, "sysfs")
    assert s.thermal is None  # SELinux hides the zones from apps
    assert len(s.throttling.policies) == 2


def test_termux_battery_when_sysfs_is_hidden(tmp_path):
    tree = {k: v for k, v in boards.PIXEL3.items() if "power_supply" not in k}
    calls = []

    def run(argv):
        calls.append(argv)
        return boards.PIXEL3_TERMUX_BATTERY if argv == ["termux-battery-status"] else None

    s = monitor(tmp_path, tree, run).sample()
    assert s.battery == power.BatteryState(64.0, False, None, "termux")
    assert calls


@pytest.mark.parametrize("output", ["", "not json", '{"plugged": "AC"}', "[]"])
def test_broken_termux_output_means_no_battery(tmp_path, output):
    assert monitor(tmp_path, {}, lambda argv: output).sample().battery is None


def test_energy_based_battery_health(tmp_path):
    tree = {
        "/sys/class/power_supply/BAT0/type": "Battery\n",
        "/sys/class/power_supply/BAT0/status": "Charging\n",
        "/sys/class/power_supply/BAT0/capacity": "90\n",
        "/sys/class/power_supply/BAT0/energy_full": "45000000\n",
        "/sys/class/power_supply/BAT0/energy_full_design": "50000000\n",
    }
    assert monitor(tmp_path, tree).sample().battery == power.BatteryState(90.0, True, 0.9, "sysfs")


def test_bare_vm_has_nothing_and_nothing_crashes(tmp_path):
    m = monitor(tmp_path, boards.BARE_VM)
    assert m.names == ()
    assert m.sample() == health.HealthSample()
    caps = identity.capabilities(SysfsReader(str(tmp_path)))
    assert caps.accelerators == () and caps.cores_logical is None and caps.mem_total_mb is None


def test_zero_and_empty_readings_are_unavailable(tmp_path):
    tree = {
        "/sys/class/thermal/thermal_zone0/temp": "0\n",
        "/sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq": "0\n",
        "/proc/loadavg": "\n",
        "/sys/class/power_supply/battery/type": "Battery\n",
        "/sys/class/power_supply/battery/charge_full_design": "0\n",
        "/sys/class/power_supply/battery/charge_full": "2000\n",
    }
    s = monitor(tmp_path, tree).sample()
    assert s.thermal is None and s.load is None
    assert s.throttling.policies[0].cur_mhz is None
    assert s.battery.health is None and s.battery.percent is None


def test_a_failing_collector_warns_once_and_the_rest_still_report(tmp_path, caplog, monkeypatch):
    m = monitor(tmp_path, boards.RPI4)

    def broken(reader):
        raise OSError("driver went away")

    monkeypatch.setattr(health.thermal, "temperatures_c", broken)
    with caplog.at_level(logging.DEBUG, logger="agent.collectors.health"):
        first, second = m.sample(), m.sample()
    assert first.thermal is None and first.load is not None and second.throttling is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "driver went away" in warnings[0].getMessage()


def test_this_machine_capabilities_list_installed_runtimes_without_importing_them():
    import subprocess
    import sys

    code = (
        "import sys, json; from agent.collectors import identity; c = identity.capabilities(); "
        "print(json.dumps([c.cores_logical, c.mem_total_mb, sorted(c.backends), "
        "[m for m in ('onnxruntime', 'ai_edge_litert', 'numpy') if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    cores, mem_mb, backends, imported = json.loads(out)
    assert cores >= 1 and mem_mb > 0
    assert set(backends) <= {"onnxruntime", "litert"}
    assert imported == []  # the idle agent stays small: runtimes are found, not loaded


def test_termux_without_its_api_app_is_asked_once_and_said_once(tmp_path, monkeypatch, caplog):
    """Without the Termux:API app, termux-battery-status waits for it forever. A real program
    that does the same stands in for it: the battery is unavailable, said once, and the helper
    is not started again (each health sample would otherwise wait out the timeout)."""
    from agent.collectors import _sysfs

    helper = tmp_path / "bin" / "termux-battery-status"
    helper.parent.mkdir()
    started = tmp_path / "started"
    helper.write_text(f"#!/bin/sh\necho x >> {started}\nexec sleep 600\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:/usr/bin:/bin")
    monkeypatch.setattr(_sysfs, "_STUCK", set())

    def run(argv):
        return _sysfs.run_helper(argv, timeout_s=0.5)

    with caplog.at_level(logging.WARNING):
        batteries = [power.battery(SysfsReader(str(tmp_path / "empty")), run) for _ in range(3)]
    assert batteries == [None, None, None]
    assert started.read_text().count("x") == 1, "started once"
    said = [r.getMessage() for r in caplog.records if "termux-battery-status" in r.getMessage()]
    assert said == ["termux-battery-status did not answer within 0.5 s (is the Termux:API app installed?); "
                    "not asking it again"]  # fmt: skip
