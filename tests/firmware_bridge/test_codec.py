"""The codec: every message round-trips; any packet either decodes or raises CodecError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import codec

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
text = st.text(max_size=60).filter(lambda s: len(s.encode()) <= 255)

messages = st.one_of(
    st.just(codec.HelloRequest()),
    st.builds(
        codec.Hello, u32, u32, u32, u8, text, text, text, text, text, st.lists(text, max_size=8).map(tuple)
    ),
    st.builds(codec.Ping, st.binary(max_size=codec.MAX_PING)),
    st.builds(codec.Pong, st.binary(max_size=codec.MAX_PING)),
    st.just(codec.HealthRequest()),
    st.builds(
        codec.Health,
        st.one_of(st.none(), st.integers(-32767, 32767).map(lambda c: c / 100)),
        st.one_of(st.none(), st.integers(1, 0xFFFF).map(lambda mv: mv / 1000)),
        u32,
        st.one_of(st.none(), st.integers(0, 0xFFFFFFFE)),
    ),
    st.builds(codec.Bench, text, st.integers(1, 0xFFFF), u16),
    st.just(codec.Accept()),
    st.integers(1, codec.MAX_SAMPLES).flatmap(
        lambda n: st.builds(
            codec.Result,
            st.integers(1, 0xFFFFFFFF),
            u32,
            st.integers(n, 0xFFFF).map(lambda t: t),
            st.just(0),
            st.lists(u32, min_size=n, max_size=n).map(tuple),
        )
    ),
    st.builds(codec.Error, u16, text),
)


@given(messages, u16)
@settings(max_examples=400, deadline=None)
def test_every_message_round_trips(msg, rid):
    assert codec.decode(codec.encode(msg, rid)) == (rid, msg)


@given(st.binary(max_size=1100))
@settings(max_examples=500, deadline=None)
def test_any_packet_decodes_or_raises_codec_error(packet):
    try:
        rid, msg = codec.decode(packet)
    except codec.CodecError:
        return
    assert 0 <= rid <= 0xFFFF and packet[1] == type(msg).KIND


@given(messages.filter(lambda m: len(m.payload()) > 0), u16, st.data())
@settings(max_examples=200, deadline=None)
def test_a_truncated_packet_is_refused_not_misread(msg, rid, data):
    packet = codec.encode(msg, rid)
    cut = data.draw(st.integers(4, len(packet) - 1))
    try:
        got = codec.decode(packet[:cut])
    except codec.CodecError:
        return
    # Only trailing bytes that are themselves a message's "rest" (PING's bytes) may shrink.
    assert isinstance(msg, (codec.Ping, codec.Pong)) and got[1].nonce == msg.nonce[: cut - 4]


def test_trailing_bytes_of_a_later_minor_version_are_ignored():
    packet = codec.encode(codec.Health(40.0, 3.3, 1000, 512), 9) + b"\x01\x02new field"
    assert codec.decode(packet) == (9, codec.Health(40.0, 3.3, 1000, 512))


def test_the_bench_bytes_of_the_protocol_document():
    assert codec.encode(codec.Bench("kws", runs=100, warmup=10), 7).hex() == "01100700036b777364000a00"


def test_another_version_is_named():
    with pytest.raises(codec.VersionError, match="protocol version 2; this bridge speaks version 1"):
        codec.decode(b"\x02\x02\x00\x00")


@pytest.mark.parametrize(
    ("packet", "words"),
    [
        (b"\x01", "no room for the header"),
        (b"\x01\x55\x01\x00", "kind 0x55 is not one"),
        (b"\x01\x12\x01\x00" + bytes(10), "too short"),
        (b"\x01\x12\x01\x00" + bytes(12) + b"\x00", "holds no samples"),
        (b"\x01\x12\x01\x00" + (9).to_bytes(4, "little") + bytes(4) + b"\x05\x00\x00\x00\x02" + bytes(4),
         "holds 1 of its 2 samples"),
        (b"\x01\x12\x01\x00" + (1000).to_bytes(4, "little") + bytes(4) + b"\x02\x00\x02\x00\x01" + bytes(4),
         "go past runs_total"),
        (b"\x01\x12\x01\x00" + bytes(8) + b"\x01\x00\x00\x00\x01" + bytes(4), "timer of 0 Hz"),
        (b"\x01\x10\x01\x00\x05ab", "ends inside a string"),
        (b"\x01\x10\x01\x00\x02\xff\xfe\x01\x00\x00\x00", "not UTF-8"),
    ],
)  # fmt: skip
def test_malformed_payloads_say_what_is_wrong(packet, words):
    with pytest.raises(codec.CodecError, match=words):
        codec.decode(packet)


@pytest.mark.parametrize(
    ("msg", "words"),
    [
        (codec.Bench("x" * 256, 1), "at most 255 fit"),
        (codec.Bench("kws", 0), "runs must be at least 1"),
        (codec.Bench("kws", 70_000), "does not fit"),
        (codec.Result(1, 1, 1, 0, ()), "1-250 samples"),
        (codec.Result(1, 1, 300, 0, (2**32,)), "does not fit 32 bits"),
        (codec.Ping(b"x" * 65), "at most 64 bytes"),
    ],
)
def test_messages_that_cannot_be_sent_are_refused(msg, words):
    with pytest.raises(codec.CodecError, match=words):
        codec.encode(msg, 1)


def test_error_and_reset_names():
    assert codec.Error(4).name == "busy" and codec.Error(200).name == "firmware error 200"
    hello = codec.Hello(1, 1, 0, 4, "u", "b", "m", "f", "r")
    assert hello.reset_cause_text == "brown-out"
