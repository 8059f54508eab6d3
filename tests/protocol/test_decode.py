"""Every decoder, against anything at all: only the protocol's own error escapes.

One suite per topic's decoder (what the coordinator reads on status, health, results and
acks; what a device reads on jobs and models): arbitrary bytes, JSON of any shape, deep
nesting, NaN and infinity, numbers too large for any type, wrong types and unicode, and
real messages with any field changed.  A message that decodes is a valid message: its
data is of its kind, and encoding it again gives the same message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire import result

from agent.protocol import messages
from agent.protocol.errors import ProtocolError
from agent.protocol.topics import Topic

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs")
with open(os.path.join(DOCS, "protocol-examples.json"), encoding="utf-8") as _fh:
    EXAMPLES = json.load(_fh)

TOPICS = sorted(messages.BY_TOPIC)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCALARS = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10**18, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
    | st.sampled_from(["\ud800", "\x00", "é" * 3, "../../etc/passwd", "+", "#", " " * 5])
)  # fmt: skip
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)


def dumps(value) -> bytes:
    """JSON as a careless or hostile sender writes it: NaN, Infinity and lone surrogates included."""
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def only_protocol_errors(raw: bytes, topic: str) -> None:
    try:
        msg = messages.decode(raw, Topic("dev-1", topic))
    except ProtocolError:
        return
    # what decodes is a whole, valid message of a kind that travels there, and survives a round trip
    assert type(msg) in messages.BY_TOPIC[topic] and msg.device_id == "dev-1"
    assert messages.decode(messages.encode(msg), topic) == msg


@pytest.mark.parametrize("topic", TOPICS)
@FAST
@given(raw=st.binary(max_size=3000))
def test_arbitrary_bytes(topic, raw):
    only_protocol_errors(raw, topic)


@pytest.mark.parametrize("topic", TOPICS)
@FAST
@given(value=JSON)
def test_json_of_any_shape(topic, value):
    only_protocol_errors(dumps(value), topic)


@pytest.mark.parametrize("topic", TOPICS)
@FAST
@given(kind=st.sampled_from(sorted(messages.BY_KIND)), version=st.sampled_from([1, 2, 3, None, "2", 2.0]),
       data=JSON, ts=SCALARS, msg_id=SCALARS)  # fmt: skip
def test_envelopes_with_any_content(topic, kind, version, data, ts, msg_id):
    env = {"kind": kind, "v": version, "id": msg_id, "device_id": "dev-1", "ts": ts, "data": data}
    only_protocol_errors(dumps(env), topic)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
@FAST
@given(path=st.lists(st.integers(0, 50), min_size=1, max_size=4), value=JSON)
def test_real_messages_with_any_field_changed(kind, path, value):
    """A real message (docs/protocol-examples.json) with one field, anywhere, set to anything."""
    example = json.loads(json.dumps(EXAMPLES[kind]))
    example["device_id"] = "dev-1"
    node = example
    for step in path[:-1]:
        children = list(node.values()) if isinstance(node, dict) else node
        containers = [c for c in children if isinstance(c, (dict, list)) and c]
        if not containers:
            break
        node = containers[step % len(containers)]
    if isinstance(node, dict):
        node[sorted(node)[path[-1] % len(node)]] = value
    elif node:
        node[path[-1] % len(node)] = value
    only_protocol_errors(dumps(example), messages.BY_KIND[kind].TOPIC)


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize("depth", [1_000, 50_000, 120_000])
def test_deep_nesting(topic, depth):
    kind = messages.kind_of(messages.BY_TOPIC[topic][0])
    head = b'{"kind": "%s", "v": 2, "id": "x", "device_id": "dev-1", "ts": 1, "data": ' % kind.encode()
    for body in (b"[" * depth, b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        for raw in (body, head + body + b"}", head + b'{}, "extra": ' + body + b"}"):
            with pytest.raises(ProtocolError):
                messages.decode(raw[: messages.MAX_BYTES], topic)


@pytest.mark.parametrize(
    "number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1" + b"0" * 400]
)
def test_numbers_json_cannot_carry_or_no_type_can_hold(number):
    raw = b'{"kind": "health", "v": 2, "id": "x", "device_id": "dev-1", "ts": ' + number + b', "data": {}}'
    with pytest.raises(ProtocolError):
        messages.decode(raw, "health")


def test_a_message_that_would_be_refused_is_not_sent():
    """encode checks what it writes: a NaN (JSON would carry it as null) never leaves the sender."""
    good = result("dev-1")
    stats = good.data.result.stats
    nan = dataclasses.replace(good.data.result, stats=dataclasses.replace(stats, mean_ms=math.nan))
    with pytest.raises(
        ProtocolError, match=r"cannot be sent: data\.result\.stats\.mean_ms: Expected `float`"
    ):
        messages.encode(msgspec.structs.replace(good, data=msgspec.structs.replace(good.data, result=nan)))


def test_oversized_messages_are_refused_unread():
    raw = b'{"kind": "health", "v": 2, "data": "' + b"x" * messages.MAX_BYTES + b'"}'
    with pytest.raises(ProtocolError, match="over the 131072-byte limit"):
        messages.decode(raw, "health")


@FAST
@given(space=st.text(min_size=1, max_size=32), arch=st.text(min_size=1, max_size=300),
       seed=st.integers(0, 2**32 - 1), classes=st.none() | st.integers(1, 100_000),
       resolution=st.none() | st.integers(8, 1024), fmt=st.sampled_from(["onnx", "tflite"]))  # fmt: skip
def test_every_architecture_a_job_may_name_has_a_key_results_and_acks_can_carry(
    space, arch, seed, classes, resolution, fmt
):
    """An item's key names it in results and acks: it must fit there, or the job could not be
    answered."""
    from agent.protocol.jobs import ArchItem
    from agent.protocol.reports import JobAck

    if any(c < " " or c == "\x7f" for c in space + arch):
        return  # (refused when the job is decoded: no control characters)
    key = ArchItem(space=space, arch=arch, seed=seed, classes=classes, resolution=resolution, format=fmt).key
    ack = messages.make(messages.JobAckMessage, "dev-1", JobAck(job_id="j", state="running", model=key))
    assert messages.decode(messages.encode(ack), "acks").data.model == key
