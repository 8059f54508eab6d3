"""Jobs for a board: the agent's job message, restricted to what firmware can do.

    {"job_id": "j-7", "models": ["kws_micro", "person_detect"],
     "settings": {"runs": 100, "warmup_runs": 10}}

A microcontroller runs only the models its firmware holds (HELLO lists them); it cannot
load a file or build a search-space architecture.  Anything else is refused with a
reason, on the ``acks`` topic like the agent's refusals.  Accepted jobs are the agent's
``Job`` records and go into its ``JobStore``, so they survive a bridge restart too.
"""

from __future__ import annotations

from typing import Any, Optional

from agent.config import BridgeConfig
from agent.jobs import MAX_MODELS, Job, JobError, check_job_id
from firmware_bridge.codec import Hello

_FIELDS = {"job_id", "models", "settings"}
_SETTINGS = {"runs": 1, "warmup_runs": 0}  # name -> minimum; both at most 65535 (u16 on the wire)


def parse_board_job(data: Any, hello: Optional[Hello], defaults: BridgeConfig) -> Job:
    """Check a job message for this board; JobError names the first thing wrong with it."""
    if not isinstance(data, dict):
        raise JobError("a job must be a JSON object")
    job_id = check_job_id(data.get("job_id"))
    if "architectures" in data or "lut" in data:
        raise JobError(
            "a microcontroller runs only the models in its firmware"
            + (f" ({', '.join(hello.models)})" if hello and hello.models else "")
            + "; search-space architectures and lookup tables need a device with the agent"
        )
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise JobError(f"unknown field(s) {', '.join(map(repr, unknown))}; a board's job has "
                       f"{', '.join(sorted(_FIELDS))}")  # fmt: skip
    models = data.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise JobError("models must be a non-empty list of the board's model ids")
    if len(models) > MAX_MODELS or len(set(models)) != len(models):
        raise JobError(f"a job names at most {MAX_MODELS} models, each once")
    if hello is not None and hello.models:
        missing = [m for m in models if m not in hello.models]
        if missing:
            raise JobError(f"model(s) {', '.join(map(repr, missing))} are not in the board's firmware "
                           f"(it has: {', '.join(hello.models)})")  # fmt: skip
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise JobError("settings must be a JSON object")
    checked = {"runs": defaults.runs, "warmup_runs": defaults.warmup_runs}
    for key, value in settings.items():
        if key not in _SETTINGS:
            raise JobError(
                f"settings.{key} does not apply to a microcontroller (it takes runs and warmup_runs)"
            )
        if isinstance(value, bool) or not isinstance(value, int) or not _SETTINGS[key] <= value <= 0xFFFF:
            raise JobError(f"settings.{key} must be a whole number from {_SETTINGS[key]} to 65535 "
                           f"(got {value!r})")  # fmt: skip
        checked[key] = value
    return Job(job_id=job_id, models=tuple(models), settings=checked)
