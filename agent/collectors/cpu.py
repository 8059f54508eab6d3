"""CPU identity and frequency scaling: model, cores, governor and frequencies per policy."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

from agent.collectors._sysfs import SysfsReader


@dataclass(frozen=True)
class FreqPolicy:
    """One cpufreq policy (a cluster on big.LITTLE phones and Jetsons); MHz, None if unknown."""

    cpus: str
    governor: Optional[str]
    cur_mhz: Optional[float]
    min_mhz: Optional[float]
    max_mhz: Optional[float]


def _khz_to_mhz(khz: Optional[int]) -> Optional[float]:
    # A zero frequency means "not reported" (this VM's psutil says min == 0).
    return round(khz / 1000.0, 1) if khz else None


def cpu_model(reader: SysfsReader) -> Optional[str]:
    """CPU model string from /proc/cpuinfo ("model name" on x86, "Model"/"Hardware" on ARM)."""
    text = reader.read_text("/proc/cpuinfo") or ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            found.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "cpu model", "hardware", "model", "processor"):
        model = found.get(key)
        if model and not model.isdigit():
            return model
    return None


def board_model(reader: SysfsReader) -> Optional[str]:
    """Board name from the device tree (Raspberry Pi, Coral Dev Board, Jetson), if any."""
    return reader.read_text("/proc/device-tree/model") or reader.read_text(
        "/sys/firmware/devicetree/base/model"
    )


def _count_cpus(reader: SysfsReader) -> tuple[Optional[int], Optional[int]]:
    """(logical, physical) core counts from sysfs topology; None where unreadable."""
    cpus = [p for p in reader.glob("/sys/devices/system/cpu/cpu[0-9]*") if re.search(r"cpu\d+$", p)]
    if not cpus:
        if reader.is_live:
            import psutil

            try:
                physical = psutil.cpu_count(logical=False)
            except Exception:  # /sys and /proc hidden: psutil has nothing to count from
                physical = None
            return os.cpu_count(), physical
        return None, None
    cores = set()
    for cpu in cpus:
        pkg = reader.read_text(f"{cpu}/topology/physical_package_id") or "0"
        core = reader.read_text(f"{cpu}/topology/core_id")
        cores.add((pkg, core if core is not None else cpu))
    return len(cpus), len(cores)


def freq_policies(reader: SysfsReader) -> tuple[FreqPolicy, ...]:
    """Every cpufreq policy; falls back to /proc/cpuinfo "cpu MHz" on VMs without cpufreq."""
    policies = []
    for pol in reader.glob("/sys/devices/system/cpu/cpufreq/policy[0-9]*"):
        policies.append(
            FreqPolicy(
                cpus=reader.read_text(f"{pol}/related_cpus")
                or reader.read_text(f"{pol}/affected_cpus")
                or "?",
                governor=reader.read_text(f"{pol}/scaling_governor"),
                cur_mhz=_khz_to_mhz(reader.read_int(f"{pol}/scaling_cur_freq")),
                min_mhz=_khz_to_mhz(reader.read_int(f"{pol}/scaling_min_freq")),
                max_mhz=_khz_to_mhz(reader.read_int(f"{pol}/scaling_max_freq")),
            )
        )
    if policies:
        return tuple(policies)
    text = reader.read_text("/proc/cpuinfo") or ""
    match = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.MULTILINE)
    if match and float(match.group(1)) > 0:
        return (FreqPolicy("all", None, round(float(match.group(1)), 1), None, None),)
    return ()


@dataclass(frozen=True)
class CpuInfo:
    model: Optional[str]
    board: Optional[str]
    cores_logical: Optional[int]
    cores_physical: Optional[int]


def cpu_info(reader: SysfsReader) -> CpuInfo:
    logical, physical = _count_cpus(reader)
    return CpuInfo(cpu_model(reader), board_model(reader), logical, physical)


@dataclass(frozen=True)
class CpuQuota:
    """A CFS bandwidth limit on this process's cgroup or one above it (a container's ``--cpus``,
    systemd's ``CPUQuota=``): ``cores`` of CPU time per ``period_s``.  Where several levels
    limit, the tightest share and the longest period."""

    cores: float
    period_s: float


def _quota_levels(reader: SysfsReader) -> list[tuple[int, int]]:
    """(quota, period) in microseconds of every limited cgroup from this process's up to the root."""
    levels: list[tuple[int, int]] = []
    for line in (reader.read_text("/proc/self/cgroup") or "").splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path.startswith("/"):
            continue
        if number == "0" and controllers == "":  # cgroup v2: one tree, cpu.max "QUOTA PERIOD"
            bases = ["/sys/fs/cgroup"]
            v2 = True
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own tree
            bases = [f"/sys/fs/cgroup/{controllers}", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"]
            v2 = False
        else:
            continue
        base = next((b for b in bases if reader.exists(b)), None)
        if base is None:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            where = "/".join([base, *parts[:depth]])
            if v2:
                quota, _, period = (reader.read_text(f"{where}/cpu.max") or "").partition(" ")
                if quota.isdigit() and period.isdigit():
                    levels.append((int(quota), int(period)))
            else:
                q = reader.read_int(f"{where}/cpu.cfs_quota_us")
                p = reader.read_int(f"{where}/cpu.cfs_period_us")
                if q is not None and p and q > 0:
                    levels.append((q, p))
    return [(q, p) for q, p in levels if q > 0 and p > 0]


def cpu_quota(reader: SysfsReader) -> Optional[CpuQuota]:
    """The CPU quota this process runs under, None when there is none (or it cannot be read)."""
    levels = _quota_levels(reader)
    if not levels:
        return None
    return CpuQuota(min(q / p for q, p in levels), max(p for _, p in levels) / 1e6)
