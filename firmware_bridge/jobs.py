"""Jobs for a board: the agent's job message, restricted to what firmware can do.

    {"job_id": "j-7", "models": ["kws_micro", "person_detect"],
     "settings": {"runs": 100, "warmup_runs": 10}}

A microcontroller runs only the models its firmware holds (HELLO lists them); it cannot
load a file or build a search-space architecture.  Anything else is refused with a
reason, on the ``acks`` topic like the agent's refusals.  Accepted jobs go into the
device daemon's job store, so they survive a bridge restart too.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from agent.device.jobs import JobError
from agent.protocol.jobs import JobSpec
from firmware_bridge.codec import Hello
from firmware_bridge.config import BridgeConfig

#: the settings a board takes, each at most 65535 (u16 on the wire)
SETTINGS = ("runs", "warmup_runs")


class BoardSettings(NamedTuple):
    runs: int
    warmup_runs: int


def board_settings(spec: JobSpec, hello: Optional[Hello], defaults: BridgeConfig) -> BoardSettings:
    """What the board is asked to do for ``spec``; JobError names the first thing it cannot."""
    if spec.all_architectures or spec.lut is not None:
        raise JobError(
            "a microcontroller runs only the models in its firmware"
            + (f" ({', '.join(hello.models)})" if hello and hello.models else "")
            + "; search-space architectures and lookup tables need a device with the agent"
        )
    if hello is not None and hello.models:
        missing = [m for m in spec.models if m not in hello.models]
        if missing:
            raise JobError(f"model(s) {', '.join(map(repr, missing))} are not in the board's firmware "
                           f"(it has: {', '.join(hello.models)})")  # fmt: skip
    given = spec.settings.given()
    for key, value in given.items():
        if key not in SETTINGS:
            raise JobError(
                f"settings.{key} does not apply to a microcontroller (it takes runs and warmup_runs)"
            )
        if not isinstance(value, int) or value > 0xFFFF:
            raise JobError(f"settings.{key} must be a whole number up to 65535 (got {value!r})")
    runs, warmup = given.get("runs", defaults.runs), given.get("warmup_runs", defaults.warmup_runs)
    assert isinstance(runs, int) and isinstance(warmup, int)
    return BoardSettings(runs, warmup)
