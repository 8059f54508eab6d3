"""What a real agent does with bad input on its topics, against a real mosquitto (issue 13's "Why").

- 100,000 ``[`` on its jobs topic used to raise RecursionError in paho's network thread: the
  agent stayed "up", deaf to every later job.  Now it is refused, and the agent keeps working.
- A refused job's ack names its job id whenever the id can be read.
- The README's job example (copied from here, and checked to be there) runs: the coordinator
  signs it.  The same job published by hand, unsigned, is refused and never runs.
"""

from __future__ import annotations

import os
import shlex
import shutil

import pytest
from broker import Receiver, free_port
from daemon_proc import AgentProcess, eventually, fleetbench, start_configured_coordinator, stop, write_config
from keys import write_private
from wire import command, raw_job, received

DEVICE = "shed-pi-3"
JOBS = f"fleetbench/v1/devices/{DEVICE}/jobs"
README = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md"
)

#: the README's example, verbatim ("Jobs" in "The device agent"): keep the two the same
README_JOB = "fleetbench job --device shed-pi-3 conv.onnx --runs 20"
#: the same job as a person used to publish it by hand (fleetbench 0.2's README example)
HAND_JOB = """{"kind": "job", "v": 2, "id": "j-42", "device_id": "shed-pi-3", "ts": 1795000000.0,
 "data": {"job_id": "j-42", "models": ["conv.onnx"], "settings": {"runs": 20}}}"""


@pytest.fixture
def agent(tmp_path, mosquitto, onnx_model):
    (tmp_path / "state" / "models").mkdir(parents=True)
    shutil.copy(onnx_model, tmp_path / "state" / "models" / "conv.onnx")
    rx = Receiver(mosquitto, f"fleetbench/v1/devices/{DEVICE}/#")
    rx.wait_subscribed()
    proc = AgentProcess(str(tmp_path), write_config(str(tmp_path / "agent.toml"), mosquitto.url), DEVICE)
    proc.start()
    proc.wait_note("READY=1")
    rx.wait_for(lambda p: received(p, "health"))  # subscribed: it sends health only after subscribing
    yield proc, rx
    proc.close()
    rx.close()


def acks(rx, job_id="any"):
    return [
        a.data for a in received(rx.payloads, "acks") if job_id == "any" or a.data.get("job_id") == job_id
    ]


def wait_ack(rx, job_id, state):
    rx.wait_for(lambda p: any(a["state"] == state for a in acks(rx, job_id)), 120)
    return next(a for a in acks(rx, job_id) if a["state"] == state)


def publish(rx, payload: bytes) -> None:
    rx.client.publish(JOBS, payload, qos=1).wait_for_publish(10)


def test_a_deeply_nested_message_leaves_the_agent_receiving_jobs(agent):
    proc, rx = agent
    publish(rx, b"[" * 100_000)
    publish(rx, b'{"kind": "job", "v": 2, "data": ' + b"[" * 100_000)
    rx.wait_for(lambda p: len([a for a in acks(rx, None) if a["state"] == "rejected"]) >= 2)
    refused = [a for a in acks(rx, None) if a["state"] == "rejected"]
    assert all("not a valid job message" in a["error"] for a in refused)
    proc.notes.clear()
    assert proc.wait_note("WATCHDOG=1")  # the supervisor still sees every thread alive
    publish(rx, command(DEVICE, {"job_id": "after", "models": ["conv.onnx"], "settings": {"runs": 3}}))
    assert wait_ack(rx, "after", "done")["measured"] == 1
    assert proc.proc.poll() is None and "Traceback" not in proc.read_log()


def test_a_refused_job_is_answered_with_its_job_id(agent):
    _, rx = agent
    publish(rx, raw_job(DEVICE, {"job_id": "typo", "models": ["conv.onnx"], "setings": {"runs": 3}}))
    publish(
        rx, raw_job(DEVICE, {"job_id": "nan", "models": ["conv.onnx"], "settings": {"min_time_s": "NaN"}})
    )
    assert "unknown field `setings`" in wait_ack(rx, "typo", "rejected")["error"]
    assert "settings.min_time_s" in wait_ack(rx, "nan", "rejected")["error"]
    # a job in the previous release's format (message version 1) is read, as the rule for upgrades
    # says, and refused: nobody signed it
    publish(rx, raw_job(DEVICE, {"job_id": "old", "models": ["conv.onnx"], "settings": {"runs": 3}}, v=1))
    assert "not signed" in wait_ack(rx, "old", "rejected")["error"]


def test_the_readme_job_example_runs_and_the_same_job_unsigned_is_refused(agent, tmp_path, mosquitto):
    with open(README, encoding="utf-8") as fh:
        assert README_JOB in fh.read(), "README.md must show README_JOB as it is here"
    _, rx = agent
    publish(rx, HAND_JOB.encode())
    assert "not signed" in wait_ack(rx, "j-42", "rejected")["error"]
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'db = "{tmp_path / "fleet.sqlite"}"\nstate_dir = "{tmp_path / "coord"}"\ntick_s = 0.2\n'
        f'[broker]\nurl = "{mosquitto.url}"\n[rerank]\nenabled = false\n'
    )
    write_private(str(tmp_path / "coord" / "coordinator.key"))  # the key the agent pins
    coord = start_configured_coordinator(str(config))
    try:
        eventually(lambda: fleetbench("fleet", "--config", str(config)).stdout.count(DEVICE) == 1)
        out = fleetbench(
            *shlex.split(README_JOB)[1:], "--config", str(config), "--timeout", "120", timeout_s=200
        )
        assert out.returncode == 0, out.stderr
        assert f"{DEVICE}: done" in out.stderr and "conv.onnx" in out.stdout
    finally:
        stop(coord)
    (result,) = [r.data for r in received(rx.payloads, "results")]
    assert result["result"]["protocol"]["runs"] == 20 and result["job_id"].startswith("op-")


@pytest.mark.parametrize("scheme", ["mqtt", "mqtts"])
def test_an_agent_that_cannot_reach_its_broker_says_why_once_and_status_shows_it(tmp_path, mosquitto, scheme):
    """Refused (nothing listens) and TLS (a plain broker spoken to over TLS): the log says why
    once, not at every retry, and `fleetbench status` says not connected, since when and why."""
    port = free_port() if scheme == "mqtt" else mosquitto.port
    config = write_config(str(tmp_path / "agent.toml"), f"{scheme}://127.0.0.1:{port}")
    with open(config) as fh:
        text = fh.read().replace("keepalive_s = 5\n", "keepalive_s = 5\nmax_backoff_s = 1\n")
    with open(config, "w") as fh:
        fh.write(text)
    proc = AgentProcess(str(tmp_path), config, DEVICE)
    proc.start()
    try:
        proc.wait_note("READY=1")
        eventually(lambda: ((proc.status().get("link") or {}).get("failures") or 0) >= 3, 60)
        why = "connection refused: nothing listens" if scheme == "mqtt" else "TLS handshake failed"
        assert why in proc.status()["link"]["error"]
        said = [line for line in proc.read_log().splitlines() if "cannot reach the broker" in line]
        assert len(said) == 1 and why in said[0], said
        shown = fleetbench("status", "--state-dir", proc.state_dir)
        assert "NOT connected for" in shown.stdout and why in shown.stdout, shown.stdout
    finally:
        proc.close()
