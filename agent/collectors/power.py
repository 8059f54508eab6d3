"""Power: battery state and wear, the Raspberry Pi firmware's throttling flags, Jetson power modes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional

from agent.collectors._sysfs import Runner, SysfsReader, run_helper

# Raspberry Pi firmware (get_throttled): low bits are "now", bits 16+ "since boot".
RPI_UNDERVOLT = 1 << 0
RPI_FREQ_CAPPED = 1 << 1
RPI_THROTTLED = 1 << 2
RPI_SOFT_TEMP_LIMIT = 1 << 3
RPI_NOW_MASK = 0xF
RPI_SINCE_BOOT_SHIFT = 16

_RPI_GET_THROTTLED = (
    "/sys/devices/platform/soc/soc:firmware/get_throttled",
    "/sys/devices/platform/soc:firmware/get_throttled",
)


def rpi_throttled(reader: SysfsReader) -> Optional[int]:
    """The raw get_throttled bit field on a Raspberry Pi, None elsewhere."""
    for rel in _RPI_GET_THROTTLED:
        value = reader.read_int(rel, base=16)
        if value is not None:
            return value
    return None


_RPI_FLAGS = (
    (RPI_UNDERVOLT, "under-voltage"),
    (RPI_FREQ_CAPPED, "frequency capped"),
    (RPI_THROTTLED, "throttled"),
    (RPI_SOFT_TEMP_LIMIT, "soft temperature limit"),
)


def throttle_flags(bits: int) -> tuple[str, ...]:
    """Names of the "now" bits of get_throttled (shift right by 16 for "since boot").

    >>> throttle_flags(0x50005), throttle_flags(0x50005 >> RPI_SINCE_BOOT_SHIFT)
    (('under-voltage', 'throttled'), ('under-voltage', 'throttled'))
    """
    return tuple(name for bit, name in _RPI_FLAGS if bits & bit)


def describe_throttled(bits: int) -> str:
    """Human words for the "now" bits of get_throttled.

    >>> describe_throttled(0x5)
    'under-voltage, throttled'
    """
    return ", ".join(throttle_flags(bits)) or "none"


@dataclass(frozen=True)
class BatteryState:
    percent: Optional[float]
    plugged: Optional[bool]
    #: charge_full / charge_full_design (or the energy_ pair): 1.0 new, lower as the cell wears
    health: Optional[float] = None
    source: str = "sysfs"


def _battery_health(reader: SysfsReader, supply: str) -> Optional[float]:
    for full, design in (("charge_full", "charge_full_design"), ("energy_full", "energy_full_design")):
        now, new = reader.read_int(f"{supply}/{full}"), reader.read_int(f"{supply}/{design}")
        if now and new:
            return round(now / new, 3)
    return None


def _termux_battery(run: Runner) -> Optional[BatteryState]:
    """termux-battery-status (Termux:API): Android hides /sys/class/power_supply from apps."""
    text = run(["termux-battery-status"])
    if not text:
        return None
    try:
        info = json.loads(text)
        percent = float(info["percentage"])
    except (ValueError, KeyError, TypeError):
        return None
    plugged = info.get("plugged")
    return BatteryState(percent, None if plugged is None else plugged != "UNPLUGGED", None, "termux")


def battery(reader: SysfsReader, run: Optional[Runner] = None) -> Optional[BatteryState]:
    """The first battery: /sys/class/power_supply, then psutil, then Termux; None if there is none.

    ``run`` executes a helper program and returns its stdout (injectable for tests);
    by default helpers are only run on the live machine.
    """
    for supply in reader.glob("/sys/class/power_supply/*"):
        if (reader.read_text(f"{supply}/type") or "").lower() != "battery":
            continue
        status = (reader.read_text(f"{supply}/status") or "").lower()
        plugged = None if not status or status == "unknown" else status != "discharging"
        percent = reader.read_int(f"{supply}/capacity")
        return BatteryState(
            float(percent) if percent is not None else None, plugged, _battery_health(reader, supply)
        )
    if reader.is_live:
        import psutil

        sensors_battery = getattr(psutil, "sensors_battery", None)
        try:
            info = sensors_battery() if sensors_battery else None
        except Exception:  # e.g. FileNotFoundError: no /sys/class/power_supply (a container, Android)
            info = None
        if info is not None:
            return BatteryState(round(float(info.percent), 1), info.power_plugged, None, "psutil")
    run = run or (run_helper if reader.is_live else None)
    return _termux_battery(run) if run else None


@dataclass(frozen=True)
class PowerMode:
    """A Jetson nvpmodel power mode, e.g. (0, "MAXN") or (1, "5W")."""

    id: int
    name: Optional[str]


_NVPMODEL_NAME = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)")


def jetson_power_mode(reader: SysfsReader) -> Optional[PowerMode]:
    """The current nvpmodel mode, readable without root from nvpmodel's status file.

    ``nvpmodel -q`` needs root; the daemon writes "pmode:0001" (L4T R32) or
    "pmode:0001 fmode:quiet" (R35) to /var/lib/nvpmodel/status, and the mode names
    are in /etc/nvpmodel.conf.
    """
    status = reader.read_text("/var/lib/nvpmodel/status")
    match = re.search(r"pmode:\s*(\d+)", status or "")
    if not match:
        return None
    mode = int(match.group(1))
    names = dict(_NVPMODEL_NAME.findall(reader.read_text("/etc/nvpmodel.conf") or ""))
    return PowerMode(mode, names.get(str(mode)))
