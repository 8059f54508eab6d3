"""Collectors on sysfs trees laid out like real boards, and on a bare VM."""

from __future__ import annotations

import boards
import pytest
from sysfs_tree import make_tree

from agent.bench.metadata import stability_warnings, take_snapshot
from agent.collectors import power
from agent.collectors._sysfs import SysfsReader

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

RPI4 = boards.RPI4


def test_raspberry_pi_4(tmp_path):
    snap = take_snapshot(make_tree(tmp_path, RPI4))
    assert snap.board == "Raspberry Pi 4 Model B Rev 1.4"
    assert snap.cpu_model == "BCM2835"
    assert (snap.cores_logical, snap.cores_physical) == (4, 4)
    (pol,) = snap.freq_policies
    assert (pol.cpus, pol.governor, pol.cur_mhz, pol.max_mhz) == (
        "0 1 2 3",
        "ondemand",
        600.0,
        1500.0,
    )
    assert snap.temperatures_c == (("cpu-thermal", 48.7),)
    assert snap.rpi_throttled == 0x50005
    assert power.describe_throttled(snap.rpi_throttled) == "under-voltage, throttled"


def test_rpi_throttling_and_frequency_change_are_flagged(tmp_path):
    before = take_snapshot(
        make_tree(tmp_path / "a", {**RPI4, "/sys/devices/platform/soc/soc:firmware/get_throttled": "0\n"})
    )
    after = take_snapshot(make_tree(tmp_path / "b", {
        **RPI4,
        "/sys/devices/platform/soc/soc:firmware/get_throttled": "0x40000\n",
        "/sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq": "1500000\n",
    }))  # fmt: skip
    text = "\n".join(stability_warnings(before, after))
    assert "600 -> 1500 MHz" in text and "'ondemand'" in text
    assert "throttled during the run" in text


def test_throttled_now_is_flagged(tmp_path):
    snap = take_snapshot(make_tree(tmp_path, RPI4))
    text = "\n".join(stability_warnings(snap, snap))
    assert "under-voltage, throttled at the start" in text


def test_phone_on_battery(tmp_path):
    reader = make_tree(tmp_path, {
        "/sys/class/power_supply/battery/type": "Battery\n",
        "/sys/class/power_supply/battery/status": "Discharging\n",
        "/sys/class/power_supply/battery/capacity": "37\n",
        "/sys/class/power_supply/usb/type": "USB\n",
    })  # fmt: skip
    snap = take_snapshot(reader)
    assert (snap.battery_percent, snap.battery_plugged) == (37.0, False)
    assert any("running on battery at 37 %" in w for w in stability_warnings(snap, snap))


def test_coral_apex_temperature(tmp_path):
    reader = make_tree(tmp_path, {"/sys/class/apex/apex_0/temp": "41250\n",
                              "/sys/class/thermal/thermal_zone0/temp": "0\n"})  # fmt: skip
    assert take_snapshot(reader).temperatures_c == (("apex_0", 41.2),)


def test_bare_vm_has_nothing_and_nothing_crashes(tmp_path):
    snap = take_snapshot(SysfsReader(str(tmp_path)))
    assert snap.board is None and snap.cpu_model is None and snap.freq_policies == ()
    assert snap.temperatures_c == () and snap.rpi_throttled is None and snap.battery_percent is None
    assert stability_warnings(snap, snap) == []


def test_vm_cpuinfo_mhz_fallback(tmp_path):
    reader = make_tree(
        tmp_path,
        {"/proc/cpuinfo": "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2994.374\n"},
    )
    snap = take_snapshot(reader)
    assert snap.cpu_model == "AMD EPYC"
    assert snap.freq_policies[0].cur_mhz == pytest.approx(2994.4)


def test_this_machine():
    snap = take_snapshot()
    assert snap.cores_logical and snap.cores_logical >= 1
    assert snap.python


def test_a_reading_that_fails_is_left_empty_said_once_and_named(tmp_path, monkeypatch, caplog):
    """A partial /sys or a sensor driver gone wrong never ends a run: the snapshot goes on."""
    import logging

    from agent.bench import metadata

    reader = make_tree(tmp_path, boards.RPI4)

    def broken(reader):
        raise OSError("driver went away")

    monkeypatch.setattr(metadata.thermal, "temperatures_c", broken)
    with caplog.at_level(logging.DEBUG, logger="agent.bench.metadata"):
        first, second = take_snapshot(reader), take_snapshot(reader)
    assert first.temperatures_c == () and first.unreadable == ("temperatures: OSError",)
    assert first.cpu_model == second.cpu_model and first.freq_policies, "the rest is read"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "driver went away" in warnings[0].getMessage()
