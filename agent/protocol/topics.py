"""Every MQTT topic string fleetbench uses is built here, and parsed here.

fleetbench/v1/devices/{device_id}/status    retained birth and Last Will (online/offline)
fleetbench/v1/devices/{device_id}/health    health samples
fleetbench/v1/devices/{device_id}/results   benchmark results (QoS 1)
fleetbench/v1/devices/{device_id}/acks      the device's answers to jobs and pushes (QoS 1)
fleetbench/v1/devices/{device_id}/jobs      jobs for the device (it subscribes)
fleetbench/v1/devices/{device_id}/models    model pushes for the device (it subscribes)

The ``v1`` in the path is the topic layout's version, not the message version (which
each message carries, see ``agent.protocol.messages``): the layout has not changed.
Devices publish the first four ("reports"); the coordinator publishes the last two
("commands").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from agent.common.errors import UsageError
from agent.protocol.types import DEVICE_ID_PATTERN

ROOT = "fleetbench/v1"
#: topic kinds a device publishes on, and the ones it subscribes to
REPORTS = ("status", "health", "results", "acks")
COMMANDS = ("jobs", "models")
KINDS = REPORTS + COMMANDS
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


def check_device_id(device_id: str) -> str:
    """The id itself if it is usable in topics, else a UsageError saying why.

    >>> check_device_id("rpi4-shed-03")
    'rpi4-shed-03'
    """
    if not isinstance(device_id, str) or not _DEVICE_ID.match(device_id):
        raise UsageError(
            f"device id {device_id!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/', '+' or '#': they are MQTT topic syntax)"
        )
    return device_id


@dataclass(frozen=True)
class Topic:
    """A parsed fleetbench topic: whose it is and what travels on it."""

    device_id: str
    kind: str

    @property
    def is_report(self) -> bool:
        return self.kind in REPORTS


def parse_topic(topic: str, root: str = ROOT) -> Optional[Topic]:
    """The device and kind of a fleetbench topic; None for any other topic.

    >>> parse_topic("fleetbench/v1/devices/pi-3/results")
    Topic(device_id='pi-3', kind='results')
    >>> parse_topic("fleetbench/v1/devices/../results") is None
    True
    """
    prefix = f"{root}/devices/"
    if not topic.startswith(prefix):
        return None
    device_id, _, kind = topic[len(prefix) :].partition("/")
    if kind not in KINDS or not _DEVICE_ID.match(device_id):
        return None
    return Topic(device_id, kind)


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

    def parse(self, topic: str) -> Optional[str]:
        """The kind of ``topic`` if it is one of this device's, else None."""
        parsed = parse_topic(topic, self.root)
        return parsed.kind if parsed is not None and parsed.device_id == self.device_id else None

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
