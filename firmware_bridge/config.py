"""The bridge's configuration: the device daemon's sections and its own ``[bridge]``.

The bridge reads the agent's file (``/etc/fleetbench/agent.toml``, or ``--config``):
a host with boards on its USB ports usually runs an agent too, and both speak to the
same broker.  ``[bridge]`` (or ``FLEETBENCH_BRIDGE_*``) is the bridge's own section;
the agent's own sections (``[degradation]``, ``[homeassistant]``) are left to the
agent; ``[models] public_key``, the coordinator's key, guards the bridge's boards too.

    [bridge]
    baud = 921600
    stall_timeout_s = 10
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from agent.common.config import check, default_state_dir, layered
from agent.config import DEFAULT_PATH, DeviceConfig, validate_device


@dataclass(frozen=True)
class BridgeConfig:
    """``[bridge]``: a microcontroller on a serial line (firmware_bridge/PROTOCOL.md)."""

    baud: int = 115200
    #: a request unanswered this long is sent again, ``retries`` times
    timeout_s: float = 2.0
    retries: int = 3
    #: a run that sends nothing for this long has stalled and fails
    stall_timeout_s: float = 30.0
    #: how often a missing port (board unplugged) is looked for
    reopen_s: float = 2.0
    #: runs and warm-up runs of a job that does not say
    runs: int = 50
    warmup_runs: int = 5


@dataclass(frozen=True)
class BridgeDaemonConfig(DeviceConfig):
    bridge: BridgeConfig = field(default_factory=BridgeConfig)

    #: the agent's sections of the shared file: the agent checks them
    FOREIGN_SECTIONS: ClassVar[tuple[str, ...]] = ("degradation", "homeassistant")

    def replace(self, **changes: Any) -> BridgeDaemonConfig:
        return dataclasses.replace(self, **changes)


def validate(config: BridgeDaemonConfig) -> BridgeDaemonConfig:
    validate_device(config)
    where = config.source or "configuration"
    b = config.bridge
    checks = [
        (b.baud >= 50, "bridge.baud must be at least 50"),
        (b.timeout_s > 0, "bridge.timeout_s must be more than 0"),
        (b.retries >= 0, "bridge.retries must be 0 or more"),
        (b.stall_timeout_s > 0, "bridge.stall_timeout_s must be more than 0"),
        (b.reopen_s > 0, "bridge.reopen_s must be more than 0"),
        (1 <= b.runs <= 65535, "bridge.runs must be 1-65535"),
        (0 <= b.warmup_runs <= 65535, "bridge.warmup_runs must be 0-65535"),
    ]
    check(where, checks)
    return config


def load(
    path: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    flags: Optional[Mapping[str, Any]] = None,
) -> BridgeDaemonConfig:
    """Defaults < the agent's file < FLEETBENCH_* < flags, validated (as ``agent.config.load``)."""
    env = dict(os.environ) if env is None else env
    base = BridgeDaemonConfig(state_dir=default_state_dir(env))
    return validate(layered(base, path, DEFAULT_PATH, env, flags))
