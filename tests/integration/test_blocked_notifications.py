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
            # (minimq routes the read that carried the blocking publish, so its deliveries may
            # come first; RabbitMQ holds that publish's body unread until the unblock.)
            while True:
                frame = consumer.read_frame()
                if frame.type == 1 and isinstance(frame.method, spec.QueueDeclareOk):
                    break
            assert silent(idle) and silent(late)

            mq.unblock()
            during.expect(spec.ConnectionUnblocked)
            before.expect(spec.ConnectionUnblocked)
            assert isinstance(during.read_message(), (rawamqp.Message, spec.BasicGetEmpty))
            for c in (idle, late):
                assert silent(c), "connection.unblocked to a connection never told"
            late.close()
        finally:
            for c in (idle, consumer, before, during):
                c.sock.close()
