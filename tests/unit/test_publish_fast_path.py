"""The server's publish fast path gives exactly what the general ContentAssembler path gives.

`ServerConnection` completes a basic.publish at once when its header and single body frame
came in the same read; otherwise the `ContentAssembler` assembles it frame by frame. The same
bytes must give the same events, the same errors (reply code, text, class/method) and the same
output however they are cut into reads. The reference here feeds one frame per read, which
never takes the fast path; the runs under test feed everything at once (the fast path wherever
it applies) or in random cuts (sometimes one, sometimes the other).
"""
from __future__ import annotations

import random
import struct

import pytest

from minimq.codec import spec
from minimq.codec.frames import PROTOCOL_HEADER, encode_frame, encode_method_frame
from minimq.codec.properties import BasicProperties, encode_content_header
from minimq.protocol import connection as connection_module
from minimq.protocol.connection import NEED_DATA, ServerConnection
from minimq.protocol.events import ChannelClosed, ConnectionClosed, ContentReceived

MAX_SIZE = 64
PUBLISH = spec.BasicPublish(0, "", "q", False, False)


def _open(max_size: int = MAX_SIZE) -> ServerConnection:
    conn = ServerConnection(
        check_credentials=lambda user, password, mechanism: True,
        vhost_allowed=lambda user, vhost: True,
        server_properties={},
        max_message_size=max_size,
    )
    handshake = [
        PROTOCOL_HEADER,
        encode_method_frame(0, spec.ConnectionStartOk({}, "PLAIN", b"\0guest\0guest", "en_US")),
        encode_method_frame(0, spec.ConnectionTuneOk(2047, 131072, 0)),
        encode_method_frame(0, spec.ConnectionOpen("/")),
        encode_method_frame(1, spec.ChannelOpen()),
        encode_method_frame(2, spec.ChannelOpen()),
    ]
    for data in handshake:
        conn.receive_data(data)
        while conn.next_event() is not NEED_DATA:
            pass
    conn.out.clear()
    return conn


def _describe(ev) -> tuple:
    if isinstance(ev, ContentReceived):
        return ("content", ev.channel, ev.method, bytes(ev.header), bytes(ev.body))
    if isinstance(ev, ConnectionClosed):
        err = ev.error
        return ("closed", None if err is None else (type(err), err.code, err.reply_text, err.class_id, err.method_id))
    return (type(ev).__name__, getattr(ev, "channel", None), getattr(ev, "method", None))


def _run(reads: list[bytes], max_size: int = MAX_SIZE) -> tuple[list[tuple], bytes, object]:
    conn = _open(max_size)
    events = []
    for data in reads:
        conn.receive_data(data)
        while (ev := conn.next_event()) is not NEED_DATA:
            events.append(_describe(ev))
    err = conn.close_error
    return events, b"".join(conn.out), None if err is None else (type(err), err.reply_text)


def _header(size: int, class_id: int = 60) -> bytes:
    return encode_content_header(size, BasicProperties(delivery_mode=2), class_id)


def _publish(channel: int, method=PUBLISH) -> bytes:
    return encode_method_frame(channel, method)


def _hdr(channel: int, size: int, class_id: int = 60) -> bytes:
    return encode_frame(2, channel, _header(size, class_id))


def _body(channel: int, data: bytes) -> bytes:
    return encode_frame(3, channel, data)


def _same_everywhere(frames: list[bytes], max_size: int = MAX_SIZE, seed: int = 0) -> list[tuple]:
    """Events of one frame per read; asserts every other cut of the bytes gives the same."""
    reference = _run(frames, max_size)
    stream = b"".join(frames)
    assert _run([stream], max_size) == reference
    rng = random.Random(seed)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(1, 6))))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
        assert _run(pieces, max_size) == reference
    return reference[0]


def test_single_body_frame() -> None:
    events = _same_everywhere([_publish(1), _hdr(1, 5), _body(1, b"hello")] * 3)
    assert events == [("content", 1, PUBLISH, _header(5), b"hello")] * 3


def test_body_split_over_frames() -> None:
    events = _same_everywhere([_publish(1), _hdr(1, 6), _body(1, b"abc"), _body(1, b"def"), _publish(1), _hdr(1, 1), _body(1, b"z")])
    assert events == [("content", 1, PUBLISH, _header(6), b"abcdef"), ("content", 1, PUBLISH, _header(1), b"z")]


def test_zero_length_body() -> None:
    events = _same_everywhere([_publish(1), _hdr(1, 0), _publish(2), _hdr(2, 0)])
    assert events == [("content", 1, PUBLISH, _header(0), b""), ("content", 2, PUBLISH, _header(0), b"")]


def test_zero_length_body_then_a_stray_body_frame() -> None:
    events = _same_everywhere([_publish(1), _hdr(1, 0), _body(1, b"")])
    assert events[0] == ("content", 1, PUBLISH, _header(0), b"")
    assert events[-1][0] == "closed" and events[-1][1][1] == 505


def test_oversize_closes_the_channel_with_406() -> None:
    events = _same_everywhere([_publish(1), _hdr(1, MAX_SIZE + 1), _body(1, b"x" * (MAX_SIZE + 1)), _publish(2), _hdr(2, 1), _body(2, b"y")])
    assert events == [("ChannelClosed", 1, None), ("content", 2, PUBLISH, _header(1), b"y")]
    # Exactly the limit is accepted.
    assert _same_everywhere([_publish(1), _hdr(1, MAX_SIZE), _body(1, b"x" * MAX_SIZE)])[0][4] == b"x" * MAX_SIZE


def test_oversize_reply_text_and_ids() -> None:
    conn = _open()
    conn.receive_data(_publish(1) + _hdr(1, MAX_SIZE + 1) + _body(1, b"x" * (MAX_SIZE + 1)))
    assert isinstance(conn.next_event(), ChannelClosed)
    close = spec.decode_method(conn.out[0][7:-1])
    assert (close.reply_code, close.class_id, close.method_id) == (406, 60, 40)
    assert close.reply_text == f"PRECONDITION_FAILED - message size {MAX_SIZE + 1} is larger than configured max size {MAX_SIZE}"


@pytest.mark.parametrize("frames", [
    [_publish(1), _hdr(1, 3, class_id=10), _body(1, b"abc")],  # wrong class
    [_publish(1), encode_frame(2, 1, _header(3)[:13]), _body(1, b"abc")],  # short header
    [_publish(1), _hdr(2, 3), _body(2, b"abc")],  # header on another channel
    [_publish(1), _hdr(2, 3), _body(1, b"abc")],  # header on another channel, body on this one
    [_publish(1), _hdr(2, 0)],  # empty-body header on another channel
    [_publish(1), _hdr(1, 3), _body(2, b"abc")],  # body on another channel
    [_publish(1), _hdr(1, 3), _body(1, b"abcd")],  # body longer than announced
    [_publish(1), _hdr(1, 3), _body(1, b"ab"), _publish(1)],  # method before the body is complete
    [_publish(1), _publish(1)],  # method instead of header
    [_publish(1), _body(1, b"abc")],  # body before header
    [_publish(1), encode_frame(3, 1, _header(3)), _body(1, b"abc")],  # a body frame shaped like a header
    [_publish(1), _hdr(1, 3), encode_frame(8, 1, b"abc")],  # another frame type, of the body's size
    [_publish(1), _hdr(1, 3), encode_frame(1, 1, b"abc")],  # a method frame of the body's size
    [_publish(1), _hdr(1, 3), _hdr(1, 3)],  # a second header
])
def test_errors_are_the_assemblers(frames: list[bytes]) -> None:
    events = _same_everywhere(frames)
    assert events and events[-1][0] == "closed"


def test_wrong_class_header_is_505_naming_basic_publish() -> None:
    events = _same_everywhere([_publish(1), _hdr(1, 3, class_id=10), _body(1, b"abc")])
    _, (kind, code, _text, class_id, method_id) = events[-1]
    assert (code, class_id, method_id) == (505, 60, 40)


def test_random_streams_agree() -> None:
    """Random mixes of good and broken publishes on two channels, cut at random."""
    rng = random.Random(1234)
    makers = [
        lambda c: [_publish(c), _hdr(c, 3), _body(c, b"abc")],
        lambda c: [_publish(c), _hdr(c, 4), _body(c, b"ab"), _body(c, b"cd")],
        lambda c: [_publish(c), _hdr(c, 0)],
        lambda c: [_publish(c), _hdr(c, MAX_SIZE + 1)],
        lambda c: [_publish(c), _hdr(c, 2, class_id=50), _body(c, b"ab")],
        lambda c: [_publish(c), _hdr(c, 2), _body(c, b"abc")],
        lambda c: [_publish(c), _hdr(c, 2)],
        lambda c: [_publish(c)],
        lambda c: [_hdr(c, 1)],
        lambda c: [_body(c, b"x")],
        lambda c: [encode_method_frame(c, spec.BasicQos(0, 10, False))],
        lambda c: [encode_method_frame(c, spec.ChannelOpen())],
        lambda c: [_publish(c, spec.BasicPublish(0, "amq.direct", "k" * rng.randint(0, 9), False, False)), _hdr(c, 1), _body(c, b"k")],
    ]
    weights = [20, 6, 4, 2, 1, 1, 1, 1, 1, 1, 3, 1, 6]
    for seed in range(300):
        frames: list[bytes] = []
        for _ in range(rng.randint(1, 12)):
            frames += rng.choices(makers, weights)[0](rng.choice((1, 2)))
        _same_everywhere(frames, seed=seed)


def test_one_read_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is really taken (so the tests above compare two paths, not one)."""
    started = []

    class Counting(connection_module.ContentAssembler):
        def start(self, channel, method):
            started.append(channel)
            super().start(channel, method)

    monkeypatch.setattr(connection_module, "ContentAssembler", Counting)
    whole = [_publish(1), _hdr(1, 3), _body(1, b"abc"), _publish(2), _hdr(2, 0)]
    _run([b"".join(whole)])
    assert started == []
    _run(whole)  # one frame per read: the assembler does it all
    assert started == [1, 2]
    _run([b"".join([_publish(1), _hdr(1, 4), _body(1, b"ab"), _body(1, b"cd")])])
    assert started == [1, 2, 1]


def test_frame_layout_assumed_by_the_fast_path() -> None:
    # The fast path reads the body size at offset 4 of the header payload (after class id
    # and weight), as the assembler's ">HHQ" does.
    payload = _header(0x0102030405060708)
    assert struct.unpack_from(">HHQ", payload)[2] == 0x0102030405060708
