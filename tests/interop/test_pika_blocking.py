"""Interop: pika's BlockingConnection (the most common Python AMQP client).

Connection handshake, exchanges, queues, basic.* semantics, confirms, transactions,
content framing and property round trips, all through pika's blocking API.
"""
from __future__ import annotations

import datetime
import decimal
import os
from typing import Iterator

import pika
import pika.exceptions as pe
import pytest
from pika.spec import BasicProperties

from .conftest import REQUIRED_CAPABILITIES, pump_until, url_with


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def conn(amqp_url: str) -> Iterator[pika.BlockingConnection]:
    c = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        yield c
    finally:
        if c.is_open:
            c.close()


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def trash(amqp_url: str) -> Iterator[list[tuple[str, str]]]:
    """Names a test declared outside exclusive/auto-delete; deleted on a fresh connection."""
    names: list[tuple[str, str]] = []
    yield names
    if not names:
        return
    c = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        for kind, name in names:
            chan = c.channel()
            try:
                if kind == "exchange":
                    chan.exchange_delete(name)
                else:
                    chan.queue_delete(name)
                chan.close()
            except pe.ChannelClosedByBroker:
                pass
    finally:
        c.close()


def publish_confirmed(conn, exchange: str, routing_key: str, bodies, **kw) -> None:
    """Publish on a confirm-mode channel, so each message is routed once this returns."""
    chan = conn.channel()
    chan.confirm_delivery()
    for body in bodies:
        chan.basic_publish(exchange, routing_key, body, **kw)
    chan.close()


def ready_count(conn, queue: str) -> int:
    chan = conn.channel()
    n = chan.queue_declare(queue, passive=True).method.message_count
    chan.close()
    return n


def drain_get(chan, queue: str) -> list[bytes]:
    out = []
    while True:
        method, _props, body = chan.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


# ----------------------------------------------------------------------------- connection


def test_connect_server_properties_and_capabilities(conn):
    props = conn._impl.server_properties
    for key in ("product", "version", "platform"):
        assert props.get(key), key
    caps = props["capabilities"]
    for cap in REQUIRED_CAPABILITIES:
        assert caps.get(cap) is True, cap
    assert conn.is_open
    conn.close()
    assert conn.is_closed


def test_wrong_password_is_refused(amqp_url):
    # RabbitMQ: connection.close 403 "ACCESS_REFUSED - Login was refused using
    # authentication mechanism PLAIN. For details see the broker logfile." (sent because
    # pika advertises authentication_failure_close); pika wraps it in
    # ProbableAuthenticationError.
    with pytest.raises(pe.ProbableAuthenticationError) as info:
        pika.BlockingConnection(pika.URLParameters(url_with(amqp_url, password="wrong-pw")))
    assert "403" in str(info.value) and "ACCESS_REFUSED" in str(info.value)


def test_unknown_vhost_is_not_allowed(amqp_url, unique):
    # RabbitMQ: connection.close 530 "NOT_ALLOWED - vhost <name> not found" in reply to
    # connection.open; pika calls that ProbableAccessDeniedError.
    with pytest.raises(pe.ProbableAccessDeniedError) as info:
        pika.BlockingConnection(pika.URLParameters(url_with(amqp_url, vhost=unique)))
    assert "530" in str(info.value) and "NOT_ALLOWED" in str(info.value)


def test_heartbeat_negotiation(broker):
    proposed: list[int] = []

    def choose(_conn, server_value):
        proposed.append(server_value)
        return 5

    c = pika.BlockingConnection(
        pika.ConnectionParameters(broker.host, broker.port, heartbeat=choose))
    try:
        # RabbitMQ proposes 60 in connection.tune and accepts the client's lower 5.
        assert len(proposed) == 1 and isinstance(proposed[0], int)
        assert c._impl.params.heartbeat == 5
        c.channel().queue_declare("", exclusive=True)  # still works after tune-ok
    finally:
        c.close()


# ----------------------------------------------------------------------------- channels


def test_many_channels_and_closing_one_leaves_others_working(conn):
    chans = [conn.channel() for _ in range(20)]
    assert len({c.channel_number for c in chans}) == 20
    q = chans[0].queue_declare("", exclusive=True).method.queue
    chans[5].close()
    assert chans[5].is_closed
    for c in chans[:5] + chans[6:]:
        assert c.is_open
    chans[7].basic_publish("", q, b"x")
    pump_until(conn, lambda: ready_count(conn, q) == 1)
    method, _p, body = chans[19].basic_get(q, auto_ack=True)
    assert body == b"x" and method.message_count == 0


def test_channel_flow_active_true_is_acknowledged(conn):
    ch = conn.channel()
    assert ch.flow(True) is True
    # RabbitMQ does NOT implement client-requested channel.flow(active=false): it closes
    # the whole *connection* with 540 "NOT_IMPLEMENTED - active=false". Not tested here
    # because it kills the connection.
    assert ch.is_open and conn.is_open


# ----------------------------------------------------------------------------- exchanges


def test_default_exchange_routes_by_queue_name(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    publish_confirmed(conn, "", q, [b"hello"])
    method, _props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"hello"
    assert method.exchange == "" and method.routing_key == q


@pytest.mark.parametrize("name,kind", [
    ("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
    ("amq.headers", "headers"), ("amq.match", "headers"),
])
def test_builtin_exchanges_exist(ch, name, kind):
    ch.exchange_declare(name, kind, passive=True)
    assert ch.is_open


def test_exchange_declare_variants(ch, trash, unique):
    for suffix, kw in [("durable", dict(durable=True)), ("ad", dict(auto_delete=True)),
                       ("internal", dict(internal=True))]:
        name = f"{unique}-{suffix}"
        trash.append(("exchange", name))
        ch.exchange_declare(name, "direct", **kw)
        # identical redeclare is fine, and passive declare finds it
        ch.exchange_declare(name, "direct", **kw)
        ch.exchange_declare(name, passive=True)


def test_passive_declare_of_missing_exchange_closes_only_the_channel(conn, unique):
    ch = conn.channel()
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        ch.exchange_declare(unique, passive=True)
    # RabbitMQ: 404 "NOT_FOUND - no exchange '<name>' in vhost '/'"
    assert info.value.reply_code == 404
    assert info.value.reply_text.startswith("NOT_FOUND")
    assert ch.is_closed and conn.is_open
    conn.channel().queue_declare("", exclusive=True)  # connection still usable


def test_exchange_redeclare_with_different_type_fails(conn, trash, unique):
    trash.append(("exchange", unique))
    conn.channel().exchange_declare(unique, "direct")
    ch = conn.channel()
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        ch.exchange_declare(unique, "fanout")
    # RabbitMQ: 406 "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '<name>'
    # in vhost '/': received 'fanout' but current is 'direct'"
    assert info.value.reply_code == 406
    assert "PRECONDITION_FAILED" in info.value.reply_text
    assert conn.is_open


def test_exchange_delete_if_unused_on_bound_exchange_fails(conn, trash, unique):
    trash.append(("exchange", unique))
    ch = conn.channel()
    ch.exchange_declare(unique, "direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, unique, "k")
    ch2 = conn.channel()
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        ch2.exchange_delete(unique, if_unused=True)
    assert info.value.reply_code == 406
    # still there, and deletable without if-unused
    ch.exchange_declare(unique, passive=True)
    ch.exchange_delete(unique)
    ch3 = conn.channel()
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        ch3.exchange_declare(unique, passive=True)
    assert info.value.reply_code == 404


def test_exchange_to_exchange_bind_and_unbind(conn, ch, trash, unique):
    src, dst = f"{unique}-src", f"{unique}-dst"
    trash += [("exchange", src), ("exchange", dst)]
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(dst, "direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, dst, "a.b")
    ch.exchange_bind(destination=dst, source=src, routing_key="a.*")
    publish_confirmed(conn, src, "a.b", [b"via-e2e"])
    publish_confirmed(conn, src, "x.b", [b"not-matching"])
    assert drain_get(ch, q) == [b"via-e2e"]
    ch.exchange_unbind(destination=dst, source=src, routing_key="a.*")
    publish_confirmed(conn, src, "a.b", [b"after-unbind"])
    assert drain_get(ch, q) == []


def test_publish_to_internal_exchange_is_refused(conn, trash, unique):
    trash.append(("exchange", unique))
    ch = conn.channel()
    ch.exchange_declare(unique, "fanout", internal=True)
    ch.basic_publish(unique, "", b"nope")
    # The error is asynchronous (basic.publish has no reply): a round trip surfaces it.
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        ch.queue_declare("", exclusive=True)
    # RabbitMQ: 403 "ACCESS_REFUSED - cannot publish to internal exchange '<name>' in
    # vhost '/'"
    assert info.value.reply_code == 403
    assert "ACCESS_REFUSED" in info.value.reply_text
    assert conn.is_open


def test_alternate_exchange_receives_unroutable(conn, ch, trash, unique):
    main, alt = f"{unique}-main", f"{unique}-alt"
    trash += [("exchange", main), ("exchange", alt)]
    ch.exchange_declare(alt, "fanout")
    ch.exchange_declare(main, "direct", arguments={"alternate-exchange": alt})
    routed = ch.queue_declare("", exclusive=True).method.queue
    caught = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(routed, main, "known")
    ch.queue_bind(caught, alt, "")
    returned = []
    pc = conn.channel()
    pc.confirm_delivery()
    pc.add_on_return_callback(lambda *a: returned.append(a))
    pc.basic_publish(main, "known", b"1", mandatory=True)
    pc.basic_publish(main, "unknown", b"2", mandatory=True)  # no basic.return: AE took it
    assert drain_get(ch, routed) == [b"1"]
    method, _p, body = ch.basic_get(caught, auto_ack=True)
    assert body == b"2"
    # the routing key and exchange are the original ones
    assert method.exchange == main and method.routing_key == "unknown"
    assert returned == []


def test_topic_routing(conn, ch, trash, unique):
    ex = unique
    trash.append(("exchange", ex))
    ch.exchange_declare(ex, "topic")
    patterns = {"star": "a.*", "hash": "a.#", "mid": "*.b.*", "all": "#", "exact": "a.b"}
    queues = {}
    for label, pattern in patterns.items():
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, ex, pattern)
        queues[label] = q
    keys = ["a", "a.b", "a.b.c", "x.b.y", "b", ""]
    for k in keys:
        publish_confirmed(conn, ex, k, [k.encode() or b"<empty>"])
    got = {label: drain_get(ch, q) for label, q in queues.items()}
    assert got["star"] == [b"a.b"]                    # * is exactly one word
    assert got["hash"] == [b"a", b"a.b", b"a.b.c"]      # # matches zero words: a.# gets "a"
    assert got["mid"] == [b"a.b.c", b"x.b.y"]
    assert got["all"] == [b"a", b"a.b", b"a.b.c", b"x.b.y", b"b", b"<empty>"]
    assert got["exact"] == [b"a.b"]


def test_headers_exchange_all_any_and_x_keys_ignored(conn, ch, unique):
    ex = "amq.headers"  # shared: every header value below is unique to this test
    b = unique + "-b"
    q_all = ch.queue_declare(f"{unique}-all", exclusive=True).method.queue
    q_any = ch.queue_declare(f"{unique}-any", exclusive=True).method.queue
    ch.queue_bind(q_all, ex, "", arguments={"x-match": "all", "u": unique, "b": b})
    ch.queue_bind(q_any, ex, "", arguments={"x-match": "any", "u2": unique, "b": b})

    def pub(headers, body):
        publish_confirmed(conn, ex, "ignored", [body],
                          properties=BasicProperties(headers=headers))

    pub({"u": unique, "b": b}, b"both")
    pub({"u": unique, "b": b, "x-extra": "z", "other": 1}, b"both+extra")
    pub({"u": unique}, b"only-u")
    pub({"u2": unique}, b"only-u2")
    pub({"b": unique + "-other", "u2": "nope"}, b"none")
    assert drain_get(ch, q_all) == [b"both", b"both+extra"]
    assert drain_get(ch, q_any) == [b"both", b"both+extra", b"only-u2"]


def test_headers_x_match_ignores_x_prefixed_binding_args(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    # The x-foo binding argument is not a header to match on.
    ch.queue_bind(q, "amq.match", "", arguments={"x-match": "all", "k": unique,
                                                   "x-foo": "bar"})
    publish_confirmed(conn, "amq.match", "", [b"m"],
                      properties=BasicProperties(headers={"k": unique}))
    assert drain_get(ch, q) == [b"m"]


def test_fanout_copies_to_every_bound_queue(conn, ch, trash, unique):
    trash.append(("exchange", unique))
    ch.exchange_declare(unique, "fanout")
    qs = [ch.queue_declare("", exclusive=True).method.queue for _ in range(3)]
    for q in qs:
        ch.queue_bind(q, unique, "whatever")
    publish_confirmed(conn, unique, "any-key", [b"f1", b"f2"])
    for q in qs:
        assert drain_get(ch, q) == [b"f1", b"f2"]


# ----------------------------------------------------------------------------- queues


def test_server_named_queue(ch):
    ok = ch.queue_declare("", exclusive=True)
    assert ok.method.queue.startswith("amq.gen-")
    assert ok.method.message_count == 0 and ok.method.consumer_count == 0


def test_passive_declare_of_missing_queue(conn, unique):
    ch = conn.channel()
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        ch.queue_declare(unique, passive=True)
    # RabbitMQ: 404 "NOT_FOUND - no queue '<name>' in vhost '/'"
    assert info.value.reply_code == 404
    assert info.value.reply_text == f"NOT_FOUND - no queue '{unique}' in vhost '/'"
    assert conn.is_open


def test_declare_ok_counts_messages_and_consumers(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    publish_confirmed(conn, "", q, [b"1", b"2", b"3"])
    ok = ch.queue_declare(q, passive=True)
    assert (ok.method.message_count, ok.method.consumer_count) == (3, 0)
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(q, lambda *a: None)
    ch.basic_consume(q, lambda *a: None)
    # message_count counts only ready messages (not unacked ones)
    ok = ch.queue_declare(q, exclusive=True)
    assert ok.method.consumer_count == 2
    assert ok.method.message_count == 1


def test_exclusive_queue_is_locked_for_other_connections(conn, ch, amqp_url, unique):
    ch.queue_declare(unique, exclusive=True)
    other = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        for op in (lambda c: c.queue_declare(unique, passive=True),
                   lambda c: c.basic_consume(unique, lambda *a: None),
                   lambda c: c.queue_declare(unique)):
            oc = other.channel()
            with pytest.raises(pe.ChannelClosedByBroker) as info:
                op(oc)
            # RabbitMQ: 405 "RESOURCE_LOCKED - cannot obtain exclusive access to locked
            # queue '<name>' in vhost '/'. It could be originally declared on another
            # connection or the exclusive property value does not match that of the
            # original declaration."
            assert info.value.reply_code == 405
            assert "RESOURCE_LOCKED" in info.value.reply_text
        for op in (lambda c: c.basic_get(unique), lambda c: c.queue_purge(unique),
                   lambda c: c.queue_delete(unique)):
            oc = other.channel()
            with pytest.raises(pe.ChannelClosedByBroker) as info:
                op(oc)
            assert info.value.reply_code == 405
        # Publishing to another connection's exclusive queue is allowed.
        oc = other.channel()
        oc.confirm_delivery()
        oc.basic_publish("", unique, b"from-other")
        assert ch.basic_get(unique, auto_ack=True)[2] == b"from-other"
    finally:
        other.close()


def test_exclusive_queue_disappears_when_its_connection_closes(conn, amqp_url, unique):
    owner = pika.BlockingConnection(pika.URLParameters(amqp_url))
    owner.channel().queue_declare(unique, exclusive=True)
    owner.close()

    def gone() -> bool:
        c = conn.channel()
        try:
            c.queue_declare(unique, passive=True)
        except pe.ChannelClosedByBroker as e:
            assert e.reply_code in (404, 405)
            return e.reply_code == 404
        c.close()
        return False

    pump_until(conn, gone, what="exclusive queue deletion")


def test_auto_delete_queue_disappears_after_last_consumer_cancels(conn, ch, trash, unique):
    trash.append(("queue", unique))
    ch.queue_declare(unique, auto_delete=True)
    t1 = ch.basic_consume(unique, lambda *a: None)
    t2 = ch.basic_consume(unique, lambda *a: None)
    ch.basic_cancel(t1)
    assert conn.channel().queue_declare(unique, passive=True).method.consumer_count == 1
    ch.basic_cancel(t2)

    def gone() -> bool:
        c = conn.channel()
        try:
            c.queue_declare(unique, passive=True)
        except pe.ChannelClosedByBroker as e:
            return e.reply_code == 404
        c.close()
        return False

    pump_until(conn, gone, what="auto-delete queue deletion")


def test_purge_and_delete_counts_and_guards(conn, trash, unique):
    trash.append(("queue", unique))
    ch = conn.channel()
    ch.queue_declare(unique)
    publish_confirmed(conn, "", unique, [b"a", b"b", b"c"])
    assert ch.queue_purge(unique).method.message_count == 3
    publish_confirmed(conn, "", unique, [b"d", b"e"])

    c2 = conn.channel()
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        c2.queue_delete(unique, if_empty=True)
    # RabbitMQ: 406 "PRECONDITION_FAILED - queue '<name>' in vhost '/' not empty"
    assert info.value.reply_code == 406

    tag = ch.basic_consume(unique, lambda *a: None)
    c3 = conn.channel()
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        c3.queue_delete(unique, if_unused=True)
    # RabbitMQ: 406 "PRECONDITION_FAILED - queue '<name>' in vhost '/' in use"
    assert info.value.reply_code == 406
    ch.basic_cancel(tag)  # the 2 delivered-but-unacked messages go back to the queue

    assert conn.channel().queue_delete(unique).method.message_count == 2
    assert conn.is_open


def test_bind_unbind_then_publish_not_routed(conn, ch, trash, unique):
    trash.append(("exchange", unique))
    ch.exchange_declare(unique, "direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, unique, "rk")
    publish_confirmed(conn, unique, "rk", [b"bound"])
    assert drain_get(ch, q) == [b"bound"]
    ch.queue_unbind(q, unique, "rk")
    pc = conn.channel()
    pc.confirm_delivery()
    with pytest.raises(pe.UnroutableError):
        pc.basic_publish(unique, "rk", b"unbound", mandatory=True)
    assert ready_count(conn, q) == 0
    # unbinding a binding that does not exist is fine in RabbitMQ
    ch.queue_unbind(q, unique, "never-bound")


@pytest.mark.parametrize("first,second", [
    (dict(durable=True), dict(durable=False)),
    (dict(arguments={"x-max-length": 10}), dict(arguments={"x-max-length": 20})),
    (dict(arguments={"x-message-ttl": 1000}), dict()),
])
def test_queue_redeclare_with_different_properties_fails(conn, trash, unique, first, second):
    trash.append(("queue", unique))
    conn.channel().queue_declare(unique, **first)
    ch = conn.channel()
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        ch.queue_declare(unique, **second)
    # RabbitMQ: 406 "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '<name>'
    # in vhost '/': received 'false' but current is 'true'"
    assert info.value.reply_code == 406
    assert info.value.reply_text.startswith("PRECONDITION_FAILED - inequivalent arg")
    assert conn.is_open


# ----------------------------------------------------------------------------- basic


def test_qos_prefetch_limits_unacked_deliveries(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    publish_confirmed(conn, "", q, [str(i).encode() for i in range(5)])
    ch.basic_qos(prefetch_count=2)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((m.delivery_tag, b)))
    pump_until(conn, lambda: len(got) >= 2)
    # With 2 unacked, the other 3 stay ready in the queue (message_count counts only them).
    assert ready_count(conn, q) == 3
    # A short bounded quiet period (not a wait for a condition): nothing more arrives.
    conn.process_data_events(time_limit=0.1)
    assert [b for _, b in got] == [b"0", b"1"]
    ch.basic_ack(got[0][0])
    pump_until(conn, lambda: len(got) >= 3)
    ch.basic_ack(got[2][0], multiple=True)
    pump_until(conn, lambda: len(got) >= 5)
    assert [b for _, b in got] == [b"0", b"1", b"2", b"3", b"4"]
    ch.basic_ack(0, multiple=True)  # delivery tag 0 + multiple acks everything


def test_consume_no_ack(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    publish_confirmed(conn, "", q, [b"1", b"2", b"3"])
    pump_until(conn, lambda: len(got) == 3)
    assert got == [b"1", b"2", b"3"]
    assert ready_count(conn, q) == 0


def test_exclusive_consume_refuses_second_consumer(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    ch2 = conn.channel()
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        ch2.basic_consume(q, lambda *a: None)
    # RabbitMQ: 403 "ACCESS_REFUSED - queue '<name>' in vhost '/' in exclusive use"
    assert info.value.reply_code == 403
    assert "ACCESS_REFUSED" in info.value.reply_text


def test_consumer_tags_and_cancel(conn, ch, unique):
    # pika always picks its own tag ("ctag1.<hex>"); server-generated tags (amq.ctag-)
    # are covered through py-amqp and aiormq.
    q = ch.queue_declare(unique, exclusive=True).method.queue
    auto_tag = ch.basic_consume(q, lambda *a: None)
    ok_tag = ch.basic_consume(q, lambda *a: None, consumer_tag="my-tag")
    assert ok_tag == "my-tag" and auto_tag != ok_tag
    assert conn.channel().queue_declare(q, passive=True).method.consumer_count == 2
    ch.basic_cancel("my-tag")
    assert conn.channel().queue_declare(q, passive=True).method.consumer_count == 1
    ch.basic_cancel(auto_tag)
    assert conn.channel().queue_declare(q, passive=True).method.consumer_count == 0


def test_server_sends_basic_cancel_when_queue_is_deleted(conn, ch, unique):
    ch.queue_declare(unique)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(unique, lambda *a: None)
    conn.channel().queue_delete(unique)
    pump_until(conn, lambda: cancelled, what="basic.cancel from server")
    assert cancelled == [tag]
    assert ch.is_open


def test_mandatory_unroutable_is_returned(conn, ch, unique):
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, p, b)))
    ch.basic_publish("amq.direct", unique, b"lost", mandatory=True,
                     properties=BasicProperties(message_id="mid-1"))
    pump_until(conn, lambda: returned, what="basic.return")
    method, props, body = returned[0]
    assert method.reply_code == 312 and method.reply_text == "NO_ROUTE"
    assert method.exchange == "amq.direct" and method.routing_key == unique
    assert body == b"lost" and props.message_id == "mid-1"
    # non-mandatory unroutable messages are silently dropped
    ch.basic_publish("amq.direct", unique, b"dropped")
    ch.queue_declare("", exclusive=True)
    assert len(returned) == 1


def test_get_and_get_empty(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    assert ch.basic_get(q) == (None, None, None)
    publish_confirmed(conn, "", q, [b"a", b"b"])
    method, props, body = ch.basic_get(q)
    assert body == b"a" and method.message_count == 1 and not method.redelivered
    assert method.delivery_tag == 1
    method2, _, body2 = ch.basic_get(q)
    assert body2 == b"b" and method2.message_count == 0 and method2.delivery_tag == 2
    assert ch.basic_get(q) == (None, None, None)
    ch.basic_ack(2, multiple=True)


def test_nack_multiple_requeue_preserves_order_and_sets_redelivered(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    publish_confirmed(conn, "", q, [str(i).encode() for i in range(1, 6)])
    tags = []
    for _ in range(5):
        method, _p, _b = ch.basic_get(q)
        tags.append(method.delivery_tag)
    ch.basic_nack(tags[-1], multiple=True, requeue=True)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((b, m.redelivered)))
    pump_until(conn, lambda: len(got) == 5)
    assert got == [(str(i).encode(), True) for i in range(1, 6)]


def test_ack_nack_reject_variants(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    publish_confirmed(conn, "", q, [str(i).encode() for i in range(6)])
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(6)]
    ch.basic_ack(tags[1], multiple=True)            # acks 0,1
    ch.basic_nack(tags[2], multiple=False, requeue=False)   # drops 2
    ch.basic_reject(tags[3], requeue=False)         # drops 3
    ch.basic_reject(tags[4], requeue=True)          # 4 back to the queue
    ch.basic_nack(tags[5], requeue=True)            # 5 back to the queue
    method, _p, body = ch.basic_get(q, auto_ack=True)
    assert body == b"4" and method.redelivered
    method, _p, body = ch.basic_get(q, auto_ack=True)
    assert body == b"5" and method.redelivered
    assert ch.basic_get(q) == (None, None, None)


def test_basic_recover_requeues_unacked(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    publish_confirmed(conn, "", q, [b"r1", b"r2"])
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((b, m.redelivered, m.delivery_tag)))
    pump_until(conn, lambda: len(got) == 2)
    ch.basic_recover(requeue=True)
    pump_until(conn, lambda: len(got) == 4)
    assert [(b, r) for b, r, _ in got[2:]] == [(b"r1", True), (b"r2", True)]
    ch.basic_ack(got[3][2], multiple=True)


def test_round_robin_between_two_consumers(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    ch.basic_consume(q, lambda c, m, p, b: got["a"].append(b), auto_ack=True,
                     consumer_tag="a")
    ch.basic_consume(q, lambda c, m, p, b: got["b"].append(b), auto_ack=True,
                     consumer_tag="b")
    publish_confirmed(conn, "", q, [str(i).encode() for i in range(6)])
    pump_until(conn, lambda: len(got["a"]) + len(got["b"]) == 6)
    assert len(got["a"]) == 3 and len(got["b"]) == 3
    assert sorted(got["a"] + got["b"]) == [str(i).encode() for i in range(6)]
    # strictly alternating
    assert {tuple(got["a"]), tuple(got["b"])} == {(b"0", b"2", b"4"), (b"1", b"3", b"5")}


def test_ack_of_unknown_delivery_tag_closes_channel(conn, unique):
    ch = conn.channel()
    ch.basic_ack(99)
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        ch.queue_declare("", exclusive=True)
    # RabbitMQ: 406 "PRECONDITION_FAILED - unknown delivery tag 99"
    assert info.value.reply_code == 406
    assert info.value.reply_text == "PRECONDITION_FAILED - unknown delivery tag 99"
    assert conn.is_open


def test_double_ack_closes_channel(conn, unique):
    ch = conn.channel()
    q = ch.queue_declare(unique, exclusive=True).method.queue
    publish_confirmed(conn, "", q, [b"x"])
    method, _p, _b = ch.basic_get(q)
    ch.basic_ack(method.delivery_tag)
    ch.basic_ack(method.delivery_tag)
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        ch.queue_declare(q, passive=True)
    assert info.value.reply_code == 406
    assert info.value.reply_text == "PRECONDITION_FAILED - unknown delivery tag 1"
    assert conn.is_open


def test_unacked_messages_return_in_order_when_channel_closes(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    publish_confirmed(conn, "", q, [b"1", b"2", b"3"])
    c2 = conn.channel()
    got = []
    c2.basic_consume(q, lambda c, m, p, b: got.append(b))
    pump_until(conn, lambda: len(got) == 3)
    c2.close()
    out = []
    for _ in range(3):
        m, _p, b = ch.basic_get(q, auto_ack=True)
        out.append((b, m.redelivered))
    assert out == [(b"1", True), (b"2", True), (b"3", True)]


def test_unacked_messages_return_when_connection_drops(conn, ch, amqp_url, trash, unique):
    trash.append(("queue", unique))
    ch.queue_declare(unique)
    publish_confirmed(conn, "", unique, [b"1", b"2", b"3"])
    other = pika.BlockingConnection(pika.URLParameters(amqp_url))
    got = []
    other.channel().basic_consume(unique, lambda c, m, p, b: got.append(b))
    pump_until(other, lambda: len(got) == 3)
    # Drop the TCP connection without connection.close.
    other._impl._transport._sock.close()
    other._impl._transport._sock = None

    def back() -> bool:
        return ready_count(conn, unique) == 3

    pump_until(conn, back, what="requeue after connection drop")
    out = [(m.redelivered, b) for m, _p, b in (ch.basic_get(unique, auto_ack=True)
                                              for _ in range(3))]
    assert out == [(True, b"1"), (True, b"2"), (True, b"3")]


# ----------------------------------------------------------------------------- confirms/tx


def test_publisher_confirms_with_mandatory_unroutable(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b"ok")  # returns once acked
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append(m.reply_code))
    # unroutable + mandatory: basic.return precedes basic.ack; pika raises UnroutableError
    with pytest.raises(pe.UnroutableError):
        ch.basic_publish("amq.direct", unique + "-nowhere", b"lost", mandatory=True)
    # unroutable without mandatory is simply acked
    ch.basic_publish("amq.direct", unique + "-nowhere", b"dropped")
    assert ready_count(conn, q) == 1


def test_confirm_sequence_numbers(conn, unique):
    ch = conn.channel()
    q = ch.queue_declare(unique, exclusive=True).method.queue
    acks = []
    ch._impl.confirm_delivery(lambda frame: acks.append(
        (type(frame.method).__name__, frame.method.delivery_tag, frame.method.multiple)))
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())

    def acked_up_to_5() -> bool:
        return any(t == 5 or (m and t >= 5) for _n, t, m in acks)

    pump_until(conn, acked_up_to_5, what="5 confirms")
    assert all(name == "Ack" for name, _t, _m in acks)
    # tags are 1..5, increasing; a multiple ack covers every lower tag
    tags = [t for _n, t, _m in acks]
    assert tags == sorted(tags) and tags[-1] == 5


def test_tx_commit_and_rollback(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    publish_confirmed(conn, "", q, [b"pre1", b"pre2"])
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", q, b"rolled-back")
    m, _p, _b = tx.basic_get(q)  # gets are not transactional, acks are
    tx.basic_ack(m.delivery_tag)
    tx.tx_rollback()
    # rollback discarded the publish and the ack; the unacked message is still held by
    # the channel (RabbitMQ does not requeue it on rollback).
    assert ready_count(conn, q) == 1
    tx.basic_publish("", q, b"committed")
    tx.basic_ack(m.delivery_tag)
    assert ready_count(conn, q) == 1  # nothing happens until commit
    tx.tx_commit()
    assert ready_count(conn, q) == 2
    assert drain_get(ch, q) == [b"pre2", b"committed"]


# ----------------------------------------------------------------------------- content


@pytest.mark.parametrize("size", [0, 1, 131072 - 8, 1024 * 1024, 3 * 1024 * 1024 + 7])
def test_large_and_empty_bodies_round_trip(conn, ch, unique, size):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    body = os.urandom(size)
    publish_confirmed(conn, "", q, [body])
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    pump_until(conn, lambda: got)
    assert len(got[0]) == size and got[0] == body


def test_all_basic_properties_round_trip(conn, ch, unique):
    q = ch.queue_declare(unique, exclusive=True).method.queue
    ts = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    # pika cannot encode floats (UnsupportedAMQPFieldException); floats are covered
    # through aio-pika and py-amqp.
    headers = {
        "str": "héllo",
        "int": 42,
        "neg": -7,
        "big": 2**40,
        "bool_t": True,
        "bool_f": False,
        "decimal": decimal.Decimal("3.14"),
        "ts": ts,
        "bytes": b"\x00\x01\xff",
        "none": None,
        "list": [1, "two", [3, {"four": 4}], True],
        "nested": {"a": {"b": {"c": [1, 2]}}, "empty": {}},
        "empty_list": [],
    }
    props = BasicProperties(
        content_type="application/json",
        content_encoding="gzip",
        headers=headers,
        delivery_mode=2,
        priority=7,
        correlation_id="corr-1",
        reply_to="reply-q",
        expiration="60000",
        message_id="msg-1",
        timestamp=1700000000,
        type="my.type",
        user_id="guest",
        app_id="interop-tests",
    )
    publish_confirmed(conn, "", q, [b"{}"], properties=props)
    method, got, body = ch.basic_get(q, auto_ack=True)
    assert body == b"{}"
    for field in ("content_type", "content_encoding", "delivery_mode", "priority",
                  "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
                  "type", "user_id", "app_id"):
        assert getattr(got, field) == getattr(props, field), field
    assert got.headers == headers


def test_wrong_user_id_is_refused(conn, unique):
    ch = conn.channel()
    ch.basic_publish("", unique, b"x", properties=BasicProperties(user_id="not-guest"))
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        ch.queue_declare("", exclusive=True)
    # RabbitMQ: 406 "PRECONDITION_FAILED - user_id property set to 'not-guest' but
    # authenticated user was 'guest'"
    assert info.value.reply_code == 406
    assert conn.is_open


def test_hard_error_closes_the_connection(conn):
    ch = conn.channel()
    other = conn.channel()
    # Re-opening an already open channel is a connection-level error.
    conn._impl._send_method(ch.channel_number, pika.spec.Channel.Open())
    with pytest.raises(pe.ConnectionClosedByBroker) as info:
        pump_until(conn, lambda: conn.is_closed, what="connection close")
    # RabbitMQ: connection.close 504 "CHANNEL_ERROR - second 'channel.open' seen"
    assert info.value.reply_code == 504
    assert "CHANNEL_ERROR" in info.value.reply_text
    assert conn.is_closed and other.is_closed


# RabbitMQ 3.10 reply texts, for reference (U = the test's unique prefix):
#   404 "NOT_FOUND - no exchange 'U' in vhost '/'"         (also publish to a missing exchange)
#   404 "NOT_FOUND - no queue 'U' in vhost '/'"            (passive declare, bind, get, consume)
#   403 "ACCESS_REFUSED - operation not permitted on the default exchange" (bind to/delete "")
#   403 "ACCESS_REFUSED - exchange name 'amq.U' contains reserved prefix 'amq.*'"
#   403 "ACCESS_REFUSED - queue name 'amq.U' contains reserved prefix 'amq.*'"
#   403 "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"
#   406 "PRECONDITION_FAILED - cannot switch from confirm to tx mode" (and tx -> confirm)
#   406 "PRECONDITION_FAILED - channel is not transactional" (tx.commit without tx.select)
#   406 "PRECONDITION_FAILED - exchange 'U' in vhost '/' in use" (delete if-unused)
# Deleting a missing queue/exchange and unbinding a missing binding all succeed.
@pytest.mark.parametrize("code,op", [
    (404, lambda ch, u: ch.queue_bind(u + "-nq", "amq.direct", "k")),
    (404, lambda ch, u: ch.queue_bind("amq.gen-nope-" + u, u + "-nx", "k")),
    (404, lambda ch, u: ch.basic_get(u + "-nq")),
    (404, lambda ch, u: ch.basic_consume(u + "-nq", lambda *a: None)),
    (403, lambda ch, u: ch.queue_bind(ch.queue_declare("", exclusive=True).method.queue,
                                      "", "k")),
    (403, lambda ch, u: ch.exchange_delete("")),
    (403, lambda ch, u: ch.exchange_declare("amq." + u, "direct")),
    (403, lambda ch, u: ch.queue_declare("amq." + u)),
    (403, lambda ch, u: ch.exchange_delete("amq.direct")),
    (406, lambda ch, u: (ch.confirm_delivery(), ch.tx_select())),
    (406, lambda ch, u: (ch.tx_select(), ch.confirm_delivery())),
    (406, lambda ch, u: ch.tx_commit()),
    (406, lambda ch, u: ch.tx_rollback()),
])
def test_soft_errors_close_only_the_channel(conn, unique, code, op):
    ch = conn.channel()
    with pytest.raises(pe.ChannelClosedByBroker) as info:
        op(ch, unique)
    assert info.value.reply_code == code
    prefix = {403: "ACCESS_REFUSED - ", 404: "NOT_FOUND - ", 406: "PRECONDITION_FAILED - "}
    assert info.value.reply_text.startswith(prefix[code])
    assert ch.is_closed and conn.is_open
    conn.channel().queue_declare("", exclusive=True)


def test_deleting_missing_things_is_not_an_error(conn, unique):
    ch = conn.channel()
    assert ch.queue_delete(unique + "-q").method.message_count == 0
    ch.exchange_delete(unique + "-x")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_unbind(q, "amq.direct", "never-bound")
    assert ch.is_open


def test_unsupported_qos_prefetch_size_is_a_hard_error(conn):
    ch = conn.channel()
    with pytest.raises(pe.ConnectionClosedByBroker) as info:
        ch.basic_qos(prefetch_size=10)
    # RabbitMQ: connection.close 540 "NOT_IMPLEMENTED - prefetch_size!=0 (10)"
    assert info.value.reply_code == 540
    assert conn.is_closed
