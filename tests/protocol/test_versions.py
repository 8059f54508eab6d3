"""Mixed-version fleets: the rule for rolling upgrades (agent.protocol.messages), held to real
messages of the landed release.

tests/protocol/data/v1_messages.json holds what fleetbench 0.1's agent (commit 200cfce) really
published: its retained status (online, then the Last Will's offline), health, a result, its
acks of a job (accepted, running, done, and a refusal of a message that was not JSON) and of a
push it refused.  This release reads every one of them, stores them, and writes back to such a
device in its version; a version it does not know is refused, by name.
"""

from __future__ import annotations

import json
import os

import pytest

from agent.protocol import messages as m
from agent.protocol.errors import ProtocolError
from agent.protocol.jobs import JobSettings, JobSpec
from agent.protocol.topics import Topic
from coordinator.store import Message, open_store

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "data", "v1_messages.json"), encoding="utf-8") as _fh:
    LANDED = json.load(_fh)
DEVICE = "landed-pi"
TOPIC = {"health": "health", "results": "results", "push_ack": "acks"}


def topic_of(key: str) -> str:
    return "status" if key.startswith("status") else "acks" if key.startswith("job_ack") else TOPIC[key]


@pytest.mark.parametrize("key", sorted(LANDED))
def test_every_message_of_the_landed_agent_is_read(key):
    raw = json.dumps(LANDED[key]).encode()
    msg = m.decode(raw, Topic(DEVICE, topic_of(key)))
    assert msg.device_id == DEVICE and msg.v == 2  # converted, then checked as a version-2 message
    expected = {"health": "health", "results": "result", "push_ack": "push_ack"}.get(key)
    assert msg.kind == (expected or ("status" if key.startswith("status") else "job_ack"))
    if key.startswith("status"):
        assert msg.data.protocol == 1 and msg.data.capabilities.cores_logical >= 1
    if key == "results":
        assert msg.data.result.stats.p50_ms > 0 and msg.data.model == "conv.onnx"
    if key == "job_ack_rejected":
        assert msg.data.job_id is None and "not JSON" in msg.data.error
    if key == "push_ack":
        assert msg.data.push_id == "r1:landed-pi" and msg.data.state == "rejected"


def test_the_landed_agents_messages_are_stored_and_its_commands_written_in_its_version(tmp_path):
    store = open_store(str(tmp_path / "fleet.sqlite"))
    batch = [Message(f"fleetbench/v1/devices/{DEVICE}/{topic_of(k)}", json.dumps(v).encode())
             for k, v in LANDED.items() if k != "status_offline"]  # fmt: skip
    added = store.ingest(batch)
    assert (added["results"], added["health"], added["dead"]) == (1, 1, 0)
    assert store.job_ending(DEVICE, "j-1").state == "done"
    (device,) = store.fleet()
    assert device.protocol == 1 and device.results == 1
    assert [d.protocol for d in store.online()] == [1]
    # what the coordinator sends such a device: its own format, byte for byte the landed shape
    spec = JobSpec(job_id="j-2", models=("conv.onnx",), settings=JobSettings(runs=5))
    raw = m.encode(m.make(m.JobMessage, DEVICE, spec, msg_id="j-2"), version=1)
    sent = json.loads(raw)
    assert {k: sent[k] for k in ("v", "kind", "id", "device_id")} == {"v": 1, "kind": "jobs", "id": "j-2",
                                                                       "device_id": DEVICE}  # fmt: skip
    assert sent["data"] == {"job_id": "j-2", "models": ["conv.onnx"], "settings": {"runs": 5}}


def test_a_version_this_release_does_not_know_is_refused_by_name(tmp_path):
    newer = dict(LANDED["health"], v=3)
    with pytest.raises(ProtocolError, match="message version 3 is not one this fleetbench reads"):
        m.decode(json.dumps(newer).encode(), "health")
    store = open_store(str(tmp_path / "fleet.sqlite"))
    assert (
        store.ingest([Message(f"fleetbench/v1/devices/{DEVICE}/health", json.dumps(newer).encode())])["dead"]
        == 1
    )
    assert "upgrade the coordinator first" in store.dead_letters()[0].reason
