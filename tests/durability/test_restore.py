"""What a restart brings back (and what it must not), through a real broker process.

Every test runs twice: restart by SIGTERM (graceful shutdown) and by SIGKILL (kill -9). Before
a kill the test makes one confirmed persistent publish (a "barrier"): its confirm means the
store has synced everything logged before it, so what the test asserts is what the broker
had promised.
"""
from __future__ import annotations

import decimal
import threading

import pika
import pika.exceptions
import pytest

from minimq.codec import BasicProperties, encode_content_header
from minimq.codec.values import Int8, Int16, Int64, Timestamp, UInt8

from .durable_support import Publisher, bodies, exists, message_count, read_queue

P = pika.BasicProperties(delivery_mode=2)
T = pika.BasicProperties(delivery_mode=1)

RESTARTS = ["sigterm", "kill9"]


def barrier(broker, conn) -> None:
    """A confirmed persistent publish: everything logged before it is on disk."""
    with broker.watchdog(10, "confirm of a persistent publish (barrier)"):
        ch = conn.channel()
        ch.queue_declare("barrier", durable=True)
        ch.confirm_delivery()
        ch.basic_publish("", "barrier", b"b", P)
        ch.queue_purge("barrier")
        ch.basic_publish("", "barrier", b"b", P)  # the purge itself is behind this confirm
        ch.close()


def restart(broker, conn, how: str):
    if how == "kill9":
        barrier(broker, conn)
        broker.restart(kill=True)
    else:
        conn.close()
        broker.restart()
    return broker.pika()


@pytest.mark.parametrize("how", RESTARTS)
def test_topology_restored_transient_not(broker, how):
    conn = broker.pika()
    ch = conn.channel()
    # durable: exchanges of each kind, with arguments
    ch.exchange_declare("d.topic", "topic", durable=True, arguments={"alternate-exchange": "d.ae"})
    ch.exchange_declare("d.ae", "fanout", durable=True)
    ch.exchange_declare("d.headers", "headers", durable=True)
    ch.exchange_declare("d.internal", "direct", durable=True, internal=True)
    ch.exchange_declare("d.autodel", "direct", durable=True, auto_delete=True)
    # transient
    ch.exchange_declare("t.direct", "direct", durable=False)
    qargs = {"x-max-priority": 5, "x-message-ttl": 60000, "x-max-length": 100, "x-dead-letter-exchange": "d.ae",
             "x-queue-mode": "lazy", "x-custom": "kept"}
    ch.queue_declare("d.q", durable=True, arguments=qargs)
    ch.queue_declare("d.ae.q", durable=True)
    ch.queue_declare("d.hq", durable=True)
    ch.queue_declare("d.via-internal", durable=True)
    ch.queue_declare("d.unbound", durable=True)
    ch.queue_declare("t.q", durable=False)
    ch.queue_declare("d.autodel.q", durable=True, auto_delete=True)
    ch.queue_declare("d.exclusive", durable=True, exclusive=True)
    # bindings between durable ends (including exchange-to-exchange and with arguments)
    ch.queue_bind("d.q", "d.topic", "a.*.c")
    ch.queue_bind("d.ae.q", "d.ae")
    ch.queue_bind("d.hq", "d.headers", "", arguments={"x-match": "all", "k": "v", "n": 7})
    ch.exchange_bind("d.internal", "d.topic", "to.internal")
    ch.queue_bind("d.via-internal", "d.internal", "to.internal")
    ch.queue_bind("d.unbound", "d.topic", "gone.#")
    ch.queue_unbind("d.unbound", "d.topic", "gone.#")
    ch.queue_bind("d.unbound", "d.topic", "kept.#")
    # bindings with a transient end are not restored
    ch.queue_bind("t.q", "d.topic", "a.*.c")
    ch.queue_bind("d.q", "t.direct", "x")
    # a deleted durable exchange and queue stay deleted
    ch.exchange_declare("d.deleted", "fanout", durable=True)
    ch.exchange_delete("d.deleted")
    ch.queue_declare("d.deleted.q", durable=True)
    ch.queue_delete("d.deleted.q")

    conn2 = restart(broker, conn, how)
    for name in ("d.topic", "d.ae", "d.headers", "d.internal", "d.autodel"):
        assert exists(conn2, exchange=name), name
    for name in ("d.q", "d.ae.q", "d.hq", "d.via-internal", "d.unbound", "d.autodel.q"):
        assert exists(conn2, queue=name), name
    for name in ("t.direct", "d.deleted"):
        assert not exists(conn2, exchange=name), name
    for name in ("t.q", "d.exclusive", "d.deleted.q"):
        assert not exists(conn2, queue=name), name

    ch = conn2.channel()
    # Same declarations are accepted; inequivalent ones are refused: the kinds, flags and
    # arguments came back as they were.
    ch.exchange_declare("d.topic", "topic", durable=True, arguments={"alternate-exchange": "d.ae"})
    ch.queue_declare("d.q", durable=True, arguments=qargs)
    for bad in (
        lambda c: c.exchange_declare("d.topic", "direct", durable=True),
        lambda c: c.exchange_declare("d.topic", "topic", durable=True, arguments={"alternate-exchange": "x"}),
        lambda c: c.exchange_declare("d.autodel", "direct", durable=True, auto_delete=False),
        lambda c: c.queue_declare("d.q", durable=True, arguments={**qargs, "x-max-priority": 6}),
        lambda c: c.queue_declare("d.q", durable=True, arguments={**qargs, "x-message-ttl": 1}),
        lambda c: c.queue_declare("d.autodel.q", durable=True, auto_delete=False),
    ):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            bad(ch)
        assert exc.value.reply_code == 406
        ch = conn2.channel()

    # Bindings: routing through the restored graph.
    ch.confirm_delivery()
    ch.basic_publish("d.topic", "a.b.c", b"topic", T)  # -> d.q
    ch.basic_publish("d.topic", "no.route", b"to-ae", T)  # -> alternate exchange -> d.ae.q
    ch.basic_publish("d.headers", "", b"hdr-yes", pika.BasicProperties(headers={"k": "v", "n": 7}))
    ch.basic_publish("d.headers", "", b"hdr-no", pika.BasicProperties(headers={"k": "v", "n": 8}))
    ch.basic_publish("d.topic", "to.internal", b"e2e", T)  # -> d.internal -> d.via-internal
    ch.basic_publish("d.topic", "gone.x", b"unbound", T)  # unbind persisted: -> AE
    ch.basic_publish("d.topic", "kept.x", b"kept", T)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:  # still internal
        ch.basic_publish("d.internal", "to.internal", b"x", T)
    assert exc.value.reply_code == 403
    assert bodies(read_queue(conn2, "d.q")) == [b"topic"]
    assert bodies(read_queue(conn2, "d.ae.q")) == [b"to-ae", b"unbound"]
    assert bodies(read_queue(conn2, "d.hq")) == [b"hdr-yes"]
    assert bodies(read_queue(conn2, "d.via-internal")) == [b"e2e"]
    assert bodies(read_queue(conn2, "d.unbound")) == [b"kept"]
    conn2.close()


RICH = BasicProperties(
    content_type="application/x-test",
    content_encoding="identity",
    headers={
        "str": "text ✓",
        "int": 2**40,
        "neg": -7,
        "bool": True,
        "float": 1.5,
        "dec": decimal.Decimal("3.14"),
        "bytes": b"\x00\xff raw",
        "list": [1, "two", [3], {"four": 4}],
        "table": {"nested": {"deep": "yes"}, "none": None},
        "i8": Int8(-3),
        "u8": UInt8(200),
        "i16": Int16(-300),
        "i64": Int64(-(2**60)),
        "ts": Timestamp(1_700_000_000),
    },
    delivery_mode=2,
    priority=3,
    correlation_id="corr-1",
    reply_to="replies",
    message_id="m-1",
    timestamp=1_700_000_123,
    type="kind",
    user_id="guest",
    app_id="durability-test",
)


@pytest.mark.parametrize("how", RESTARTS)
def test_persistent_messages_restored_in_order_byte_identical(broker, how):
    pub = Publisher(broker.port)
    pub.confirm_select()
    pub.declare("q")
    header = encode_content_header(len(b"rich-1"), RICH)
    pub.publish_confirmed("", "q", 1, props=RICH, body=lambda s: b"rich-%d" % s)
    for i in range(2, 101):
        pub.publish_confirmed("", "q", 1, props=BasicProperties(delivery_mode=2, message_id=str(i)),
                              body=lambda s: b"m%d" % s)
    pub.close()
    conn = broker.pika()
    conn2 = restart(broker, conn, how)
    pub = Publisher(broker.port)
    first = pub.get("q")
    assert first is not None
    method, got_header, body = first
    assert body == b"rich-1"
    assert got_header == header, "content header not byte-identical after restart"
    assert not method.redelivered
    rest = []
    while (item := pub.get("q")) is not None:
        rest.append(item)
    assert [b for _m, _h, b in rest] == [b"m%d" % i for i in range(2, 101)]
    assert all(not m.redelivered for m, _h, _b in rest)
    assert [h for _m, h, _b in rest] == [
        encode_content_header(len(b"m%d" % i), BasicProperties(delivery_mode=2, message_id=str(i)))
        for i in range(2, 101)
    ]
    pub.close()
    conn2.close()


@pytest.mark.parametrize("how", RESTARTS)
def test_delivered_unacked_redelivered_acked_gone(broker, how):
    conn = broker.pika()
    ch = conn.channel()
    ch.queue_declare("q", durable=True)
    ch.confirm_delivery()
    for i in range(1, 11):
        ch.basic_publish("", "q", b"%d" % i, P)
    # Deliver 1..4 without ack; ack 2 and 4 -> 1 and 3 are delivered-unacked.
    tags = {}
    for i in range(1, 5):
        m, _p, body = ch.basic_get("q", auto_ack=False)
        tags[body] = m.delivery_tag
    ch.basic_ack(tags[b"2"])
    ch.basic_ack(tags[b"4"])
    # 5 delivered and nacked back (requeued, redelivered); 6 rejected without requeue (gone);
    # 7 acked on another channel
    ch2 = conn.channel()
    m5, _p, _b = ch2.basic_get("q", auto_ack=False)
    m6, _p, _b = ch2.basic_get("q", auto_ack=False)
    m7, _p, b7 = ch2.basic_get("q", auto_ack=False)
    assert b7 == b"7"
    ch2.basic_nack(m5.delivery_tag, requeue=True)
    ch2.basic_reject(m6.delivery_tag, requeue=False)
    ch2.basic_ack(m7.delivery_tag)
    conn2 = restart(broker, conn, how)
    got = read_queue(conn2, "q")
    assert [(g.body, g.redelivered) for g in got] == [
        (b"1", True), (b"3", True), (b"5", True), (b"8", False), (b"9", False), (b"10", False)
    ]
    conn2.close()


@pytest.mark.parametrize("how", RESTARTS)
def test_transient_messages_and_transient_queues_are_gone(broker, how):
    conn = broker.pika()
    ch = conn.channel()
    ch.queue_declare("durable", durable=True)
    ch.queue_declare("transient", durable=False)
    ch.exchange_declare("fan", "fanout", durable=True)
    ch.queue_bind("durable", "fan")
    ch.queue_bind("transient", "fan")
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", "durable", b"t%d" % i, T)
        ch.basic_publish("", "durable", b"p%d" % i, P)
        ch.basic_publish("", "transient", b"x%d" % i, P)
        ch.basic_publish("fan", "", b"f%d" % i, P)
    conn2 = restart(broker, conn, how)
    assert bodies(read_queue(conn2, "durable")) == [b for i in range(10) for b in (b"p%d" % i, b"f%d" % i)]
    assert not exists(conn2, queue="transient")
    conn2.close()


@pytest.mark.parametrize("how", RESTARTS)
def test_purged_and_deleted_queues_messages_do_not_come_back(broker, how):
    conn = broker.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    for q in ("purged", "deleted", "redeclared"):
        ch.queue_declare(q, durable=True)
        for i in range(20):
            ch.basic_publish("", q, b"old%d" % i, P)
    ch.queue_purge("purged")
    ch.basic_publish("", "purged", b"after-purge", P)
    ch.queue_delete("deleted")
    ch.queue_delete("redeclared")
    ch.queue_declare("redeclared", durable=True)
    ch.basic_publish("", "redeclared", b"new", P)
    conn2 = restart(broker, conn, how)
    assert bodies(read_queue(conn2, "purged")) == [b"after-purge"]
    assert not exists(conn2, queue="deleted")
    assert bodies(read_queue(conn2, "redeclared")) == [b"new"]
    # and once more: nothing old resurfaces on a second restart either
    ch = conn2.channel()
    ch.queue_delete("redeclared")
    ch.queue_declare("redeclared", durable=True)
    conn3 = restart(broker, conn2, "sigterm")  # (kill -9 after a restart: see test_writes_resume_after_restart)
    assert message_count(conn3, "redeclared") == 0
    assert message_count(conn3, "purged") == 0
    conn3.close()


@pytest.mark.parametrize("how", RESTARTS)
def test_purge_keeps_unacked_messages_that_come_back(broker, how):
    """queue.purge removes ready messages only (RabbitMQ); an unacked one that is requeued
    afterwards is in the queue again - and must still be there after a restart."""
    conn = broker.pika()
    ch = conn.channel()
    ch.queue_declare("q", durable=True)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", "q", b"m%d" % i, P)
    holder = conn.channel()
    m0, _p, b0 = holder.basic_get("q", auto_ack=False)
    assert b0 == b"m0"
    assert ch.queue_purge("q").method.message_count == 2
    holder.basic_nack(m0.delivery_tag, requeue=True)
    assert message_count(conn, "q") == 1  # m0 is back
    conn2 = restart(broker, conn, how)
    got = read_queue(conn2, "q")
    assert [(g.body, g.redelivered) for g in got] == [(b"m0", True)]
    conn2.close()


@pytest.mark.parametrize("how", RESTARTS)
def test_priority_order_holds_after_restart(broker, how):
    conn = broker.pika()
    ch = conn.channel()
    ch.queue_declare("prio", durable=True, arguments={"x-max-priority": 9})
    ch.confirm_delivery()
    order = [0, 5, 9, 1, 5, 3, 9, 0, 7]
    for i, p in enumerate(order):
        ch.basic_publish("", "prio", b"%d-%d" % (p, i), pika.BasicProperties(delivery_mode=2, priority=p))
    expected = [b"%d-%d" % (p, i) for i, p in sorted(enumerate(order), key=lambda x: (-x[1], x[0]))]
    conn2 = restart(broker, conn, how)
    ch = conn2.channel()
    ch.basic_publish("", "prio", b"8-new", pika.BasicProperties(delivery_mode=1, priority=8))
    got = bodies(read_queue(conn2, "prio"))
    want = expected[:2] + [b"8-new"] + expected[2:]
    assert got == want, f"priority order lost after restart: {got}"
    conn2.close()


def _dead_letters(conn, queue: str, n: int, timeout: float) -> list:
    """Wait (consuming) for n messages on the dead-letter queue."""
    ch = conn.channel()
    out = []
    for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=timeout):
        if method is None:
            break
        out.append((body, props))
        if len(out) == n:
            break
    ch.cancel()
    return out


@pytest.mark.parametrize("how", RESTARTS)
def test_queue_message_ttl_still_applies_after_restart(broker, how):
    conn = broker.pika()
    ch = conn.channel()
    ch.exchange_declare("dlx", "fanout", durable=True)
    ch.queue_declare("dead", durable=True)
    ch.queue_bind("dead", "dlx")
    ch.queue_declare("ttl", durable=True, arguments={"x-message-ttl": 1500, "x-dead-letter-exchange": "dlx"})
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", "ttl", b"old%d" % i, P)
    conn2 = restart(broker, conn, how)
    ch = conn2.channel()
    ch.confirm_delivery()
    ch.basic_publish("", "ttl", b"new", T)  # transient: the queue's TTL applies to new messages too
    dead = _dead_letters(conn2, "dead", 4, timeout=10)
    assert sorted(b for b, _p in dead) == [b"new", b"old0", b"old1", b"old2"]
    assert all(p.headers["x-death"][0]["reason"] == "expired" for _b, p in dead)
    assert message_count(conn2, "ttl") == 0
    conn2.close()


@pytest.mark.parametrize("how", RESTARTS)
def test_per_message_expiration_still_applies_after_restart(broker, how):
    conn = broker.pika()
    ch = conn.channel()
    ch.exchange_declare("dlx", "fanout", durable=True)
    ch.queue_declare("dead", durable=True)
    ch.queue_bind("dead", "dlx")
    ch.queue_declare("q", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
    ch.confirm_delivery()
    ch.basic_publish("", "q", b"expiring", pika.BasicProperties(delivery_mode=2, expiration="1500"))
    ch.basic_publish("", "q", b"forever", P)
    conn2 = restart(broker, conn, how)
    dead = _dead_letters(conn2, "dead", 1, timeout=6)
    assert [b for b, _p in dead] == [b"expiring"], "per-message TTL (expiration) not applied after restart"
    assert bodies(read_queue(conn2, "q")) == [b"forever"]
    conn2.close()


@pytest.mark.parametrize("how", RESTARTS)
def test_writes_and_confirms_resume_after_restart(broker, how):
    """After a restart that recovered something, the store must keep writing: persistent
    confirms must arrive, and what they confirm must survive the next kill -9."""
    conn = broker.pika()
    ch = conn.channel()
    ch.queue_declare("q", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "q", b"before", P)
    conn2 = restart(broker, conn, how)
    ch = conn2.channel()
    ch.queue_declare("q2", durable=True)
    ch.confirm_delivery()
    with broker.watchdog(10, "confirm of a persistent publish after a restart"):
        ch.basic_publish("", "q", b"after", P)
    broker.restart(kill=True)
    conn3 = broker.pika()
    assert bodies(read_queue(conn3, "q")) == [b"before", b"after"]
    assert exists(conn3, queue="q2")
    conn3.close()


def test_exclusive_durable_queue_not_restored_after_kill(broker):
    """An exclusive queue dies with its connection - a kill -9 included."""
    conn = broker.pika()
    ch = conn.channel()
    ch.queue_declare("excl", durable=True, exclusive=True)
    ch.confirm_delivery()
    ch.basic_publish("", "excl", b"x", P)
    barrier(broker, conn)
    broker.restart(kill=True)
    conn2 = broker.pika()
    assert not exists(conn2, queue="excl")
    conn2.close()


def test_recovery_is_logged(broker):
    conn = broker.pika()
    ch = conn.channel()
    ch.exchange_declare("x", "direct", durable=True)
    ch.queue_declare("q", durable=True)
    ch.confirm_delivery()
    for _ in range(5):
        ch.basic_publish("", "q", b"m", P)
    conn.close()
    broker.restart()
    log = broker.log()
    import re

    m = re.search(r"data dir (\S+): recovered (\d+) queues, (\d+) exchanges, (\d+) messages in \d+\.\d\ds", log)
    assert m, log
    assert int(m.group(2)) >= 1 and int(m.group(3)) >= 1 and int(m.group(4)) == 5


def test_declarations_survive_a_kill_right_after_declare_ok(broker):
    """No barrier here: the declare-ok alone must be enough to survive a kill -9 (the record
    reaches the OS before the reply; only power loss needs the next fsync)."""
    conn = broker.pika()
    ch = conn.channel()
    ch.exchange_declare("k.x", "fanout", durable=True)
    ch.queue_declare("k.q", durable=True)
    ch.queue_bind("k.q", "k.x")
    broker.restart(kill=True)
    conn2 = broker.pika()
    assert exists(conn2, exchange="k.x")
    assert exists(conn2, queue="k.q")
    ch2 = conn2.channel()
    ch2.confirm_delivery()
    ch2.basic_publish("k.x", "", b"through the restored binding", P)
    assert bodies(read_queue(conn2, "k.q")) == [b"through the restored binding"]
    conn2.close()
