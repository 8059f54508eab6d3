"""Benchmark jobs from the coordinator: checked strictly, kept on disk until finished.

A job arrives on the device's ``jobs`` topic as the ``data`` of an envelope:

    {"job_id": "j-42",
     "models": ["mobilenet_v2.tflite", "squeezenet/model.onnx", "example:squeezenet"],
     "settings": {"runs": 100, "warmup_runs": 10, "threads": 1, "backend": "auto"}}

Models are paths relative to the agent's model directory (where pushed models land),
or ``example:NAME``.  Anything else is refused with a reason on the ``acks`` topic:
unknown fields (a typo must not silently change a measurement), paths that leave the
model directory (``..``, absolute paths, symlinks pointing out), missing models, and
run counts or times beyond the configured limits.  Search-space architectures need
the materializer and are refused for now, with that reason.

Accepted jobs are written to ``STATE_DIR/jobs/`` before they are acknowledged and
removed only when finished, so a job interrupted by a reboot, ``kill -9`` or a
graceful stop resumes with the models it had not finished.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from agent.config import JobsConfig
from agent.errors import FleetbenchError
from agent.files import write_text_atomic

logger = logging.getLogger(__name__)

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_JOB_FIELDS = {"job_id", "models", "architectures", "lut", "settings"}
_LUT_FIELDS = {"space", "sample", "seed", "format"}
MAX_LUT_SAMPLE = 500
_ARCH_FIELDS = {"space", "arch", "seed", "classes", "resolution", "format"}
MAX_MODELS = 100
# settings key -> (type, minimum); the rest of BenchSettings is the device's business.
_SETTINGS: dict[str, tuple[type, Any]] = {
    "backend": (str, None),
    "threads": (int, 1),
    "runs": (int, 1),
    "warmup_runs": (int, 0),
    "warmup_time_s": (float, 0.0),
    "min_time_s": (float, 0.0),
    "max_time_s": (float, 0.0),
    "seed": (int, 0),
}
_BACKENDS = ("auto", "onnxruntime", "litert")


class JobError(FleetbenchError):
    """A job is malformed or unsafe; its message goes back on the acks topic."""


@dataclass(frozen=True)
class ArchItem:
    """A search-space architecture to materialize on the device and time like a model."""

    space: str
    arch: str
    seed: int = 0
    classes: Optional[int] = None  # None: the space's default (DEFAULTS in agent.materialize)
    resolution: Optional[int] = None
    format: str = "onnx"  # or "tflite"

    @property
    def key(self) -> str:
        """The item's name in acks and results; deterministic, so retries keep their ids."""
        from agent.materialize import DEFAULTS

        classes, size = self.classes or DEFAULTS[self.space][0], self.resolution or DEFAULTS[self.space][1]
        return f"{self.space}:{self.arch}:seed={self.seed}:classes={classes}:{size}px.{self.format}"


@dataclass(frozen=True)
class LutItem:
    """Build a layer lookup table for a search space here (``fleetbench lut`` as a job)."""

    space: str
    sample: int = 30
    seed: int = 0
    format: str = "onnx"

    @property
    def key(self) -> str:
        return f"lut:{self.space}:sample={self.sample}:seed={self.seed}.{self.format}"


@dataclass(frozen=True)
class Job:
    job_id: str
    models: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    done: tuple[str, ...] = ()  # items already measured and queued in the outbox
    architectures: tuple[ArchItem, ...] = ()
    lut: Optional[LutItem] = None

    @property
    def items(self) -> tuple[str, ...]:
        """Everything the job measures, by name: model paths, architecture keys, the table."""
        return self.models + tuple(a.key for a in self.architectures) + ((self.lut.key,) if self.lut else ())

    @property
    def remaining(self) -> tuple[str, ...]:
        return tuple(m for m in self.items if m not in self.done)

    def architecture(self, key: str) -> Optional[ArchItem]:
        return next((a for a in self.architectures if a.key == key), None)


def _check_setting(key: str, value: Any, limits: JobsConfig) -> Any:
    """One setting's value, checked against its type, minimum and this device's limits."""
    if key not in _SETTINGS:
        raise JobError(f"settings.{key} is not a known setting (known: {', '.join(sorted(_SETTINGS))})")
    typ, minimum = _SETTINGS[key]
    if isinstance(value, bool) or not (isinstance(value, typ) or (typ is float and isinstance(value, int))):
        raise JobError(f"settings.{key} must be {'a whole number' if typ is int else typ.__name__}")
    return _check_range(key, typ, minimum, value, limits)


def _check_range(key: str, typ: type, minimum: Any, value: Any, limits: JobsConfig) -> Any:
    if typ is float and not (value == value and value != float("inf")):
        raise JobError(f"settings.{key} must be a finite number")
    if key == "max_time_s" and value <= 0:
        raise JobError(f"settings.max_time_s must be more than 0 (got {value})")
    if minimum is not None and value < minimum:
        raise JobError(f"settings.{key} must be at least {minimum} (got {value})")
    if key == "backend" and value not in _BACKENDS:
        raise JobError(f"settings.backend must be one of {', '.join(_BACKENDS)} (got {value!r})")
    if key == "runs" and value > limits.max_runs:
        raise JobError(
            f"settings.runs {value} is more than this device allows (jobs.max_runs = {limits.max_runs})"
        )
    if key in ("max_time_s", "min_time_s", "warmup_time_s") and value > limits.max_time_s:
        raise JobError(
            f"settings.{key} {value:g} s is more than this device allows "
            f"(jobs.max_time_s = {limits.max_time_s:g})"
        )
    return float(value) if typ is float else value


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


def check_job_id(job_id: Any) -> str:
    """The job id if it is one (it becomes part of file names and message ids), else JobError."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise JobError("job_id must be 1-128 letters, digits, '.', '_', ':' or '-'")
    return job_id


def parse_job(data: Any, model_dir: str, limits: JobsConfig) -> Job:
    """Check a job message strictly; JobError names the first thing wrong with it."""
    if not isinstance(data, dict):
        raise JobError("a job must be a JSON object")
    job_id = check_job_id(data.get("job_id"))
    unknown = sorted(set(data) - _JOB_FIELDS)
    if unknown:
        raise JobError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; a job has {', '.join(sorted(_JOB_FIELDS))}"
        )
    models = data.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise JobError("models must be a list of model names")
    raw_archs = data.get("architectures", [])
    if not isinstance(raw_archs, list):
        raise JobError("architectures must be a list of {space, arch, seed} objects")
    archs = tuple(_parse_arch_item(i, item) for i, item in enumerate(raw_archs))
    table = _parse_lut(data["lut"]) if "lut" in data else None
    total = len(models) + len(archs)
    if total == 0 and table is None:
        raise JobError("a job needs at least one model, architecture or lut")
    if total > MAX_MODELS:
        raise JobError(f"a job may name at most {MAX_MODELS} models and architectures (got {total})")
    if len(set(models)) != len(models) or len({a.key for a in archs}) != len(archs):
        raise JobError("the job names the same model or architecture twice")
    for name in models:
        resolve_model(name, model_dir)
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise JobError("settings must be a JSON object")
    checked = {key: _check_setting(key, value, limits) for key, value in settings.items()}
    if checked.get("max_time_s", float("inf")) < checked.get("min_time_s", 0.0):
        raise JobError("settings.max_time_s is shorter than settings.min_time_s")
    return Job(job_id=job_id, models=tuple(models), settings=checked, architectures=archs, lut=table)


def _parse_lut(item: Any) -> LutItem:
    from agent.materialize import SPACES

    if not isinstance(item, dict):
        raise JobError("lut must be an object with space and optionally sample, seed and format")
    unknown = sorted(set(item) - _LUT_FIELDS)
    if unknown:
        raise JobError(f"lut has unknown field(s) {', '.join(map(repr, unknown))}")
    if item.get("space") not in SPACES:
        raise JobError(f"lut.space must be one of {', '.join(SPACES)} (got {item.get('space')!r})")
    checks = (
        (
            "sample",
            lambda v: _whole(v) and 2 <= v <= MAX_LUT_SAMPLE,
            f"a whole number from 2 to {MAX_LUT_SAMPLE}",
        ),
        ("seed", lambda v: _whole(v) and v >= 0, "a whole number >= 0"),
        ("format", lambda v: v in ("onnx", "tflite"), '"onnx" or "tflite"'),
    )
    for key, ok, what in checks:
        if key in item and not ok(item[key]):
            raise JobError(f"lut.{key} must be {what} (got {item[key]!r})")
    return LutItem(**item)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_arch_item(index: int, item: Any) -> ArchItem:
    from agent.materialize import SPACES, check

    where = f"architectures[{index}]"
    if not isinstance(item, dict):
        raise JobError(f"{where} must be an object with space, arch and optionally seed")
    unknown = sorted(set(item) - _ARCH_FIELDS)
    if unknown:
        raise JobError(f"{where} has unknown field(s) {', '.join(map(repr, unknown))}")
    space, arch = item.get("space"), item.get("arch")
    if space not in SPACES:
        raise JobError(f"{where}.space must be one of {', '.join(SPACES)} (got {space!r})")
    if not isinstance(arch, str):
        raise JobError(f"{where}.arch must be an arch string")
    try:
        check(space, arch)
    except ValueError as err:
        raise JobError(f"{where}.arch {arch!r}: {err}") from None
    checks = (
        ("seed", lambda v: _whole(v) and v >= 0, "a whole number >= 0"),
        ("classes", _whole, "a whole number"),
        ("resolution", _whole, "a whole number"),
        ("format", lambda v: v in ("onnx", "tflite"), '"onnx" or "tflite"'),
    )
    for key, ok, what in checks:
        if key in item and not ok(item[key]):
            raise JobError(f"{where}.{key} must be {what} (got {item[key]!r})")
    try:
        check(space, arch, item.get("classes"), item.get("resolution"))
    except ValueError as err:
        raise JobError(f"{where}: {err}") from None
    return ArchItem(
        **{k: item[k] for k in ("space", "arch", "seed", "classes", "resolution", "format") if k in item}
    )


def bench_target(payload: Any, send_progress: Any) -> dict[str, Any]:
    """Worker-process entry: benchmark one model (or materialize an architecture into the
    cache first, here in the worker: the daemon itself never loads numpy or onnx)."""
    from agent.bench.runner import BenchSettings, run_benchmark

    path, settings, arch = payload
    if arch is not None and not os.path.exists(path):
        from agent.materialize import materialize, write_model

        send_progress("materializing", 0, 0, 0.0)
        item = ArchItem(**arch)
        net = materialize(
            item.space, item.arch, seed=item.seed, classes=item.classes, resolution=item.resolution
        )
        write_model(net, path)
    return run_benchmark(path, BenchSettings(**settings).validate(), progress=send_progress).to_dict()


def lut_target(payload: Any, send_progress: Any) -> dict[str, Any]:
    """Worker-process entry: build a layer lookup table (``fleetbench lut`` for a job)."""
    from agent.bench.runner import BenchSettings
    from agent.materialize import lut, sample

    item, settings = LutItem(**payload[0]), payload[1]
    archs = sample(item.space, item.sample, item.seed)
    defaults = {"threads": 1, "runs": 20, "warmup_runs": 3, "warmup_time_s": 0.1, "min_time_s": 0.2}
    bench = BenchSettings(**{**defaults, **settings}).validate()
    run = lut.run(item.space, archs, item.format, bench, lambda text: send_progress(text, 0, 0, 0.0))
    return {"srcc": run.srcc, "archs": list(run.archs), "measured_ms": list(run.measured_ms),
            "predicted_ms": list(run.predicted_ms), "rows": lut.to_rows(run.table, run.uses)}  # fmt: skip


def cache_path(cache_dir: str, item: ArchItem) -> str:
    """Where a materialized architecture lives on the device (named by a hash of its key)."""
    import hashlib

    return os.path.join(cache_dir, f"{hashlib.sha256(item.key.encode()).hexdigest()[:20]}.{item.format}")


class JobStore:
    """Accepted jobs on disk, one JSON file each, oldest first; and the ids of the last
    ``FINISHED_KEPT`` finished ones, so a redelivered or reused job id runs only once."""

    FINISHED_KEPT = 1000

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._finished_path = os.path.join(directory, ".finished")
        try:
            with open(self._finished_path, encoding="utf-8") as fh:
                self._finished = [str(x) for x in json.load(fh)]
        except (OSError, ValueError, TypeError):
            self._finished = []

    def seen(self, job_id: str) -> bool:
        """Accepted before: waiting, running or finished."""
        return self.has(job_id) or job_id in self._finished

    def finish(self, job_id: str) -> None:
        """The job is over: forget its file, remember its id."""
        self.remove(job_id)
        self._finished = [*self._finished, job_id][-self.FINISHED_KEPT :]
        write_text_atomic(self._finished_path, json.dumps(self._finished), what="finished-jobs file")

    def _path(self, job_id: str) -> str:
        return os.path.join(self.directory, f"{job_id}.json")

    def has(self, job_id: str) -> bool:
        return os.path.exists(self._path(job_id))

    def save(self, job: Job) -> None:
        write_text_atomic(self._path(job.job_id), json.dumps(asdict(job)) + "\n", what="job file")

    def remove(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(job_id))

    def pending(self) -> list[Job]:
        jobs = []
        names = [n for n in os.listdir(self.directory) if n.endswith(".json") and not n.startswith(".")]
        for name in sorted(names, key=lambda n: os.path.getmtime(os.path.join(self.directory, n))):
            path = os.path.join(self.directory, name)
            try:
                with open(path, encoding="utf-8") as fh:
                    raw = json.load(fh)
                jobs.append(
                    Job(
                        raw["job_id"],
                        tuple(raw["models"]),
                        dict(raw.get("settings", {})),
                        tuple(raw.get("done", ())),
                        tuple(ArchItem(**a) for a in raw.get("architectures", ())),
                        LutItem(**raw["lut"]) if raw.get("lut") else None,
                    )
                )
            except (OSError, ValueError, KeyError, TypeError) as err:
                logger.warning("dropping unreadable job file %s: %s", path, err)
                os.replace(path, path + ".broken")
        return jobs


def blocked_by(
    max_temperature_c: Optional[float],
    battery_percent: Optional[float],
    on_battery: Optional[bool],
    limits: JobsConfig,
) -> Optional[str]:
    """Why a job must wait now (too hot, battery low), or None."""
    if max_temperature_c is not None and max_temperature_c > limits.max_temperature_c:
        return f"too hot ({max_temperature_c:.1f} C > jobs.max_temperature_c {limits.max_temperature_c:g} C)"
    if on_battery and battery_percent is not None and battery_percent < limits.min_battery_percent:
        return (
            f"battery low ({battery_percent:.0f} % on battery < jobs.min_battery_percent "
            f"{limits.min_battery_percent:g} %)"
        )
    return None


#: how a daemon sends: (kind, data, message id or None) into its outbox
Send = Callable[[str, Any, Optional[str]], None]


class JobInbox:
    """The device's side of the jobs protocol, shared by the agent and the firmware bridge.

    - A job that does not parse is refused on ``acks`` with the reason; a job id seen
      before (a QoS 1 redelivery, or a reused id) is answered ``duplicate`` and runs once;
      an accepted job is on disk before it is acknowledged.
    - Acks that end a stage, and results, carry ids made from the job (and item): a job
      resumed after ``kill -9`` that says "done" twice, or measures an item again, says it
      with the same id, and the receiver drops the second.
    """

    #: the ack states whose message id is made from the job
    STAGES = ("accepted", "done", "failed")

    def __init__(self, store: JobStore, send: Send) -> None:
        self.store, self._send = store, send

    def ack(self, job_id: Optional[str], state: str, **extra: Any) -> None:
        msg_id = f"ack:{job_id}:{state}" if job_id and state in self.STAGES else None
        self._send("acks", {"job_id": job_id, "state": state, **extra}, msg_id)

    def receive(self, data: Any, message_id: str, parse: Callable[[Any], Job]) -> Optional[Job]:
        """The job in a jobs message if it is new and valid (saved and acknowledged), else None."""
        job_id = data.get("job_id") if isinstance(data, dict) else None
        job_id = job_id if isinstance(job_id, str) else None
        try:
            job = parse(data)
        except JobError as err:
            logger.warning("refused job %s: %s", job_id or message_id, err)
            self.ack(job_id, "rejected", message_id=message_id, error=str(err))
            return None
        if self.store.seen(job.job_id):
            logger.info("job %s arrived again; it is already accepted", job.job_id)
            why = "this job id was already accepted; send new work under a new job_id"
            self.ack(job.job_id, "duplicate", message_id=message_id, message=why)
            return None
        self.store.save(job)  # on disk before we say so
        self.ack(job.job_id, "accepted", message_id=message_id, models=len(job.models),
                 architectures=len(job.architectures))  # fmt: skip
        return job

    def send_result(self, job_id: str, item: str, data: dict[str, Any]) -> None:
        """One item's result; if its samples make it too big for the hubs' 128 KiB, the summary."""
        from agent.transport.messages import MessageError

        msg_id = f"result:{job_id}:{item}"
        try:
            self._send("results", data, msg_id)
        except MessageError:
            data["samples_omitted"] = len((data.get("result") or {}).pop("samples_ns", ()))
            self._send("results", data, msg_id)

    def finish(self, job: Job, state: str, **extra: Any) -> None:
        self.ack(job.job_id, state, **extra)
        self.store.finish(job.job_id)
        logger.info("job %s %s", job.job_id, state)
