"""The device snapshot written into every result, and the stability checks that compare two.

Like pyperf's metadata: a benchmark number means nothing without the governor,
frequencies, temperature and throttling state it was measured under.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

from agent.collectors import cpu, power, thermal
from agent.collectors._sysfs import SysfsReader
from agent.common.logs import WarnOnce

T = TypeVar("T")
_warn = WarnOnce(logging.getLogger(__name__))


@dataclass(frozen=True)
class DeviceSnapshot:
    """What the device looked like at one instant; None means "not readable here"."""

    hostname: str
    system: str
    kernel: str
    machine: str
    python: str
    board: Optional[str]
    cpu_model: Optional[str]
    cores_logical: Optional[int]
    cores_physical: Optional[int]
    freq_policies: tuple[cpu.FreqPolicy, ...]
    temperatures_c: tuple[tuple[str, float], ...]
    rpi_throttled: Optional[int]
    battery_percent: Optional[float]
    battery_plugged: Optional[bool]
    load_1m: Optional[float]
    #: what this device did not let us read: places of /sys and /proc that are missing or
    #: unreadable ("/sys/class/thermal (missing)"), and readings that failed ("battery: ...")
    unreadable: tuple[str, ...] = ()

    @property
    def max_temperature_c(self) -> Optional[float]:
        return max((t for _, t in self.temperatures_c), default=None)

    @property
    def governors(self) -> tuple[str, ...]:
        return tuple(sorted({p.governor for p in self.freq_policies if p.governor}))


def take_snapshot(reader: Optional[SysfsReader] = None) -> DeviceSnapshot:
    """Read the device state now (cheap: a few dozen small sysfs files).  Never raises: each
    reading that fails is left empty, said once in the log and named in ``unreadable``."""
    reader = reader or SysfsReader()
    failed: list[str] = []

    def read(what: str, fn: Callable[[], T], default: T) -> T:
        try:
            return fn()
        except Exception as err:  # a partial /sys or /proc, a psutil that cannot cope: not the run's end
            _warn(what, "cannot read the %s here (%s: %s); results say so", what, type(err).__name__, err)
            failed.append(f"{what}: {type(err).__name__}")
            return default

    info = read("cpu", lambda: cpu.cpu_info(reader), cpu.CpuInfo(None, None, None, None))
    bat = read("battery", lambda: power.battery(reader), None)
    load: Optional[float] = None
    if reader.is_live and hasattr(os, "getloadavg"):
        load = read("load", lambda: round(os.getloadavg()[0], 2), None)
    uname = platform.uname()
    return DeviceSnapshot(
        hostname=socket.gethostname() if reader.is_live else "",
        system=uname.system,
        kernel=uname.release,
        machine=uname.machine,
        python=platform.python_version(),
        board=info.board,
        cpu_model=info.model,
        cores_logical=info.cores_logical,
        cores_physical=info.cores_physical,
        freq_policies=read("cpu frequencies", lambda: cpu.freq_policies(reader), ()),
        temperatures_c=read(
            "temperatures", lambda: tuple(sorted(thermal.temperatures_c(reader).items())), ()
        ),
        rpi_throttled=read("throttling flags", lambda: power.rpi_throttled(reader), None),
        battery_percent=bat.percent if bat else None,
        battery_plugged=bat.plugged if bat else None,
        load_1m=load,
        unreadable=(reader.hidden() if reader.is_live else ()) + tuple(failed),
    )


# A frequency read before and after a run that differs by more than this share is
# reported: on an "ondemand" or "schedutil" governor, latency follows the clock.
FREQ_CHANGE_TOLERANCE = 0.05


def stability_warnings(before: DeviceSnapshot, after: DeviceSnapshot) -> list[str]:
    """Warnings about conditions that make a run's numbers unreliable."""
    warnings = []
    for b, a in zip(before.freq_policies, after.freq_policies):
        if b.cur_mhz and a.cur_mhz and abs(a.cur_mhz - b.cur_mhz) > FREQ_CHANGE_TOLERANCE * b.cur_mhz:
            hint = f" under governor {b.governor!r}" if b.governor else ""
            warnings.append(
                f"CPU frequency of cpus {b.cpus} changed during the run "
                f"({b.cur_mhz:.0f} -> {a.cur_mhz:.0f} MHz){hint}; the 'performance' "
                "governor gives steadier numbers"
            )
        elif b.max_mhz and a.max_mhz and a.max_mhz < b.max_mhz:
            warnings.append(
                f"maximum CPU frequency of cpus {b.cpus} dropped during the run "
                f"({b.max_mhz:.0f} -> {a.max_mhz:.0f} MHz): thermal or power capping"
            )
    for snap, when in ((before, "at the start"), (after, "at the end")):
        if snap.rpi_throttled is not None and snap.rpi_throttled & power.RPI_NOW_MASK:
            warnings.append(
                "the Raspberry Pi firmware reported "
                f"{power.describe_throttled(snap.rpi_throttled)} "
                f"{when} of the run (get_throttled=0x{snap.rpi_throttled:x})"
            )
            break
    else:
        if before.rpi_throttled is not None and after.rpi_throttled is not None:
            new = (after.rpi_throttled & ~before.rpi_throttled) >> power.RPI_SINCE_BOOT_SHIFT
            if new & power.RPI_NOW_MASK:
                warnings.append(
                    f"the Raspberry Pi firmware reported {power.describe_throttled(new)} during the run"
                )
    if before.battery_plugged is False or after.battery_plugged is False:
        pct = after.battery_percent if after.battery_percent is not None else before.battery_percent
        level = f" at {pct:.0f} %" if pct is not None else ""
        warnings.append(f"running on battery{level}: phones and boards may slow down to save power")
    return warnings
