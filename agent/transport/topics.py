"""Every MQTT topic string fleetbench uses is built here, and only here.

fleetbench/v1/devices/{device_id}/status    retained "online"/"offline" (birth and Last Will)
fleetbench/v1/devices/{device_id}/health    health samples
fleetbench/v1/devices/{device_id}/results   benchmark results (QoS 1)
fleetbench/v1/devices/{device_id}/jobs      jobs for the device (it subscribes)
fleetbench/v1/devices/{device_id}/models    model pushes for the device (it subscribes)
fleetbench/v1/devices/{device_id}/acks      the device's answers to jobs and pushes (QoS 1)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.errors import UsageError

ROOT = "fleetbench/v1"
KINDS = ("status", "health", "results", "jobs", "models", "acks")
# Safe in MQTT topics, file names and AWS IoT / Azure IoT Hub client ids.
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_device_id(device_id: str) -> str:
    """The id itself if it is usable in topics, else a UsageError saying why.

    >>> check_device_id("rpi4-shed-03")
    'rpi4-shed-03'
    """
    if not _DEVICE_ID.match(device_id or ""):
        raise UsageError(
            f"device id {device_id!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/', '+' or '#': they are MQTT topic syntax)"
        )
    return device_id


@dataclass(frozen=True)
class DeviceTopics:
    device_id: str
    root: str = ROOT

    def __post_init__(self) -> None:
        check_device_id(self.device_id)

    @property
    def base(self) -> str:
        return f"{self.root}/devices/{self.device_id}"

    def topic(self, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown topic kind {kind!r}")
        return f"{self.base}/{kind}"

    status = property(lambda self: self.topic("status"))
    health = property(lambda self: self.topic("health"))
    results = property(lambda self: self.topic("results"))
    jobs = property(lambda self: self.topic("jobs"))
    models = property(lambda self: self.topic("models"))
    acks = property(lambda self: self.topic("acks"))


def all_devices(kind: str, root: str = ROOT) -> str:
    """Subscription filter for one kind of message from every device (the coordinator's view)."""
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"{root}/devices/+/{kind}"
