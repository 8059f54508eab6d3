"""Degradation state: a fixed reference workload, timed now and then, against its first timing.

Boards of one model number drift apart with age, heat and battery wear (the HDAP
paper's observation), and their results only compare once that drift is known.  So
the agent times a small, fixed CPU workload when it first starts (the baseline) and
again every ``interval_s``, but only while the device is idle and cool, so the probe
neither disturbs its users nor measures their load.  The degradation index is the
latest median over the baseline median: 1.00 as new, 1.15 means 15 % slower.

The baseline is kept on disk (``degradation.json`` in the state directory) with a
fingerprint of what was timed (workload version, Python, numpy, timer); when the
fingerprint changes after an upgrade, the next measurement becomes a new baseline
instead of a false alarm.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from agent.collectors.health import HealthSample
from agent.common.files import write_text_atomic

logger = logging.getLogger(__name__)

WORKLOAD_VERSION = 1
WORKLOAD_RUNS = 200
HISTORY = 100  # measurements kept on disk


def reference_workload(payload: Any, send_progress: Callable[..., None]) -> dict[str, Any]:
    """Time the reference workload (runs in a worker process).

    Eight 64x64 float32 matrix products with a tanh between them: about 4 MFLOP, well
    under a millisecond on a Raspberry Pi 4, small enough to stay in the L2 cache so
    it measures the CPU and its clock, not the memory system.  BLAS is kept to one
    thread so the number does not depend on what other cores are doing.
    """
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import platform

    import numpy as np

    import bench_kernels

    runs = int(payload.get("runs", WORKLOAD_RUNS)) if isinstance(payload, dict) else WORKLOAD_RUNS
    rng = np.random.default_rng(20221122)
    a = rng.standard_normal((64, 64), dtype=np.float32)
    b = (rng.standard_normal((64, 64), dtype=np.float32) / 8.0).astype(np.float32)

    def step() -> None:
        x = a
        for _ in range(8):
            x = np.tanh(x @ b)

    warm = np.empty(runs // 4 + 1, dtype=np.int64)
    bench_kernels.time_calls(step, len(warm), warm)
    out = np.empty(runs, dtype=np.int64)
    bench_kernels.time_calls(step, runs, out)
    return {
        "median_ns": float(np.median(out)),
        "runs": runs,
        "fingerprint": {
            "workload": WORKLOAD_VERSION,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
            "timer": bench_kernels.IMPL,
        },
    }


@dataclass(frozen=True)
class DegradationState:
    """The index (latest reference time over the baseline; None before a baseline) and its parts."""

    index: Optional[float] = None
    baseline_ms: Optional[float] = None
    last_ms: Optional[float] = None
    baseline_at: Optional[float] = None
    last_at: Optional[float] = None
    measurements: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class DegradationTracker:
    """Decides when to probe, and keeps the baseline and history on disk."""

    def __init__(self, path: str, interval_s: float, max_load_per_core: float, max_temperature_c: float):
        self.path = path
        self.interval_s = interval_s
        self.max_load_per_core = max_load_per_core
        self.max_temperature_c = max_temperature_c
        self._data = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
            if isinstance(data, dict) and isinstance(data.get("baseline"), dict):
                return data
            raise ValueError("no baseline in it")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            # A damaged file costs a baseline, not the agent: start over, say so.
            logger.warning("degradation state %s is unreadable (%s); taking a new baseline", self.path, err)
            return {}

    def due(self, now: float) -> bool:
        last = self._data.get("history", [{}])[-1].get("at") if self._data.get("history") else None
        return last is None or now - float(last) >= self.interval_s

    def blocked_by(self, sample: HealthSample, cores: Optional[int]) -> Optional[str]:
        """Why the probe should not run now, or None if the device is idle and cool."""
        if sample.load is not None and cores:
            per_core = sample.load.load_1m / cores
            if per_core > self.max_load_per_core:
                return f"busy (load {per_core:.2f} per core > {self.max_load_per_core:g})"
        hottest = sample.max_temperature_c
        if hottest is not None and hottest > self.max_temperature_c:
            return f"warm ({hottest:.1f} C > {self.max_temperature_c:g} C)"
        return None

    def record(self, measurement: dict[str, Any], now: Optional[float] = None) -> DegradationState:
        now = time.time() if now is None else now
        median = float(measurement["median_ns"])
        fingerprint = measurement.get("fingerprint")
        baseline = self._data.get("baseline")
        if baseline is None or self._data.get("fingerprint") != fingerprint:
            if baseline is not None:
                logger.info(
                    "the reference workload changed (%s -> %s); taking a new baseline",
                    self._data.get("fingerprint"),
                    fingerprint,
                )
            self._data = {
                "fingerprint": fingerprint,
                "baseline": {"median_ns": median, "at": now},
                "history": [],
            }
            baseline = self._data["baseline"]
        index = round(median / float(baseline["median_ns"]), 4)
        history = self._data.setdefault("history", [])
        history.append({"at": now, "median_ns": median, "index": index})
        del history[:-HISTORY]
        write_text_atomic(self.path, json.dumps(self._data, indent=1) + "\n", what="degradation state")
        return self.state()

    def state(self) -> DegradationState:
        baseline = self._data.get("baseline")
        history = self._data.get("history") or []
        last = history[-1] if history else None
        return DegradationState(
            index=last["index"] if last else None,
            baseline_ms=round(baseline["median_ns"] / 1e6, 4) if baseline else None,
            last_ms=round(last["median_ns"] / 1e6, 4) if last else None,
            baseline_at=baseline["at"] if baseline else None,
            last_at=last["at"] if last else None,
            measurements=len(history),
        )
