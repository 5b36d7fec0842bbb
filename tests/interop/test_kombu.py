"""Interop: kombu (Celery's messaging library) over its py-amqp transport."""
from __future__ import annotations

import os
import socket
import time
from typing import Iterator

import amqp.exceptions as amqp_ex
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from .conftest import REQUIRED_CAPABILITIES, TIMEOUT, url_with


@pytest.fixture
def conn(amqp_url: str) -> Iterator[Connection]:
    # confirm_publish: a publish returns once the message is enqueued, so a following
    # basic.get sees it (RabbitMQ does not otherwise order the two).
    c = Connection(amqp_url, connect_timeout=TIMEOUT,
                   transport_options={"confirm_publish": True})
    c.connect()
    try:
        yield c
    finally:
        c.release()


def drain_until(conn: Connection, condition, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timed out waiting for a condition")
        try:
            conn.drain_events(timeout=min(remaining, 0.5))
        except socket.timeout:
            pass


def test_connect_properties_and_failures(amqp_url, unique):
    c = Connection(amqp_url, heartbeat=5)
    try:
        c.connect()
        assert c.connected
        props = c.connection.server_properties
        assert props["product"] and props["version"] and props["platform"]
        for cap in REQUIRED_CAPABILITIES:
            assert props["capabilities"][cap] is True, cap
        assert c.connection.heartbeat == 5
        c.heartbeat_check()
    finally:
        c.release()
    with pytest.raises(amqp_ex.AccessRefused):
        Connection(url_with(amqp_url, password="bad")).connect()
    with pytest.raises(amqp_ex.NotAllowed):
        Connection(url_with(amqp_url, vhost=unique)).connect()


def test_simple_queue_round_trip(conn, unique):
    # SimpleQueue also declares a direct exchange named after the queue
    q = conn.SimpleQueue(unique, queue_opts={"exclusive": True, "auto_delete": True},
                         exchange_opts={"durable": False, "auto_delete": True})
    try:
        q.put({"hello": "world", "n": [1, 2.5, None]})
        q.put(b"\x00raw", serializer=None, content_type="application/data",
              content_encoding="binary")
        msg = q.get(timeout=TIMEOUT)
        assert msg.payload == {"hello": "world", "n": [1, 2.5, None]}
        assert msg.content_type == "application/json"
        msg.ack()
        msg = q.get(timeout=TIMEOUT)
        assert msg.body == b"\x00raw"
        msg.ack()
        with pytest.raises(q.Empty):
            q.get(block=False)
    finally:
        q.close()
        with conn.channel() as ch:
            ch.exchange_delete(unique)


def test_topic_exchange_producer_consumer(conn, unique):
    ex = Exchange(f"{unique}-x", type="topic", auto_delete=True, durable=False)
    q_all = Queue(f"{unique}-all", ex, routing_key="log.#", exclusive=True)
    q_err = Queue(f"{unique}-err", ex, routing_key="log.*.error", exclusive=True)
    got: dict[str, list] = {"all": [], "err": []}
    with conn.channel() as ch:
        consumer = Consumer(ch, [q_all], callbacks=[lambda b, m: (got["all"].append(b),
                                                                 m.ack())])
        consumer2 = Consumer(ch, [q_err], callbacks=[lambda b, m: (got["err"].append(b),
                                                                  m.ack())])
        with consumer, consumer2:
            producer = Producer(ch, exchange=ex, serializer="json")
            for key in ["log", "log.app.error", "log.app.info", "log.x.y.error", "other"]:
                producer.publish({"key": key}, routing_key=key)
            drain_until(conn, lambda: len(got["all"]) == 4 and len(got["err"]) == 1)
    assert [b["key"] for b in got["all"]] == ["log", "log.app.error", "log.app.info",
                                              "log.x.y.error"]
    assert [b["key"] for b in got["err"]] == ["log.app.error"]


def test_fanout_broadcast(conn, unique):
    ex = Exchange(unique, type="fanout", auto_delete=True, durable=False)
    queues = [Queue(f"{unique}-{i}", ex, exclusive=True) for i in range(3)]
    seen: list[tuple[str, str]] = []
    with conn.channel() as ch:
        consumers = [Consumer(ch, [q], callbacks=[
            (lambda name: lambda body, m: (seen.append((name, body)), m.ack()))(q.name)])
            for q in queues]
        for c in consumers:
            c.consume()
        Producer(ch, exchange=ex).publish("hi", routing_key="ignored")
        drain_until(conn, lambda: len(seen) == 3)
        for c in consumers:
            c.cancel()
    assert sorted(seen) == sorted((q.name, "hi") for q in queues)


def test_requeue_reject_and_redelivered_flag(conn, unique):
    q = Queue(unique, exclusive=True, auto_delete=False, durable=False)
    with conn.channel() as ch:
        bound = q(ch)
        # queue_declare only: kombu's declare() would also declare a durable direct
        # exchange named after the queue (and leave it behind).
        bound.queue_declare()
        producer = Producer(ch, routing_key=unique)
        for i in range(3):
            producer.publish({"i": i})
        first = bound.get()
        assert first.payload == {"i": 0} and not first.delivery_info["redelivered"]
        first.requeue()       # basic.reject(requeue=True)
        second = bound.get()
        assert second.payload == {"i": 0} and second.delivery_info["redelivered"]
        second.reject()       # basic.reject(requeue=False): dropped
        third = bound.get()
        assert third.payload == {"i": 1}
        third.ack()
        assert bound.purge() == 1
        assert bound.get() is None
        bound.delete()


def test_mandatory_publish_returned(conn, unique):
    returned = []

    def on_return(exc, exchange, routing_key, message):
        returned.append((exc.reply_code, exchange, routing_key))

    with conn.channel() as ch:
        producer = Producer(ch, exchange=Exchange("amq.direct", type="direct",
                                                  passive=True),
                            on_return=on_return)
        producer.publish("lost", routing_key=unique, mandatory=True)
        # a round trip on the same channel after the publish: the return precedes it
        drain_until(conn, lambda: returned)
    assert returned == [(312, "amq.direct", unique)]


def test_large_binary_message_and_qos(conn, unique):
    payload = os.urandom(2 * 1024 * 1024 + 3)
    q = Queue(unique, exclusive=True, auto_delete=True, durable=False)
    got = []
    with conn.channel() as ch:
        Producer(ch).publish(payload, routing_key=unique, serializer=None,
                             content_type="application/octet-stream",
                             content_encoding="binary", declare=[q])
        Producer(ch).publish(b"", routing_key=unique, serializer=None,
                             content_type="application/octet-stream",
                             content_encoding="binary")
        with Consumer(ch, [q], prefetch_count=1, accept=["application/octet-stream"],
                      callbacks=[lambda body, m: (got.append(body), m.ack())]):
            drain_until(conn, lambda: len(got) == 2)
    assert got[0] == payload
    assert got[1] in (b"", "")  # kombu hands an empty raw body back as ''



def test_channel_error_does_not_break_connection(conn, unique):
    ch = conn.channel()
    with pytest.raises(amqp_ex.NotFound) as info:
        Queue(unique, channel=ch).queue_declare(passive=True)
    assert info.value.reply_code == 404
    assert conn.connected
    with conn.channel() as ch2:
        ok = Queue(f"{unique}-ok", exclusive=True)(ch2).queue_declare()
        assert ok.queue == f"{unique}-ok"
