"""The deployer as a state machine over the store's records (on SQLite and PostgreSQL), a fake
publisher, the clock given to ``tick``.  (tests/coordinator/test_loop.py runs it for real against devices.)"""

from __future__ import annotations

import json
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.protocol import messages as m
from agent.protocol.push import PushAck
from agent.protocol.reports import StatusData
from agent.protocol.signing import parse_public_key
from coordinator.config import CoordinatorConfig, PushConfig
from coordinator.deploy import Deployer, create_rollout
from coordinator.keys import generate_key
from coordinator.store import Message, open_store

SKU = "Board X"
CHUNK = 1000


class FakeClient:
    """Takes what the deployer publishes, decoded, and says every publish went out."""

    class Info:
        def is_published(self) -> bool:
            return True

        def wait_for_publish(self, timeout: float = 0) -> None:
            return None

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> Info:
        with self._cond:
            self.sent.append((topic, payload))
            self._cond.notify_all()
        return self.Info()

    def of(self, device: str, kind: str) -> list:
        return [
            m.decode(p, "models")
            for t, p in list(self.sent)
            if t == f"fleetbench/v1/devices/{device}/models" and m.decode(p, "models").kind == kind
        ]

    def wait(self, predicate) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, 10), "the deployer's sender thread did not publish"


@pytest.fixture
def setup(tmp_path, db_url):
    store = open_store(db_url)  # SQLite, then PostgreSQL (tests/conftest.py)
    config = CoordinatorConfig(
        state_dir=str(tmp_path / "coord"),
        push=PushConfig(
            chunk_bytes=CHUNK, canary_fraction=0.25, max_failure_share=0.2, retry_s=60.0, attempts=2
        ),
    )
    public = generate_key(config.key_file)
    for device in ("d1", "d2", "d3", "d4"):
        protocol = 1 if device == "d4" else 2  # d4 still runs the previous release
        status = m.make(m.StatusMessage, device, StatusData(state="online", protocol=protocol, sku=SKU))
        store.ingest([Message(f"fleetbench/v1/devices/{device}/status", m.encode(status))])
    model = tmp_path / "model.onnx"
    model.write_bytes(bytes(range(256)) * 10)  # 2,560 bytes: 3 chunks
    client = FakeClient()
    deployer = Deployer(store, config, client)
    yield store, config, client, deployer, public, str(model)
    deployer.close()


def ack(store, device: str, push_id: str, state: str, ts: float, **fields) -> None:
    msg = m.make(m.PushAckMessage, device, PushAck(push_id=push_id, state=state, **fields), ts=ts)
    store.ingest([Message(f"fleetbench/v1/devices/{device}/acks", m.encode(msg))])


def states(store, rollout_id: str) -> dict[str, str]:
    return {d.device_id: d.state for d in store.deployments(rollout_id)}


def test_a_sku_rollout_goes_canary_first_and_halts_when_too_many_fail(setup):
    store, config, client, deployer, public, model = setup
    r = create_rollout(store, config, model, sku=SKU, now=0.0).rollout_id
    deployer.tick(now=1.0)
    assert states(store, r) == {"d1": "sending"}  # 25 % of four: one canary
    client.wait(lambda: client.of("d1", "push_manifest"))  # (the sender thread publishes)
    (manifest,) = client.of("d1", "push_manifest")
    key = Ed25519PublicKey.from_public_bytes(parse_public_key(public))
    import base64

    key.verify(
        base64.b64decode(manifest.data.signature), manifest.data.signed_bytes()
    )  # signed by the coordinator
    ack(store, "d1", f"{r}:d1", "receiving", 2.0, missing=((0, 2),))
    deployer.tick(now=3.0)
    client.wait(lambda: len(client.of("d1", "push_chunk")) == 3)
    assert sorted(c.data.index for c in client.of("d1", "push_chunk")) == [0, 1, 2]
    ack(store, "d1", f"{r}:d1", "installed", 4.0, p50_ms=2.5)
    deployer.tick(now=5.0)
    assert store.rollouts(r)[0].state == "rolling"
    assert states(store, r) == {"d1": "installed", "d2": "sending", "d3": "sending", "d4": "sending"}
    # d4 reads only message version 1: its manifest is written in version 1
    client.wait(lambda: any(t.endswith("/d4/models") for t, _ in client.sent))
    (raw,) = [p for t, p in client.sent if t.endswith("/d4/models")]
    assert json.loads(raw)["v"] == 1 and json.loads(raw)["data"]["type"] == "manifest"
    ack(store, "d2", f"{r}:d2", "installed", 6.0, p50_ms=2.5)
    ack(store, "d3", f"{r}:d3", "rolled_back", 6.0, error="smoke run failed")
    deployer.tick(now=7.0)  # 1 of 3 finished failed: over 20 %
    rollout = store.rollouts(r)[0]
    assert rollout.state == "halted" and "1 of 3 finished deployments failed" in rollout.detail
    assert states(store, r)["d3"] == "rolled_back"


def test_silence_gets_the_manifest_again_then_fails(setup):
    store, config, client, deployer, _, model = setup
    r = create_rollout(store, config, model, device="d2", now=0.0).rollout_id
    deployer.tick(now=1.0)
    deployer.tick(now=30.0)  # not yet retry_s (60 s) of silence
    client.wait(lambda: len(client.of("d2", "push_manifest")) == 1)
    deployer.tick(now=62.0)
    client.wait(lambda: len(client.of("d2", "push_manifest")) == 2)
    assert store.deployments(r)[0].attempts == 2
    deployer.tick(now=123.0)  # push.attempts = 2: no third
    (dep,) = store.deployments(r)
    assert dep.state == "failed" and dep.detail == "no answer after 2 attempt(s)"
    assert store.rollouts(r)[0].state == "canary"
    deployer.tick(now=124.0)
    assert (store.rollouts(r)[0].state, store.rollouts(r)[0].detail) == ("halted", "canary: 1 of 1 failed")


def test_only_the_deployments_own_device_moves_it(setup):
    store, config, client, deployer, _, model = setup
    r = create_rollout(store, config, model, device="d1", now=0.0).rollout_id
    deployer.tick(now=1.0)
    ack(store, "d2", f"{r}:d1", "installed", 2.0, p50_ms=0.1)  # d2 speaking about d1's push
    ack(store, "d1", f"{r}:d1", "receiving", 3.0, missing=((0, 10**6),))  # more chunks than the push has
    deployer.tick(now=4.0)
    (dep,) = store.deployments(r)
    assert dep.state == "sending" and dep.p50_ms is None and dep.last_ack_ts == 3.0
    assert client.of("d1", "push_chunk") == [], "no chunk for a range beyond the push"
    ack(store, "d1", f"{r}:d1", "installed", 5.0, p50_ms=3.0)
    deployer.tick(now=6.0)
    assert store.deployments(r)[0].state == "installed" and store.deployments(r)[0].p50_ms == 3.0


def test_a_restarted_deployer_sends_every_transfer_in_progress_its_manifest_again(setup):
    store, config, client, deployer, _, model = setup
    r = create_rollout(store, config, model, device="d1", now=0.0).rollout_id
    deployer.tick(now=1.0)
    again = Deployer(store, config, client)  # a coordinator that restarted
    try:
        again.tick(now=2.0)
        client.wait(lambda: len(client.of("d1", "push_manifest")) == 2)
        assert store.deployments(r)[0].attempts == 2
    finally:
        again.close()


def test_a_missing_signing_key_halts_the_rollout_with_a_reason(setup, tmp_path):
    store, config, _client, deployer, _, model = setup
    import os

    os.unlink(config.key_file)
    r = create_rollout(store, config, model, device="d1", now=0.0).rollout_id
    deployer.tick(now=1.0)
    rollout = store.rollouts(r)[0]
    assert rollout.state == "halted" and "fleetbench keygen" in rollout.detail


def test_past_its_lease_the_deployer_sends_nothing_and_a_new_lease_sends_the_manifests_again(setup):
    """Fencing by time: a replica paused past its lease on the loops must not push when it wakes
    (another may lead by then); when it leads again, every transfer gets its manifest anew."""
    store, config, client, deployer, _, model = setup
    r = create_rollout(store, config, model, device="d2", now=0.0).rollout_id
    deployer.led(0.0, new=False)  # the lease ran out long ago
    deployer.tick(now=1.0)
    deployer.flush()
    assert client.of("d2", "push_manifest") == [] and states(store, r) == {"d2": "sending"}
    deployer.led(float("inf"), new=True)
    deployer.tick(now=2.0)
    deployer.flush()
    assert len(client.of("d2", "push_manifest")) == 1
