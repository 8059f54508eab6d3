"""The framing layer: COBS + CRC-32 frames survive any split of the byte stream, and no
input (noise, truncation, corruption, endless bytes) makes the decoder raise."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.framing import (
    MAX_ENCODED,
    MAX_PACKET,
    FrameDecoder,
    FramingError,
    crc32,
    encode_frame,
    main,
)

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

packets = st.binary(min_size=4, max_size=MAX_PACKET)


def test_crc_is_the_common_crc32():
    assert crc32(b"123456789") == 0xCBF43926 == zlib.crc32(b"123456789")


def test_the_worked_example_of_the_protocol_document():
    assert encode_frame(bytes.fromhex("01010100")).hex(" ") == "04 01 01 01 05 0f e3 21 81 00"


@given(st.lists(packets, min_size=1, max_size=5), st.data())
@settings(max_examples=200, deadline=None)
def test_frames_round_trip_however_the_stream_is_cut(items, data):
    stream = b"".join(encode_frame(p) for p in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder, out = FrameDecoder(), []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        out += decoder.feed(stream[a:b])
    assert out == items
    assert decoder.stats.frames == len(items) and decoder.stats.crc_errors == 0
    assert all(0 not in frame[:-1] for frame in (encode_frame(p) for p in items))


@given(st.binary(max_size=4096))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_raise(noise):
    decoder = FrameDecoder()
    for packet in decoder.feed(noise):  # whatever survives carries a matching CRC
        assert isinstance(packet, bytes) and len(packet) >= 4
    decoder.feed(noise[::-1])


@given(packets, st.integers(0, 10_000), st.integers(1, 255))
@settings(max_examples=200, deadline=None)
def test_a_corrupted_frame_is_dropped_and_the_next_one_arrives(packet, where, flip):
    frame = bytearray(encode_frame(packet))
    i = where % (len(frame) - 1)  # any byte but the delimiter
    frame[i] ^= flip
    decoder = FrameDecoder()
    out = decoder.feed(bytes(frame) + encode_frame(b"\x01\x02\x03\x04next"))
    assert out == [b"\x01\x02\x03\x04next"]  # a single-byte error never passes CRC-32
    s = decoder.stats
    assert s.crc_errors + s.malformed >= 1 and s.garbage_bytes > 0


def test_noise_before_a_frame_is_cut_off_by_a_zero():
    decoder = FrameDecoder()
    banner = b"\r\nets Jul 29 2019 12:21:46\r\nrst:0xc (SW_CPU_RESET)\r\n"
    assert decoder.feed(banner + b"\x00" + encode_frame(b"\x01\x02\x00\x00")) == [b"\x01\x02\x00\x00"]
    assert decoder.stats.malformed == 1 and decoder.stats.frames == 1


def test_empty_frames_are_resyncs_not_errors():
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00\x00\x00" + encode_frame(b"abcd") + b"\x00") == [b"abcd"]
    assert decoder.stats.to_dict() == {"frames": 1, "crc_errors": 0, "malformed": 0, "oversize": 0,
                                       "garbage_bytes": 0}  # fmt: skip


def test_endless_bytes_without_a_delimiter_are_dropped_and_decoding_resumes():
    decoder = FrameDecoder()
    for _ in range(10):
        assert decoder.feed(b"\x55" * 1000) == []
    assert decoder.stats.oversize == 1 and decoder.stats.garbage_bytes == 10_000
    assert len(decoder._buf) == 0  # memory stays bounded while the noise lasts
    assert decoder.feed(b"\x00" + encode_frame(b"good")) == [b"good"]


def test_the_longest_packet_fits_and_a_longer_one_is_refused():
    frame = encode_frame(bytes(range(256)) * 4)
    assert len(frame) - 1 <= MAX_ENCODED
    assert FrameDecoder().feed(frame) == [bytes(range(256)) * 4]
    with pytest.raises(FramingError, match="1025 bytes"):
        encode_frame(b"x" * (MAX_PACKET + 1))


def test_the_explainer_prints_each_step(capsys):
    assert main(["01010100"]) == 0
    assert "0x8121E30F" in capsys.readouterr().out
    assert main(["zz"]) == 2
    assert "'zz' is not a packet in hex" in capsys.readouterr().err
