"""The device daemon skeleton both the agent and the bridge are: a daemon that cannot go on as it
should (a background task died, the MQTT network thread is gone) stops and exits 1, so systemd's
``Restart=on-failure`` starts a whole one; stopped on request, it exits 0."""

from __future__ import annotations

import asyncio
import threading

import msgspec
import pytest

from agent.config import AgentConfig
from agent.device import daemon as device_daemon
from agent.device.daemon import DeviceDaemon
from agent.protocol.messages import VERSION
from agent.protocol.reports import HealthData, StatusData
from agent.protocol.topics import DeviceTopics


class Plugin(DeviceDaemon):
    """A device with nothing to measure; its health can be made to fail."""

    name = "test-device"

    def __init__(self, config, fail_health: bool = False) -> None:
        super().__init__(config)
        self.fail_health = fail_health
        self.up = threading.Event()

    async def setup(self) -> None:
        self.use_topics(DeviceTopics("plug-1"))

    def birth(self) -> StatusData:
        return StatusData(state="online", protocol=VERSION, platform="test")

    async def health(self) -> HealthData:
        self.up.set()
        if self.fail_health:
            raise RuntimeError("a sensor driver bug")
        return HealthData()


def config(tmp_path, broker_url=None) -> AgentConfig:
    from agent.common.config import BrokerConfig
    from agent.config import DiscoveryConfig, HealthConfig

    return AgentConfig(
        state_dir=str(tmp_path / "state"),
        broker=BrokerConfig(url=broker_url, keepalive_s=5),
        health=HealthConfig(interval_s=1.0),
        discovery=DiscoveryConfig(enabled=False),
    )


def run(daemon: DeviceDaemon) -> tuple[threading.Thread, list[int]]:
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(asyncio.run(daemon.run(install_signals=False))))
    thread.start()
    return thread, code


def test_a_failed_background_task_exits_1(tmp_path):
    daemon = Plugin(config(tmp_path, "mqtt://127.0.0.1:1"), fail_health=True)
    thread, code = run(daemon)
    thread.join(30)
    assert code == [1] and "a background task failed" in (daemon.failure or "")
    assert "RuntimeError('a sensor driver bug')" in daemon.failure


def test_stopped_on_request_exits_0(tmp_path):
    daemon = Plugin(config(tmp_path, "mqtt://127.0.0.1:1"))
    thread, code = run(daemon)
    assert daemon.up.wait(30)
    daemon.stop_threadsafe()
    thread.join(30)
    assert code == [0] and daemon.failure is None


def test_a_dead_mqtt_network_thread_is_noticed_and_exits_1(tmp_path, mosquitto, monkeypatch):
    monkeypatch.setattr(device_daemon, "SUPERVISE_S", 0.2)
    daemon = Plugin(config(tmp_path, mosquitto.url))
    thread, code = run(daemon)
    try:
        assert daemon.up.wait(30)
        for _ in range(300):  # the link exists once the loop has connected it
            if daemon.link is not None and daemon.link.connected.wait(0.1):
                break
        assert daemon.link is not None and daemon.link.healthy()
        # what an exception escaping a callback did to paho's thread: it ends, and the daemon is deaf
        daemon.link._client.loop_stop()
        thread.join(30)
    finally:
        daemon.stop_threadsafe()
        thread.join(30)
    assert code == [1] and "MQTT network" in (daemon.failure or "")


@pytest.mark.parametrize("exit_code", [0, 1])
def test_the_cli_exit_status_is_the_daemons(tmp_path, monkeypatch, exit_code):
    from agent.cli import daemon as daemon_cli
    from agent.cli import main

    async def fake_run(self, install_signals=True):
        return exit_code

    monkeypatch.setattr("agent.daemon.Agent.run", fake_run)
    monkeypatch.setattr(daemon_cli, "daemon_logging", lambda *a: None)
    assert main(["agent", "--state-dir", str(tmp_path), "--broker", "mqtt://127.0.0.1:1"]) == exit_code


class Measuring(Plugin):
    """Measures "good" and "nan" (a runtime that reported NaN); "boom" fails with pages of text."""

    async def _finish(self, job, state, **fields):
        await super()._finish(job, state, **fields)
        self.finished.set()

    async def measure(self, job, item, conditions):
        import dataclasses
        import math

        from wire import result_data

        if item == "boom":
            raise device_daemon.FleetbenchError("onnxruntime: " + "stack frame\n" * 2000)
        data = result_data(job.job_id, item, 2.0)
        if item == "nan":
            stats = dataclasses.replace(data.result.stats, std_ms=math.nan)
            data = msgspec.structs.replace(data, result=dataclasses.replace(data.result, stats=stats))
        return data


def test_an_item_whose_result_or_error_breaks_the_contract_fails_alone(tmp_path):
    """A NaN from a runtime, or an error message pages long, costs its item, never the daemon."""
    from agent.device.jobs import Job
    from agent.protocol import messages
    from agent.protocol.jobs import JobSpec

    daemon = Measuring(config(tmp_path, "mqtt://127.0.0.1:1"))
    daemon.finished = threading.Event()
    thread, code = run(daemon)
    try:
        assert daemon.up.wait(30)
        spec = JobSpec(job_id="j-edge", models=("nan", "boom", "good"))
        daemon._loop.call_soon_threadsafe(daemon.enqueue, Job(spec))
        assert daemon.finished.wait(60)
        queued = [messages.decode(p.payload) for p in daemon.outbox.peek(1000)]
    finally:
        daemon.stop_threadsafe()
        thread.join(30)
    assert code == [0]
    acks = {(a.data.model, a.data.state): a.data for a in queued if a.kind == "job_ack" and a.data.model}
    assert "the result cannot be sent" in acks[("nan", "model_failed")].error
    assert acks[("boom", "model_failed")].error.endswith("(cut here)")
    (result,) = [r for r in queued if r.kind == "result"]
    assert result.data.model == "good"
    (done,) = [a.data for a in queued if a.kind == "job_ack" and a.data.state == "done"]
    assert done.failed == ("nan", "boom") and done.measured == 1
