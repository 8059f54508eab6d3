"""Health collectors: one per capability, each says whether its sensor exists and reads it.

A collector's ``available()`` is asked once, when the monitor is built (find sysfs
paths once, read them cheaply after); ``read()`` returns a typed, frozen reading or
None.  A collector that fails unexpectedly is logged once as a warning, then at debug
level, and its field is simply empty: a broken sensor never stops the health report.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from agent.collectors import cpu, load, power, thermal
from agent.collectors._sysfs import Runner, SysfsReader
from agent.common.logs import WarnOnce

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thermal:
    temperatures_c: dict[str, float]

    @property
    def max_c(self) -> float:
        return max(self.temperatures_c.values())


@dataclass(frozen=True)
class Throttling:
    """Raspberry Pi firmware flags (now and since boot) and the CPU frequency policies."""

    rpi_throttled: Optional[int]
    now: tuple[str, ...]
    since_boot: tuple[str, ...]
    policies: tuple[cpu.FreqPolicy, ...]


class Collector(abc.ABC):
    name: ClassVar[str]

    def __init__(self, reader: SysfsReader) -> None:
        self.reader = reader

    @abc.abstractmethod
    def available(self) -> bool:
        """Does this device have the sensor at all?"""

    @abc.abstractmethod
    def read(self) -> Optional[Any]:
        """A frozen reading, or None if there is nothing to report right now."""


class BatteryCollector(Collector):
    name = "battery"

    def __init__(self, reader: SysfsReader, run: Optional[Runner] = None) -> None:
        super().__init__(reader)
        self.run = run

    def available(self) -> bool:
        return self.read() is not None

    def read(self) -> Optional[power.BatteryState]:
        return power.battery(self.reader, self.run)


class ThermalCollector(Collector):
    name = "thermal"

    def available(self) -> bool:
        return bool(thermal.temperatures_c(self.reader))

    def read(self) -> Optional[Thermal]:
        temps = thermal.temperatures_c(self.reader)
        return Thermal(temps) if temps else None


class ThrottlingCollector(Collector):
    name = "throttling"

    def available(self) -> bool:
        return power.rpi_throttled(self.reader) is not None or bool(cpu.freq_policies(self.reader))

    def read(self) -> Optional[Throttling]:
        bits = power.rpi_throttled(self.reader)
        policies = cpu.freq_policies(self.reader)
        if bits is None and not policies:
            return None
        now = power.throttle_flags(bits) if bits is not None else ()
        since = power.throttle_flags(bits >> power.RPI_SINCE_BOOT_SHIFT) if bits is not None else ()
        return Throttling(bits, now, since, policies)


class PowerModeCollector(Collector):
    name = "power_mode"

    def available(self) -> bool:
        return power.jetson_power_mode(self.reader) is not None

    def read(self) -> Optional[power.PowerMode]:
        return power.jetson_power_mode(self.reader)


class LoadCollector(Collector):
    name = "load"

    def available(self) -> bool:
        return load.load(self.reader) is not None

    def read(self) -> Optional[load.LoadState]:
        return load.load(self.reader)


@dataclass(frozen=True)
class BoardHealth:
    """A microcontroller's own report (through the firmware bridge): supply, uptime, free RAM."""

    supply_v: Optional[float] = None
    uptime_s: Optional[float] = None
    free_bytes: Optional[int] = None


@dataclass(frozen=True)
class HealthSample:
    """One health reading of the device; a None field means "not available here"."""

    battery: Optional[power.BatteryState] = None
    thermal: Optional[Thermal] = None
    throttling: Optional[Throttling] = None
    power_mode: Optional[power.PowerMode] = None
    load: Optional[load.LoadState] = None
    #: a microcontroller's (the bridge fills it; an agent's own device has none)
    board: Optional[BoardHealth] = None

    @property
    def max_temperature_c(self) -> Optional[float]:
        return self.thermal.max_c if self.thermal else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_collectors(reader: SysfsReader, run: Optional[Runner] = None) -> list[Collector]:
    return [
        BatteryCollector(reader, run),
        ThermalCollector(reader),
        ThrottlingCollector(reader),
        PowerModeCollector(reader),
        LoadCollector(reader),
    ]


class HealthMonitor:
    """Reads every available collector into a ``HealthSample``."""

    def __init__(self, reader: Optional[SysfsReader] = None, run: Optional[Runner] = None) -> None:
        self.collectors: list[Collector] = []
        self._warn = WarnOnce(logger)
        reader = reader or SysfsReader()
        for collector in default_collectors(reader, run):
            if self._guard(collector, collector.available, False):
                self.collectors.append(collector)
        logger.info("health collectors: %s", ", ".join(c.name for c in self.collectors) or "none")
        hidden = reader.hidden() if reader.is_live else ()  # (a captured tree holds what its test needs)
        if hidden:  # a container, a chroot, an Android app: its sensors are "unavailable", not broken
            logger.warning("this system hides part of /sys and /proc: %s", ", ".join(hidden))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.collectors)

    def _guard(self, collector: Collector, call: Any, default: Any) -> Any:
        try:
            return call()
        except Exception as err:  # isolate each sensor: one broken driver must not end the report
            self._warn(
                collector.name, "health collector %s failed: %s: %s", collector.name, type(err).__name__, err
            )
            return default

    def sample(self) -> HealthSample:
        readings = {c.name: self._guard(c, c.read, None) for c in self.collectors}
        return HealthSample(**readings)
