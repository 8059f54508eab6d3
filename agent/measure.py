"""What the agent does with a job: check it against this device, then measure each item.

A job that decoded is well formed (``agent.protocol.jobs``); what only this device can
say is checked here, before the job is accepted: its models are files inside the model
directory (``..``, absolute paths and symlinks pointing out are refused), its search
spaces are ones this agent can build, and its settings stay within this device's limits
(``[jobs]``).  The settings then become the benchmark's own ``BenchSettings`` in one
place, ``bench_settings``, so nothing is validated twice under different rules.

Each item is measured in a worker process (``bench_target``, ``lut_target``): an
architecture is built into the cache there, so the daemon itself never loads numpy or
a runtime.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from agent.bench.settings import BenchSettings
from agent.common.errors import FleetbenchError, UsageError
from agent.config import JobsConfig
from agent.device.jobs import JobError
from agent.materialize.families import FAMILIES, KINDS, table_size
from agent.protocol.jobs import ArchItem, JobSettings, JobSpec, LayerProfileItem, LutItem, WidthLutItem
from agent.protocol.reports import LutRow, LutTable

#: what a lookup table's item measures unless the job says otherwise
LUT_DEFAULTS = {"threads": 1, "runs": 20, "warmup_runs": 3, "warmup_time_s": 0.1, "min_time_s": 0.2}


def resolve_model(name: str, model_dir: str) -> str:
    """The real path of a job's model inside ``model_dir``; JobError if it is anywhere else."""
    if name.startswith("example:"):
        from agent.bench import examples

        try:
            return examples.resolve(name)
        except FleetbenchError as err:
            raise JobError(str(err)) from None
    if not name or "\x00" in name or os.path.isabs(name):
        raise JobError(f"model {name!r} must be a path relative to the model directory")
    root = os.path.realpath(model_dir)
    path = os.path.realpath(os.path.join(root, name))  # follows symlinks: a link out is caught too
    if os.path.commonpath([root, path]) != root:
        raise JobError(f"model {name!r} is outside the model directory")
    if not os.path.isfile(path):
        raise JobError(f"model {name!r} is not in the model directory {model_dir}")
    return path


def bench_settings(settings: JobSettings, limits: JobsConfig, defaults: Any = None) -> BenchSettings:
    """The job's settings as this device's ``BenchSettings``; JobError past ``limits``."""
    given = settings.given()
    max_threads = limits.max_threads or os.cpu_count() or 1
    for key, limit, name in (("runs", limits.max_runs, "jobs.max_runs"),
                             ("warmup_runs", limits.max_warmup_runs, "jobs.max_warmup_runs"),
                             ("threads", max_threads, "jobs.max_threads, else the cores")):  # fmt: skip
        value = given.get(key)
        if isinstance(value, int) and value > limit:
            raise JobError(f"settings.{key} {value} is more than this device allows ({name} = {limit})")
    for key in ("max_time_s", "min_time_s", "warmup_time_s"):
        value = given.get(key)
        if isinstance(value, float) and value > limits.max_time_s:
            raise JobError(
                f"settings.{key} {value:g} s is more than this device allows "
                f"(jobs.max_time_s = {limits.max_time_s:g})"
            )
    try:
        return BenchSettings(**{**(defaults or {}), **given}).validate()
    except UsageError as err:
        raise JobError(f"settings: {err}") from None


def check_job(spec: JobSpec, model_dir: str, limits: JobsConfig) -> None:
    """JobError naming the first thing this device cannot do in ``spec``."""
    from agent.materialize import SPACES, check

    for name in spec.models:
        resolve_model(name, model_dir)
    named = [(f"architectures[{i}]", item) for i, item in enumerate(spec.architectures)]
    if spec.probe is not None:
        named += [(f"probe.archs[{i}]", item) for i, item in enumerate(spec.probe.architectures)]
    for where, item in named:
        if item.space not in SPACES:
            field = where.replace(".archs", "").split("[")[0] if where.startswith("probe") else where
            raise JobError(f"{field}.space must be one of {', '.join(SPACES)} (got {item.space!r})")
        try:
            check(item.space, item.arch, item.classes, item.resolution)
        except ValueError as err:
            raise JobError(f"{where}: {err}") from None
    spaces = [s for s in SPACES if s not in FAMILIES]
    if spec.lut is not None and spec.lut.space in FAMILIES:
        raise JobError(f"lut.space {spec.lut.space} is a prunable family: ask for its width_lut")
    if spec.lut is not None and spec.lut.space not in spaces:
        raise JobError(f"lut.space must be one of {', '.join(spaces)} (got {spec.lut.space!r})")
    if spec.layer_profile is not None and spec.layer_profile.space not in FAMILIES:
        raise JobError(
            f"layer_profile.space must be one of {', '.join(FAMILIES)} (got {spec.layer_profile.space!r})"
        )
    if spec.width_lut is not None and spec.width_lut.space not in FAMILIES:
        raise JobError(f"width_lut.space must be one of {', '.join(FAMILIES)} (got {spec.width_lut.space!r})")
    settings = bench_settings(spec.settings, limits)
    need_s = estimate_s(spec, settings)
    if need_s > limits.max_job_s:
        raise JobError(
            f"the job could take {need_s:.0f} s of this device's time, more than it gives one job "
            f"(jobs.max_job_s = {limits.max_job_s:g}); split it, or ask for less time per item"
        )


#: what building an architecture may take, on top of measuring it
BUILD_S = 5.0


def estimate_s(spec: JobSpec, settings: BenchSettings) -> float:
    """The most device time a job's items can take: warm-up and measuring up to their limits
    (a lookup table measures each of its ``sample`` architectures' layers like an item)."""
    per_item = settings.warmup_time_s + settings.max_time_s
    items = len(spec.models) + len(spec.all_architectures) * (1 + BUILD_S / per_item)
    if spec.lut is not None:
        items += spec.lut.sample
    if spec.width_lut is not None:  # each layer at each grid width, then the whole width specs
        items += spec.width_lut.sample + table_size(spec.width_lut.space, spec.width_lut.grid)
    if spec.layer_profile is not None:  # a few layers of each kind (lut.profile_keys)
        items += 2 * len(KINDS)
    return items * per_item


def cache_path(cache_dir: str, item: ArchItem) -> str:
    """Where a materialized architecture lives on the device (named by a hash of its key)."""
    return os.path.join(cache_dir, f"{hashlib.sha256(item.key.encode()).hexdigest()[:20]}.{item.format}")


def bench_target(payload: Any, send_progress: Any) -> Any:
    """Worker-process entry: benchmark one model (building an architecture into the cache
    first, here in the worker).  Returns the ``BenchResult``."""
    from agent.bench.runner import run_benchmark

    path, settings, arch, max_model_bytes = payload
    if arch is not None and not os.path.exists(path):
        from agent.materialize import materialize, parameter_bytes, write_model

        send_progress("materializing", 0, 0, 0.0)
        net = materialize(
            arch.space, arch.arch, seed=arch.seed, classes=arch.classes, resolution=arch.resolution
        )
        size = parameter_bytes(net)
        if size > max_model_bytes:
            raise UsageError(
                f"its weights are {size / 1e6:.0f} MB, more than this device builds "
                f"(jobs.max_model_bytes = {max_model_bytes / 1e6:.0f} MB)"
            )
        write_model(net, path)
    return run_benchmark(path, settings, progress=send_progress)


def lut_target(payload: Any, send_progress: Any) -> LutTable:
    """Worker-process entry: build a layer lookup table, or a family's width table (``fleetbench
    lut`` for a job)."""
    from agent.materialize import lut
    from agent.materialize import sample as sample_archs

    item, settings = payload
    assert isinstance(item, (LutItem, WidthLutItem, LayerProfileItem)) and isinstance(settings, BenchSettings)
    say = lambda text: send_progress(text, 0, 0, 0.0)  # noqa: E731
    sample = 0
    if isinstance(item, LayerProfileItem):
        run = lut.run_profile(item.space, item.format, settings, say)
    elif isinstance(item, WidthLutItem):
        run = lut.run_widths(item.space, item.grid, item.sample, item.seed, item.format, settings, say)
        sample = item.sample
    else:
        run = lut.run(
            item.space, sample_archs(item.space, item.sample, item.seed), item.format, settings, say
        )
        sample = item.sample
    srcc = run.srcc if len(run.measured_ms) >= 3 else float("nan")
    return LutTable(
        space=item.space,
        sample=sample,
        seed=getattr(item, "seed", 0),
        format=item.format,
        grid=tuple(item.grid) if isinstance(item, WidthLutItem) else None,
        srcc=srcc if srcc == srcc else None,
        archs=tuple(run.archs),
        measured_ms=tuple(run.measured_ms),
        predicted_ms=tuple(run.predicted_ms),
        rows=tuple(LutRow(**r) for r in lut.to_rows(run.table, run.uses)),
    )


def prune_cache(cache_dir: str, limit_bytes: int, keep: str = "") -> int:
    """Remove the least recently used built models until the cache holds at most
    ``limit_bytes`` (never ``keep``, the one just used); how many bytes were freed."""
    try:
        entries = [e for e in os.scandir(cache_dir) if e.is_file(follow_symlinks=False)]
    except OSError:
        return 0
    stats = sorted(((e.stat().st_mtime, e.stat().st_size, e.path) for e in entries), reverse=True)
    total, freed = sum(size for _, size, _ in stats), 0
    for _, size, path in reversed(stats):  # the oldest first
        if total - freed <= limit_bytes:
            break
        if path == keep:
            continue
        try:
            os.unlink(path)
            freed += size
        except OSError:
            pass
    return freed
