"""Queue length limits, overflow modes, priority queues and queue-argument validation (pika).

Reply texts are RabbitMQ 3.10's, checked against a running RabbitMQ 3.10.8.
"""
from __future__ import annotations

import pika
import pika.exceptions as pe
import pytest

from .helpers import Collector, closed_by_broker, pump_until, text


def drain(ch, queue: str) -> list[bytes]:
    """Every ready message of `queue`, in order, by basic.get (auto-ack)."""
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def count(ch, queue: str) -> int:
    # On RabbitMQ a passive declare may overtake publishes made without confirms (it reaches
    # the queue another way), so counts are only taken after confirmed publishes or gets.
    return ch.queue_declare(queue, passive=True).method.message_count


def publish_all(ch, queue: str, bodies, **props) -> None:
    for b in bodies:
        ch.basic_publish("", queue, b, pika.BasicProperties(**props) if props else None)


# --------------------------------------------------------------- length limits


def test_max_length_drop_head_keeps_newest(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length": 3})
    publish_all(ch, unique, [b"1", b"2", b"3", b"4", b"5"])
    assert drain(ch, unique) == [b"3", b"4", b"5"]


def test_explicit_drop_head_same_as_default(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length": 2, "x-overflow": "drop-head"})
    publish_all(ch, unique, [b"1", b"2", b"3"])
    assert drain(ch, unique) == [b"2", b"3"]


def test_max_length_zero_keeps_nothing(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length": 0})
    publish_all(ch, unique, [b"1", b"2"])
    assert drain(ch, unique) == []


def test_max_length_bytes_counts_body_bytes(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length-bytes": 10})
    # Headers/properties do not count, only bodies: 4 + 4 fit, the third drops the first.
    ch.basic_publish("", unique, b"aaaa", pika.BasicProperties(headers={"big": "x" * 200}))
    publish_all(ch, unique, [b"bbbb", b"cccc"])
    assert drain(ch, unique) == [b"bbbb", b"cccc"]


def test_max_length_bytes_and_length_both_apply(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length-bytes": 100, "x-max-length": 2})
    publish_all(ch, unique, [b"1", b"2", b"3"])
    assert drain(ch, unique) == [b"2", b"3"]
    publish_all(ch, unique, [b"x" * 60, b"y" * 60])
    assert drain(ch, unique) == [b"y" * 60]


BYTE_CASES = [
    # (overflow, body sizes published, confirms, sizes kept) with x-max-length-bytes 10.
    # reject-publish refuses a message that would take the queue over the limit;
    # drop-head takes it and then drops from the head until the queue fits.
    ("reject-publish", [6, 6, 6], ["ack", "nack", "nack"], [6]),
    ("reject-publish", [10, 1], ["ack", "nack"], [10]),
    ("reject-publish", [4, 4, 2, 1], ["ack", "ack", "ack", "nack"], [4, 4, 2]),
    ("reject-publish", [11], ["nack"], []),
    ("reject-publish", [0, 0, 0], ["ack", "ack", "ack"], [0, 0, 0]),
    ("drop-head", [6, 6, 6], ["ack", "ack", "ack"], [6]),
    ("drop-head", [10, 1], ["ack", "ack"], [1]),
    ("drop-head", [4, 4, 2, 1], ["ack", "ack", "ack", "ack"], [4, 2, 1]),
    ("drop-head", [11], ["ack"], []),
]


@pytest.mark.parametrize("overflow, sizes, confirms, kept", BYTE_CASES)
def test_max_length_bytes_boundaries(ch, unique, overflow, sizes, confirms, kept):
    # Checked case by case against RabbitMQ 3.10.
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length-bytes": 10, "x-overflow": overflow})
    ch.confirm_delivery()
    got = []
    for i, size in enumerate(sizes):
        try:
            ch.basic_publish("", unique, bytes([65 + i]) * size)
            got.append("ack")
        except pe.NackError:
            got.append("nack")
    assert got == confirms
    assert [len(b) for b in drain(ch, unique)] == kept


def test_reject_publish_nacks_in_confirm_mode(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    publish_all(ch, unique, [b"1", b"2"])
    with pytest.raises(pe.NackError):
        ch.basic_publish("", unique, b"3")
    # The channel is still fine; the queue kept the old messages.
    assert drain(ch, unique) == [b"1", b"2"]
    ch.basic_publish("", unique, b"4")  # room again: acked
    assert drain(ch, unique) == [b"4"]


def test_reject_publish_without_confirms_drops_silently(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    publish_all(ch, unique, [b"1", b"2", b"3", b"4"])
    assert drain(ch, unique) == [b"1", b"2"]


def test_reject_publish_nack_is_for_the_refused_message_only(conn, unique):
    # Checked against RabbitMQ 3.10: a message routed to two queues, one full (reject-publish)
    # and one not, is nacked, although the other queue keeps its copy.
    impl_ch = conn.channel()
    other = unique + "-other"
    impl_ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    impl_ch.queue_declare(other, auto_delete=True)
    fan = unique + "-fan"
    impl_ch.exchange_declare(fan, "fanout", auto_delete=True)
    impl_ch.queue_bind(unique, fan)
    impl_ch.queue_bind(other, fan)
    impl_ch.confirm_delivery()
    impl_ch.basic_publish(fan, "", b"1")
    # Refused by the full queue, accepted by the other: RabbitMQ 3.10 nacks it.
    with pytest.raises(pe.NackError):
        impl_ch.basic_publish(fan, "", b"2")
    assert drain(impl_ch, unique) == [b"1"]
    assert drain(impl_ch, other) == [b"1", b"2"]


def test_reject_publish_dlx_nacks_and_dead_letters(conn, ch, unique):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish-dlx",
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": sink})
    col = Collector()
    ch.basic_consume(sink, col, auto_ack=True)
    ch.confirm_delivery()
    ch.basic_publish("", unique, b"kept")
    with pytest.raises(pe.NackError):
        ch.basic_publish("", unique, b"refused")
    pump_until(conn, lambda: len(col) == 1, what="the refused message dead-lettered")
    _m, props, body = col.items[0]
    assert body == b"refused"
    (death,) = props.headers["x-death"]
    assert text(death["reason"]) == "maxlen"
    assert text(death["queue"]) == unique
    assert death["count"] == 1
    assert drain(ch, unique) == [b"kept"]


def test_reject_publish_plain_does_not_dead_letter(conn, ch, unique):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish",
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": sink})
    publish_all(ch, unique, [b"kept", b"refused"])
    assert drain(ch, unique) == [b"kept"]
    assert drain(ch, sink) == []


def test_only_ready_messages_count_towards_max_length(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    publish_all(ch, unique, [b"1", b"2"])
    m1, _p, _b = ch.basic_get(unique)
    m2, _p, _b = ch.basic_get(unique)
    # Two unacked, none ready: two more fit.
    publish_all(ch, unique, [b"3", b"4"])
    assert count(ch, unique) == 2
    with pytest.raises(pe.NackError):
        ch.basic_publish("", unique, b"5")
    ch.basic_ack(m2.delivery_tag, multiple=True)
    assert drain(ch, unique) == [b"3", b"4"]


def test_requeue_over_max_length_drops_from_head(ch, unique):
    # Checked against RabbitMQ 3.10: requeueing may take the queue over its limit; the queue
    # then drops from its head, which is where the requeued (older) messages went back.
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length": 2})
    publish_all(ch, unique, [b"1", b"2"])
    m1, _p, _b = ch.basic_get(unique)
    m2, _p, _b = ch.basic_get(unique)
    publish_all(ch, unique, [b"3", b"4"])
    ch.basic_nack(m2.delivery_tag, multiple=True, requeue=True)
    assert drain(ch, unique) == [b"3", b"4"]


def test_max_length_with_consumer_applies_only_to_backlog(conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length": 1})
    c2 = conn.channel()
    c2.basic_qos(prefetch_count=2)
    col = Collector()
    c2.basic_consume(unique, col)
    publish_all(ch, unique, [b"1", b"2", b"3", b"4"])
    pump_until(conn, lambda: len(col) == 2, what="two deliveries")
    # 1 and 2 went to the consumer; 3 was dropped for 4.
    assert col.bodies == [b"1", b"2"]
    assert drain(ch, unique) == [b"4"]


# ----------------------------------------------------------------- priorities


def test_priority_higher_first_fifo_within_priority(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-priority": 10})
    for body, prio in ((b"p1", 1), (b"p5a", 5), (b"none-a", None), (b"p5b", 5), (b"p10", 10),
                       (b"p0", 0), (b"none-b", None), (b"p1b", 1)):
        ch.basic_publish("", unique, body, pika.BasicProperties(priority=prio))
    assert drain(ch, unique) == [b"p10", b"p5a", b"p5b", b"p1", b"p1b", b"none-a", b"p0", b"none-b"]


def test_priority_above_max_is_capped(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-priority": 5})
    for body, prio in ((b"a5", 5), (b"b9", 9), (b"c4", 4), (b"d255", 255), (b"e5", 5)):
        ch.basic_publish("", unique, body, pika.BasicProperties(priority=prio))
    # 9 and 255 count as 5: FIFO among the 5s.
    assert drain(ch, unique) == [b"a5", b"b9", b"d255", b"e5", b"c4"]


def test_priority_message_property_kept_as_published(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-priority": 2})
    ch.basic_publish("", unique, b"x", pika.BasicProperties(priority=7))
    _m, props, _b = ch.basic_get(unique, auto_ack=True)
    assert props.priority == 7


def test_priority_ignored_without_max_priority(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    for body, prio in ((b"1", 1), (b"2", 9), (b"3", None)):
        ch.basic_publish("", unique, body, pika.BasicProperties(priority=prio))
    assert drain(ch, unique) == [b"1", b"2", b"3"]


def test_requeued_messages_keep_their_priority_position(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-priority": 5})
    for body, prio in ((b"low1", 1), (b"hi1", 5), (b"hi2", 5), (b"low2", 1), (b"mid", 3)):
        ch.basic_publish("", unique, body, pika.BasicProperties(priority=prio))
    got = [ch.basic_get(unique) for _ in range(3)]
    assert [b for _m, _p, b in got] == [b"hi1", b"hi2", b"mid"]
    ch.basic_publish("", unique, b"hi3", pika.BasicProperties(priority=5))
    # Requeue mid, then hi1 (not in order): each goes back to its place in its priority.
    ch.basic_reject(got[2][0].delivery_tag, requeue=True)
    ch.basic_reject(got[0][0].delivery_tag, requeue=True)
    out = []
    while True:
        m, _p, b = ch.basic_get(unique, auto_ack=True)
        if m is None:
            break
        out.append((b, m.redelivered))
    ch.basic_nack(0, multiple=True, requeue=False)  # settle hi2
    assert out == [(b"hi1", True), (b"hi3", False), (b"mid", True), (b"low1", False), (b"low2", False)]


def test_priority_with_consumer_prefetch(conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-priority": 9})
    for body, prio in ((b"a", 1), (b"b", 2), (b"c", 9), (b"d", 5)):
        ch.basic_publish("", unique, body, pika.BasicProperties(priority=prio))
    c2 = conn.channel()
    c2.basic_qos(prefetch_count=1)
    col = Collector()

    def on(chan, method, props, body):
        col(chan, method, props, body)
        chan.basic_ack(method.delivery_tag)

    c2.basic_consume(unique, on)
    pump_until(conn, lambda: len(col) == 4, what="four deliveries")
    assert col.bodies == [b"c", b"d", b"b", b"a"]


def test_priority_with_max_length_drops_lowest_priority_head(ch, unique):
    # Open in the docs: drop-head on a priority queue. Checked against RabbitMQ 3.10: the
    # message dropped is the queue's head in delivery order, i.e. the highest priority one.
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-priority": 5, "x-max-length": 2})
    for body, prio in ((b"low", 1), (b"high", 5), (b"mid", 3)):
        ch.basic_publish("", unique, body, pika.BasicProperties(priority=prio))
    assert drain(ch, unique) == [b"mid", b"low"]


# ---------------------------------------------------------- argument validation

PREFIX = "PRECONDITION_FAILED - "

INVALID = [
    ("negative-ttl", {"x-message-ttl": -1}, "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
    ("string-ttl", {"x-message-ttl": "1000"}, "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': \"expected integer, got longstr\""),
    ("bool-ttl", {"x-message-ttl": True}, "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': \"expected integer, got bool\""),
    ("expires-zero", {"x-expires": 0}, "invalid arg 'x-expires' for queue '{q}' in vhost '/': {{value_zero,0}}"),
    ("expires-negative", {"x-expires": -5}, "invalid arg 'x-expires' for queue '{q}' in vhost '/': {{value_negative,-5}}"),
    ("max-priority-256", {"x-max-priority": 256}, "invalid arg 'x-max-priority' for queue '{q}' in vhost '/': {{max_value_exceeded,256}}"),
    ("max-priority-negative", {"x-max-priority": -1}, "invalid arg 'x-max-priority' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
    ("max-priority-string", {"x-max-priority": "5"}, "invalid arg 'x-max-priority' for queue '{q}' in vhost '/': \"expected integer, got longstr\""),
    ("max-length-negative", {"x-max-length": -1}, "invalid arg 'x-max-length' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
    ("max-length-string", {"x-max-length": "10"}, "invalid arg 'x-max-length' for queue '{q}' in vhost '/': \"expected integer, got longstr\""),
    ("max-length-bytes-negative", {"x-max-length-bytes": -1}, "invalid arg 'x-max-length-bytes' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
    ("overflow-bad-string", {"x-overflow": "nope"}, "invalid arg 'x-overflow' for queue '{q}' in vhost '/': invalid_overflow"),
    ("overflow-int", {"x-overflow": 1}, "invalid arg 'x-overflow' for queue '{q}' in vhost '/': {{unacceptable_type,signedint}}"),
    ("dlx-int", {"x-dead-letter-exchange": 5}, "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'"),
    ("dlrk-without-dlx", {"x-dead-letter-routing-key": "k"}, "invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': routing_key_but_no_dlx_defined"),
    # Unlike x-dead-letter-exchange's, the routing key's type error uses the common format.
    ("dlrk-int", {"x-dead-letter-exchange": "x", "x-dead-letter-routing-key": 5}, "invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': {{unacceptable_type,signedint}}"),
    ("sac-string", {"x-single-active-consumer": "true"}, "invalid arg 'x-single-active-consumer' for queue '{q}' in vhost '/': {{unacceptable_type,longstr}}"),
    ("queue-type-bad", {"x-queue-type": "weird"}, "invalid arg 'x-queue-type' for queue '{q}' in vhost '/': \"unsupported queue type 'weird'\""),
    ("queue-mode-bad", {"x-queue-mode": "fast"}, "invalid arg 'x-queue-mode' for queue '{q}' in vhost '/': \"unsupported queue mode 'fast'\""),
    ("delivery-limit-classic", {"x-delivery-limit": 3}, "invalid arg 'x-delivery-limit' for queue '{q}' in vhost '/' of queue type rabbit_classic_queue"),
]


@pytest.mark.parametrize("args, expected", [(a, e) for _n, a, e in INVALID], ids=[n for n, _a, _e in INVALID])
def test_invalid_queue_arguments(conn, unique, args, expected):
    ch = conn.channel()
    code, reply = closed_by_broker(lambda: ch.queue_declare(unique, auto_delete=True, arguments=args))
    assert code == 406
    assert reply == PREFIX + expected.format(q=unique)
    # Nothing was created.
    probe = conn.channel()
    code, _ = closed_by_broker(lambda: probe.queue_declare(unique, passive=True))
    assert code == 404


def test_valid_arguments_accepted(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={
        "x-message-ttl": 0, "x-max-length": 0, "x-max-length-bytes": 0, "x-max-priority": 255,
        "x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "",
        "x-single-active-consumer": False, "x-queue-type": "classic", "x-queue-mode": "lazy",
        "x-expires": 1_000_000, "x-unknown-argument": "ignored"})


def test_redeclare_with_different_ttl(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 1000})
    ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 1000})  # same: fine
    code, reply = closed_by_broker(
        lambda: ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 2000}))
    assert (code, reply) == (406, PREFIX + f"inequivalent arg 'x-message-ttl' for queue '{unique}' in vhost '/': received '2000' but current is '1000'")


def test_redeclare_omitting_ttl(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 1000})
    code, reply = closed_by_broker(lambda: ch.queue_declare(unique, auto_delete=True))
    assert (code, reply) == (406, PREFIX + f"inequivalent arg 'x-message-ttl' for queue '{unique}' in vhost '/': received none but current is the value '1000' of type 'signedint'")


def test_redeclare_adding_ttl(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=True)
    code, reply = closed_by_broker(
        lambda: ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 5}))
    assert (code, reply) == (406, PREFIX + f"inequivalent arg 'x-message-ttl' for queue '{unique}' in vhost '/': received the value '5' of type 'signedint' but current is none")


def test_redeclare_with_invalid_argument_reports_inequivalence_first(conn, unique):
    # Checked against RabbitMQ 3.10: on redeclare, equivalence is checked before validation,
    # so a string '1000' against the current integer 1000 is "inequivalent", not "invalid".
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 1000})
    code, reply = closed_by_broker(
        lambda: ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": "1000"}))
    assert (code, reply) == (406, PREFIX + f"inequivalent arg 'x-message-ttl' for queue '{unique}' in vhost '/': received '1000' but current is '1000'")


def test_redeclare_ignores_non_compared_arguments(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 1000, "x-custom": "a"})
    ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 1000, "x-custom": "b"})


def test_quorum_delivery_limit_accepted(ch, unique):
    ch.queue_declare(unique, durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 2})
    ch.queue_delete(unique)


REPLICATED_DECLARES = [
    # (queue type, declare flags, arguments, what RabbitMQ 3.10.8 refuses, or None)
    ("quorum", {"durable": False}, {}, "invalid property 'non-durable' for queue '{q}' in vhost '/'"),
    ("quorum", {"durable": True, "exclusive": True}, {}, "invalid property 'exclusive-owner' for queue '{q}' in vhost '/'"),
    ("quorum", {"durable": False, "exclusive": True, "auto_delete": True}, {},
     "invalid property 'auto-delete' for queue '{q}' in vhost '/'"),
    ("quorum", {"durable": False}, {"x-max-priority": 5},
     "invalid arg 'x-max-priority' for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue"),
    ("quorum", {"durable": True}, {"x-queue-mode": "lazy", "x-max-priority": 3},
     "invalid arg 'x-queue-mode' for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue"),
    ("quorum", {"durable": False}, {"x-delivery-limit": "x"}, "invalid property 'non-durable' for queue '{q}' in vhost '/'"),
    ("quorum", {"durable": True}, {"x-message-ttl": 1000, "x-expires": 60000, "x-overflow": "reject-publish",
                                   "x-single-active-consumer": True, "x-max-length": 3}, None),
    ("stream", {"durable": False}, {}, "invalid property 'non-durable' for queue '{q}' in vhost '/'"),
    ("stream", {"durable": True}, {"x-message-ttl": 5},
     "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
    ("stream", {"durable": True}, {}, None),
]


@pytest.mark.parametrize("qtype, flags, args, refused", REPLICATED_DECLARES)
def test_quorum_and_stream_declares_refused_as_rabbitmq(ch, unique, qtype, flags, args, refused):
    """RabbitMQ 3.10 refuses quorum/stream queues it cannot replicate (non-durable, exclusive,
    auto-delete) and arguments their type has no use for; the Go client's declares showed
    minimq accepting them."""
    arguments = {"x-queue-type": qtype, **args}
    if refused is None:
        ch.queue_declare(unique, arguments=arguments, **flags)
        ch.queue_delete(unique)
        return
    code, text = closed_by_broker(lambda: ch.queue_declare(unique, arguments=arguments, **flags))
    assert (code, text) == (406, "PRECONDITION_FAILED - " + refused.format(q=unique))


@pytest.mark.parametrize("qtype", ["quorum", "stream"])
def test_server_named_quorum_or_stream_queue_is_refused(ch, qtype):
    code, text = closed_by_broker(lambda: ch.queue_declare("", durable=True, arguments={"x-queue-type": qtype}))
    assert (code, text) == (406, f"PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_{qtype}_queue")


def test_requeue_over_max_length_with_reject_publish_keeps_all(ch, unique):
    # Checked against RabbitMQ 3.10: only drop-head enforces the limit when messages are
    # requeued (rabbit_amqqueue_process:maybe_drop_head/1 is a no-op for reject-publish and
    # reject-publish-dlx); the queue may then hold more than x-max-length ready messages.
    ch.queue_declare(unique, auto_delete=True, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    publish_all(ch, unique, [b"1", b"2"])
    m1, _p, _b = ch.basic_get(unique)
    m2, _p, _b = ch.basic_get(unique)
    publish_all(ch, unique, [b"3", b"4"])
    ch.basic_nack(m2.delivery_tag, multiple=True, requeue=True)
    with pytest.raises(pe.NackError):
        ch.basic_publish("", unique, b"5")
    assert drain(ch, unique) == [b"1", b"2", b"3", b"4"]


def test_requeue_over_max_length_with_reject_publish_dlx_does_not_dead_letter(conn, ch, unique):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish-dlx",
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": sink})
    ch.confirm_delivery()
    ch.basic_publish("", unique, b"1")
    m1, _p, _b = ch.basic_get(unique)
    ch.basic_publish("", unique, b"2")
    ch.basic_reject(m1.delivery_tag, requeue=True)
    assert drain(ch, unique) == [b"1", b"2"]
    assert drain(ch, sink) == []


def test_quorum_delivery_count_counts_every_return_without_a_limit(conn, ch, unique):
    # Checked against RabbitMQ 3.10 (the Go client showed it first): x-delivery-count goes
    # up on each return -- nack/reject with requeue, a closed channel, basic.recover -- on a
    # quorum queue with no x-delivery-limit too (minimq counted only with a limit).
    ch.queue_declare(unique, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        ch.confirm_delivery()
        ch.basic_publish("", unique, b"d")
        seen = []
        for _ in range(2):
            m, props, _b = ch.basic_get(unique)
            seen.append((props.headers or {}).get("x-delivery-count"))
            ch.basic_nack(m.delivery_tag, requeue=True)
        other = conn.channel()
        m, props, _b = other.basic_get(unique)
        seen.append((props.headers or {}).get("x-delivery-count"))
        other.close()
        m, props, _b = ch.basic_get(unique)
        seen.append((props.headers or {}).get("x-delivery-count"))
        ch.basic_recover(requeue=True)
        m, props, _b = ch.basic_get(unique, auto_ack=True)
        seen.append((props.headers or {}).get("x-delivery-count"))
        assert seen == [0, 1, 2, 3, 4]
    finally:
        ch.queue_delete(unique)


def test_quorum_delivery_limit_dead_letters(conn, ch, unique):
    # Checked against RabbitMQ 3.10: a quorum queue with x-delivery-limit 1 delivers a
    # message twice (x-delivery-count 0, then 1) and dead-letters it with reason
    # 'delivery_limit' when it is returned the second time.
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 1,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": sink})
    try:
        col = Collector()
        ch.basic_consume(sink, col, auto_ack=True)
        ch.confirm_delivery()
        ch.basic_publish("", unique, b"d")
        seen = []
        for _ in range(2):
            m, props, _b = ch.basic_get(unique)
            seen.append((m.redelivered, (props.headers or {}).get("x-delivery-count")))
            ch.basic_nack(m.delivery_tag, requeue=True)
        pump_until(conn, lambda: len(col) == 1, what="the message dead-lettered")
        assert ch.basic_get(unique)[0] is None
        (death,) = col.items[0][1].headers["x-death"]
        assert text(death["reason"]) == "delivery_limit"
        assert text(death["queue"]) == unique
        assert seen == [(False, 0), (True, 1)]
    finally:
        ch.queue_delete(unique)
