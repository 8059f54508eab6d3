"""What a benchmark run is asked to do: the protocol's settings, checked once.

Kept apart from the runner (which needs numpy and a runtime) so the agent daemon can
turn a job's settings into these without loading either.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional

from agent.common.errors import UsageError


def default_threads() -> int:
    """Physical cores: the thread count both runtimes perform best with on edge CPUs; under a CPU
    quota no more than its cores, rounded up (as Go's runtime and the JVM do in containers): a
    thread pool wider than the quota spends it waiting and spinning, and a 0.55-core quota made
    two threads measure 6x slower than free where one thread measured 2x."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except Exception:  # psutil reads /sys and /proc, which a container or Android may hide
        cores = os.cpu_count() or 1
    from agent.collectors._sysfs import SysfsReader
    from agent.collectors.cpu import cpu_quota

    quota = cpu_quota(SysfsReader())
    return max(1, min(cores, math.ceil(quota.cores))) if quota else cores


@dataclass(frozen=True)
class BenchSettings:
    backend: str = "auto"
    threads: Optional[int] = None  # None: physical cores
    runs: int = 50
    warmup_runs: int = 5
    warmup_time_s: float = 0.5
    min_time_s: float = 1.0
    max_time_s: float = 60.0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    providers: tuple[str, ...] = ()
    delegate: Optional[str] = None
    seed: int = 0
    profile: bool = False
    profile_runs: int = 10
    isolate: bool = False

    def validate(self) -> BenchSettings:
        """Check ranges once; return self so calls can chain."""
        checks = [
            (self.runs >= 1, f"--runs must be at least 1 (got {self.runs})"),
            (self.warmup_runs >= 0, f"--warmup must be 0 or more (got {self.warmup_runs})"),
            (
                self.warmup_time_s >= 0,
                f"--warmup-time must be 0 or more (got {self.warmup_time_s})",
            ),
            (self.min_time_s >= 0, f"--min-time must be 0 or more (got {self.min_time_s})"),
            (self.max_time_s > 0, f"--max-time must be more than 0 (got {self.max_time_s})"),
            (
                self.max_time_s >= self.min_time_s,
                f"--max-time {self.max_time_s:g} is shorter than --min-time {self.min_time_s:g}",
            ),
            (
                self.threads is None or self.threads >= 1,
                f"--threads must be at least 1 (got {self.threads})",
            ),
            (self.seed >= 0, f"--seed must be 0 or more (got {self.seed})"),
            (
                all(math.isfinite(t) for t in (self.warmup_time_s, self.min_time_s, self.max_time_s)),
                "--warmup-time, --min-time and --max-time must be finite numbers of seconds",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        return self
