"""Answers that real clients rely on, each checked on the wire against RabbitMQ 3.10.8.

Every test here passes against RabbitMQ itself: run it with
MINIMQ_TEST_URL=amqp://guest:guest@127.0.0.1:5672/ to check. Raw sockets (rawamqp.py), so the
exact frames and their order are what is asserted, not a client library's reading of them.
"""
from __future__ import annotations

import struct

import pytest

from minimq.codec import spec

from .rawamqp import Closed, Message, RawAMQP, encode_frame, method_payload

DEFAULT_EXCHANGE = "ACCESS_REFUSED - operation not permitted on the default exchange"


@pytest.fixture
def conn(broker):
    c = RawAMQP.connect(broker.host, broker.port)
    c.channel_open(1)
    yield c
    c.sock.close()


def rpc(c: RawAMQP, method, channel: int = 1):
    c.send_method(channel, method)
    return c.read_method()


def channel_close(c: RawAMQP, method) -> spec.ChannelClose:
    ch, reply = rpc(c, method)
    assert (ch, type(reply)) == (1, spec.ChannelClose), reply
    c.send_method(1, spec.ChannelCloseOk())
    c.channel_open(1)
    return reply


# ------------------------------------------------------------------ unbind


def test_queue_unbind_of_missing_queue_exchange_or_binding_succeeds(conn, unique):
    assert rpc(conn, spec.QueueUnbind(0, unique + "-nq", "amq.direct", "k")) == (1, spec.QueueUnbindOk())
    conn.queue_declare(1, unique, auto_delete=True)
    assert rpc(conn, spec.QueueUnbind(0, unique, unique + "-nx", "k")) == (1, spec.QueueUnbindOk())
    assert rpc(conn, spec.QueueUnbind(0, unique, "amq.direct", "never-bound")) == (1, spec.QueueUnbindOk())
    # The default exchange is still refused, missing queue or not.
    reply = channel_close(conn, spec.QueueUnbind(0, unique + "-nq", "", "k"))
    assert (reply.reply_code, reply.reply_text) == (403, DEFAULT_EXCHANGE)


def test_exchange_unbind_of_missing_exchanges_succeeds(conn, unique):
    assert rpc(conn, spec.ExchangeUnbind(0, unique + "-d", unique + "-s", "k")) == (1, spec.ExchangeUnbindOk())
    assert rpc(conn, spec.ExchangeUnbind(0, "amq.fanout", "amq.direct", "k")) == (1, spec.ExchangeUnbindOk())
    reply = channel_close(conn, spec.ExchangeUnbind(0, unique + "-d", "", "k"))
    assert (reply.reply_code, reply.reply_text) == (403, DEFAULT_EXCHANGE)


def test_unbinding_another_connections_exclusive_queue(broker, conn, unique):
    """No binding: nothing to check, ok. An existing binding: 405, and it stays."""
    owner = RawAMQP.connect(broker.host, broker.port)
    try:
        owner.channel_open(1)
        owner.queue_declare(1, unique, exclusive=True)
        assert rpc(conn, spec.QueueUnbind(0, unique, "amq.direct", "k")) == (1, spec.QueueUnbindOk())
        assert rpc(owner, spec.QueueBind(0, unique, "amq.direct", "k")) == (1, spec.QueueBindOk())
        reply = channel_close(conn, spec.QueueUnbind(0, unique, "amq.direct", "k"))
        assert reply.reply_code == 405 and "locked queue" in reply.reply_text
        owner.publish(1, "amq.direct", "k", b"still bound")
        got = owner.get(1, unique)
        assert isinstance(got, Message) and got.body == b"still bound"
    finally:
        owner.sock.close()


# --------------------------------------------------------------- exchanges


@pytest.mark.parametrize("passive", [False, True])
@pytest.mark.parametrize("kind", ["direct", "fanout"])
def test_declaring_the_default_exchange_is_refused(conn, passive, kind):
    reply = channel_close(conn, spec.ExchangeDeclare(0, "", kind, passive))
    assert (reply.reply_code, reply.reply_text) == (403, DEFAULT_EXCHANGE)
    assert (reply.class_id, reply.method_id) == (40, 10)


def test_deleting_a_system_exchange_names_the_vhost(conn):
    reply = channel_close(conn, spec.ExchangeDelete(0, "amq.direct"))
    assert reply.reply_code == 403
    assert reply.reply_text == "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"


def test_exchange_bind_names_the_missing_source_first(conn, unique):
    reply = channel_close(conn, spec.ExchangeBind(0, unique + "-dst", unique + "-src", "k"))
    assert (reply.reply_code, reply.reply_text) == (404, f"NOT_FOUND - no exchange '{unique}-src' in vhost '/'")
    # The default exchange at either end is refused before anything is looked up.
    for dst, src in ((unique + "-dst", ""), ("", unique + "-src")):
        reply = channel_close(conn, spec.ExchangeBind(0, dst, src, "k"))
        assert (reply.reply_code, reply.reply_text) == (403, DEFAULT_EXCHANGE)


# ------------------------------------------------------------ queue.delete


def test_queue_delete_ok_comes_before_the_deleting_channels_own_cancel(broker, unique):
    """RabbitMQ's order on the deleting connection: other channels' cancels, delete-ok, then
    the cancels of the deleting channel's own consumers (py-amqp and kombu depend on it)."""
    a = RawAMQP.connect(broker.host, broker.port)
    b = RawAMQP.connect(broker.host, broker.port)
    try:
        a.channel_open(1)
        a.channel_open(2)
        b.channel_open(1)
        a.queue_declare(1, unique)
        for c, ch, tag in ((a, 2, "a2"), (b, 1, "b1"), (a, 1, "a1")):
            c.send_method(ch, spec.BasicConsume(0, unique, tag))
            c.expect(spec.BasicConsumeOk, channel=ch)
        a.send_method(1, spec.QueueDelete(0, unique))
        got = [a.read_method() for _ in range(3)]
        assert got == [
            (2, spec.BasicCancel("a2", True)),
            (1, spec.QueueDeleteOk(0)),
            (1, spec.BasicCancel("a1", True)),
        ]
        assert b.read_method() == (1, spec.BasicCancel("b1", True))
    finally:
        a.sock.close()
        b.sock.close()


# ------------------------------------------------------ channel.flow, recover


def test_recover_without_requeue_is_not_implemented(conn):
    conn.send_method(1, spec.BasicRecover(False))
    close = conn.expect_connection_close()
    assert (close.reply_code, close.reply_text) == (540, "NOT_IMPLEMENTED - requeue=false")
    assert (close.class_id, close.method_id) == (60, 110)


def test_flow_false_is_not_implemented(conn):
    conn.send_method(1, spec.ChannelFlow(False))
    close = conn.expect_connection_close()
    assert (close.reply_code, close.reply_text) == (540, "NOT_IMPLEMENTED - active=false")
    assert (close.class_id, close.method_id) == (20, 20)


# ------------------------------------------------------------ closing


def test_server_reads_on_after_close_ok_until_the_client_hangs_up(conn, unique):
    """A client still writing when it closes must not have its socket closed under it.

    We send connection.close with ~2 MB of publishes behind it, as a client that publishes
    and closes at once does. Closing with those bytes unread would answer our writes with a
    TCP reset (Node amqplib: `write ECONNRESET`); the broker keeps reading and discarding
    until we hang up, and only then closes (RabbitMQ resets at that point, SO_LINGER 0, which
    no longer matters: the client is gone).
    """
    publish = encode_frame(1, 1, spec.BasicPublish(0, "", unique).encode())
    header = encode_frame(2, 1, struct.pack(">HHQH", 60, 0, 1000, 0))
    body = encode_frame(3, 1, b"x" * 1000)
    tail = (publish + header + body) * 2000
    conn.send_raw(encode_frame(1, 0, spec.ConnectionClose(200, "bye", 0, 0).encode()) + tail)
    assert conn.read_method() == (0, spec.ConnectionCloseOk())
    # The broker lingers: nothing arrives, the socket is not closed under us...
    with pytest.raises(TimeoutError):
        conn.read_frame(0.5, heartbeats=True)
    # ...and what we still write goes in without a reset.
    conn.send_raw(tail[:200_000])
    with pytest.raises(TimeoutError):
        conn.read_frame(0.3, heartbeats=True)
    assert conn.hang_up(5.0), "broker did not close after our hang-up"


# ----------------------------------------------------------- frame errors


def frame_error(c: RawAMQP, data: bytes) -> spec.ConnectionClose:
    c.send_raw(data)
    return c.expect_connection_close()


def test_heartbeat_with_a_payload_is_a_frame_error(conn):
    close = frame_error(conn, encode_frame(8, 0, b"abc"))
    assert close.reply_code == 501
    assert close.reply_text == 'FRAME_ERROR - type 8, all octets = <<"abc">>: unknown_frame'


def test_unknown_frame_type_quotes_the_payload(conn):
    close = frame_error(conn, encode_frame(9, 1, bytes(range(20))))
    assert close.reply_code == 501
    assert close.reply_text == (
        "FRAME_ERROR - type 9, first 16 octets = <<0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15>>: unknown_frame"
    )


def test_heartbeat_on_a_channel_is_unexpected(conn):
    close = frame_error(conn, encode_frame(8, 1, b""))
    assert (close.reply_code, close.reply_text) == (505, "UNEXPECTED_FRAME - type 8, all octets = <<>>")


def test_channel_method_on_channel_zero_is_a_channel_error(conn):
    close = frame_error(conn, encode_frame(1, 0, spec.QueueDeclare(0, "x", exclusive=True).encode()))
    assert close.reply_code == 504
    assert close.reply_text == "CHANNEL_ERROR - unexpected method in connection state running"
    assert (close.class_id, close.method_id) == (50, 10)


def test_content_header_of_the_wrong_class_is_unexpected(conn):
    publish = encode_frame(1, 1, spec.BasicPublish(0, "", "x").encode())
    close = frame_error(conn, publish + encode_frame(2, 1, struct.pack(">HHQH", 50, 0, 3, 0)))
    assert close.reply_code == 505
    assert close.reply_text == (
        "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead"
    )
    assert (close.class_id, close.method_id) == (60, 40)


def test_undecodable_arguments_are_quoted(conn):
    close = frame_error(conn, encode_frame(1, 1, method_payload(50, 10, b"\x00\x00\x05ab")))
    assert (close.reply_code, close.reply_text) == (501, "FRAME_ERROR - cannot decode <<0,0,5,97,98>>")
    assert (close.class_id, close.method_id) == (50, 10)


@pytest.mark.parametrize("channel,class_id,method_id", [(1, 60, 999), (1, 999, 10), (0, 10, 99)])
def test_unknown_method_drops_the_connection(conn, channel, class_id, method_id):
    """RabbitMQ's reader cannot name the method and stops: the socket closes, no close frame."""
    conn.send_raw(encode_frame(1, channel, method_payload(class_id, method_id)))
    with pytest.raises(Closed):
        conn.read_frame(5.0, heartbeats=True)


def test_connection_method_on_a_channel_is_unimplemented(conn):
    close = frame_error(conn, encode_frame(1, 1, spec.ConnectionBlocked("x").encode()))
    assert (close.reply_code, close.reply_text) == (503, "COMMAND_INVALID - unimplemented method")
    assert (close.class_id, close.method_id) == (10, 60)


def test_channel_open_errors_name_the_method(broker, conn):
    close = frame_error(conn, encode_frame(1, 1, spec.ChannelOpen().encode()))
    assert (close.reply_code, close.reply_text) == (504, "CHANNEL_ERROR - second 'channel.open' seen")
    assert (close.class_id, close.method_id) == (20, 10)
    c = RawAMQP.connect(broker.host, broker.port)
    try:
        close = frame_error(c, encode_frame(1, 3, spec.QueueDeclare(0, "x").encode()))
        assert (close.reply_code, close.reply_text) == (504, "CHANNEL_ERROR - expected 'channel.open'")
        assert (close.class_id, close.method_id) == (50, 10)
    finally:
        c.sock.close()


# ------------------------------------------------- AMQP 0-8 and 0-9 headers


def handshake_0_8(broker, header: bytes = b"AMQP\x01\x01\x09\x01") -> tuple[RawAMQP, spec.ConnectionStart]:
    c = RawAMQP.open_socket(broker.host, broker.port)
    start = c.send_header(header)
    c.start_ok(mechanism="AMQPLAIN")
    tune = c.expect(spec.ConnectionTune)
    c.tune_ok(tune.channel_max, tune.frame_max, 0)
    c.send_method(0, spec.ConnectionOpen("/"))
    c.expect(spec.ConnectionOpenOk)
    return c, start


@pytest.mark.parametrize("header", [b"AMQP\x01\x01\x09\x01", b"AMQP\x01\x01\x08\x00"])
def test_0_8_headers_get_a_0_8_start(broker, header):
    c, start = handshake_0_8(broker, header)
    try:
        assert (start.version_major, start.version_minor) == (8, 0)
        assert start.server_properties["capabilities"] == {}  # no 0-9-1 extensions in 0-8
        assert start.mechanisms == b"AMQPLAIN PLAIN"
        # channel.open-ok has no arguments in 0-8.
        c.send_method(1, spec.ChannelOpen())
        assert c.read_frame().payload == b"\x00\x14\x00\x0b"
        # access.request (realm "/data", active/write/read) is granted ticket 1.
        c.send_raw(encode_frame(1, 1, method_payload(30, 10, b"\x05/data\x1c")))
        assert c.read_frame().payload == b"\x00\x1e\x00\x0b\x00\x01"
        # basic.consume has no arguments table in 0-8.
        c.send_raw(encode_frame(1, 1, method_payload(60, 20, b"\x00\x00\x00\x03tag\x00")))
        close = c.expect(spec.ChannelClose, channel=1)
        assert (close.reply_code, close.reply_text) == (404, "NOT_FOUND - no previously declared queue")
        c.send_method(1, spec.ChannelCloseOk())
        # connection.close is (10, 60) in 0-8, and close-ok (10, 61).
        c.send_raw(encode_frame(1, 0, method_payload(10, 60, b"\x00\xc8\x00\x00\x00\x00\x00")))
        assert c.read_frame().payload == b"\x00\x0a\x00\x3d"
        assert c.hang_up()
    finally:
        c.sock.close()


@pytest.mark.parametrize("payload", [
    spec.ExchangeBind(0, "a", "b", "k").encode(),
    spec.ConfirmSelect().encode(),
    spec.BasicNack(1, False, True).encode(),
])
def test_0_9_1_only_methods_are_unknown_in_0_8(broker, payload):
    c, _ = handshake_0_8(broker)
    try:
        c.send_method(1, spec.ChannelOpen())
        assert c.read_frame().payload == b"\x00\x14\x00\x0b"
        c.send_raw(encode_frame(1, 1, payload))
        with pytest.raises(Closed):
            c.read_frame(5.0, heartbeats=True)
    finally:
        c.sock.close()


def test_0_8_connection_error_uses_0_8_close(broker):
    c, _ = handshake_0_8(broker)
    try:
        c.send_raw(encode_frame(1, 3, spec.QueueDeclare(0, "x").encode()))
        frame = c.read_frame()
        assert frame.payload[:4] == b"\x00\x0a\x00\x3c"
        closed = spec.ConnectionClose.decode(frame.payload, 4)
        assert (closed.reply_code, closed.reply_text) == (504, "CHANNEL_ERROR - expected 'channel.open'")
    finally:
        c.sock.close()


def test_0_9_header_is_served_as_0_9_1(broker):
    c = RawAMQP.open_socket(broker.host, broker.port)
    try:
        start = c.send_header(b"AMQP\x01\x01\x00\x09")
        assert (start.version_major, start.version_minor) == (0, 9)
        assert start.server_properties["capabilities"]["publisher_confirms"] is True
        c.start_ok()
        tune = c.expect(spec.ConnectionTune)
        c.tune_ok(tune.channel_max, tune.frame_max, 0)
        c.send_method(0, spec.ConnectionOpen("/"))
        c.expect(spec.ConnectionOpenOk)
        c.channel_open(1)
        c.close()
    finally:
        c.sock.close()


# ------------------------------------------- what a failing channel gives back, and to whom


def test_a_hard_error_ends_the_failing_channel_first(broker, unique):
    """A connection error raised by a channel's method: RabbitMQ ends that channel first,
    while the connection's other channels still run. Its unacked message goes back to the
    queue and at once to a no-ack consumer on another channel of the same connection, whose
    delivery is written before connection.close; the message is gone from the queue."""
    a = RawAMQP.connect(broker.host, broker.port)
    b = RawAMQP.connect(broker.host, broker.port)
    try:
        a.channel_open(1)
        a.channel_open(2)
        a.channel_open(3)
        a.queue_declare(1, unique)
        a.send_method(2, spec.BasicConsume(0, unique, "acks", False, False))
        a.expect(spec.BasicConsumeOk, channel=2)
        a.publish(1, "", unique, b"m")
        assert a.read_message().method.consumer_tag == "acks"
        a.send_method(3, spec.BasicConsume(0, unique, "no-ack", False, True))
        a.expect(spec.BasicConsumeOk, channel=3)
        a.send_method(2, spec.ExchangeDeclare(0, unique, unique + "-no-such-type"))
        delivered = a.read_message()
        assert (delivered.channel, delivered.method.consumer_tag, delivered.method.redelivered) == (3, "no-ack", True)
        close = a.expect_connection_close()
        assert close.reply_code == 503
        b.channel_open(1)
        b.send_method(1, spec.QueueDeclare(0, unique, True))
        assert b.expect(spec.QueueDeclareOk).message_count == 0
        b.send_method(1, spec.QueueDelete(0, unique))
        b.expect(spec.QueueDeleteOk)
    finally:
        a.sock.close()
        b.sock.close()


def test_nack_gives_messages_back_one_consumer_at_a_time_in_tag_order(conn, unique):
    """basic.nack(multiple, requeue) over two consumers' deliveries: RabbitMQ's channel
    requeues per (queue, consumer tag), in tag order, and the queue delivers each group
    before the next is back. So a's message comes back first and goes to the consumer
    whose turn it is (b), then b's message goes to a."""
    conn.queue_declare(1, unique, auto_delete=True)
    for tag in ("b", "a"):
        conn.send_method(1, spec.BasicConsume(0, unique, tag))
        conn.expect(spec.BasicConsumeOk)
    conn.publish(1, "", unique, b"first")
    conn.publish(1, "", unique, b"second")
    first, second = conn.read_message(), conn.read_message()
    assert [(m.method.consumer_tag, m.body) for m in (first, second)] == [("b", b"first"), ("a", b"second")]
    conn.send_method(1, spec.BasicNack(0, True, True))
    again = [conn.read_message() for _ in range(2)]
    assert [(m.method.consumer_tag, m.body, m.method.redelivered) for m in again] == [
        ("b", b"second", True),
        ("a", b"first", True),
    ]


def test_a_refused_publish_is_nacked_in_rabbitmqs_form(conn, unique):
    """x-overflow reject-publish: the refused publish's basic.nack has multiple and requeue
    set, as RabbitMQ sends it when everything before it is already confirmed."""
    conn.queue_declare(1, unique, auto_delete=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    assert rpc(conn, spec.ConfirmSelect()) == (1, spec.ConfirmSelectOk())
    conn.publish(1, "", unique, b"kept")
    assert conn.read_method() == (1, spec.BasicAck(1, False))
    conn.publish(1, "", unique, b"refused")
    assert conn.read_method() == (1, spec.BasicNack(2, True, True))


def test_queue_delete_if_unused_and_if_empty_names_emptiness_first(broker, conn, unique):
    """Both flags on a queue with a consumer and a ready message: 'not empty'."""
    conn.queue_declare(1, unique)
    conn.publish(1, "", unique, b"waiting")
    other = RawAMQP.connect(broker.host, broker.port)
    try:
        other.channel_open(1)
        other.send_method(1, spec.BasicQos(0, 1, False))
        other.expect(spec.BasicQosOk)
        other.send_method(1, spec.BasicConsume(0, unique, "busy"))
        other.expect(spec.BasicConsumeOk)
        conn.publish(1, "", unique, b"ready")  # the consumer holds "waiting": this stays ready
        assert rpc(conn, spec.QueueDeclare(0, unique, True)) == (1, spec.QueueDeclareOk(unique, 1, 1))
        reply = channel_close(conn, spec.QueueDelete(0, unique, True, True))
        assert (reply.reply_code, reply.reply_text) == (406, f"PRECONDITION_FAILED - queue '{unique}' in vhost '/' not empty")
    finally:
        other.sock.close()
        conn.send_method(1, spec.QueueDelete(0, unique))
        conn.expect(spec.QueueDeleteOk)
