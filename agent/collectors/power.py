"""Battery state and the Raspberry Pi firmware's throttling flags."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from agent.collectors._sysfs import SysfsReader

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


def describe_throttled(bits: int) -> str:
    """Human words for the "now" bits of get_throttled.

    >>> describe_throttled(0x5)
    'under-voltage, throttled'
    """
    names = []
    for bit, name in (
        (RPI_UNDERVOLT, "under-voltage"),
        (RPI_FREQ_CAPPED, "frequency capped"),
        (RPI_THROTTLED, "throttled"),
        (RPI_SOFT_TEMP_LIMIT, "soft temperature limit"),
    ):
        if bits & bit:
            names.append(name)
    return ", ".join(names) or "none"


@dataclass(frozen=True)
class BatteryState:
    percent: Optional[float]
    plugged: Optional[bool]


def battery(reader: SysfsReader) -> Optional[BatteryState]:
    """The first battery in /sys/class/power_supply (or psutil's view), None if there is none."""
    for supply in reader.glob("/sys/class/power_supply/*"):
        if (reader.read_text(f"{supply}/type") or "").lower() != "battery":
            continue
        status = (reader.read_text(f"{supply}/status") or "").lower()
        plugged = None if not status or status == "unknown" else status != "discharging"
        percent = reader.read_int(f"{supply}/capacity")
        return BatteryState(float(percent) if percent is not None else None, plugged)
    if reader.is_live:
        import psutil

        sensors_battery = getattr(psutil, "sensors_battery", None)
        info = sensors_battery() if sensors_battery else None
        if info is not None:
            return BatteryState(round(float(info.percent), 1), info.power_plugged)
    return None
