"""The sans-I/O client core, driven with bytes only."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from minimq.codec import spec
from minimq.codec.errors import UnexpectedFrame
from minimq.codec.frames import (
    PROTOCOL_HEADER,
    FrameParser,
    encode_content_frames,
    encode_frame,
    encode_method_frame,
)
from minimq.codec.properties import BasicProperties, encode_content_header
from minimq.protocol import client as pc


def sent_methods(conn: pc.ClientConnection) -> list[spec.Method]:
    data = conn.data_to_send()
    if data.startswith(PROTOCOL_HEADER):
        data = data[8:]
    return [spec.decode_method(p) for t, _, p in FrameParser(0).feed(data) if t == 1]


def handshake(heartbeat: int | None = None, server_heartbeat: int = 60,
              frame_max: int | None = None) -> pc.ClientConnection:
    conn = pc.ClientConnection(username="u", password="p", virtual_host="v",
                               heartbeat=heartbeat, frame_max=frame_max)
    conn.start()
    assert conn.data_to_send() == PROTOCOL_HEADER
    events = conn.receive_data(encode_method_frame(0, spec.ConnectionStart(
        0, 9, {"product": "x"}, b"AMQPLAIN PLAIN", b"en_US")))
    assert events == []
    (start_ok,) = sent_methods(conn)
    assert start_ok.mechanism == "PLAIN" and start_ok.response == b"\0u\0p"
    assert start_ok.client_properties["capabilities"]["connection.blocked"] is True
    conn.receive_data(encode_method_frame(0, spec.ConnectionTune(2047, 131072,
                                                                 server_heartbeat)))
    tune_ok, open_ = sent_methods(conn)
    assert open_.virtual_host == "v"
    (event,) = conn.receive_data(encode_method_frame(0, spec.ConnectionOpenOk("")))
    assert isinstance(event, pc.ConnectionOpened) and conn.state == "open"
    return conn


def test_handshake_and_tune() -> None:
    conn = handshake()
    assert (conn.heartbeat, conn.frame_max, conn.channel_max) == (60, 131072, 2047)
    assert conn.server_properties == {"product": "x"}
    assert handshake(heartbeat=0).heartbeat == 0
    assert handshake(heartbeat=5).heartbeat == 5
    assert handshake(frame_max=8192).frame_max == 8192
    assert handshake(frame_max=1).frame_max == 4096


def test_content_assembly_over_several_frames() -> None:
    conn = handshake()
    body = bytes(range(256)) * 100
    props = BasicProperties(content_type="a/b", headers={"k": 1})
    data = encode_method_frame(1, spec.BasicDeliver("ctag", 7, False, "ex", "rk"))
    data += b"".join(encode_content_frames(1, encode_content_header(len(body), props), body,
                                           4096))
    events = []
    for i in range(0, len(data), 1000):  # arbitrary read boundaries
        events += conn.receive_data(data[i:i + 1000])
    (event,) = events
    assert isinstance(event, pc.ContentReceived)
    assert event.body == body and event.method.delivery_tag == 7
    assert BasicProperties.decode(event.properties) == props


def test_empty_body_and_plain_methods() -> None:
    conn = handshake()
    data = encode_method_frame(2, spec.BasicGetOk(1, False, "", "q", 0))
    data += b"".join(encode_content_frames(2, encode_content_header(0, None), b"", 4096))
    data += encode_method_frame(2, spec.BasicAck(3, True))
    first, second = conn.receive_data(data)
    assert isinstance(first, pc.ContentReceived) and first.body == b""
    assert isinstance(second, pc.MethodReceived) and second.method == spec.BasicAck(3, True)


def test_channel_close_is_answered() -> None:
    conn = handshake()
    (event,) = conn.receive_data(encode_method_frame(
        3, spec.ChannelClose(404, "NOT_FOUND - x", 50, 10)))
    assert isinstance(event, pc.MethodReceived)
    assert sent_methods(conn) == [spec.ChannelCloseOk()]


def test_server_close_blocked_and_close_ok() -> None:
    conn = handshake()
    blocked, unblocked = conn.receive_data(
        encode_method_frame(0, spec.ConnectionBlocked("low memory"))
        + encode_method_frame(0, spec.ConnectionUnblocked()))
    assert isinstance(blocked, pc.ConnectionBlocked) and blocked.reason == "low memory"
    assert isinstance(unblocked, pc.ConnectionUnblocked)
    (closed,) = conn.receive_data(encode_method_frame(
        0, spec.ConnectionClose(320, "CONNECTION_FORCED - bye", 0, 0)))
    assert isinstance(closed, pc.ConnectionClosedByServer) and closed.reply_code == 320
    assert sent_methods(conn) == [spec.ConnectionCloseOk()]
    assert conn.state == "closed"

    conn = handshake()
    conn.close()
    assert isinstance(sent_methods(conn)[0], spec.ConnectionClose)
    (done,) = conn.receive_data(encode_method_frame(0, spec.ConnectionCloseOk()))
    assert isinstance(done, pc.ConnectionCloseCompleted)


def test_publish_frames_respect_frame_max() -> None:
    conn = handshake(frame_max=4096)
    frames = conn.encode_publish(1, "ex", "rk", b"x" * 10000, BasicProperties(priority=1))
    assert len(frames) == 2 + 3 and all(len(f) <= 4096 for f in frames)


def test_protocol_violations_raise() -> None:
    conn = handshake()
    with pytest.raises(UnexpectedFrame):
        conn.receive_data(encode_frame(3, 1, b"stray body"))
    conn = handshake()
    conn.receive_data(encode_method_frame(1, spec.BasicDeliver("c", 1, False, "", "q")))
    with pytest.raises(UnexpectedFrame):
        conn.receive_data(encode_method_frame(1, spec.BasicAck(1, False)))


def test_heartbeat_counts_as_received_frame() -> None:
    conn = handshake()
    before = conn.frames_received
    assert conn.receive_data(encode_frame(8, 0, b"")) == []
    assert conn.frames_received == before + 1
    conn.send_heartbeat()
    assert conn.data_to_send() == encode_frame(8, 0, b"")


def test_protocol_layer_has_no_io_imports() -> None:
    source = Path(pc.__file__).read_text()
    banned = {"asyncio", "socket", "time", "threading", "ssl", "select"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names = {(node.module or "").split(".")[0]}
        else:
            continue
        assert not names & banned, names


def test_unknown_frame_type_is_a_frame_error() -> None:
    from minimq.codec.errors import FrameError

    conn = handshake()
    with pytest.raises(FrameError):
        conn.receive_data(encode_frame(9, 0, b""))
