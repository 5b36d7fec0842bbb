"""Message TTL, dead-lettering and queue expiry, through pika over real sockets.

Every test runs against minimq and, with MINIMQ_TEST_URL, against RabbitMQ 3.10; checks of
minimq-only headers (x-last-death-*) run only when the broker is minimq.

Expiry is observed through events: an expiring queue dead-letters into a "sink" queue (via
the default exchange and x-dead-letter-routing-key) and the test waits for the sink's
consumer to receive the message. Where only the passing of time can be observed (x-expires),
the connection is pumped (`process_data_events`) for a bounded window.
"""
from __future__ import annotations

import datetime
import time

import pika
import pytest

from .helpers import Collector, closed_by_broker, connect, is_minimq, pump_for, pump_until, text


def to_sink(sink: str, **more) -> dict:
    """Queue arguments that dead-letter into `sink` through the default exchange."""
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": sink, **more}


def watch(ch, queue: str) -> Collector:
    """Consume `queue` (auto-ack) into a Collector."""
    col = Collector()
    ch.basic_consume(queue, col, auto_ack=True)
    return col


def get_body(ch, queue: str):
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    return None if method is None else body


def deaths(props) -> list[dict]:
    return [{k: text(v) for k, v in d.items()} for d in props.headers["x-death"]]


# ---------------------------------------------------------------------- TTL


def test_queue_ttl_expires_message(conn, ch, unique):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink, **{"x-message-ttl": 100}))
    col = watch(ch, sink)
    t0 = time.monotonic()
    ch.basic_publish("", unique, b"m")
    pump_until(conn, lambda: len(col) == 1, what="expired message in the sink")
    assert time.monotonic() - t0 >= 0.09
    assert col.bodies == [b"m"]
    assert get_body(ch, unique) is None


def test_queue_ttl_applies_to_its_own_copy_only(conn, ch, unique):
    # A fanout to a TTL-0 queue and a plain one: the first drops its copy at once, the
    # other keeps its own (the TTL deadline belongs to one queue's copy, not the message).
    fan, plain = unique + "-fan", unique + "-plain"
    ch.exchange_declare(fan, "fanout", auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 0})
    ch.queue_declare(plain, auto_delete=True)
    ch.queue_bind(unique, fan)
    ch.queue_bind(plain, fan)
    ch.basic_publish(fan, "", b"kept")
    try:
        assert get_body(ch, plain) == b"kept"
        assert get_body(ch, unique) is None
    finally:
        ch.queue_delete(plain)


def test_queue_ttl_message_delivered_before_expiry(ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 10_000})
    ch.basic_publish("", unique, b"fresh")
    assert get_body(ch, unique) == b"fresh"


def test_per_message_expiration(conn, ch, unique):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink))
    col = watch(ch, sink)
    ch.basic_publish("", unique, b"short", pika.BasicProperties(expiration="100"))
    ch.basic_publish("", unique, b"long", pika.BasicProperties(expiration="60000"))
    pump_until(conn, lambda: len(col) == 1, what="expired message in the sink")
    assert col.bodies == [b"short"]
    assert get_body(ch, unique) == b"long"


@pytest.mark.parametrize(
    "queue_ttl, expiration",
    [(60_000, "100"), (100, "60000")],
    ids=["message-lower", "queue-lower"],
)
def test_lower_ttl_wins(conn, ch, unique, queue_ttl, expiration):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink, **{"x-message-ttl": queue_ttl}))
    col = watch(ch, sink)
    t0 = time.monotonic()
    ch.basic_publish("", unique, b"m", pika.BasicProperties(expiration=expiration))
    pump_until(conn, lambda: len(col) == 1, timeout=5, what="expiry by the lower TTL")
    assert time.monotonic() - t0 < 5
    _m, props, _b = col.items[0]
    (death,) = deaths(props)
    assert death["reason"] == "expired"
    # RabbitMQ records the message's own expiration even when the queue's TTL was the lower
    # one (checked against RabbitMQ 3.10: original-expiration '60000' with x-message-ttl 100).
    assert death["original-expiration"] == expiration
    assert props.expiration is None


def test_expired_message_never_delivered_to_late_consumer(conn, ch, unique):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, arguments=to_sink(sink, **{"x-message-ttl": 100}))
    col = watch(ch, sink)
    ch.basic_publish("", unique, b"old")
    pump_until(conn, lambda: len(col) == 1, what="expiry")
    late = Collector()
    ch.basic_consume(unique, late, auto_ack=True)
    ch.basic_publish("", unique, b"new", pika.BasicProperties(expiration="60000"))
    pump_until(conn, lambda: len(late) == 1, what="the live message")
    pump_for(conn, 0.1)
    assert late.bodies == [b"new"]
    ch.queue_delete(unique)


def test_expired_message_not_returned_by_basic_get_without_dlx(conn, ch, unique):
    # The queue under test has no DLX; a twin with a longer TTL that dead-letters into a sink
    # tells us (as an event) when the first one's TTL has certainly passed.
    fan = unique + "-fan"
    sink = unique + "-sink"
    twin = unique + "-twin"
    ch.exchange_declare(fan, "fanout", auto_delete=True)
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 100})
    ch.queue_declare(twin, auto_delete=True, arguments=to_sink(sink, **{"x-message-ttl": 200}))
    ch.queue_bind(unique, fan)
    ch.queue_bind(twin, fan)
    col = watch(ch, sink)
    ch.basic_publish(fan, "", b"gone")
    pump_until(conn, lambda: len(col) == 1, what="the twin's expiry")
    method, _p, _b = ch.basic_get(unique)
    assert method is None
    assert ch.queue_declare(unique, passive=True).method.message_count == 0


def test_per_message_expired_not_returned_by_basic_get(conn, ch, unique):
    # A plain queue (no queue arguments at all) and a per-message expiration; the twin tells
    # when 200 ms have certainly passed.
    fan = unique + "-fan"
    sink = unique + "-sink"
    twin = unique + "-twin"
    ch.exchange_declare(fan, "fanout", auto_delete=True)
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True)
    ch.queue_declare(twin, auto_delete=True, arguments=to_sink(sink, **{"x-message-ttl": 200}))
    ch.queue_bind(unique, fan)
    ch.queue_bind(twin, fan)
    col = watch(ch, sink)
    ch.basic_publish(fan, "", b"gone", pika.BasicProperties(expiration="100"))
    pump_until(conn, lambda: len(col) == 1, what="the twin's expiry")
    method, _p, _b = ch.basic_get(unique)
    assert method is None
    late = Collector()
    ch.basic_consume(unique, late, auto_ack=True)
    pump_for(conn, 0.1)
    assert late.bodies == []


def test_ttl_zero_delivers_to_waiting_consumer(conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 0})
    col = watch(ch, unique)
    ch.basic_publish("", unique, b"now")
    pump_until(conn, lambda: len(col) == 1, what="TTL 0 delivery to a waiting consumer")
    assert col.bodies == [b"now"]


def test_ttl_zero_message_expiration_delivers_to_waiting_consumer(conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    col = watch(ch, unique)
    ch.basic_publish("", unique, b"now", pika.BasicProperties(expiration="0"))
    pump_until(conn, lambda: len(col) == 1, what="expiration 0 delivery to a waiting consumer")


def test_ttl_zero_dropped_without_consumer(conn, ch, unique):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink, **{"x-message-ttl": 0}))
    col = watch(ch, sink)
    ch.basic_publish("", unique, b"nobody")
    ch.basic_publish("", unique, b"nobody2", pika.BasicProperties(expiration="0"))
    pump_until(conn, lambda: len(col) == 2, what="TTL 0 messages dead-lettered")
    assert col.bodies == [b"nobody", b"nobody2"]
    assert [deaths(p)[0]["reason"] for _m, p, _b in col.items] == ["expired", "expired"]
    assert get_body(ch, unique) is None


def test_ttl_zero_dropped_when_consumer_is_at_prefetch_limit(conn, ch, unique):
    # RabbitMQ 3.10: TTL 0 means "deliver now or never"; a consumer that cannot take the
    # message (prefetch full) does not count, the message expires.
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink, **{"x-message-ttl": 0}))
    col = watch(ch, sink)
    busy = conn.channel()
    busy.basic_qos(prefetch_count=1)
    got = Collector()
    busy.basic_consume(unique, got)
    ch.basic_publish("", unique, b"first")
    pump_until(conn, lambda: len(got) == 1, what="the first delivery")
    ch.basic_publish("", unique, b"second")
    pump_until(conn, lambda: len(col) == 1, what="the second message expiring")
    assert got.bodies == [b"first"] and col.bodies == [b"second"]


def test_queue_ttl_expires_while_consumer_is_at_prefetch_limit(conn, ch, unique):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink, **{"x-message-ttl": 100}))
    col = watch(ch, sink)
    busy = conn.channel()
    busy.basic_qos(prefetch_count=1)
    got = Collector()
    busy.basic_consume(unique, got)
    ch.basic_publish("", unique, b"held")
    ch.basic_publish("", unique, b"waiting")
    pump_until(conn, lambda: len(col) == 1, what="the waiting message expiring")
    assert got.bodies == [b"held"] and col.bodies == [b"waiting"]


def test_requeued_message_past_its_ttl_is_dead_lettered(conn, ch, unique):
    # The TTL counts from enqueueing; a message requeued after its TTL passed expires
    # instead of going back to the queue.
    sink, twin_sink, twin = unique + "-sink", unique + "-tsink", unique + "-twin"
    fan = unique + "-fan"
    ch.exchange_declare(fan, "fanout", auto_delete=True)
    for q in (sink, twin_sink):
        ch.queue_declare(q, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink, **{"x-message-ttl": 100}))
    ch.queue_declare(twin, auto_delete=True, arguments=to_sink(twin_sink, **{"x-message-ttl": 200}))
    ch.queue_bind(unique, fan)
    ch.queue_bind(twin, fan)
    col, tcol = watch(ch, sink), watch(ch, twin_sink)
    ch.basic_publish(fan, "", b"m")
    m, _p, _b = ch.basic_get(unique)
    assert m is not None
    pump_until(conn, lambda: len(tcol) == 1, what="200 ms passing")
    ch.basic_reject(m.delivery_tag, requeue=True)
    pump_until(conn, lambda: len(col) == 1, what="the requeued message expiring")
    assert deaths(col.items[0][1])[0]["reason"] == "expired"
    assert ch.basic_get(unique)[0] is None


def test_expiry_only_at_the_head_of_a_priority_queue(conn, ch, unique):
    # RabbitMQ discards expired messages only when they reach the head: a short-lived
    # low-priority message behind a long-lived high-priority one is not dead-lettered
    # (checked against RabbitMQ 3.10), but it is never delivered once expired.
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink, **{"x-max-priority": 5}))
    col = watch(ch, sink)
    ch.basic_publish("", unique, b"head", pika.BasicProperties(priority=5, expiration="60000"))
    ch.basic_publish("", unique, b"low", pika.BasicProperties(priority=1, expiration="50"))
    pump_for(conn, 0.3)
    assert col.bodies == []
    assert get_body(ch, unique) == b"head"
    assert get_body(ch, unique) is None  # "low" expired at the head: dropped, not delivered
    pump_until(conn, lambda: len(col) == 1, what="the low message dead-lettered")
    assert col.bodies == [b"low"]


BAD_EXPIRATIONS = [
    # RabbitMQ 3.10 parses with string:to_integer/1: a sign is fine, leading zeros are fine,
    # anything left over after the digits (even a space) is an error; leading space too.
    ("abc", "no_integer"),
    ("", "no_integer"),
    ("-1", "{value_negative,-1}"),
    (" 100", "no_integer"),
    ("100 ", '{leftover_string," "}'),
    ("1.5", '{leftover_string,".5"}'),
]


@pytest.mark.parametrize("expiration, detail", BAD_EXPIRATIONS, ids=[repr(e) for e, _d in BAD_EXPIRATIONS])
def test_invalid_expiration_closes_the_channel(conn, unique, expiration, detail):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=True)
    code, reply = closed_by_broker(lambda: (
        ch.basic_publish("", unique, b"m", pika.BasicProperties(expiration=expiration)),
        ch.queue_declare(unique, passive=True)))
    assert (code, reply) == (406, f"PRECONDITION_FAILED - invalid expiration '{expiration}': {detail}")


def test_too_large_expiration_closes_the_channel(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=True)
    big = "99999999999999999999"
    code, reply = closed_by_broker(lambda: (
        ch.basic_publish("", unique, b"m", pika.BasicProperties(expiration=big)),
        ch.queue_declare(unique, passive=True)))
    # RabbitMQ 3.10 formats the term with ~p, which wraps it: the text contains a newline.
    assert code == 406
    assert reply.startswith(f"PRECONDITION_FAILED - invalid expiration '{big}': {{value_too_large,")
    assert reply.replace("\n", "").replace(" ", "").endswith(big + "}")


@pytest.mark.parametrize("expiration, detail", [
    ("315360000001", "{value_too_large,315360000001}"),
    ("0999999999999999999", "{value_too_large,999999999999999999}"),  # ends at column 78: one line
    ("00999999999999999999", "{value_too_large,\n" + " " * 44 + "999999999999999999}"),
    ("99999999999999999999", "{value_too_large,\n" + " " * 44 + "99999999999999999999}"),
])
def test_expiration_past_ten_years_is_refused_in_rabbitmq_words(conn, unique, expiration, detail):
    """RabbitMQ 3.10's limit is 315360000000 ms, and Erlang's ~p breaks a term that would
    reach column 79 after its first element (checked against RabbitMQ 3.10.8)."""
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=True)
    code, reply = closed_by_broker(lambda: (
        ch.basic_publish("", unique, b"m", pika.BasicProperties(expiration=expiration)),
        ch.queue_declare(unique, passive=True)))
    assert (code, reply) == (406, f"PRECONDITION_FAILED - invalid expiration '{expiration}': {detail}")


@pytest.mark.parametrize("arg", ["x-message-ttl", "x-expires"])
def test_queue_ttl_and_expiry_past_ten_years_are_refused(ch, unique, arg):
    ch.queue_declare(unique, auto_delete=True, arguments={arg: 315360000000})
    ch.queue_delete(unique)
    code, reply = closed_by_broker(lambda: ch.queue_declare(unique, auto_delete=True, arguments={arg: 315360000001}))
    assert (code, reply) == (406, f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{unique}' in vhost '/': "
                                  "{value_too_large,315360000001}")


@pytest.mark.parametrize("expiration", ["+5000", "05000", "4294967296"])
def test_unusual_but_valid_expirations(ch, unique, expiration):
    ch.queue_declare(unique, auto_delete=True)
    ch.basic_publish("", unique, b"m", pika.BasicProperties(expiration=expiration))
    assert get_body(ch, unique) == b"m"


def test_ttl_dead_letter_to_itself_is_dropped(conn, ch, unique):
    # A queue dead-lettering expired messages back to itself: the cycle rule drops the
    # message on its first way back (a monitor queue on the same DLX sees one copy).
    fan, mon = unique + "-fan", unique + "-mon"
    ch.exchange_declare(fan, "fanout", auto_delete=True)
    ch.queue_declare(mon, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments={"x-message-ttl": 20, "x-dead-letter-exchange": fan})
    ch.queue_bind(unique, fan)
    ch.queue_bind(mon, fan)
    col = watch(ch, mon)
    ch.basic_publish("", unique, b"self")
    pump_until(conn, lambda: len(col) == 1, what="the first death")
    pump_for(conn, 0.2)
    assert len(col) == 1
    assert get_body(ch, unique) is None


# ----------------------------------------------------------- dead-lettering


def test_expired_dead_letter_headers(conn, ch, unique):
    ex = unique + "-x"
    sink = unique + "-sink"
    ch.exchange_declare(ex, "direct", auto_delete=True)
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink))
    ch.queue_bind(unique, ex, routing_key="rk")
    col = watch(ch, sink)
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    ch.basic_publish(ex, "rk", b"m", pika.BasicProperties(expiration="50", headers={"mine": "kept"},
                                                          message_id="id-1"))
    pump_until(conn, lambda: len(col) == 1, what="dead-lettered message")
    method, props, body = col.items[0]
    assert body == b"m"
    assert method.exchange == "" and method.routing_key == sink
    assert props.expiration is None
    assert props.message_id == "id-1"
    h = {k: text(v) for k, v in props.headers.items()}
    assert h["mine"] == "kept"
    (death,) = deaths(props)
    assert death["count"] == 1
    assert death["reason"] == "expired"
    assert death["queue"] == unique
    assert death["exchange"] == ex
    assert death["routing-keys"] == ["rk"]
    assert death["original-expiration"] == "50"
    assert isinstance(death["time"], datetime.datetime)
    after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    assert before - datetime.timedelta(seconds=1) <= death["time"] <= after
    assert h["x-first-death-reason"] == "expired"
    assert h["x-first-death-queue"] == unique
    assert h["x-first-death-exchange"] == ex
    if is_minimq(conn):
        # RabbitMQ 3.10 has no x-last-death-* headers (added in 3.13).
        assert h["x-last-death-reason"] == "expired"
        assert h["x-last-death-queue"] == unique
        assert h["x-last-death-exchange"] == ex
    else:
        assert "x-last-death-reason" not in h


def test_queue_ttl_death_has_no_original_expiration(conn, ch, unique):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink, **{"x-message-ttl": 50}))
    col = watch(ch, sink)
    ch.basic_publish("", unique, b"m")
    pump_until(conn, lambda: len(col) == 1, what="dead-lettered message")
    (death,) = deaths(col.items[0][1])
    assert "original-expiration" not in death
    assert death["routing-keys"] == [unique]


@pytest.mark.parametrize("how", ["reject", "nack", "nack-multiple"])
def test_rejected_dead_letter(conn, ch, unique, how):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink))
    col = watch(ch, sink)
    ch.basic_publish("", unique, b"a")
    ch.basic_publish("", unique, b"b")
    m1, _p, _b = ch.basic_get(unique)
    m2, _p, _b = ch.basic_get(unique)
    if how == "reject":
        ch.basic_reject(m1.delivery_tag, requeue=False)
        ch.basic_reject(m2.delivery_tag, requeue=False)
    elif how == "nack":
        ch.basic_nack(m1.delivery_tag, requeue=False)
        ch.basic_nack(m2.delivery_tag, requeue=False)
    else:
        ch.basic_nack(m2.delivery_tag, multiple=True, requeue=False)
    pump_until(conn, lambda: len(col) == 2, what="rejected messages in the sink")
    assert col.bodies == [b"a", b"b"]
    for _m, props, _b in col.items:
        (death,) = deaths(props)
        assert death["reason"] == "rejected" and death["queue"] == unique and death["count"] == 1
        assert text(props.headers["x-first-death-reason"]) == "rejected"
    assert ch.queue_declare(unique, passive=True).method.message_count == 0


def test_requeue_true_does_not_dead_letter(conn, ch, unique):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink))
    ch.basic_publish("", unique, b"a")
    m, _p, _b = ch.basic_get(unique)
    ch.basic_reject(m.delivery_tag, requeue=True)
    m, _p, body = ch.basic_get(unique, auto_ack=True)
    assert body == b"a" and m.redelivered
    assert ch.queue_declare(sink, passive=True).method.message_count == 0


def test_maxlen_dead_letter(conn, ch, unique):
    sink = unique + "-sink"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink, **{"x-max-length": 1}))
    col = watch(ch, sink)
    for body in (b"1", b"2", b"3"):
        ch.basic_publish("", unique, body)
    pump_until(conn, lambda: len(col) == 2, what="overflowed messages in the sink")
    assert col.bodies == [b"1", b"2"]
    assert [deaths(p)[0]["reason"] for _m, p, _b in col.items] == ["maxlen", "maxlen"]
    assert get_body(ch, unique) == b"3"


def test_dead_letter_routing_key_replaces_key(conn, ch, unique):
    dlx = unique + "-dlx"
    sink = unique + "-sink"
    wrong = unique + "-wrong"
    ch.exchange_declare(dlx, "direct", auto_delete=True)
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(wrong, auto_delete=True)
    ch.queue_bind(sink, dlx, routing_key="dead")
    ch.queue_bind(wrong, dlx, routing_key="orig")
    ch.queue_declare(unique, auto_delete=True, arguments={
        "x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead"})
    ch.queue_bind(unique, "amq.direct", routing_key="orig")
    col = watch(ch, sink)
    ch.basic_publish("amq.direct", "orig", b"m")
    m, _p, _b = ch.basic_get(unique)
    ch.basic_reject(m.delivery_tag, requeue=False)
    pump_until(conn, lambda: len(col) == 1, what="dead-lettered message")
    method, props, _b = col.items[0]
    assert method.exchange == dlx and method.routing_key == "dead"
    (death,) = deaths(props)
    assert death["routing-keys"] == ["orig"] and death["exchange"] == "amq.direct"
    assert ch.queue_declare(wrong, passive=True).method.message_count == 0


def test_dead_letter_without_dlrk_routes_by_original_keys_including_cc(conn, ch, unique):
    dlx = unique + "-dlx"
    a, b = unique + "-a", unique + "-b"
    ch.exchange_declare(dlx, "direct", auto_delete=True)
    for q, key in ((a, "orig"), (b, "cc-key")):
        ch.queue_declare(q, auto_delete=True)
        ch.queue_bind(q, dlx, routing_key=key)
    ch.queue_declare(unique, auto_delete=True, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_bind(unique, "amq.direct", routing_key="orig")
    ca, cb = watch(ch, a), watch(ch, b)
    ch.basic_publish("amq.direct", "orig", b"m", pika.BasicProperties(headers={"CC": ["cc-key"]}))
    m, _p, _b = ch.basic_get(unique)
    ch.basic_reject(m.delivery_tag, requeue=False)
    pump_until(conn, lambda: len(ca) == 1 and len(cb) == 1, what="copies by key and CC")
    (death,) = deaths(ca.items[0][1])
    assert death["routing-keys"] == ["orig", "cc-key"]


def test_dead_letter_routing_key_removes_cc_header(conn, ch, unique):
    # RabbitMQ 3.10 (rabbit_dead_letter:make_msg): with x-dead-letter-routing-key set, the
    # dead-lettered message is routed by that key only and its CC header is removed (so it
    # cannot route the message again on a later hop); x-death's routing-keys keeps the
    # original key and the CC keys.
    sink = unique + "-sink"
    other = unique + "-other"
    ch.queue_declare(sink, auto_delete=True)
    ch.queue_declare(other, auto_delete=True)
    ch.queue_declare(unique, auto_delete=True, arguments=to_sink(sink))
    col = watch(ch, sink)
    ch.basic_publish("", unique, b"m", pika.BasicProperties(headers={"CC": [other]}))
    m, _p, _b = ch.basic_get(unique)
    ch.basic_reject(m.delivery_tag, requeue=False)
    pump_until(conn, lambda: len(col) == 1, what="dead-lettered message")
    props = col.items[0][1]
    assert deaths(props)[0]["routing-keys"] == [unique, other]
    assert "CC" not in props.headers


def test_missing_dead_letter_exchange_drops_silently(conn, ch, unique):
    ch.queue_declare(unique, auto_delete=True, arguments={"x-dead-letter-exchange": unique + "-nowhere"})
    ch.basic_publish("", unique, b"m")
    m, _p, _b = ch.basic_get(unique)
    ch.basic_reject(m.delivery_tag, requeue=False)
    # The channel stays usable and the message is gone.
    assert ch.queue_declare(unique, passive=True).method.message_count == 0
    ch.basic_publish("", unique, b"next")
    assert get_body(ch, unique) == b"next"


def test_retry_pattern_counts_cycles(conn, ch, unique):
    """work --(reject)--> retry (TTL) --(expired)--> work: x-death counts 1, 2, 3."""
    work, retry = unique + "-work", unique + "-retry"
    ch.queue_declare(work, auto_delete=True, arguments=to_sink(retry))
    ch.queue_declare(retry, auto_delete=True, arguments=to_sink(work, **{"x-message-ttl": 30}))
    seen: list[dict] = []
    done = []

    def on_message(c, method, props, body):
        xd = deaths(props) if props.headers and "x-death" in props.headers else []
        seen.append({(d["queue"], d["reason"]): d["count"] for d in xd})
        if len(seen) < 4:
            c.basic_reject(method.delivery_tag, requeue=False)
        else:
            c.basic_ack(method.delivery_tag)
            done.append(body)

    ch.basic_consume(work, on_message)
    ch.basic_publish("", work, b"job")
    pump_until(conn, lambda: done, what="the fourth delivery")
    assert seen[0] == {}
    for n in (1, 2, 3):
        assert seen[n] == {(work, "rejected"): n, (retry, "expired"): n}
    assert done == [b"job"]


def test_retry_pattern_x_death_order_and_first_death(conn, ch, unique):
    work, retry = unique + "-work", unique + "-retry"
    ch.queue_declare(work, auto_delete=True, arguments=to_sink(retry))
    ch.queue_declare(retry, auto_delete=True, arguments=to_sink(work, **{"x-message-ttl": 30}))
    got = []

    def on_message(c, method, props, body):
        got.append(props)
        if len(got) < 3:
            c.basic_reject(method.delivery_tag, requeue=False)
        else:
            c.basic_ack(method.delivery_tag)

    ch.basic_consume(work, on_message)
    ch.basic_publish("", work, b"job")
    pump_until(conn, lambda: len(got) == 3, what="the third delivery")
    props = got[2]
    # The most recent death comes first; the entry of a (queue, reason) seen before moves to
    # the front with its count incremented.
    order = [(d["queue"], d["reason"], d["count"]) for d in deaths(props)]
    assert order == [(retry, "expired", 2), (work, "rejected", 2)]
    assert text(props.headers["x-first-death-queue"]) == work
    assert text(props.headers["x-first-death-reason"]) == "rejected"
    if is_minimq(conn):
        assert text(props.headers["x-last-death-queue"]) == retry
        assert text(props.headers["x-last-death-reason"]) == "expired"


def test_ttl_only_cycle_is_broken(conn, ch, unique):
    """a --(expired)--> b --(expired)--> a: the message is dropped on its way back to a."""
    a, b, mon = unique + "-a", unique + "-b", unique + "-mon"
    fa, fb = unique + "-fa", unique + "-fb"
    for x in (fa, fb):
        ch.exchange_declare(x, "fanout", auto_delete=True)
    ch.queue_declare(mon, auto_delete=True)
    ch.queue_declare(a, arguments={"x-message-ttl": 20, "x-dead-letter-exchange": fa})
    ch.queue_declare(b, arguments={"x-message-ttl": 20, "x-dead-letter-exchange": fb})
    ch.queue_bind(b, fa)
    ch.queue_bind(mon, fa)
    ch.queue_bind(a, fb)
    ch.queue_bind(mon, fb)
    col = watch(ch, mon)
    ch.basic_publish("", a, b"loop")
    pump_until(conn, lambda: len(col) == 2, what="both deaths seen by the monitor")
    # A loop would keep copying into the monitor every ~20 ms; within 0.4 s nothing more comes.
    pump_for(conn, 0.4)
    try:
        assert len(col) == 2
        assert [deaths(p)[0]["queue"] for _m, p, _b in col.items] == [a, b]
        assert ch.queue_declare(a, passive=True).method.message_count == 0
        assert ch.queue_declare(b, passive=True).method.message_count == 0
    finally:
        ch.queue_delete(a)
        ch.queue_delete(b)


def test_ttl_cycle_after_a_rejection_keeps_cycling(conn, ch, unique):
    # Open in the docs: a message rejected once, then cycling through two TTL queues. Checked
    # against RabbitMQ 3.10: it is NOT dropped (any 'rejected' in the message's x-death
    # history makes the cycle "not fully automatic"), it keeps cycling.
    q1, q2, q3, mon = (unique + s for s in ("-1", "-2", "-3", "-mon"))
    f2, f3 = unique + "-f2", unique + "-f3"
    for x in (f2, f3):
        ch.exchange_declare(x, "fanout", auto_delete=True)
    ch.queue_declare(mon, auto_delete=True)
    ch.queue_declare(q1, arguments=to_sink(q2))
    ch.queue_declare(q2, arguments={"x-message-ttl": 20, "x-dead-letter-exchange": f2})
    ch.queue_declare(q3, arguments={"x-message-ttl": 20, "x-dead-letter-exchange": f3})
    ch.queue_bind(q3, f2)
    ch.queue_bind(mon, f2)
    ch.queue_bind(q2, f3)
    ch.queue_bind(mon, f3)
    col = watch(ch, mon)
    try:
        ch.basic_publish("", q1, b"c")
        m, _p, _b = ch.basic_get(q1)
        ch.basic_reject(m.delivery_tag, requeue=False)
        pump_until(conn, lambda: len(col) >= 4, what="the cycle going round twice")
        counts = {(d["queue"], d["reason"]): d["count"] for d in deaths(col.items[3][1])}
        assert counts[(q2, "expired")] == 2 and counts[(q3, "expired")] == 2
        assert counts[(q1, "rejected")] == 1
    finally:
        for q in (q1, q2, q3):
            ch.queue_delete(q)


# ------------------------------------------------------------------ x-expires


def gone(conn, queue: str) -> bool:
    """Passive declare on a throwaway channel: True when the broker says 404."""
    probe = conn.channel()
    code, _text = 0, ""
    try:
        probe.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        code = exc.reply_code
    else:
        probe.close()
    return code == 404


def test_x_expires_deletes_unused_queue(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-expires": 300})
    assert not gone(conn, unique)  # well before its expiry
    pump_for(conn, 0.6)
    assert gone(conn, unique)


def test_x_expires_deletes_queue_with_messages(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-expires": 200})
    ch.basic_publish("", unique, b"m")  # publishing is not "use"
    pump_for(conn, 0.5)
    assert gone(conn, unique)


def test_x_expires_consumer_keeps_queue_alive_then_expires_after_cancel(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-expires": 200})
    tag = ch.basic_consume(unique, lambda *a: None, auto_ack=True)
    pump_for(conn, 0.5)
    assert not gone(conn, unique)
    ch.basic_cancel(tag)
    pump_for(conn, 0.5)
    assert gone(conn, unique)


def test_x_expires_expires_after_consumer_channel_closes(amqp_url, conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-expires": 200})
    other = connect(amqp_url)
    try:
        other.channel().basic_consume(unique, lambda *a: None, auto_ack=True)
        pump_for(conn, 0.4)
        assert not gone(conn, unique)
    finally:
        other.close()
    pump_for(conn, 0.5)
    assert gone(conn, unique)


def test_x_expires_redeclare_resets_the_lease(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-expires": 400})
    for _ in range(3):
        pump_for(conn, 0.2)
        ch.queue_declare(unique, arguments={"x-expires": 400})
    # 0.6 s after creation, but only 0.2 s after the last redeclare.
    assert not gone(conn, unique)
    pump_for(conn, 0.7)
    assert gone(conn, unique)


def test_x_expires_basic_get_resets_the_lease(conn, ch, unique):
    ch.queue_declare(unique, arguments={"x-expires": 400})
    for _ in range(3):
        pump_for(conn, 0.2)
        ch.basic_get(unique)
    # 0.6 s after creation, but only 0.2 s after the last basic.get.
    assert not gone(conn, unique)
    pump_for(conn, 0.7)
    assert gone(conn, unique)


def test_x_expires_passive_declare_resets_the_lease(conn, ch, unique):
    # Open in the docs ("not redeclared"): checked against RabbitMQ 3.10, a passive
    # queue.declare (queue stat) re-arms the expiry timer of a classic queue, so a queue
    # polled with passive declares every 0.15 s never expires with x-expires 400.
    ch.queue_declare(unique, arguments={"x-expires": 400})
    for _ in range(5):
        pump_for(conn, 0.15)
        assert not gone(conn, unique)
    ch.queue_delete(unique)


def test_x_expires_zero_and_negative_rejected(ch, conn, unique):
    code, text_ = closed_by_broker(lambda: ch.queue_declare(unique, arguments={"x-expires": 0}))
    assert code == 406
    assert text_ == f"PRECONDITION_FAILED - invalid arg 'x-expires' for queue '{unique}' in vhost '/': {{value_zero,0}}"
