"""The device's model store and the push wire format, on real files and real Ed25519 keys."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import msgspec
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from keys import key_pair, sealed

from agent.modelstore import ModelStore
from agent.protocol import messages, push, signing
from agent.protocol.errors import ProtocolError
from agent.protocol.push import Chunk, Manifest, PushError

RELEASE = [0]


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def signed(private: Ed25519PrivateKey, data: bytes, digests: bool = True, **fields) -> Manifest:
    """A manifest as the coordinator sends it: a new release, each chunk's digest, sealed."""
    RELEASE[0] += 1
    chunk_digests = push.chunk_digests(data, fields.get("chunk_bytes", 1000)) if digests else None
    base = dict(push_id="p1", name="clf", version="1", format="onnx", size=len(data),
                sha256=hashlib.sha256(data).hexdigest(), chunk_bytes=1000, release=RELEASE[0],
                chunk_digests=chunk_digests)  # fmt: skip
    return sealed(Manifest(**{**base, **fields}), "d1", key=private)


def send_all(store: ModelStore, manifest: Manifest, data: bytes) -> None:
    missing = store.offer(manifest)
    for i in missing:
        store.add_chunk(manifest.push_id, i, data[i * manifest.chunk_bytes : (i + 1) * manifest.chunk_bytes])


@pytest.fixture
def keys():
    return key_pair()


@pytest.fixture
def store(tmp_path, keys):
    return ModelStore(str(tmp_path / "models"), str(tmp_path / "state"), max_bytes=100_000)


def test_install_then_second_version_keeps_the_first_as_previous(store, keys):
    v1, v2 = os.urandom(2500), os.urandom(3100)
    m1 = signed(keys[0], v1)
    send_all(store, m1, v1)
    first = store.install("p1")
    assert first.previous is None and read_bytes(first.path) == v1
    link = os.path.join(store.deployed, "clf.onnx")
    assert os.path.islink(link) and read_bytes(link) == v1

    m2 = signed(keys[0], v2, push_id="p2", version="2")
    send_all(store, m2, v2)
    second = store.install("p2")
    assert second.previous == "1"
    assert read_bytes(link) == v2
    pointer = store.current("clf")
    assert pointer["current"]["version"] == "2" and pointer["previous"]["version"] == "1"
    assert store.rollback("clf") == "1"
    assert read_bytes(link) == v1
    assert sorted(os.listdir(os.path.join(store.deployed, "clf"))) == ["1.onnx"]
    assert not os.path.isdir(store._dir("p2")), "a finished transfer leaves nothing in incoming/"


def test_a_tampered_chunk_is_dropped_on_arrival_and_the_genuine_one_still_installs(store, keys):
    """A forged chunk sent ahead of the genuine one is not the signed one: it is dropped, the
    genuine one is still wanted, and the push installs (it used to spoil the push for good)."""
    data = os.urandom(2000)
    manifest = signed(keys[0], data)
    assert store.offer(manifest) == [0, 1]
    forged = bytearray(data[1000:])
    forged[500] ^= 0xFF
    with pytest.raises(PushError, match="not the signed one"):
        store.add_chunk("p1", 1, bytes(forged))
    assert store.missing("p1") == [0, 1]
    assert store.add_chunk("p1", 0, data[:1000]) is None
    assert store.add_chunk("p1", 1, data[1000:]) == manifest
    assert read_bytes(store.install("p1").path) == data


def test_without_digests_a_tampered_chunk_is_rejected_at_install_and_the_current_model_stays(store, keys):
    """A 0.2 coordinator's manifest lists no chunk digests: the whole file's sha256 catches it."""
    good, new = os.urandom(2000), os.urandom(2000)
    send_all(store, signed(keys[0], good), good)
    store.install("p1")
    m2 = signed(keys[0], new, digests=False, push_id="p2", version="2")
    missing = store.offer(m2)
    tampered = bytearray(new)
    tampered[1500] ^= 0xFF
    for i in missing:
        store.add_chunk("p2", i, bytes(tampered[i * 1000 : (i + 1) * 1000]))
    with pytest.raises(PushError, match="sha256 is not the signed one"):
        store.install("p2")
    assert store.current("clf")["current"]["version"] == "1"
    assert read_bytes(os.path.join(store.deployed, "clf.onnx")) == good
    assert store.pending() == []


def test_an_older_release_is_refused_and_an_operators_revert_is_a_new_release(store, keys):
    v1, v2 = os.urandom(1500), os.urandom(1500)
    old = signed(keys[0], v1)
    new = signed(keys[0], v2, push_id="p2", version="2")
    send_all(store, new, v2)
    store.install("p2")
    with pytest.raises(
        PushError, match=rf"release {old.release} of clf is not newer than release {new.release}"
    ):
        store.offer(old)  # a replay of the older push: a downgrade
    revert = signed(keys[0], v1, push_id="p3", version="1")  # the same model, pushed again
    send_all(store, revert, v1)
    assert store.install("p3").version == "1"
    assert store.current("clf")["release"] == revert.release


def test_oversized_manifest_is_refused(store, keys):
    with pytest.raises(PushError, match="over this device's limit of 100000"):
        store.offer(signed(keys[0], b"x", digests=False, size=100_001))


def test_an_interrupted_transfer_resumes_with_only_the_missing_chunks(tmp_path, keys):
    data = os.urandom(4500)
    manifest = signed(keys[0], data)
    store = ModelStore(str(tmp_path / "m"), str(tmp_path / "s"), 100_000)
    missing = store.offer(manifest)
    assert missing == [0, 1, 2, 3, 4]
    for i in (0, 3):
        store.add_chunk("p1", i, data[i * 1000 : (i + 1) * 1000])
    # the device restarts: a new store over the same directories
    store = ModelStore(str(tmp_path / "m"), str(tmp_path / "s"), 100_000)
    assert [m.push_id for m in store.pending()] == ["p1"]
    missing = store.offer(manifest)
    assert missing == [1, 2, 4]
    assert store.add_chunk("p1", 1, data[1000:2000]) is None
    assert store.add_chunk("p1", 2, data[2000:3000]) is None
    assert store.add_chunk("p1", 4, data[4000:]) == manifest
    assert read_bytes(store.install("p1").path) == data


def test_chunks_of_wrong_length_or_index_or_push_are_refused(store, keys):
    data = os.urandom(1500)
    store.offer(signed(keys[0], data))
    with pytest.raises(PushError, match="should be 1000"):
        store.add_chunk("p1", 0, data[:999])
    with pytest.raises(PushError, match="chunks 0-1"):
        store.add_chunk("p1", 2, b"")
    with pytest.raises(PushError, match="no manifest was accepted"):
        store.add_chunk("nope", 0, data[:1000])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "../etc/passwd"}, "data.name: Expected `str` matching regex"),
        ({"push_id": "../../../evil"}, "data.push_id: Expected `str` matching regex"),
        ({"format": "exe"}, "data.format: Invalid enum value 'exe'"),
        ({"size": 0}, "data.size: Expected `int` >= 1"),
        ({"sha256": "ab"}, "data.sha256: Expected `str` matching regex"),
        ({"chunk_bytes": 70_000}, "data.chunk_bytes: Expected `int` <= 65536"),
        ({"smoke_runs": 0}, "data.smoke_runs: Expected `int` >= 1"),
        ({"max_latency_ms": -1}, "data.max_latency_ms: Expected `float` > 0"),
        ({"extra": 1}, "unknown field `extra`"),
    ],
)
def test_manifest_fields_are_checked(keys, change, message):
    """A manifest is checked when its message is decoded, before anything touches the disk."""
    fields = {**msgspec.to_builtins(signed(keys[0], b"abc")), **change}
    raw = json.dumps(
        {"kind": "push_manifest", "v": 2, "id": "m1", "device_id": "d1", "ts": 1.0, "data": fields}
    )
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(").replace("[", r"\[")):
        messages.decode(raw.encode(), "models")


def test_signature_covers_a_canonical_form_a_firmware_author_can_rebuild(keys):
    """The signed bytes are the wire manifest minus its signature, keys sorted, no spaces:
    what another implementation computes from the JSON it received, whatever the order."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    msg = messages.make(messages.PushManifestMessage, "d1", signed(keys[0], b"abc"))
    data = json.loads(messages.encode(msg))["data"]
    wire = json.loads(json.dumps(dict(reversed(list(data.items())))))
    signature = base64.b64decode(wire.pop("signature"))
    rebuilt = json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()
    Ed25519PublicKey.from_public_bytes(signing.parse_public_key(keys[1])).verify(signature, rebuilt)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(signing.parse_public_key(keys[1])).verify(
            signature, rebuilt + b" "
        )


@pytest.mark.parametrize("text", ["", "ssh-ed25519 AAAA", "ed25519:!!!", "ed25519:" + "QUFB" * 4])
def test_bad_public_keys_are_named(text):
    with pytest.raises(signing.TrustError, match="public key"):
        signing.parse_public_key(text)


@given(st.sets(st.integers(min_value=0, max_value=500)))
def test_ranges_round_trip(indices):
    assert push.expand(push.ranges(indices)) == sorted(indices)


def test_a_full_size_chunk_message_fits_the_hub_limit():
    chunk = Chunk(push_id="p" * 128, index=10**6, data=os.urandom(push.MAX_CHUNK_BYTES))
    msg = messages.make(messages.PushChunkMessage, "d" * 64, chunk, msg_id=f"chunk:{'p' * 128}:{10**6}")
    assert len(messages.encode(msg)) <= messages.MAX_BYTES
