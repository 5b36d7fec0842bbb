"""Who gets connection.blocked, and when: RabbitMQ 3.10's rules, seen on the wire.

Recorded against a private RabbitMQ 3.10 node (alarms raised with
`rabbitmqctl set_vm_memory_high_watermark 0.0000001` / `set_disk_free_limit 1000GB`):
an idle or consumer-only connection is never told; a connection that published before the
alarm is told only when it publishes again; one opened during the alarm only when it
publishes; the blocked connection is no longer read (its basic.get is answered only after
connection.unblocked); connection.unblocked goes only to the connections told.
"""
from __future__ import annotations

import pytest

from . import rawamqp
from .rawamqp import RawAMQP
from minimq.codec import spec
from minimq.testing import Broker

CAPS = {**rawamqp.CLIENT_PROPERTIES, "capabilities": {**rawamqp.CLIENT_PROPERTIES["capabilities"], "connection.blocked": True}}


def connect(port: int, monkeypatch) -> RawAMQP:
    monkeypatch.setattr(rawamqp, "CLIENT_PROPERTIES", CAPS)
    c = RawAMQP.connect("127.0.0.1", port)
    c.channel_open(1)
    return c


def silent(c: RawAMQP, timeout: float = 0.3) -> bool:
    try:
        c.read_frame(timeout=timeout)
    except TimeoutError:
        return True
    return False


def test_only_connections_that_publish_during_the_alarm_are_told(monkeypatch):
    with Broker() as mq:
        idle, consumer, before, during = (connect(mq.port, monkeypatch) for _ in range(4))
        try:
            consumer.queue_declare(1, "bq")
            consumer.send_method(1, spec.BasicConsume(0, "bq", "ctag", False, False, False, False, {}))
            consumer.expect(spec.BasicConsumeOk)
            before.publish(1, "", "bq", b"before")
            assert consumer.read_message().body == b"before"

            mq.block("low on memory")
            for c in (idle, consumer, before, during):
                assert silent(c), "connection.blocked before any publish"
            during.publish(1, "", "bq", b"during")
            assert during.expect(spec.ConnectionBlocked).reason == "low on memory"
            before.publish(1, "", "bq", b"again")
            assert before.expect(spec.ConnectionBlocked).reason == "low on memory"
            late = connect(mq.port, monkeypatch)
            assert silent(late)  # opened during the alarm, not told until it publishes
            # A blocked connection is not read: its basic.get waits for the unblock.
            during.send_method(1, spec.BasicGet(0, "bq", True))
            assert silent(during)
            # The consumer-only connection is read: acks and declares go on.
            consumer.send_method(1, spec.BasicAck(1, False))
            consumer.send_method(1, spec.QueueDeclare(0, "bq", True, False, False, False, False, {}))
            # The publishes that blocked "during" and "before" wait: nothing is delivered.
            assert consumer.expect(spec.QueueDeclareOk).message_count == 0
            assert silent(idle) and silent(late)

            mq.unblock()
            during.expect(spec.ConnectionUnblocked)
            before.expect(spec.ConnectionUnblocked)
            assert isinstance(during.read_message(), (rawamqp.Message, spec.BasicGetEmpty))
            assert {consumer.read_message().body for _ in range(2)} == {b"during", b"again"}
            for c in (idle, late):
                assert silent(c), "connection.unblocked to a connection never told"
            late.close()
        finally:
            for c in (idle, consumer, before, during):
                c.sock.close()


def publish_frames(channel: int, routing_key: str, body: bytes) -> bytes:
    method = rawamqp.encode_method_frame(channel, spec.BasicPublish(0, "", routing_key, False, False))
    return method + rawamqp.content_frames(channel, body)


def test_a_publish_read_during_the_alarm_waits_with_everything_after_it(monkeypatch):
    """RabbitMQ's reader stops at the first publish it reads while an alarm is on, even in
    the middle of what one read brought: that publish and everything after it on the
    connection wait until the alarm clears, then are handled in order; nothing is lost."""
    with Broker() as mq:
        publisher, observer, consumer = (connect(mq.port, monkeypatch) for _ in range(3))
        try:
            observer.queue_declare(1, "held-q")
            observer.queue_declare(1, "acks-q")
            consumer.send_method(1, spec.BasicQos(0, 1, False))
            consumer.expect(spec.BasicQosOk)
            consumer.send_method(1, spec.BasicConsume(0, "acks-q", "c", False, False, False, False, {}))
            consumer.expect(spec.BasicConsumeOk)
            observer.publish(1, "", "acks-q", b"to ack")
            observer.publish(1, "", "acks-q", b"next")
            # A round trip: both publishes were read before the alarm (one read after it
            # would rightly block the observer too).
            observer.queue_declare(1, "acks-q")
            assert consumer.read_message().body == b"to ack"  # "next" waits: prefetch 1

            mq.block("low on memory")
            # One write: a declare (before any publish: handled), three publishes, a get.
            publisher.send_raw(
                rawamqp.encode_method_frame(1, spec.QueueDeclare(0, "held-q", True))
                + b"".join(publish_frames(1, "held-q", b"m%d" % i) for i in range(3))
                + rawamqp.encode_method_frame(1, spec.BasicGet(0, "held-q", False))
            )
            assert publisher.expect(spec.QueueDeclareOk).message_count == 0
            assert publisher.expect(spec.ConnectionBlocked).reason == "low on memory"
            assert silent(publisher), "the basic.get after the held publish was answered"
            observer.send_method(1, spec.QueueDeclare(0, "held-q", True))
            assert observer.expect(spec.QueueDeclareOk).message_count == 0, "a publish routed during the alarm"
            # Connections that do not publish flow: a consumer acks and gets the next message.
            consumer.send_method(1, spec.BasicAck(1, False))
            assert consumer.read_message().body == b"next"

            mq.unblock()
            publisher.expect(spec.ConnectionUnblocked)
            got = publisher.read_message()
            assert isinstance(got, rawamqp.Message) and got.body == b"m0"
            assert got.method.message_count == 2
            observer.send_method(1, spec.QueueDeclare(0, "held-q", True))
            assert observer.expect(spec.QueueDeclareOk).message_count == 2
            observer.send_method(1, spec.BasicGet(0, "held-q", True))
            assert observer.read_message().body == b"m1"
            observer.send_method(1, spec.BasicGet(0, "held-q", True))
            assert observer.read_message().body == b"m2"
        finally:
            for c in (publisher, observer, consumer):
                c.sock.close()


def test_a_connection_blocked_while_it_publishes_keeps_all_of_it(monkeypatch):
    """Many publishes in one write during the alarm: none is routed until it clears, then
    every one is, in the order sent (after those from before the alarm)."""
    with Broker() as mq:
        publisher, observer = (connect(mq.port, monkeypatch) for _ in range(2))
        try:
            observer.queue_declare(1, "all-q")
            publisher.send_raw(b"".join(publish_frames(1, "all-q", b"a%d" % i) for i in range(200)))
            publisher.send_method(1, spec.QueueDeclare(0, "all-q", True))
            assert publisher.expect(spec.QueueDeclareOk).message_count == 200
            mq.block("low on memory")
            publisher.send_raw(b"".join(publish_frames(1, "all-q", b"b%d" % i) for i in range(200)))
            assert publisher.expect(spec.ConnectionBlocked).reason == "low on memory"
            observer.send_method(1, spec.QueueDeclare(0, "all-q", True))
            assert observer.expect(spec.QueueDeclareOk).message_count == 200, "routed during the alarm"
            mq.unblock()
            publisher.expect(spec.ConnectionUnblocked)
            publisher.send_method(1, spec.QueueDeclare(0, "all-q", True))  # after all 400
            assert publisher.expect(spec.QueueDeclareOk).message_count == 400
            bodies = []
            for _ in range(400):
                observer.send_method(1, spec.BasicGet(0, "all-q", True))
                bodies.append(observer.read_message().body)
            assert bodies == [b"a%d" % i for i in range(200)] + [b"b%d" % i for i in range(200)]
        finally:
            for c in (publisher, observer):
                c.sock.close()
