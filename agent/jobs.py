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
from typing import Any, Optional

from agent.config import JobsConfig
from agent.errors import FleetbenchError
from agent.files import write_text_atomic

logger = logging.getLogger(__name__)

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_JOB_FIELDS = {"job_id", "models", "architectures", "settings"}
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
class Job:
    job_id: str
    models: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    done: tuple[str, ...] = ()  # models already measured and queued in the outbox

    @property
    def remaining(self) -> tuple[str, ...]:
        return tuple(m for m in self.models if m not in self.done)


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


def parse_job(data: Any, model_dir: str, limits: JobsConfig) -> Job:
    """Check a job message strictly; JobError names the first thing wrong with it."""
    if not isinstance(data, dict):
        raise JobError("a job must be a JSON object")
    job_id = data.get("job_id")
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise JobError("job_id must be 1-128 letters, digits, '.', '_', ':' or '-'")
    unknown = sorted(set(data) - _JOB_FIELDS)
    if unknown:
        raise JobError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; a job has {', '.join(sorted(_JOB_FIELDS))}"
        )
    if data.get("architectures"):
        raise JobError(
            "architecture jobs need the search-space materializer, which this agent does not have yet"
        )
    models = data.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise JobError("models must be a non-empty list of model names")
    if len(models) > MAX_MODELS:
        raise JobError(f"a job may name at most {MAX_MODELS} models (got {len(models)})")
    if len(set(models)) != len(models):
        raise JobError("models names the same model twice")
    for name in models:
        resolve_model(name, model_dir)
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise JobError("settings must be a JSON object")
    checked = {key: _check_setting(key, value, limits) for key, value in settings.items()}
    if checked.get("max_time_s", float("inf")) < checked.get("min_time_s", 0.0):
        raise JobError("settings.max_time_s is shorter than settings.min_time_s")
    return Job(job_id=job_id, models=tuple(models), settings=checked)


def bench_target(payload: Any, send_progress: Any) -> dict[str, Any]:
    """Worker-process entry: benchmark one model with a job's settings."""
    from agent.bench.runner import BenchSettings, run_benchmark

    path, settings = payload
    return run_benchmark(path, BenchSettings(**settings).validate(), progress=send_progress).to_dict()


class JobStore:
    """Accepted jobs on disk, one JSON file each, oldest first."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

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
