"""Load and memory, from /proc (through the injectable reader, so fixture trees work)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from agent.collectors._sysfs import SysfsReader


@dataclass(frozen=True)
class LoadState:
    load_1m: float
    load_5m: float
    mem_total_mb: Optional[float]
    mem_available_mb: Optional[float]


def _meminfo_mb(text: str, key: str) -> Optional[float]:
    match = re.search(rf"^{key}:\s*(\d+)\s*kB", text, re.MULTILINE)
    return round(int(match.group(1)) / 1024.0, 1) if match and int(match.group(1)) else None


def load(reader: SysfsReader) -> Optional[LoadState]:
    """Load averages and memory; None where /proc/loadavg is unreadable."""
    fields = (reader.read_text("/proc/loadavg") or "").split()
    try:
        load_1m, load_5m = float(fields[0]), float(fields[1])
    except (IndexError, ValueError):
        return None
    meminfo = reader.read_text("/proc/meminfo") or ""
    # MemAvailable exists since Linux 3.14; older kernels only say MemFree.
    avail = _meminfo_mb(meminfo, "MemAvailable") or _meminfo_mb(meminfo, "MemFree")
    return LoadState(load_1m, load_5m, _meminfo_mb(meminfo, "MemTotal"), avail)
