"""Consumer priorities, single active consumer, cancel notifications, direct reply-to,
alternate exchanges, exchange-to-exchange bindings, CC/BCC and the delayed-message exchange,
through pika over real sockets.

Everything runs against minimq and (MINIMQ_TEST_URL) RabbitMQ 3.10, except the
delayed-message exchange, a plugin RabbitMQ 3.10 does not have: those tests assert
minimq's behaviour when the broker is minimq, and RabbitMQ's refusal of the type otherwise.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import pika
import pika.exceptions as pe
import pytest

from .helpers import TIMEOUT, Collector, closed_by_broker, connect, is_minimq, pump_for, pump_until, text

RT = "amq.rabbitmq.reply-to"


def pump_all(conns, condition: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition") -> None:
    """Pump several connections in turn until condition() holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        for c in conns:
            c.process_data_events(time_limit=0.01)


def drain(ch, queue: str) -> list[bytes]:
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


# ---------------------------------------------------------- consumer priorities


def test_high_priority_consumer_first_until_full(conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    high_ch, low_ch = conn.channel(), conn.channel()
    high_ch.basic_qos(prefetch_count=2)
    high, low = Collector(), Collector()
    # The low-priority consumer subscribes first: priority, not order, decides.
    low_ch.basic_consume(unique, low, arguments={"x-priority": 1})
    high_ch.basic_consume(unique, high, arguments={"x-priority": 10})
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", unique, str(i).encode())
    pump_until(conn, lambda: len(high) + len(low) == 5, what="five deliveries")
    assert high.bodies == [b"0", b"1"]
    assert low.bodies == [b"2", b"3", b"4"]
    # Capacity frees up on the high one: it gets the next message again.
    high_ch.basic_ack(high.items[0][0].delivery_tag)
    ch.basic_publish("", unique, b"5")
    pump_until(conn, lambda: len(high) + len(low) == 6, what="sixth delivery")
    assert high.bodies[-1] == b"5"


def test_equal_priority_consumers_round_robin(conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    a, b, low = Collector(), Collector(), Collector()
    ch2 = conn.channel()
    ch2.basic_consume(unique, low, auto_ack=True)  # priority 0
    ch2.basic_consume(unique, a, auto_ack=True, arguments={"x-priority": 5})
    ch2.basic_consume(unique, b, auto_ack=True, arguments={"x-priority": 5})
    ch.confirm_delivery()
    for i in range(6):
        ch.basic_publish("", unique, str(i).encode())
    pump_until(conn, lambda: len(a) + len(b) == 6, what="six deliveries")
    assert len(a) == 3 and len(b) == 3
    assert sorted(a.bodies + b.bodies) == [str(i).encode() for i in range(6)]
    assert low.bodies == []


def test_negative_consumer_priority_below_default(conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    neg, default = Collector(), Collector()
    ch2 = conn.channel()
    ch2.basic_consume(unique, neg, auto_ack=True, arguments={"x-priority": -5})
    ch2.basic_consume(unique, default, auto_ack=True)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", unique, str(i).encode())
    pump_until(conn, lambda: len(default) == 3, what="three deliveries")
    assert neg.bodies == []


def test_consumer_priority_as_string_is_rejected(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    code, reply = closed_by_broker(
        lambda: ch.basic_consume(unique, lambda *a: None, arguments={"x-priority": "high"}))
    assert code == 406
    assert reply == (f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{unique}' in vhost '/': "
                     '"expected integer, got longstr"')


# -------------------------------------------------------- single active consumer


def test_single_active_consumer_only_first_receives(conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-single-active-consumer": True})
    first, second = Collector(), Collector()
    c1, c2 = conn.channel(), conn.channel()
    tag1 = c1.basic_consume(unique, first, auto_ack=True)
    c2.basic_consume(unique, second, auto_ack=True)
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish("", unique, str(i).encode())
    pump_until(conn, lambda: len(first) == 4, what="four deliveries to the active consumer")
    pump_for(conn, 0.05)
    assert second.bodies == []
    c1.basic_cancel(tag1)
    for i in range(4, 6):
        ch.basic_publish("", unique, str(i).encode())
    pump_until(conn, lambda: len(second) == 2, what="the next consumer taking over")
    assert second.bodies == [b"4", b"5"]
    assert len(first) == 4


def test_single_active_consumer_takeover_requeues_unacked(amqp_url, conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-single-active-consumer": True})
    other = connect(amqp_url)
    try:
        c1 = other.channel()
        first = Collector()
        c1.basic_consume(unique, first)  # manual ack, never acks
        second = Collector()
        c2 = conn.channel()
        c2.basic_consume(unique, second)
        ch.confirm_delivery()
        for i in range(3):
            ch.basic_publish("", unique, str(i).encode())
        pump_until(other, lambda: len(first) == 3, what="deliveries to the active consumer")
        pump_for(conn, 0.05)
        assert second.bodies == []
        c1.close()  # its unacked messages go back, the next consumer takes over
        pump_until(conn, lambda: len(second) == 3, what="the requeued messages")
        assert second.bodies == [b"0", b"1", b"2"]
        assert all(m.redelivered for m, _p, _b in second.items)
        ch.basic_publish("", unique, b"3")
        pump_until(conn, lambda: len(second) == 4, what="a new message")
        assert not second.items[3][0].redelivered
    finally:
        other.close()


def test_single_active_consumer_respects_prefetch(conn, ch, unique):
    # The active consumer at its prefetch limit does not let the others in.
    ch.queue_declare(unique, auto_delete=True, arguments={"x-single-active-consumer": True})
    c1, c2 = conn.channel(), conn.channel()
    c1.basic_qos(prefetch_count=1)
    first, second = Collector(), Collector()
    c1.basic_consume(unique, first)
    c2.basic_consume(unique, second, auto_ack=True)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", unique, str(i).encode())
    pump_until(conn, lambda: len(first) == 1, what="the first delivery")
    pump_for(conn, 0.1)
    assert second.bodies == [] and first.bodies == [b"0"]
    c1.basic_ack(first.items[0][0].delivery_tag)
    pump_until(conn, lambda: len(first) == 2, what="the second delivery")
    assert second.bodies == []


# ------------------------------------------------------------ cancel notification


def test_consumer_cancelled_when_queue_deleted(conn, ch, unique):
    ch.queue_declare(unique)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method))
    tag = ch.basic_consume(unique, lambda *a: None, auto_ack=True)
    conn.channel().queue_delete(unique)
    pump_until(conn, lambda: cancelled, what="basic.cancel from the broker")
    assert cancelled[0].consumer_tag == tag
    # The channel is still open and usable.
    assert ch.is_open
    ch.queue_declare(unique, auto_delete=True)


def test_consumer_cancelled_when_queue_expires(conn, ch, unique):
    # x-expires does not fire while a consumer is attached; deleting from elsewhere does.
    ch.queue_declare(unique, arguments={"x-expires": 60_000})
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method))
    tag = ch.basic_consume(unique, lambda *a: None, auto_ack=True)
    conn.channel().queue_delete(unique)
    pump_until(conn, lambda: cancelled, what="basic.cancel from the broker")
    assert cancelled[0].consumer_tag == tag


def test_x_cancel_on_ha_failover_accepted_and_ignored(conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    col = Collector()
    ch.basic_consume(unique, col, auto_ack=True, arguments={"x-cancel-on-ha-failover": True})
    ch.basic_publish("", unique, b"m")
    pump_until(conn, lambda: len(col) == 1, what="delivery")


# ----------------------------------------------------------------- direct reply-to


def test_direct_reply_to_rpc_round_trip(amqp_url, conn, ch, unique):
    server = connect(amqp_url)
    try:
        sch = server.channel()
        sch.queue_declare(unique, auto_delete=True)
        seen_reply_to = []

        def serve(c, method, props, body):
            seen_reply_to.append(props.reply_to)
            c.basic_publish("", props.reply_to, body.upper(),
                            pika.BasicProperties(correlation_id=props.correlation_id))
            c.basic_ack(method.delivery_tag)

        sch.basic_consume(unique, serve)
        other_ch = conn.channel()  # another channel of the client: must not get the reply
        other = Collector()
        other_ch.basic_consume(RT, other, auto_ack=True)
        replies = Collector()
        tag = ch.basic_consume(RT, replies, auto_ack=True)
        for i in range(3):
            ch.basic_publish("", unique, f"req{i}".encode(),
                             pika.BasicProperties(reply_to=RT, correlation_id=str(i)))
        pump_all([conn, server], lambda: len(replies) == 3, what="three replies")
        assert replies.bodies == [b"REQ0", b"REQ1", b"REQ2"]
        assert [p.correlation_id for _m, p, _b in replies.items] == ["0", "1", "2"]
        for method, _p, _b in replies.items:
            assert method.consumer_tag == tag
            assert method.exchange == ""
            assert method.routing_key == seen_reply_to[0]
            assert not method.redelivered
        assert len(set(seen_reply_to)) == 1
        assert seen_reply_to[0].startswith(RT + ".") and len(seen_reply_to[0]) > len(RT) + 1
        assert other.bodies == []
    finally:
        server.close()


def test_reply_consumer_cannot_acknowledge(ch):
    code, reply = closed_by_broker(lambda: ch.basic_consume(RT, lambda *a: None, auto_ack=False))
    assert (code, reply) == (406, "PRECONDITION_FAILED - reply consumer cannot acknowledge")


def test_publish_with_reply_to_without_reply_consumer(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    code, reply = closed_by_broker(lambda: (
        ch.basic_publish("", unique, b"req", pika.BasicProperties(reply_to=RT)),
        ch.queue_declare(unique, auto_delete=True)))
    assert (code, reply) == (406, "PRECONDITION_FAILED - fast reply consumer does not exist")


def test_publish_with_reply_to_after_reply_consumer_cancelled(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    tag = ch.basic_consume(RT, lambda *a: None, auto_ack=True)
    ch.basic_cancel(tag)
    code, reply = closed_by_broker(lambda: (
        ch.basic_publish("", unique, b"req", pika.BasicProperties(reply_to=RT)),
        ch.queue_declare(unique, auto_delete=True)))
    assert (code, reply) == (406, "PRECONDITION_FAILED - fast reply consumer does not exist")


def test_second_reply_consumer_on_same_channel(ch):
    ch.basic_consume(RT, lambda *a: None, auto_ack=True)
    code, reply = closed_by_broker(lambda: ch.basic_consume(RT, lambda *a: None, auto_ack=True))
    assert (code, reply) == (406, "PRECONDITION_FAILED - reply consumer already set")


def test_reply_consumers_on_two_channels_are_independent(conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    ch2 = conn.channel()
    ch.basic_consume(RT, lambda *a: None, auto_ack=True)
    ch2.basic_consume(RT, lambda *a: None, auto_ack=True)
    ch.basic_publish("", unique, b"1", pika.BasicProperties(reply_to=RT))
    ch2.basic_publish("", unique, b"2", pika.BasicProperties(reply_to=RT))
    (_m1, p1, _b1), (_m2, p2, _b2) = ch.basic_get(unique, auto_ack=True), ch.basic_get(unique, auto_ack=True)
    assert p1.reply_to != p2.reply_to
    assert p1.reply_to.startswith(RT + ".") and p2.reply_to.startswith(RT + ".")


def _returned(conn, ch, routing_key: str):
    returns = []
    ch.add_on_return_callback(lambda _ch, method, props, body: returns.append((method, body)))
    ch.basic_publish("", routing_key, b"reply", mandatory=True)
    pump_until(conn, lambda: returns, what="basic.return")
    return returns[0][0]


def test_reply_to_unknown_name_is_returned(conn, ch):
    method = _returned(conn, ch, RT + ".no-such-channel")
    assert (method.reply_code, method.reply_text) == (312, "NO_ROUTE")
    assert method.routing_key == RT + ".no-such-channel"
    assert ch.is_open


def test_reply_to_closed_channel_is_returned(amqp_url, conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    requester = conn.channel()
    requester.basic_consume(RT, lambda *a: None, auto_ack=True)
    requester.basic_publish("", unique, b"req", pika.BasicProperties(reply_to=RT))
    _m, props, _b = ch.basic_get(unique, auto_ack=True)
    requester.close()
    method = _returned(conn, ch, props.reply_to)
    assert (method.reply_code, method.reply_text) == (312, "NO_ROUTE")
    assert method.routing_key == props.reply_to


def test_reply_to_bare_name_is_returned(conn, ch):
    # Checked against RabbitMQ 3.10: publishing to the bare pseudo-queue name routes nowhere.
    method = _returned(conn, ch, RT)
    assert method.reply_code == 312


def test_passive_declare_of_reply_to(conn, ch):
    # RabbitMQ 3.10 answers a passive declare of the pseudo-queue with consumer_count 1, with
    # or without a reply consumer on the channel.
    ok = ch.queue_declare(RT, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (RT, 0, 1)
    ch.basic_consume(RT, lambda *a: None, auto_ack=True)
    ok = ch.queue_declare(RT, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (RT, 0, 1)


def test_non_passive_declare_of_reply_to(conn, ch):
    # Checked against RabbitMQ 3.10: a (non-passive) declare of amq.rabbitmq.reply-to is
    # answered like the passive one, not refused for the reserved 'amq.' prefix.
    ok = ch.queue_declare(RT).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (RT, 0, 1)


def test_passive_declare_of_unknown_reply_name(conn, ch):
    code, reply = closed_by_broker(lambda: ch.queue_declare(RT + ".garbage", passive=True))
    assert (code, reply) == (404, f"NOT_FOUND - no queue '{RT}.garbage' in vhost '/'")


# ------------------------------------------------------------- alternate exchanges


def test_alternate_exchange_gets_unroutable(conn, ch, unique):
    main, ae = unique + "-main", unique + "-ae"
    routed, unrouted = unique + "-routed", unique + "-unrouted"
    ch.exchange_declare(ae, "fanout", auto_delete=True)
    ch.exchange_declare(main, "direct", auto_delete=True, arguments={"alternate-exchange": ae})
    for q in (routed, unrouted):
        ch.queue_declare(q, auto_delete=True)
    ch.queue_bind(routed, main, routing_key="known")
    ch.queue_bind(unrouted, ae)
    ch.confirm_delivery()
    ch.basic_publish(main, "known", b"a")
    # mandatory and unroutable by main: the AE takes it, nothing is returned.
    ch.basic_publish(main, "unknown", b"b", mandatory=True)
    assert drain(ch, routed) == [b"a"]
    assert drain(ch, unrouted) == [b"b"]


def test_alternate_exchange_chain(conn, ch, unique):
    main, ae1, ae2 = unique + "-main", unique + "-ae1", unique + "-ae2"
    q1, q2 = unique + "-q1", unique + "-q2"
    ch.exchange_declare(ae2, "fanout", auto_delete=True)
    ch.exchange_declare(ae1, "direct", auto_delete=True, arguments={"alternate-exchange": ae2})
    ch.exchange_declare(main, "direct", auto_delete=True, arguments={"alternate-exchange": ae1})
    for q in (q1, q2):
        ch.queue_declare(q, auto_delete=True)
    ch.queue_bind(q1, ae1, routing_key="for-ae1")
    ch.queue_bind(q2, ae2)
    ch.confirm_delivery()
    ch.basic_publish(main, "for-ae1", b"one", mandatory=True)
    ch.basic_publish(main, "other", b"two", mandatory=True)
    assert drain(ch, q1) == [b"one"]
    assert drain(ch, q2) == [b"two"]


def test_alternate_exchange_that_routes_nowhere_returns(conn, ch, unique):
    main, ae = unique + "-main", unique + "-ae"
    ch.exchange_declare(ae, "fanout", auto_delete=False)
    ch.exchange_declare(main, "direct", auto_delete=True, arguments={"alternate-exchange": ae})
    ch.confirm_delivery()
    try:
        with pytest.raises(pe.UnroutableError):
            ch.basic_publish(main, "x", b"lost", mandatory=True)
    finally:
        ch.exchange_delete(ae)


def test_missing_alternate_exchange_returns(conn, ch, unique):
    main = unique + "-main"
    ch.exchange_declare(main, "direct", auto_delete=False, arguments={"alternate-exchange": unique + "-none"})
    ch.confirm_delivery()
    try:
        with pytest.raises(pe.UnroutableError):
            ch.basic_publish(main, "x", b"lost", mandatory=True)
    finally:
        ch.exchange_delete(main)


def test_alternate_exchange_cycle_terminates(conn, ch, unique):
    a, b = unique + "-a", unique + "-b"
    ch.exchange_declare(a, "direct", arguments={"alternate-exchange": b})
    ch.exchange_declare(b, "direct", arguments={"alternate-exchange": a})
    ch.confirm_delivery()
    try:
        with pytest.raises(pe.UnroutableError):
            ch.basic_publish(a, "x", b"lost", mandatory=True)
    finally:
        ch.exchange_delete(a)
        ch.exchange_delete(b)


def test_alternate_exchange_redeclare_must_match(conn, unique):
    ch = conn.channel()
    ch.exchange_declare(unique, "direct", auto_delete=True, arguments={"alternate-exchange": "ae1"})
    code, reply = closed_by_broker(lambda: ch.exchange_declare(
        unique, "direct", auto_delete=True, arguments={"alternate-exchange": "ae2"}))
    assert (code, reply) == (406, f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{unique}' in vhost '/': received 'ae2' but current is 'ae1'")


# ---------------------------------------------------- exchange-to-exchange bindings


def test_exchange_to_exchange_binding(conn, ch, unique):
    src, dst, q = unique + "-src", unique + "-dst", unique + "-q"
    ch.exchange_declare(src, "topic", auto_delete=True)
    ch.exchange_declare(dst, "fanout", auto_delete=True)
    ch.queue_declare(q, auto_delete=True)
    ch.exchange_bind(dst, src, routing_key="a.*")
    ch.queue_bind(q, dst)
    ch.confirm_delivery()
    ch.basic_publish(src, "a.b", b"yes")
    ch.basic_publish(src, "b.a", b"no")
    assert drain(ch, q) == [b"yes"]


def test_exchange_binding_cycle_delivers_once(conn, ch, unique):
    x1, x2, x3 = unique + "-x1", unique + "-x2", unique + "-x3"
    q1, q2, q3 = unique + "-q1", unique + "-q2", unique + "-q3"
    for x in (x1, x2, x3):
        ch.exchange_declare(x, "fanout")
    for q, x in ((q1, x1), (q2, x2), (q3, x3)):
        ch.queue_declare(q, auto_delete=True)
        ch.queue_bind(q, x)
    # x1 -> x2 -> x3 -> x1, and a shortcut x1 -> x3 (two paths to x3).
    ch.exchange_bind(x2, x1)
    ch.exchange_bind(x3, x2)
    ch.exchange_bind(x1, x3)
    ch.exchange_bind(x3, x1)
    ch.confirm_delivery()
    try:
        ch.basic_publish(x1, "", b"m")
        ch.basic_publish(x2, "", b"n")
        for q in (q1, q2, q3):
            assert drain(ch, q) == [b"m", b"n"]
    finally:
        for x in (x1, x2, x3):
            ch.exchange_delete(x)


def test_queue_reached_by_two_paths_gets_one_copy(conn, ch, unique):
    top, left, right, q = (unique + s for s in ("-top", "-left", "-right", "-q"))
    ch.exchange_declare(top, "fanout", auto_delete=True)
    for x in (left, right):
        ch.exchange_declare(x, "direct", auto_delete=True)
        ch.exchange_bind(x, top)
    ch.queue_declare(q, auto_delete=True)
    ch.queue_bind(q, left, routing_key="k")
    ch.queue_bind(q, right, routing_key="k")
    ch.queue_bind(q, top)
    ch.confirm_delivery()
    ch.basic_publish(top, "k", b"once")
    assert drain(ch, q) == [b"once"]


def test_alternate_exchange_of_a_bound_exchange(conn, ch, unique):
    # An exchange reached through an e2e binding that routes nowhere uses its own AE.
    src, mid, ae, q = (unique + s for s in ("-src", "-mid", "-ae", "-q"))
    ch.exchange_declare(ae, "fanout", auto_delete=True)
    ch.exchange_declare(mid, "direct", auto_delete=True, arguments={"alternate-exchange": ae})
    ch.exchange_declare(src, "fanout", auto_delete=True)
    ch.exchange_bind(mid, src)
    ch.queue_declare(q, auto_delete=True)
    ch.queue_bind(q, ae)
    ch.confirm_delivery()
    ch.basic_publish(src, "nothing-bound", b"m", mandatory=True)
    assert drain(ch, q) == [b"m"]


# --------------------------------------------------------------------- CC and BCC


def test_cc_and_bcc_headers(conn, ch, unique):
    qa, qb, qc, qd = (unique + s for s in ("-a", "-b", "-c", "-d"))
    for q, key in ((qa, "ka"), (qb, "kb"), (qc, "kc"), (qd, "kd")):
        ch.queue_declare(q, auto_delete=True)
        ch.queue_bind(q, "amq.direct", routing_key=key)
    ch.confirm_delivery()
    ch.basic_publish("amq.direct", "ka", b"m", pika.BasicProperties(
        headers={"CC": ["kb", "ka"], "BCC": ["kc", "kb"], "other": "kept"}))
    for q in (qa, qb, qc):
        got = []
        while True:
            method, props, body = ch.basic_get(q, auto_ack=True)
            if method is None:
                break
            got.append((method, props, body))
        assert len(got) == 1, q  # each queue once, however many keys reach it
        method, props, body = got[0]
        assert body == b"m"
        assert method.routing_key == "ka"
        assert text(props.headers["CC"]) == ["kb", "ka"]
        assert "BCC" not in props.headers
        assert text(props.headers["other"]) == "kept"
    assert drain(ch, qd) == []


def test_bcc_only_header_is_stripped(conn, ch, unique):
    qa, qb = unique + "-a", unique + "-b"
    for q in (qa, qb):
        ch.queue_declare(q, auto_delete=True)
    ch.confirm_delivery()
    ch.basic_publish("", qa, b"m", pika.BasicProperties(headers={"BCC": [qb]}))
    for q in (qa, qb):
        _m, props, body = ch.basic_get(q, auto_ack=True)
        assert body == b"m"
        assert not (props.headers or {}).get("BCC")


def test_cc_with_topic_exchange(conn, ch, unique):
    x = unique + "-t"
    ch.exchange_declare(x, "topic", auto_delete=True)
    qa, qb = unique + "-a", unique + "-b"
    for q, key in ((qa, "a.#"), (qb, "b.*")):
        ch.queue_declare(q, auto_delete=True)
        ch.queue_bind(q, x, routing_key=key)
    ch.confirm_delivery()
    ch.basic_publish(x, "a.1", b"m", pika.BasicProperties(headers={"CC": ["b.2", "a.3"]}))
    assert drain(ch, qa) == [b"m"]
    assert drain(ch, qb) == [b"m"]


def test_cc_reaches_queue_otherwise_unroutable_not_returned(conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    ch.confirm_delivery()
    # Routing key reaches nothing, CC does: routed, so no return.
    ch.basic_publish("", unique + "-nothing", b"m", pika.BasicProperties(headers={"CC": [unique]}),
                     mandatory=True)
    assert drain(ch, unique) == [b"m"]


# ------------------------------------------------------- delayed-message exchange


def delayed_exchange(ch, name: str, kind: str = "direct"):
    ch.exchange_declare(name, "x-delayed-message", auto_delete=True, arguments={"x-delayed-type": kind})


def test_delayed_exchange_requires_delayed_type(conn, unique):
    ch = conn.channel()
    if not is_minimq(conn):
        # RabbitMQ 3.10 without the plugin: the type is unknown (a connection error).
        with pytest.raises(pe.ConnectionClosedByBroker) as exc:
            ch.exchange_declare(unique, "x-delayed-message", arguments={"x-delayed-type": "direct"})
        assert exc.value.reply_code == 503
        assert "unknown exchange type 'x-delayed-message'" in exc.value.reply_text
        return
    code, reply = closed_by_broker(lambda: ch.exchange_declare(unique, "x-delayed-message"))
    # The plugin's text (rabbit_exchange_type_delayed_message:validate/1).
    assert (code, reply) == (406, "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type")
    ch = conn.channel()
    code, reply = closed_by_broker(lambda: ch.exchange_declare(
        unique, "x-delayed-message", arguments={"x-delayed-type": "no-such-type"}))
    assert (code, reply) == (406, "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type")
    ch = conn.channel()
    code, _ = closed_by_broker(lambda: ch.exchange_declare(unique, "direct", passive=True))
    assert code == 404


def _minimq_only(conn):
    if not is_minimq(conn):
        pytest.skip("RabbitMQ 3.10 here has no delayed-message plugin")


def test_delayed_message_arrives_after_its_delay(conn, ch, unique):
    _minimq_only(conn)
    x = unique + "-delay"
    delayed_exchange(ch, x)
    ch.queue_declare(unique, auto_delete=True)
    ch.queue_bind(unique, x, routing_key="k")
    col = Collector()
    ch.basic_consume(unique, col, auto_ack=True)
    t0 = time.monotonic()
    ch.basic_publish(x, "k", b"later", pika.BasicProperties(headers={"x-delay": 300}))
    ch.basic_publish(x, "k", b"now")
    pump_until(conn, lambda: len(col) == 1, what="the undelayed message")
    assert col.bodies == [b"now"]
    assert col.times[0] - t0 < 0.2
    pump_until(conn, lambda: len(col) == 2, what="the delayed message")
    assert col.bodies == [b"now", b"later"]
    assert col.times[1] - t0 >= 0.25
    _m, props, _b = col.items[1]
    assert props.headers["x-delay"] == 300  # kept, as the plugin does for positive delays


def test_delayed_messages_ordered_by_delay(conn, ch, unique):
    _minimq_only(conn)
    x = unique + "-delay"
    delayed_exchange(ch, x, "fanout")
    ch.queue_declare(unique, auto_delete=True)
    ch.queue_bind(unique, x)
    col = Collector()
    ch.basic_consume(unique, col, auto_ack=True)
    for body, delay in ((b"c", 300), (b"a", 100), (b"b", 200), (b"zero", 0), (b"neg", -50)):
        ch.basic_publish(x, "", body, pika.BasicProperties(headers={"x-delay": delay}))
    pump_until(conn, lambda: len(col) == 5, what="five messages")
    assert col.bodies == [b"zero", b"neg", b"a", b"b", b"c"]


def test_delayed_exchange_routes_with_its_delayed_type(conn, ch, unique):
    _minimq_only(conn)
    x = unique + "-delay"
    delayed_exchange(ch, x, "topic")
    qa, qb = unique + "-a", unique + "-b"
    for q, key in ((qa, "a.*"), (qb, "b.*")):
        ch.queue_declare(q, auto_delete=True)
        ch.queue_bind(q, x, routing_key=key)
    col = Collector()
    ch.basic_consume(qa, col, auto_ack=True)
    ch.basic_publish(x, "a.1", b"m", pika.BasicProperties(headers={"x-delay": 50}))
    pump_until(conn, lambda: len(col) == 1, what="the delayed message")
    assert drain(ch, qb) == []


def test_delayed_exchange_redeclare_must_match_delayed_type(conn, unique):
    _minimq_only(conn)
    ch = conn.channel()
    delayed_exchange(ch, unique, "direct")
    delayed_exchange(ch, unique, "direct")
    code, reply = closed_by_broker(lambda: delayed_exchange(ch, unique, "fanout"))
    assert code == 406
    assert "inequivalent arg 'x-delayed-type'" in reply


@pytest.mark.parametrize("value, type_name", [(5, "signedint"), (True, "bool"), ({"a": 1}, "table"),
                                              (b"ae", "binary")])
def test_alternate_exchange_must_be_a_longstr(ch, unique, value, type_name):
    """As RabbitMQ 3.10 (the Go client's int32 showed minimq taking it): a new exchange whose
    alternate-exchange is not a longstr is refused; pika sends bytes as a byte array."""
    code, reply = closed_by_broker(lambda: ch.exchange_declare(
        unique, "direct", auto_delete=True, arguments={"alternate-exchange": value}))
    assert (code, reply) == (406, f"PRECONDITION_FAILED - invalid type '{type_name}' for arg "
                                  f"'alternate-exchange' in exchange '{unique}' in vhost '/'")
