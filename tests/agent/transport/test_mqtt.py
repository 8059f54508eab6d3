"""The MQTT link against a real mosquitto on 127.0.0.1: nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from broker import Receiver
from wire import job, result_data

from agent.common.errors import UsageError
from agent.device.publisher import Publisher
from agent.protocol import messages
from agent.protocol.messages import ResultMessage
from agent.protocol.topics import DeviceTopics, all_devices, check_device_id
from agent.transport.mqtt import BrokerSettings, MqttLink
from agent.transport.outbox import Outbox

pytest.importorskip("paho.mqtt")

AGENT_PROC = os.path.join(os.path.dirname(__file__), "agent_proc.py")


def _ids(payloads, topic_end="/results"):
    return [messages.decode(p).id for t, p, _ in payloads if t.endswith(topic_end)]


def _states(payloads):
    return [json.loads(p)["data"]["state"] for t, p, _ in payloads if t.endswith("/status")]


def publisher(box: Outbox, link: MqttLink) -> Publisher:
    pub = Publisher(box, link.topics)
    pub.wake = link.wake
    return pub


def test_broker_urls():
    s = BrokerSettings.from_url("mqtts://user:p%40ss@hub.example:8884")
    assert (s.host, s.port, s.tls, s.username, s.password) == ("hub.example", 8884, True, "user", "p@ss")
    assert BrokerSettings.from_url("mqtt://10.0.0.2").port == 1883
    assert BrokerSettings.from_url("mqtts://h").port == 8883
    for bad in ("http://h", "mqtt://", "h:1883", "mqtt://h:99999"):
        with pytest.raises(UsageError, match="broker"):
            BrokerSettings.from_url(bad)


def test_topics():
    t = DeviceTopics("rpi4-03")
    assert t.results == "fleetbench/v1/devices/rpi4-03/results"
    assert all_devices("health") == "fleetbench/v1/devices/+/health"
    for bad in ("", "a/b", "a+b", "#", "x" * 65, "-lead"):
        with pytest.raises(UsageError, match="device id"):
            check_device_id(bad)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_birth_results_and_graceful_offline(mosquitto, tmp_path, protocol):
    rx = Receiver(mosquitto, "fleetbench/v1/devices/dev1/#")
    rx.wait_subscribed()
    with Outbox(str(tmp_path / "o.sqlite")) as box:
        settings = BrokerSettings.from_url(mosquitto.url, protocol=protocol)
        link = MqttLink(settings, DeviceTopics("dev1"), box)
        link.start()
        try:
            assert link.connected.wait(10)
            pub = publisher(box, link)
            sent = [pub.send(ResultMessage, result_data(model=f"m{i}")).result() for i in range(200)]
            got = rx.wait_ids("results", set(sent))
        finally:
            link.stop()
        assert sorted(got) == sorted(sent)  # each exactly once: no reconnect happened
        got = rx.wait_for(lambda p: _states(p)[-1:] == ["offline"])
        assert _states(got)[0] == "online"
        assert len(box) == 0  # every acknowledged message has left the outbox
    rx.close()


def test_outage_and_broker_restart_lose_nothing(mosquitto, tmp_path):
    rx = Receiver(mosquitto, "fleetbench/v1/devices/dev2/results")
    rx.wait_subscribed()
    mosquitto.stop()
    with Outbox(str(tmp_path / "o.sqlite")) as box:
        link = MqttLink(BrokerSettings.from_url(mosquitto.url, max_backoff_s=2), DeviceTopics("dev2"), box)
        link.start()  # the broker is down: the link keeps trying
        pub = publisher(box, link)
        first = [pub.send(ResultMessage, result_data(model=f"m{i}")).result() for i in range(50)]
        assert len(box) == 50
        mosquitto.start()
        rx.wait_ids("results", set(first))
        mosquitto.stop()  # and again, with the receiver's session kept by the broker
        second = [pub.send(ResultMessage, result_data(model=f"m{i}")).result() for i in range(50, 100)]
        mosquitto.start()
        got = rx.wait_ids("results", set(first + second))
        assert set(got) == set(first + second)  # duplicates, if any, carry the same ids
        link.stop()
    rx.close()


def _start_agent(mosquitto, state, device, n):
    proc = subprocess.Popen(
        [sys.executable, AGENT_PROC, mosquitto.url, str(state), device, str(n)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "connected"
    return proc


def test_kill_9_mid_drain_loses_nothing_and_leaves_a_will(mosquitto, tmp_path):
    rx = Receiver(mosquitto, "fleetbench/v1/devices/dev3/#")
    rx.wait_subscribed()
    proc = _start_agent(mosquitto, tmp_path, "dev3", 2000)
    rx.wait_for(lambda p: rx.count_ids("results") >= 100)  # part way through the drain
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    got = rx.wait_for(lambda p: "offline" in _states(p))  # the broker published the Will
    assert "online" in _states(got)
    proc = _start_agent(mosquitto, tmp_path, "dev3", 0)  # same state dir: drain what is left
    try:
        expected = {f"m{i}" for i in range(2000)}
        got = rx.wait_ids("results", expected)
        assert set(got) == expected
    finally:
        proc.kill()
        proc.wait()
    rx.close()


def test_jobs_reach_the_handler_and_garbage_does_not_crash(mosquitto, tmp_path):
    import threading

    import paho.mqtt.client as mqtt

    seen, refused, done = [], [], threading.Event()

    def handler(msg):
        seen.append(msg.data.models)
        done.set()

    with Outbox(str(tmp_path / "o.sqlite")) as box:
        link = MqttLink(BrokerSettings.from_url(mosquitto.url), DeviceTopics("dev4"), box, on_message=handler,
                        on_malformed=lambda kind, why, raw: refused.append((kind, raw)))  # fmt: skip
        link.start()
        assert link.connected.wait(10)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-coordinator")
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        jobs = DeviceTopics("dev4").jobs
        pub.publish(jobs, b"\xff not json", qos=1).wait_for_publish(5)
        pub.publish(jobs, b"[" * 100_000, qos=1).wait_for_publish(5)  # deep enough to blow a parser's stack
        good = messages.encode(job("dev4", "j1", models=("a.onnx",)))
        pub.publish(jobs, good, qos=1).wait_for_publish(5)
        assert done.wait(10)
        assert seen == [("a.onnx",)]
        assert [raw[:4] for _, raw in refused] == [b"\xff no", b"[[[["] and link.healthy()
        pub.loop_stop()
        pub.disconnect()
        link.stop()
