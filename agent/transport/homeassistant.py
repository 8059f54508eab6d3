"""Home Assistant MQTT discovery: the agent's health appears as sensors with no configuration.

For each sensor a retained config message goes to
``{prefix}/sensor/fleetbench_{device_id}/{key}/config`` (HA's discovery topic layout).
The sensors read fleetbench's own health and results messages through value
templates, so nothing is published twice, and their availability follows the retained
``status`` topic (birth/Last Will).  When Home Assistant restarts it publishes
``online`` on ``{prefix}/status``; the agent then publishes the configs again.
"""

from __future__ import annotations

import json
from typing import Any

from agent import __version__
from agent.protocol.topics import DeviceTopics

# key -> (name, health field it needs or None, topic kind, template, unit, device_class)
_SENSORS = {
    "battery": (
        "Battery",
        "battery",
        "health",
        "{{ value_json.data.health.battery.percent }}",
        "%",
        "battery",
    ),
    "temperature": (
        "Temperature",
        "thermal",
        "health",
        "{{ value_json.data.health.thermal.temperatures_c.values() | max }}",
        "°C",
        "temperature",
    ),
    "throttling": (
        "Throttling",
        "throttling",
        "health",
        "{{ value_json.data.health.throttling.now | join(', ') or 'none' }}",
        None,
        None,
    ),
    "degradation": (
        "Degradation index",
        None,
        "health",
        "{{ value_json.data.degradation.index }}",
        "\u00d7",  # x, the reference workload's time now over when new: 1.00 as new
        None,
    ),
    "last_p50": (
        "Last benchmark p50",
        None,
        "results",
        "{{ value_json.data.result.stats.p50_ms }}",
        "ms",
        "duration",
    ),
}


def status_topic(prefix: str) -> str:
    return f"{prefix.strip('/')}/status"


def discovery_messages(
    topics: DeviceTopics, prefix: str, sku: str, available: tuple[str, ...]
) -> list[tuple[str, bytes]]:
    """(topic, retained payload) for every sensor this device can fill.

    ``available`` names the health collectors present: a Raspberry Pi gets no battery
    sensor that would stay "unknown" forever.
    """
    node = f"fleetbench_{topics.device_id}".replace(".", "_")
    device = {
        "identifiers": [node],
        "name": f"fleetbench {topics.device_id}",
        "model": sku,
        "manufacturer": "fleetbench",
        "sw_version": __version__,
    }
    out = []
    for key, (name, needs, kind, template, unit, device_class) in _SENSORS.items():
        if needs is not None and needs not in available:
            continue
        config: dict[str, Any] = {
            "name": name,
            "unique_id": f"{node}_{key}",
            "object_id": f"{node}_{key}",
            "state_topic": topics.topic(kind),
            "value_template": template,
            "availability_topic": topics.status,
            "availability_template": "{{ value_json.data.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        }
        if unit:
            config["unit_of_measurement"] = unit
            config["state_class"] = "measurement"
        if device_class:
            config["device_class"] = device_class
        out.append((f"{prefix.strip('/')}/sensor/{node}/{key}/config", json.dumps(config).encode()))
    return out
