"""Home Assistant MQTT discovery: retained sensor configs whose templates match what the agent sends."""

from __future__ import annotations

import json
import re

from broker import Receiver
from daemon_proc import AgentProcess, write_config

from agent.protocol import messages
from agent.protocol.topics import DeviceTopics
from agent.transport import homeassistant


def test_sensors_only_for_what_the_device_has():
    topics = DeviceTopics("rpi4-shed")
    configs = dict(homeassistant.discovery_messages(topics, "homeassistant", "Raspberry Pi 4", ("thermal",)))
    keys = sorted(t.split("/")[3] for t in configs)
    assert keys == ["degradation", "last_p50", "temperature"]  # no battery on a Pi
    temp = json.loads(configs["homeassistant/sensor/fleetbench_rpi4-shed/temperature/config"])
    assert temp["availability_topic"] == topics.status and temp["state_topic"] == topics.health
    assert temp["device_class"] == "temperature" and temp["unit_of_measurement"] == "°C"
    for topic, payload in configs.items():
        assert len(topic) < 256 and len(payload) < messages.MAX_BYTES  # AWS IoT / Azure limits
        # every numeric sensor says its unit (issue 15: the degradation index had none)
        assert json.loads(payload).get("unit_of_measurement"), topic
        # availability from the JSON status: its state, as Home Assistant's template reads it
        assert json.loads(payload)["availability_template"] == "{{ value_json.data.state }}"


def _path(template: str) -> list[str]:
    return re.search(r"value_json((?:\.\w+)+)", template).group(1).strip(".").split(".")


def test_agent_publishes_configs_and_republishes_when_home_assistant_restarts(tmp_path, mosquitto):
    rx = Receiver(mosquitto, "#")
    rx.wait_subscribed()
    extra = "[homeassistant]\nenabled = true\n"
    agent = AgentProcess(
        str(tmp_path), write_config(str(tmp_path / "agent.toml"), mosquitto.url, extra), "ha-dev"
    )
    agent.start()
    try:
        agent.wait_note("READY=1")

        def configs(p):
            return [(t, json.loads(b), r) for t, b, r in p if t.startswith("homeassistant/sensor/")]

        rx.wait_for(lambda p: len(configs(p)) >= 3 and any(t.endswith("/health") for t, _, _ in p))
        first = configs(rx.payloads)
        health = next(json.loads(b) for t, b, _ in rx.payloads if t.endswith("/health"))
        for topic, config, _retained in first:
            assert config["availability_topic"] == "fleetbench/v1/devices/ha-dev/status"
            if config["state_topic"].endswith("/health"):  # the template reads a real field
                value = health
                for key in _path(config["value_template"]):
                    assert key in value, (topic, key)
                    value = value[key]
        rx.client.publish("homeassistant/status", b"online", qos=1).wait_for_publish(10)
        rx.wait_for(lambda p: len(configs(p)) >= 2 * len(first))
    finally:
        agent.close()
        rx.close()
    # retained: a Home Assistant that subscribes later still sees them
    late = Receiver(mosquitto, "homeassistant/#", client_id="late")
    try:
        late.wait_for(lambda p: len(p) >= len(first) and all(r for _, _, r in p))
    finally:
        late.close()
