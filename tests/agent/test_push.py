"""Model pushes into a real agent process over a real mosquitto: the test plays the coordinator,
signing with its own key.  A good push installs and smoke-runs; a tampered chunk is dropped and
the push goes on; a wrong signature, a manifest for another device, an older release, an
unsigned or oversized manifest, a model that fails its smoke run and one slower than the
manifest's limit each end in rejection or rollback, and the model installed last stays current."""

from __future__ import annotations

import hashlib
import json
import os

import msgspec
import pytest
from broker import Receiver
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from daemon_proc import AgentProcess, write_config
from keys import key_pair, sealed

from agent.protocol import messages, push
from agent.protocol.push import Chunk, Manifest

DEVICE = "push-pi"
CHUNK = 1024


class Coordinator:
    """Publishes pushes to the agent and waits for its acks."""

    def __init__(self, broker, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.release = 0
        # everything the device says: its acks, and status + health to know it is subscribed
        self.acks = Receiver(broker, f"fleetbench/v1/devices/{DEVICE}/#", client_id="push-test-acks")
        self.acks.wait_subscribed()
        self.topic = f"fleetbench/v1/devices/{DEVICE}/models"

    def mark(self) -> int:
        return len(self.acks.payloads)

    def wait_linked(self, start: int) -> None:
        """Until the agent (re)started after ``mark()`` is subscribed: it sends health only after
        subscribing, on the same connection, so a health message after its "online" proves it."""

        def linked(payloads):
            kinds = [(t.rsplit("/", 1)[-1], raw) for t, raw, _ in payloads[start:]]
            online = [i for i, (k, raw) in enumerate(kinds) if k == "status" and b'"online"' in raw]
            return bool(online) and any(k == "health" for k, _ in kinds[online[0] :])

        self.acks.wait_for(linked, 60)

    def publish(self, cls, data) -> None:
        raw = messages.encode(messages.make(cls, DEVICE, data))
        self.acks.client.publish(self.topic, raw, qos=1).wait_for_publish(10)

    def publish_manifest(self, manifest: Manifest) -> None:
        self.publish(messages.PushManifestMessage, manifest)

    def publish_chunk(self, push_id: str, index: int, data: bytes) -> None:
        self.publish(messages.PushChunkMessage, Chunk(push_id=push_id, index=index, data=data))

    def manifest(self, push_id: str, data: bytes, digests: bool = True, device: str = DEVICE, key=None,
                 **fields) -> Manifest:  # fmt: skip
        """As the coordinator sends it: a new release, each chunk's digest, sealed for ``device``."""
        self.release += 1
        base = dict(push_id=push_id, name="clf", version=push_id, format="onnx", size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(), chunk_bytes=CHUNK, smoke_runs=3,
                    release=self.release,
                    chunk_digests=push.chunk_digests(data, CHUNK) if digests else None)  # fmt: skip
        return sealed(Manifest(**{**base, **fields}), device, key=key or self.key)

    def send(self, manifest: Manifest, data: bytes, alter=None) -> None:
        self.publish_manifest(manifest)
        missing = self.wait_state(manifest.push_id, ("receiving",))["missing"]
        for i in push.expand(missing):
            chunk = data[i * CHUNK : (i + 1) * CHUNK]
            self.publish_chunk(manifest.push_id, i, alter(i, chunk) if alter else chunk)

    def wait_state(self, push_id: str, states: tuple, timeout_s: float = 120.0) -> dict:
        found: dict = {}

        def arrived(payloads):
            for _, raw, _ in payloads:
                data = json.loads(raw).get("data") or {}
                if data.get("push_id") == push_id and data.get("state") in states:
                    found.update(data)
                    return True
            return False

        self.acks.wait_for(arrived, timeout_s)
        return found


@pytest.fixture
def pushing(tmp_path, mosquitto):
    key, public = key_pair()
    extra = f'[models]\npublic_key = "{public}"\nmax_bytes = 200000\n'
    agent = AgentProcess(
        str(tmp_path), write_config(str(tmp_path / "agent.toml"), mosquitto.url, extra), DEVICE
    )
    coordinator = Coordinator(mosquitto, key)
    start = coordinator.mark()
    agent.start()
    agent.wait_note("READY=1")
    coordinator.wait_linked(start)
    yield agent, coordinator
    coordinator.acks.close()
    agent.close()


def current(agent) -> dict:
    with open(os.path.join(agent.state_dir, "models", "deployed", "clf.json")) as fh:
        return json.load(fh)["current"]


def deployed_bytes(agent) -> bytes:
    with open(os.path.join(agent.state_dir, "models", "deployed", "clf.onnx"), "rb") as fh:
        return fh.read()


def test_pushes_install_and_every_bad_push_leaves_the_previous_model(pushing, onnx_model):
    agent, coord = pushing
    with open(onnx_model, "rb") as fh:
        good = fh.read()
    assert len(good) > 2 * CHUNK, "the model must span several chunks"

    coord.send(coord.manifest("v1", good), good)
    installed = coord.wait_state("v1", ("installed", "rolled_back", "rejected"))
    assert installed["state"] == "installed", installed
    assert installed["p50_ms"] > 0 and installed.get("previous") is None
    low, high = installed["p50_interval_ms"]  # the noise of the smoke run's median, as measured
    assert 0 < low <= installed["p50_ms"] <= high
    assert deployed_bytes(agent) == good

    # A chunk altered in transit (or forged by another client) is not the signed one: dropped,
    # and the push goes on; the genuine chunk, sent again, completes it.
    def flip(i, chunk):
        return bytes([chunk[0] ^ 0xFF]) + chunk[1:] if i == 1 else chunk

    coord.send(coord.manifest("v2", good), good, alter=flip)
    coord.publish_chunk("v2", 1, good[CHUNK : 2 * CHUNK])
    ack = coord.wait_state("v2", ("installed", "rolled_back", "rejected"))
    assert ack["state"] == "installed" and ack["previous"] == "v1", ack
    # Without chunk digests (a manifest as fleetbench 0.2 signed it), the whole file's sha256
    # catches the altered chunk at install.
    coord.send(coord.manifest("v2b", good, digests=False), good, alter=flip)
    ack = coord.wait_state("v2b", ("installed", "rolled_back", "rejected"))
    assert ack["state"] == "rejected" and "sha256 is not the signed one" in ack["error"]
    assert current(agent)["version"] == "v2" and deployed_bytes(agent) == good

    # Signed by another key; sealed for another device (a capture replayed here); unsigned;
    # an older release than the one installed (a downgrade): each refused, nothing written.
    other, _ = key_pair()
    refused = {
        "v3": (coord.manifest("v3", good, key=other), "not by the coordinator key this device pins"),
        "v3b": (coord.manifest("v3b", good, device="other-pi"), "is for device 'other-pi'"),
        "v3c": (Manifest(**{**msgspec.structs.asdict(coord.manifest("v3c", good)), "signature": ""}),
                "is not signed"),
        "v3d": (coord.manifest("v3d", good, release=1), "is not newer than release"),
    }  # fmt: skip
    for push_id, (manifest, why) in refused.items():
        coord.publish_manifest(manifest)
        ack = coord.wait_state(push_id, ("receiving", "rejected"))
        assert ack["state"] == "rejected" and why in ack["error"], ack

    # Larger than the device's limit (models.max_bytes = 200000).
    coord.publish_manifest(coord.manifest("v4", good, digests=False, size=300_000))
    ack = coord.wait_state("v4", ("receiving", "rejected"))
    assert ack["state"] == "rejected" and "over this device's limit of 200000" in ack["error"]

    # Signed and intact, but not a model ONNX Runtime can run: the smoke run fails.
    garbage = os.urandom(3 * CHUNK + 17)
    coord.send(coord.manifest("v5", garbage), garbage)
    ack = coord.wait_state("v5", ("installed", "rolled_back", "rejected"))
    assert ack["state"] == "rolled_back" and ack["error"].startswith("smoke run failed"), ack
    assert ack["current"] == "v2"
    assert current(agent)["version"] == "v2" and deployed_bytes(agent) == good
    versions = sorted(os.listdir(os.path.join(agent.state_dir, "models", "deployed", "clf")))
    assert versions == ["v2.onnx"], "the failed version's file is gone (and v1, two versions back)"

    # It runs, but slower than the manifest's limit beyond the run's noise: rolled back, and the
    # ack says how slow (the coordinator chooses again with that measurement).
    coord.send(coord.manifest("v6", good, max_latency_ms=1e-6), good)
    ack = coord.wait_state("v6", ("installed", "rolled_back", "rejected"))
    assert ack["state"] == "rolled_back" and "is over the limit of 1e-06 ms" in ack["error"], ack
    low, high = ack["p50_interval_ms"]
    assert 1e-6 < low <= ack["p50_ms"] <= high and ack["current"] == "v2"
    assert current(agent)["version"] == "v2" and deployed_bytes(agent) == good

    # The same manifest again (a coordinator that missed the ending) gets the ending again.
    coord.publish_manifest(coord.manifest("v1", good))
    again = coord.wait_state("v1", ("installed",))
    assert again["state"] == "installed"


def test_a_push_interrupted_by_an_agent_restart_resumes(pushing, onnx_model, tmp_path):
    agent, coord = pushing
    with open(onnx_model, "rb") as fh:
        good = fh.read()
    manifest = coord.manifest("r1", good)
    chunks = manifest.chunks
    coord.publish_manifest(manifest)
    coord.wait_state("r1", ("receiving",))
    coord.publish_chunk("r1", 0, good[:CHUNK])
    # The agent restarts mid-transfer; the chunk it had is on disk.
    agent.signal(15)
    assert agent.wait() == 0
    start = coord.mark()
    agent.start()
    agent.wait_note("READY=1")
    coord.wait_linked(start)
    before = len(coord.acks.payloads)
    coord.publish_manifest(manifest)

    def resumed(payloads):
        for _, raw, _ in payloads[before:]:
            data = json.loads(raw).get("data") or {}
            if data.get("push_id") == "r1" and data.get("state") == "receiving":
                return data
        return None

    coord.acks.wait_for(lambda p: resumed(p) is not None)
    missing = push.expand(resumed(coord.acks.payloads)["missing"])
    assert missing == list(range(1, chunks)), "only the chunks it did not have"
    for i in missing:
        coord.publish_chunk("r1", i, good[i * CHUNK : (i + 1) * CHUNK])
    assert coord.wait_state("r1", ("installed", "rolled_back", "rejected"))["state"] == "installed"
    assert deployed_bytes(agent) == good
