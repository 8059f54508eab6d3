"""Temperatures: thermal zones, hwmon sensors and the Coral Edge TPU's own sensor."""

from __future__ import annotations

from typing import Optional

from agent.collectors._sysfs import SysfsReader

# Readings outside this range are firmware placeholders (e.g. -273 or 0 on zones
# with no sensor behind them), not temperatures.
_PLAUSIBLE_C = (-40.0, 150.0)
# Zones that are not sensors: the Jetson Nano/TX1 "PMIC-Die" zone reads a constant
# 100.0 C (a trip-point placeholder; NVIDIA's jtop hides it too).  Counting it would make
# every Nano look too hot to benchmark.
_NOT_SENSORS = {"PMIC-Die"}


def _millideg(value: Optional[int]) -> Optional[float]:
    if value is None or value == 0:
        return None
    c = value / 1000.0
    return round(c, 1) if _PLAUSIBLE_C[0] <= c <= _PLAUSIBLE_C[1] else None


def temperatures_c(reader: SysfsReader) -> dict[str, float]:
    """All readable temperatures in degrees C, keyed by sensor name."""
    temps: dict[str, float] = {}
    for zone in reader.glob("/sys/class/thermal/thermal_zone[0-9]*"):
        name = reader.read_text(f"{zone}/type") or zone.rsplit("/", 1)[-1]
        c = _millideg(reader.read_int(f"{zone}/temp"))
        if c is not None and name not in _NOT_SENSORS:
            temps.setdefault(name, c)
    for hw in reader.glob("/sys/class/hwmon/hwmon[0-9]*"):
        hw_name = reader.read_text(f"{hw}/name") or hw.rsplit("/", 1)[-1]
        for inp in reader.glob(f"{hw}/temp[0-9]*_input"):
            c = _millideg(reader.read_int(inp))
            if c is not None:
                label = reader.read_text(inp.replace("_input", "_label"))
                temps.setdefault(f"{hw_name}/{label}" if label else hw_name, c)
    # Coral Dev Board / PCIe Edge TPU (gasket-apex driver) exposes its die temperature here.
    for apex in reader.glob("/sys/class/apex/apex_[0-9]*"):
        c = _millideg(reader.read_int(f"{apex}/temp"))
        if c is not None:
            temps[apex.rsplit("/", 1)[-1]] = c
    return temps
