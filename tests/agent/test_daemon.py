"""The agent daemon, started as its systemd unit starts it, against a real mosquitto.

It registers (retained "online"), reports health, runs jobs from MQTT messages, refuses
bad ones, and loses nothing through broker restarts and kill -9.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest
from broker import Receiver
from daemon_proc import AgentProcess, fleetbench, write_config
from wire import command, received

DEVICE = "test-agent"
TOPICS = f"fleetbench/v1/devices/{DEVICE}/#"


def send_job(rx: Receiver, data, raw: bytes = b"") -> None:
    """A job as the JSON a coordinator (or a person) publishes: the envelope around ``data``."""
    payload = raw or command(DEVICE, data)
    rx.client.publish(f"fleetbench/v1/devices/{DEVICE}/jobs", payload, qos=1).wait_for_publish(10)


def envelopes(payloads, kind):
    return received(payloads, kind)


def acks(rx, job_id=None):
    return [
        e.data for e in envelopes(rx.payloads, "acks")
        if e.kind == "job_ack" and (job_id is None or e.data.get("job_id") == job_id)
    ]  # fmt: skip


def wait_ack(rx, job_id, state, timeout_s=120.0):
    rx.wait_for(lambda p: any(a.get("state") == state for a in acks(rx, job_id)), timeout_s)
    return next(a for a in acks(rx, job_id) if a.get("state") == state)


def statuses(rx):
    return [json.loads(p)["data"]["state"] for t, p, _ in rx.payloads if t.endswith("/status")]


def models_in(tmp_path, sources: dict) -> None:
    root = tmp_path / "state" / "models"
    root.mkdir(parents=True, exist_ok=True)
    for name, src in sources.items():
        shutil.copy(src, root / name)


FAST = {"runs": 5, "warmup_runs": 1, "warmup_time_s": 0, "min_time_s": 0.05, "max_time_s": 5}


@pytest.fixture
def rx(mosquitto):
    receiver = Receiver(mosquitto, TOPICS)
    receiver.wait_subscribed()
    yield receiver
    receiver.close()


def test_agent_from_its_unit_registers_reports_health_runs_jobs_and_stops(
    tmp_path, mosquitto, rx, onnx_model, tflite_model
):
    models_in(tmp_path, {"conv.onnx": onnx_model, "conv.tflite": tflite_model})
    config = write_config(str(tmp_path / "agent.toml"), mosquitto.url)
    agent = AgentProcess(str(tmp_path), config, DEVICE)
    agent.start()
    try:
        assert agent.wait_note("READY=1")
        rx.wait_for(lambda p: "online" in statuses(rx))
        # registration: the retained birth says what the device is and can run
        birth = next(json.loads(b)["data"] for t, b, retained in rx.payloads if t.endswith("/status"))
        assert birth["sku"] and birth["platform"] == "linux" and birth["capabilities"]["cores_logical"] >= 1
        assert {"onnxruntime", "litert"} <= set(birth["capabilities"]["backends"])
        # health: typed readings, the collectors present, the outbox's state
        rx.wait_for(lambda p: envelopes(p, "health"))
        health = envelopes(rx.payloads, "health")[0].data
        assert {"health", "degradation", "outbox", "collectors", "uptime_s"} <= set(health)
        assert health["health"]["load"]["load_1m"] >= 0

        send_job(rx, {"job_id": "j-1", "models": ["conv.onnx", "conv.tflite"], "settings": FAST})
        done = wait_ack(rx, "j-1", "done")
        assert done["measured"] == 2 and done["failed"] == []
        results = {e.data["model"]: e.data for e in envelopes(rx.payloads, "results")}
        assert set(results) == {"conv.onnx", "conv.tflite"}
        for r in results.values():
            assert r["result"]["stats"]["p50_ms"] > 0 and r["result"]["stats"]["n"] >= 5
            assert r["conditions"]["waited_s"] == 0.0 and r["conditions"]["waited_for"] == []
            assert r["result"]["device"]["cores_logical"] >= 1  # measured-under snapshot
        states = [a["state"] for a in acks(rx, "j-1")]
        assert states[0] == "accepted" and states.count("running") == 2 and states[-1] == "done"
        send_job(rx, {"job_id": "j-1", "models": ["conv.onnx"]})  # the same id again: not run twice
        assert "already accepted" in wait_ack(rx, "j-1", "duplicate")["message"]

        # malformed and unsafe jobs are refused on the acks topic, with the reason
        send_job(rx, None, raw=b"\x00not json")
        send_job(rx, {"job_id": "bad-1", "models": ["conv.onnx"], "setings": {"runs": 5}})
        send_job(rx, {"job_id": "bad-2", "models": ["../../agent.toml"]})
        send_job(rx, {"job_id": "bad-3", "models": ["conv.onnx"], "settings": {"runs": 500_000}})
        assert "unknown field `setings`" in wait_ack(rx, "bad-1", "rejected")["error"]
        assert "outside the model directory" in wait_ack(rx, "bad-2", "rejected")["error"]
        assert "jobs.max_runs" in wait_ack(rx, "bad-3", "rejected")["error"]
        assert "not a valid job message" in wait_ack(rx, None, "rejected")["error"]

        assert agent.wait_note("WATCHDOG=1")
        out = fleetbench("status", "--state-dir", agent.state_dir, env={"FLEETBENCH_CONFIG": config})
        assert out.returncode == 0 and f"{DEVICE}: running" in out.stdout, out.stdout + out.stderr
        assert "idle (1 done" in out.stdout

        # SIGHUP with a broken file keeps the running configuration
        with open(config) as fh:
            good = fh.read()
        with open(config, "a") as fh:
            fh.write("[health]\ninterval_s = 'often'\n")
        agent.signal(signal.SIGHUP)
        assert agent.wait_note("RELOADING=1") and agent.wait_note("READY=1")
        seen = len(envelopes(rx.payloads, "health"))
        rx.wait_for(lambda p: len(envelopes(p, "health")) > seen)  # still reporting
        # SIGHUP with a good file applies it: jobs are now held to a lower run limit
        with open(config, "w") as fh:
            fh.write(good + "[jobs]\nmax_runs = 3\n")
        agent.signal(signal.SIGHUP)
        assert agent.wait_note("RELOADING=1") and agent.wait_note("READY=1")
        send_job(rx, {"job_id": "after-reload", "models": ["conv.onnx"], "settings": FAST})
        assert "jobs.max_runs = 3" in wait_ack(rx, "after-reload", "rejected")["error"]

        agent.signal(signal.SIGTERM)
        assert agent.wait_note("STOPPING=1")
        assert agent.wait() == 0
        rx.wait_for(lambda p: statuses(rx)[-1:] == ["offline"])
        assert "reload refused" in agent.read_log()
        assert agent.status()["state"] == "stopped"
        out = fleetbench("status", "--state-dir", agent.state_dir, env={"FLEETBENCH_CONFIG": config})
        assert out.returncode == 3 and "not running" in out.stdout
    finally:
        agent.close()


def wait_file(predicate, timeout_s=120.0):
    """Poll a condition on files the agent writes (there is no event to wait on across processes)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_nothing_is_lost_through_kill_9_mid_job_a_broker_outage_and_a_restart(
    tmp_path, mosquitto, rx, onnx_model
):
    names = [f"m{i}.onnx" for i in range(4)]
    models_in(tmp_path, dict.fromkeys(names, onnx_model))
    slow = {**FAST, "min_time_s": 0.5}
    agent = AgentProcess(str(tmp_path), write_config(str(tmp_path / "agent.toml"), mosquitto.url), DEVICE)
    agent.start()
    try:
        agent.wait_note("READY=1")
        rx.wait_for(lambda p: "online" in statuses(rx))
        send_job(rx, {"job_id": "j-kill", "models": names, "settings": slow})
        rx.wait_for(lambda p: envelopes(p, "results"))  # the first model is measured ...
        agent.kill()  # ... kill -9 in the middle of the job
        rx.wait_for(lambda p: statuses(rx)[-1:] == ["offline"], 60)  # the Last Will

        mosquitto.stop()  # and the broker goes away too
        agent.start()  # the agent comes back without a broker, resumes the job, queues results
        agent.wait_note("READY=1")
        wait_file(
            lambda: os.path.exists(agent.state_dir + "/status.json") and agent.status()["jobs_done"] == 1
        )
        assert agent.status()["outbox"]["pending"] > 0
        agent.kill()  # kill -9 again with everything only on disk

        mosquitto.start()
        agent.start()
        agent.wait_note("READY=1")
        expected = {f"result:j-kill:{n}" for n in names}
        got = rx.wait_ids("results", expected, timeout_s=120)
        assert expected <= set(got) and set(got) <= expected  # nothing missing, nothing foreign
        wait_ack(rx, "j-kill", "done")
        assert "resuming job j-kill" in agent.read_log()
    finally:
        agent.close()


def test_job_waits_while_the_device_is_too_hot(tmp_path, mosquitto, rx, onnx_model, monkeypatch):
    import asyncio
    import threading

    import boards
    from sysfs_tree import make_tree

    from agent import config as config_mod
    from agent import daemon

    monkeypatch.setattr(daemon, "RECHECK_S", 0.2)
    models_in(tmp_path, {"conv.onnx": onnx_model})
    tree = {**boards.RPI4, "/sys/class/thermal/thermal_zone0/temp": "86000\n"}
    reader = make_tree(tmp_path / "sys", tree)
    cfg = config_mod.load(
        write_config(str(tmp_path / "agent.toml"), mosquitto.url),
        env={},
        flags={"device_id": DEVICE, "state_dir": str(tmp_path / "state"), "discovery.enabled": "false"},
    )
    agent = daemon.Agent(cfg, reader=reader, run_helper=lambda argv: None)
    thread = threading.Thread(target=lambda: asyncio.run(agent.run(install_signals=False)))
    thread.start()
    try:
        rx.wait_for(lambda p: "online" in statuses(rx))
        send_job(rx, {"job_id": "j-hot", "models": ["conv.onnx"], "settings": FAST})
        waiting = wait_ack(rx, "j-hot", "waiting")
        assert waiting["reason"].startswith("too hot (86.0 C > jobs.max_temperature_c 80 C)")
        assert not envelopes(rx.payloads, "results")
        (tmp_path / "sys/sys/class/thermal/thermal_zone0/temp").write_text("52000\n")  # it cooled down
        wait_ack(rx, "j-hot", "done")
        (result,) = envelopes(rx.payloads, "results")
        assert result.data["conditions"]["waited_for"] == [waiting["reason"]]
        assert result.data["conditions"]["waited_s"] > 0
        assert result.data["conditions"]["max_temperature_c"] == 52.0  # what it was measured under
    finally:
        agent.stop_threadsafe()
        thread.join(30)
    assert not thread.is_alive()


def test_config_errors_are_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "agent.toml"
    bad.write_text("[broker]\nurll = 'mqtt://x'\n")
    out = fleetbench("agent", "--config", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "did you mean 'broker.url'?" in out.stderr
    assert "Traceback" not in out.stderr


def test_agent_materializes_and_benchmarks_architectures_from_a_job(tmp_path, mosquitto, rx):
    pytest.importorskip("onnx")
    pytest.importorskip("ai_edge_litert")
    cell = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
    agent = AgentProcess(str(tmp_path), write_config(str(tmp_path / "agent.toml"), mosquitto.url), DEVICE)
    agent.start()
    try:
        agent.wait_note("READY=1")
        rx.wait_for(lambda p: "online" in statuses(rx))
        archs = [
            {"space": "nas-bench-201", "arch": cell, "seed": 1},
            {"space": "nas-bench-201", "arch": cell, "seed": 1, "format": "tflite", "resolution": 16},
        ]
        lut = {"space": "nas-bench-201", "sample": 3, "seed": 1}
        send_job(rx, {"job_id": "j-arch", "architectures": archs, "lut": lut, "settings": FAST})
        done = wait_ack(rx, "j-arch", "done")
        assert done["measured"] == 3 and done["failed"] == []
        (table,) = [e.data["lut"] for e in envelopes(rx.payloads, "results") if "lut" in e.data]
        assert table["space"] == "nas-bench-201" and len(table["archs"]) == 3 and -1 <= table["srcc"] <= 1
        assert all(row["p50_ms"] > 0 for row in table["rows"]) and {r["op"] for r in table["rows"]} >= {
            "conv"
        }
        results = [e.data for e in envelopes(rx.payloads, "results") if "result" in e.data]
        assert sorted(r["architecture"]["format"] for r in results) == ["onnx", "tflite"]
        for r in results:
            assert r["architecture"]["arch"] == cell and r["result"]["stats"]["p50_ms"] > 0
            assert r["model"].startswith("nas-bench-201:" + cell)
        cached = sorted(os.listdir(os.path.join(agent.state_dir, "cache")))
        assert sorted(os.path.splitext(c)[1] for c in cached) == [".onnx", ".tflite"]
    finally:
        agent.close()
