"""The measurement protocol: load, warm up, measure until enough, summarize, flag.

Like TFLite's benchmark_model, onnxruntime_perf_test and pyperf: warm-up runs
until both ``warmup_runs`` and ``warmup_time_s`` are met; then measured runs until
both ``runs`` and ``min_time_s`` are met, capped by ``max_time_s``.  Every run is
timed by ``bench_kernels.time_calls``, in batches sized to about a quarter of a
second so progress can be shown and the time cap honoured without adding any
per-run overhead.

Under a CPU quota (a container's ``--cpus``, systemd's ``CPUQuota=``, a cgroup) a run shorter
than what is left of the quota in its period is not slowed at all, and one that crosses it waits
for the next period: per-run times of a short model say "not limited" while anything longer runs
at the quota's pace.  There each sample is a group of runs lasting at least two periods, divided
by its size, so every figure carries the quota the way a longer job would feel it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from typing import Callable, Optional

import numpy as np

import bench_kernels
from agent.bench import backends
from agent.bench.backends.base import BackendOptions
from agent.bench.inputs import make_inputs, resolve_shapes
from agent.bench.metadata import DeviceSnapshot, stability_warnings, take_snapshot
from agent.bench.results import (
    BenchResult,
    InputInfo,
    ModelInfo,
    OpProfile,
    ProtocolInfo,
    TimerInfo,
)
from agent.bench.settings import BenchSettings, default_threads
from agent.bench.stats import LatencyStats
from agent.collectors._sysfs import SysfsReader
from agent.collectors.cpu import CpuQuota, cpu_quota
from agent.common.errors import BenchmarkError

logger = logging.getLogger(__name__)

#: progress callback: (phase, runs done, runs wanted, seconds elapsed)
Progress = Callable[[str, int, int, float], None]

# CV at or above this share is flagged as noisy (the 10 %).
CV_WARN = 0.10
# Fewer samples than this make p90/p99 meaningless.
MIN_SAMPLES = 10
# Target duration of one measured batch.
BATCH_S = 0.25
# Measured runs stop here whatever the time asked: a microsecond-scale model timed
# for minutes would otherwise keep tens of millions of samples, more than a 1 GB
# Raspberry Pi can hold.  A million samples is plenty for any percentile.
MAX_RUNS = 1_000_000


def _file_digest(path: str) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _time_batch(call: Callable[[], object], n: int, path: str) -> np.ndarray:
    out = np.empty(n, dtype=np.int64)
    try:
        bench_kernels.time_calls(call, n, out)
    except Exception as err:  # a runtime error inside the model: name the model
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        raise BenchmarkError(f"running {path!r} failed: {first}") from err
    return out


def runs_per_sample(call: Callable[[], object], seconds: float, path: str = "model") -> int:
    """How many runs of ``call`` in a row last at least ``seconds`` at full speed: from the fastest
    of a few single runs (under a quota a slow one may only have waited for the next period)."""
    fastest = max(1, int(_time_batch(call, 5, path).min()))
    return max(1, min(MAX_RUNS, math.ceil(seconds * 1e9 / fastest)))


def _repeated(call: Callable[[], object], n: int) -> Callable[[], object]:
    if n == 1:
        return call

    def group() -> None:
        for _ in range(n):
            call()

    return group


def measure(
    call: Callable[[], object],
    settings: BenchSettings,
    path: str = "model",
    progress: Optional[Progress] = None,
) -> tuple[int, list[np.ndarray], float]:
    """Warm up and measure ``call``.

    Returns (warm-up runs done, batches of samples in ns, seconds spent measuring).
    """
    now = bench_kernels.now_ns
    cap_ns = int(settings.max_time_s * 1e9)

    # Warm-up: both the run count and the time must be met (either may be 0), capped.
    start = now()
    warm = 0
    while warm < settings.warmup_runs or (now() - start) < settings.warmup_time_s * 1e9:
        _time_batch(call, 1, path)
        warm += 1
        if progress:
            progress("warm-up", warm, settings.warmup_runs, (now() - start) / 1e9)
        if now() - start >= cap_ns:
            break

    batches: list[np.ndarray] = []
    done = 0
    per_run_ns = 0.0
    start = now()
    while True:
        elapsed = now() - start
        if done >= settings.runs and elapsed >= settings.min_time_s * 1e9:
            break
        if elapsed >= cap_ns or done >= MAX_RUNS:
            break
        if done == 0:
            n = 1
        else:
            per_run_ns = max(per_run_ns, 1.0)
            want_runs = max(settings.runs - done, 1)
            want_time = max(settings.min_time_s * 1e9 - elapsed, 0) / per_run_ns
            n = int(min(max(want_runs, want_time, 1), BATCH_S * 1e9 / per_run_ns + 1))
            n = max(1, min(n, int((cap_ns - elapsed) / per_run_ns) + 1, MAX_RUNS - done))
        batch = _time_batch(call, n, path)
        batches.append(batch)
        done += n
        per_run_ns = float((now() - start) / done)
        if progress:
            progress("measure", done, settings.runs, (now() - start) / 1e9)
    return warm, batches, (now() - start) / 1e9


def run_benchmark(path: str, settings: BenchSettings, progress: Optional[Progress] = None) -> BenchResult:
    """Benchmark one model file in this process and return its immutable record."""
    settings.validate()
    backend = backends.for_model(path, settings.backend)
    threads = settings.threads or default_threads()
    before = take_snapshot()

    t0 = bench_kernels.now_ns()
    session = backend.open(
        path,
        BackendOptions(threads=threads, providers=settings.providers, delegate=settings.delegate),
    )
    try:
        load_ms = (bench_kernels.now_ns() - t0) / 1e6
        shapes = resolve_shapes(session.inputs, settings.shapes, repr(path))
        feeds = make_inputs(session.inputs, shapes, seed=settings.seed)
        call = session.prepare(feeds)
        first_run_ms = float(_time_batch(call, 1, path)[0]) / 1e6
        if progress:
            progress("loaded", 0, settings.runs, load_ms / 1e3)
        quota = cpu_quota(SysfsReader())
        per_sample = runs_per_sample(call, 2 * quota.period_s, path) if quota else 1
        warm, batches, measure_s = measure(_repeated(call, per_sample), settings, path, progress)
        after = take_snapshot()
        profile: tuple[OpProfile, ...] = ()
        if settings.profile:
            if progress:
                progress("profile", 0, settings.profile_runs, 0.0)
            profile = tuple(session.profile(feeds, settings.profile_runs))
    finally:
        session.close()

    samples = (np.concatenate(batches) // per_sample).tolist()
    stats = LatencyStats.from_ns(samples)
    size, digest = _file_digest(path)
    return BenchResult(
        model=ModelInfo(
            path=os.path.abspath(path),
            name=os.path.basename(path),
            format=backends.detect_format(path),
            size_bytes=size,
            sha256=digest,
            inputs=tuple(InputInfo(s.name, tuple(shapes[s.name]), s.dtype) for s in session.inputs),
        ),
        backend=session.info,
        timer=TimerInfo(bench_kernels.IMPL, bench_kernels.CLOCK, bench_kernels.resolution_ns()),
        protocol=ProtocolInfo(
            warmup_runs=settings.warmup_runs,
            warmup_time_s=settings.warmup_time_s,
            runs=settings.runs,
            min_time_s=settings.min_time_s,
            max_time_s=settings.max_time_s,
            seed=settings.seed,
            isolated=settings.isolate,
            warmup_done=warm,
            measure_time_s=round(measure_s, 6),
            load_ms=round(load_ms, 3),
            first_run_ms=round(first_run_ms, 3),
            runs_per_sample=per_sample,
        ),
        stats=stats,
        device=before,
        samples_ns=tuple(samples),
        warnings=tuple(
            run_warnings(stats, settings, before, after, measure_s) + quota_warnings(quota, per_sample)
        ),
        profile=profile,
    )


def quota_warnings(quota: Optional[CpuQuota], per_sample: int) -> list[str]:
    """What a CPU quota did to the measurement, in words (nothing without one)."""
    if quota is None:
        return []
    return [
        f"this process runs under a CPU quota ({quota.cores:.2f} cores per {quota.period_s * 1e3:g} ms): "
        f"each sample is the mean of {per_sample} runs in a row (at least two periods), so the quota "
        "slows every figure as it slows a longer job"
    ]


def run_warnings(
    stats: LatencyStats,
    settings: BenchSettings,
    before: DeviceSnapshot,
    after: DeviceSnapshot,
    measure_s: Optional[float] = None,
) -> list[str]:
    """Everything that makes these numbers less trustworthy, in words."""
    warnings = []
    if stats.n >= MAX_RUNS and measure_s is not None and measure_s < settings.min_time_s:
        warnings.append(
            f"measuring stopped at the {MAX_RUNS:,}-run cap after {measure_s:.1f} s, "
            f"before --min-time {settings.min_time_s:g} s"
        )
    if stats.n < settings.runs:
        warnings.append(f"only {stats.n} of {settings.runs} runs fit in --max-time {settings.max_time_s:g} s")
    if stats.n < MIN_SAMPLES:
        warnings.append(
            f"only {stats.n} samples: p90 and p99 are rough; ask for --runs {MIN_SAMPLES} or more"
        )
    if stats.cv >= CV_WARN:
        warnings.append(
            f"CV {stats.cv * 100:.1f} % >= {CV_WARN * 100:.0f} %: the runs vary a lot "
            f"({stats.outliers} outliers); other load, frequency scaling or heat may be at work"
        )
    if bench_kernels.IMPL != "native":
        warnings.append(
            f"timed with the pure-Python timer ({bench_kernels.FALLBACK_REASON}): each sample "
            "includes the interpreter's loop overhead"
        )
    warnings.extend(stability_warnings(before, after))
    return warnings
