"""The sans-I/O client core (`ClientConnection` + `ClientChannel`), driven with bytes only.

Every test feeds the bytes a broker would send and checks the events that come out and the
frames the core queued in answer. No socket, no event loop, no thread.
"""
from __future__ import annotations

import random

import pytest

from minimq.codec import spec
from minimq.codec.errors import AMQPError, CodecError, CommandInvalid, FrameError, UnexpectedFrame
from minimq.codec.frames import (
    PROTOCOL_HEADER,
    FrameParser,
    encode_content_frames,
    encode_frame,
    encode_method_frame,
)
from minimq.codec.properties import BasicProperties, encode_content_header
from minimq.protocol import client as pc
from minimq.protocol import client_channel as cc


def sent(conn: pc.ClientConnection) -> list[spec.Method]:
    """The methods queued for the broker since the last call."""
    data = conn.data_to_send()
    if data.startswith(PROTOCOL_HEADER):
        data = data[8:]
    return [spec.decode_method(p) for t, _, p in FrameParser(0).feed(data) if t == 1]


def content(channel: int, method: spec.Method, body: bytes,
            props: BasicProperties | None = None, frame_max: int = 4096) -> bytes:
    return encode_method_frame(channel, method) + b"".join(
        encode_content_frames(channel, encode_content_header(len(body), props), body, frame_max))


def handshake(heartbeat: int | None = None, server_heartbeat: int = 60,
              frame_max: int | None = None) -> pc.ClientConnection:
    conn = pc.ClientConnection(username="u", password="p", virtual_host="v",
                               heartbeat=heartbeat, frame_max=frame_max)
    conn.start()
    assert conn.data_to_send() == PROTOCOL_HEADER
    assert conn.receive_data(encode_method_frame(0, spec.ConnectionStart(
        0, 9, {"product": "x"}, b"AMQPLAIN PLAIN", b"en_US"))) == []
    (start_ok,) = sent(conn)
    assert start_ok.mechanism == "PLAIN" and start_ok.response == b"\0u\0p"
    conn.receive_data(encode_method_frame(0, spec.ConnectionTune(2047, 131072, server_heartbeat)))
    tune_ok, open_ = sent(conn)
    assert open_.virtual_host == "v" and tune_ok.frame_max == conn.frame_max
    (event,) = conn.receive_data(encode_method_frame(0, spec.ConnectionOpenOk("")))
    assert isinstance(event, pc.ConnectionReady) and conn.state == "open"
    return conn


def opened(number: int = 1) -> tuple[pc.ClientConnection, cc.ClientChannel]:
    conn = handshake()
    ch = conn.channel(number)
    ch.open()
    assert sent(conn) == [spec.ChannelOpen()] and ch.state == "opening"
    (reply,) = conn.receive_data(encode_method_frame(number, spec.ChannelOpenOk(b"")))
    assert isinstance(reply, cc.Reply) and reply.method == spec.ChannelOpenOk(b"")
    assert ch.state == "open"
    return conn, ch


def consuming(tag: str = "ctag") -> tuple[pc.ClientConnection, cc.ClientChannel]:
    conn, ch = opened()
    ch.call(spec.BasicConsume(0, "q", tag, False, False, False, False, None))
    sent(conn)
    (reply,) = conn.receive_data(encode_method_frame(1, spec.BasicConsumeOk(tag)))
    assert isinstance(reply, cc.Reply) and tag in ch.consumers
    return conn, ch


def confirming() -> tuple[pc.ClientConnection, cc.ClientChannel]:
    conn, ch = opened()
    ch.call(spec.ConfirmSelect(False))
    (reply,) = conn.receive_data(encode_method_frame(1, spec.ConfirmSelectOk()))
    assert isinstance(reply, cc.Reply) and ch.confirming
    sent(conn)
    return conn, ch


# -- connection ---------------------------------------------------------------------------


def test_handshake_negotiates_tune() -> None:
    conn = handshake()
    assert (conn.heartbeat, conn.frame_max, conn.channel_max) == (60, 131072, 2047)
    assert conn.server_properties == {"product": "x"}
    assert handshake(heartbeat=0).heartbeat == 0
    assert handshake(heartbeat=5).heartbeat == 5
    assert handshake(frame_max=8192).frame_max == 8192
    assert handshake(frame_max=1).frame_max == 4096


def test_connection_events() -> None:
    conn = handshake()
    blocked, unblocked = conn.receive_data(
        encode_method_frame(0, spec.ConnectionBlocked("low memory"))
        + encode_method_frame(0, spec.ConnectionUnblocked()))
    assert isinstance(blocked, pc.ConnectionBlocked) and blocked.reason == "low memory"
    assert isinstance(unblocked, pc.ConnectionUnblocked)
    conn.channel(1).open()
    sent(conn)
    (closed,) = conn.receive_data(encode_method_frame(
        0, spec.ConnectionClose(320, "CONNECTION_FORCED - bye", 0, 0)))
    assert isinstance(closed, pc.ConnectionClosedByServer) and closed.reply_code == 320
    assert sent(conn) == [spec.ConnectionCloseOk()]
    assert conn.state == "closed" and conn.channels == {}

    conn = handshake()
    conn.close()
    assert isinstance(sent(conn)[0], spec.ConnectionClose)
    (done,) = conn.receive_data(encode_method_frame(0, spec.ConnectionCloseOk()))
    assert isinstance(done, pc.ConnectionCloseCompleted)


def test_heartbeat_ticks() -> None:
    conn = handshake()
    # Something went out since the last tick (the handshake): no heartbeat needed.
    assert conn.heartbeat_tick() and conn.data_to_send() == b""
    # Idle: a heartbeat goes out each tick.
    assert conn.heartbeat_tick() and conn.data_to_send() == encode_frame(8, 0, b"")
    # The broker's heartbeat keeps it alive; four silent ticks (two intervals) do not.
    conn.receive_data(encode_frame(8, 0, b""))
    assert conn.heartbeat_tick()  # notices the frame
    assert all(conn.heartbeat_tick() for _ in range(3))
    assert not conn.heartbeat_tick()


def test_publish_frames_respect_frame_max() -> None:
    conn = handshake(frame_max=4096)
    frames = conn.encode_publish(1, "ex", "rk", b"x" * 10000, BasicProperties(priority=1))
    assert len(frames) == 2 + 3 and all(len(f) <= 4096 for f in frames)


def test_protocol_violations_raise() -> None:
    conn, _ = opened()
    with pytest.raises(UnexpectedFrame):
        conn.receive_data(encode_frame(3, 1, b"stray body"))
    conn, _ = consuming()
    conn.receive_data(encode_method_frame(1, spec.BasicDeliver("ctag", 1, False, "", "q")))
    with pytest.raises(UnexpectedFrame):
        conn.receive_data(encode_method_frame(1, spec.BasicAck(1, False)))
    conn = handshake()
    with pytest.raises(FrameError):
        conn.receive_data(encode_frame(9, 0, b""))
    conn = handshake()
    with pytest.raises(AMQPError):
        conn.receive_data(encode_frame(8, 1, b""))


def test_garbage_after_the_handshake_parses_or_raises_amqp_errors() -> None:
    """Any bytes either make events or raise our protocol errors, never anything else."""
    rng = random.Random(0xC11E)
    valid = [
        encode_method_frame(1, spec.BasicAck(1, True)),
        content(1, spec.BasicDeliver("ctag", 1, False, "e", "r"), b"body"),
        encode_method_frame(1, spec.ChannelFlow(False)),
        encode_method_frame(0, spec.ConnectionBlocked("x")),
    ]
    for _ in range(400):
        conn, ch = consuming()
        data = bytearray(rng.choice(valid) + rng.choice(valid))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            events = conn.receive_data(bytes(data))
        except (AMQPError, CodecError):
            continue
        assert all(isinstance(e, (cc.ChannelEvent, pc.ClientEvent)) for e in events)


# -- content and deliveries -----------------------------------------------------------------


def test_delivery_assembled_over_several_frames_and_reads() -> None:
    conn, _ = consuming()
    body = bytes(range(256)) * 100
    props = BasicProperties(content_type="a/b", headers={"k": 1})
    data = content(1, spec.BasicDeliver("ctag", 7, False, "ex", "rk"), body, props)
    events = []
    for i in range(0, len(data), 1000):  # arbitrary read boundaries
        events += conn.receive_data(data[i:i + 1000])
    (event,) = events
    assert isinstance(event, cc.Delivered) and event.channel == 1
    assert event.body == body and event.method.delivery_tag == 7
    assert BasicProperties.decode(event.properties) == props


def test_deliveries_only_for_live_consumers() -> None:
    conn, ch = consuming()
    assert conn.receive_data(content(1, spec.BasicDeliver("other", 1, False, "", "q"), b"x")) == []
    (cancelled,) = conn.receive_data(encode_method_frame(1, spec.BasicCancel("ctag", False)))
    assert isinstance(cancelled, cc.ConsumerCancelled) and cancelled.consumer_tag == "ctag"
    assert sent(conn) == [spec.BasicCancelOk("ctag")] and not ch.consumers
    assert conn.receive_data(content(1, spec.BasicDeliver("ctag", 2, False, "", "q"), b"x")) == []
    # Our own cancel: the tag is dead from its cancel-ok on.
    conn, ch = consuming("mine")
    ch.call(spec.BasicCancel("mine", False))
    (reply,) = conn.receive_data(encode_method_frame(1, spec.BasicCancelOk("mine")))
    assert isinstance(reply, cc.Reply) and not ch.consumers


def test_get_ok_get_empty_and_empty_body() -> None:
    conn, ch = opened()
    ch.call(spec.BasicGet(0, "q", False))
    (reply,) = conn.receive_data(content(1, spec.BasicGetOk(1, False, "", "q", 0), b""))
    assert isinstance(reply, cc.Reply) and reply.body == b"" and reply.method.delivery_tag == 1
    assert BasicProperties.decode(reply.properties) == BasicProperties()
    ch.call(spec.BasicGet(0, "q", False))
    (empty,) = conn.receive_data(encode_method_frame(1, spec.BasicGetEmpty("")))
    assert isinstance(empty, cc.Reply) and empty.body is None


def test_frames_of_unknown_channels_are_dropped() -> None:
    conn, _ = opened()
    assert conn.receive_data(content(5, spec.BasicDeliver("c", 1, False, "", "q"), b"x" * 10)) == []
    assert conn.receive_data(encode_method_frame(5, spec.BasicAck(1, False))) == []
    # ...but still checked: a body without its method is a protocol error.
    with pytest.raises(UnexpectedFrame):
        conn.receive_data(encode_frame(3, 5, b"x"))


# -- reply matching -------------------------------------------------------------------------


def test_replies_match_the_call_in_progress() -> None:
    conn, ch = opened()
    ch.call(spec.QueueDeclare(0, "q", False, False, False, False, False, None))
    assert ch.call_in_progress
    with pytest.raises(RuntimeError):
        ch.call(spec.QueuePurge(0, "q", False))
    (reply,) = conn.receive_data(encode_method_frame(1, spec.QueueDeclareOk("q", 3, 1)))
    assert isinstance(reply, cc.Reply) and reply.method.message_count == 3
    assert not ch.call_in_progress


def test_a_reply_nobody_asked_for_is_command_invalid() -> None:
    conn, _ = opened()
    with pytest.raises(CommandInvalid):
        conn.receive_data(encode_method_frame(1, spec.QueueDeclareOk("q", 0, 0)))
    conn, ch = opened()
    ch.call(spec.QueueDeclare(0, "q", False, False, False, False, False, None))
    with pytest.raises(CommandInvalid):
        conn.receive_data(encode_method_frame(1, spec.ExchangeDeclareOk()))
    conn, _ = opened()
    with pytest.raises(CommandInvalid):
        conn.receive_data(content(1, spec.BasicGetOk(1, False, "", "q", 0), b"x"))


# -- publisher confirms and returns ---------------------------------------------------------


def test_confirms_resolve_single_and_multiple() -> None:
    conn, ch = confirming()
    tags = [ch.publish("", "q", b"%d" % i) for i in range(5)]
    assert tags == [1, 2, 3, 4, 5] and ch.unconfirmed == 5
    (first,) = conn.receive_data(encode_method_frame(1, spec.BasicAck(2, True)))
    assert isinstance(first, cc.ConfirmsResolved) and (first.tags, first.ack) == ([1, 2], True)
    (nack,) = conn.receive_data(encode_method_frame(1, spec.BasicNack(4, False, False)))
    assert (nack.tags, nack.ack) == ([4], False)
    (rest,) = conn.receive_data(encode_method_frame(1, spec.BasicAck(5, True)))
    assert rest.tags == [3, 5] and ch.unconfirmed == 0
    # Acks for nothing outstanding are ignored, not errors.
    assert conn.receive_data(encode_method_frame(1, spec.BasicAck(9, False))) == []
    assert conn.receive_data(encode_method_frame(1, spec.BasicAck(9, True))) == []


def test_publishes_are_unnumbered_without_confirm_mode() -> None:
    conn, ch = opened()
    assert ch.publish("", "q", b"x") == 0 and ch.unconfirmed == 0
    frames = FrameParser(0).feed(conn.data_to_send())
    assert [t for t, _, _ in frames] == [1, 2, 3]


def test_return_is_matched_to_its_publish() -> None:
    conn, ch = confirming()
    props = BasicProperties(headers={"a": 1})
    tag = ch.publish("", "nowhere", b"lost", props, mandatory=True)
    assert props.message_id  # set so that the return can be matched
    ch.publish("", "q", b"kept", BasicProperties(message_id="mine"), mandatory=True)
    method = spec.BasicReturn(312, "NO_ROUTE", "", "nowhere")
    (returned,) = conn.receive_data(content(1, method, b"lost", props))
    assert isinstance(returned, cc.Returned) and returned.delivery_tag == tag
    assert returned.body == b"lost" and returned.method.reply_code == 312
    (acked,) = conn.receive_data(encode_method_frame(1, spec.BasicAck(2, True)))
    assert acked.tags == [1, 2]
    # Without confirm mode (or unmatched) a return names no publish.
    conn, ch = opened()
    ch.publish("", "nowhere", b"x", mandatory=True)
    (returned,) = conn.receive_data(content(1, method, b"x"))
    assert returned.delivery_tag is None


# -- flow and closing -----------------------------------------------------------------------


def test_flow_is_answered_and_reported() -> None:
    conn, ch = opened()
    (paused,) = conn.receive_data(encode_method_frame(1, spec.ChannelFlow(False)))
    assert isinstance(paused, cc.FlowChanged) and not paused.active and not ch.active
    assert sent(conn) == [spec.ChannelFlowOk(False)]
    (resumed,) = conn.receive_data(encode_method_frame(1, spec.ChannelFlow(True)))
    assert resumed.active and ch.active
    # Our own channel.flow is a call like any other.
    ch.call(spec.ChannelFlow(False))
    (reply,) = conn.receive_data(encode_method_frame(1, spec.ChannelFlowOk(False)))
    assert isinstance(reply, cc.Reply)


def test_broker_closes_the_channel() -> None:
    conn, ch = consuming()
    ch.call(spec.QueueDeclare(0, "q", True, False, False, False, False, None))
    sent(conn)
    (closed,) = conn.receive_data(encode_method_frame(
        1, spec.ChannelClose(404, "NOT_FOUND - no queue 'q'", 50, 10)))
    assert isinstance(closed, cc.ChannelClosedByServer)
    assert (closed.reply_code, closed.class_id, closed.method_id) == (404, 50, 10)
    assert sent(conn) == [spec.ChannelCloseOk()]
    assert ch.state == "closed" and not ch.consumers and 1 not in conn.channels
    # Late frames for the dead channel are dropped; the number can be opened again.
    assert conn.receive_data(content(1, spec.BasicDeliver("ctag", 1, False, "", "q"), b"")) == []
    again = conn.channel(1)
    again.open()
    (reply,) = conn.receive_data(encode_method_frame(1, spec.ChannelOpenOk(b"")))
    assert isinstance(reply, cc.Reply) and again.state == "open"


def test_our_close_drops_everything_until_close_ok() -> None:
    conn, ch = consuming()
    ch.call(spec.QueuePurge(0, "q", False))
    ch.close(200, "call abandoned")  # e.g. the caller timed out
    assert sent(conn)[-1] == spec.ChannelClose(200, "call abandoned", 0, 0)
    assert ch.state == "closing"
    late = (encode_method_frame(1, spec.QueuePurgeOk(1))
            + content(1, spec.BasicDeliver("ctag", 1, False, "", "q"), b"x"))
    assert conn.receive_data(late) == []
    (done,) = conn.receive_data(encode_method_frame(1, spec.ChannelCloseOk()))
    assert isinstance(done, cc.ChannelCloseCompleted) and ch.state == "closed"
    # A close crossing ours is answered and completes it too.
    conn, ch = opened()
    ch.close()
    sent(conn)
    (done,) = conn.receive_data(encode_method_frame(1, spec.ChannelClose(406, "x", 0, 0)))
    assert isinstance(done, cc.ChannelCloseCompleted)
    assert sent(conn) == [spec.ChannelCloseOk()]


def test_confirms_still_resolve_while_closing() -> None:
    conn, ch = confirming()
    ch.publish("", "q", b"x")
    ch.close()
    (acked,) = conn.receive_data(encode_method_frame(1, spec.BasicAck(1, False)))
    assert acked.tags == [1]
