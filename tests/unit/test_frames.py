"""Frame encoding and the incremental FrameParser."""

import struct

import pytest

from minimq.codec import CodecError, spec
from minimq.codec.frames import (
    FRAME_HEADER,
    HEARTBEAT_FRAME,
    PROTOCOL_HEADER,
    FrameParser,
    encode_content_frames,
    encode_frame,
    encode_method_frame,
)
from minimq.codec.properties import BasicProperties, encode_content_header


def test_constants():
    assert PROTOCOL_HEADER == b"AMQP\x00\x00\x09\x01"
    assert FRAME_HEADER.format == ">BHI"
    assert HEARTBEAT_FRAME == b"\x08\x00\x00\x00\x00\x00\x00\xce"


def test_encode_frame():
    assert encode_frame(3, 7, b"abc") == b"\x03\x00\x07\x00\x00\x00\x03abc\xce"
    assert encode_frame(3, 7, memoryview(b"abc")) == b"\x03\x00\x07\x00\x00\x00\x03abc\xce"
    ack = spec.BasicAck(1, False)
    assert encode_method_frame(5, ack) == encode_frame(1, 5, ack.encode())
    with pytest.raises(CodecError):
        encode_frame(1, 70000, b"")


def test_parse_many_frames_in_one_feed():
    frames = [
        encode_method_frame(1, spec.BasicPublish(exchange="x", routing_key="r")),
        encode_frame(2, 1, encode_content_header(3, BasicProperties())),
        encode_frame(3, 1, b"abc"),
        HEARTBEAT_FRAME,
    ]
    parser = FrameParser()
    out = parser.feed(b"".join(frames) + frames[0][:5])
    assert [(t, c) for t, c, _ in out] == [(1, 1), (2, 1), (3, 1), (8, 0)]
    assert out[2][2] == b"abc" and type(out[2][2]) is bytes
    assert parser.buffered == 5
    assert spec.decode_method(parser.feed(frames[0][5:])[0][2]) == spec.BasicPublish(exchange="x", routing_key="r")
    assert parser.buffered == 0


def test_one_byte_at_a_time():
    stream = b"".join(
        [encode_method_frame(ch, spec.BasicAck(ch, True)) for ch in range(1, 6)]
        + [encode_frame(3, 9, bytes(range(256)) * 3), HEARTBEAT_FRAME, encode_frame(3, 9, b"")]
    )
    parser = FrameParser()
    got = []
    for i in range(len(stream)):
        got += parser.feed(stream[i : i + 1])
    assert len(got) == 8
    assert [spec.decode_method(p) for _, _, p in got[:5]] == [spec.BasicAck(ch, True) for ch in range(1, 6)]
    assert got[5] == (3, 9, bytes(range(256)) * 3)
    assert got[6] == (8, 0, b"")
    assert got[7] == (3, 9, b"")
    assert parser.feed(b"") == []


def test_oversized_frame_rejected_from_header_alone():
    parser = FrameParser(frame_max=4096)
    header = FRAME_HEADER.pack(3, 1, 4096 + 1)
    with pytest.raises(CodecError) as info:
        parser.feed(header)  # just the 7 header bytes, no payload yet
    assert info.value.code == 501
    # A payload of frame_max itself is tolerated, as RabbitMQ does (clients disagree on
    # whether frame_max counts the 8 bytes of framing).
    ok = FrameParser(frame_max=4096)
    payload = b"x" * 4096
    assert ok.feed(encode_frame(3, 1, payload)) == [(3, 1, payload)]


def test_frames_before_a_framing_error_are_kept():
    good = encode_frame(1, 1, b"abcd")
    bad = FRAME_HEADER.pack(3, 1, 2) + b"xx" + b"\x00"  # wrong frame-end octet
    with pytest.raises(CodecError) as info:
        FrameParser().feed(good + bad)
    assert info.value.frames == [(1, 1, b"abcd")]


def test_frame_max_is_settable_and_zero_means_unlimited():
    parser = FrameParser(frame_max=4096)
    big = encode_frame(3, 1, b"y" * 10000)
    parser.frame_max = 0
    assert parser.feed(big) == [(3, 1, b"y" * 10000)]
    parser.frame_max = 131072
    assert parser.feed(big) == [(3, 1, b"y" * 10000)]
    parser.frame_max = 9000
    with pytest.raises(CodecError):
        parser.feed(big)


def test_bad_frame_end():
    frame = bytearray(encode_frame(3, 1, b"abc"))
    frame[-1] = 0
    with pytest.raises(CodecError) as info:
        FrameParser().feed(bytes(frame))
    assert info.value.code == 501


def test_unknown_frame_type_is_left_to_the_protocol_layer():
    # A well-framed frame of an unknown type parses; the protocol layer answers it with
    # 501 and can still read the peer's close-ok after it (RabbitMQ does the same).
    assert FrameParser().feed(b"\x04\x00\x00\x00\x00\x00\x00\xce") == [(4, 0, b"")]
    # An HTTP request (a classic wrong-protocol peer) claims a huge frame: caught early.
    with pytest.raises(CodecError):
        FrameParser().feed(b"GET / HTTP/1.1\r\n")


def test_content_frames_split_by_frame_max():
    header = encode_content_header(10000, BasicProperties(delivery_mode=2))
    body = bytes(range(256)) * 40  # 10240 bytes
    frames = encode_content_frames(4, header, body, 4096)
    assert frames[0] == encode_frame(2, 4, header)
    assert all(len(f) <= 4096 for f in frames)
    assert [len(f) for f in frames[1:]] == [4096, 4096, 10240 - 2 * 4088 + 8]
    parsed = FrameParser(4096).feed(b"".join(frames))
    assert parsed[0] == (2, 4, header)
    assert b"".join(p for t, c, p in parsed[1:] if t == 3 and c == 4) == body


def test_content_frames_edges():
    header = encode_content_header(0, b"\x00\x00")
    assert encode_content_frames(1, header, b"", 4096) == [encode_frame(2, 1, header)]
    assert encode_content_frames(1, header, b"abc", 0) == [encode_frame(2, 1, header), encode_frame(3, 1, b"abc")]
    exact = b"z" * (4096 - 8)
    assert encode_content_frames(1, header, exact, 4096)[1:] == [encode_frame(3, 1, exact)]
    split = encode_content_frames(1, header, exact + b"!", 4096)
    assert split[1:] == [encode_frame(3, 1, exact), encode_frame(3, 1, b"!")]
    assert encode_content_frames(1, header, memoryview(b"abc"), 9)[1:] == [
        encode_frame(3, 1, b"a"), encode_frame(3, 1, b"b"), encode_frame(3, 1, b"c")]
    with pytest.raises(CodecError):
        encode_content_frames(1, header, b"abc", 8)


def test_parser_keeps_state_across_large_frames():
    parser = FrameParser(frame_max=0)
    payload = b"p" * 1_000_000
    frame = encode_frame(3, 2, payload)
    out = []
    for i in range(0, len(frame), 65536):
        out += parser.feed(frame[i : i + 65536])
    assert out == [(3, 2, payload)]
    assert struct.unpack(">BHI", frame[:7]) == (3, 2, len(payload))
