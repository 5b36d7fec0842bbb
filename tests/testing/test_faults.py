"""Fault injection with real clients: dropped connections, closed channels, blocked publishers."""
from __future__ import annotations

import pika
import pytest

from minimq.testing import Broker

from .conftest import closed_by_broker, connect, pump_until


def test_drop_connection_abruptly(mq: Broker) -> None:
    c = connect(mq.url)
    ch = c.channel()
    ch.queue_declare("q")
    ch.basic_publish("", "q", b"m")
    got: list = []
    ch.basic_consume("q", lambda _c, m, _p, b: got.append(m.delivery_tag))
    pump_until(c, lambda: got, what="a delivery")
    [info] = mq.connections()
    assert mq.drop_connection(info) == 1
    exc = closed_by_broker(c)
    assert isinstance(exc, pika.exceptions.StreamLostError)  # a reset, no connection.close
    mq.wait_for(lambda: mq.connections() == [], timeout=5)
    # what it held went back to its queue
    assert [(m.body, m.redelivered) for m in mq.messages("q")] == [(b"m", True)]


def test_drop_connection_with_connection_close(mq: Broker) -> None:
    c = connect(mq.url, client_properties={"connection_name": "api"})
    mq.drop_connection("api", code=320, text="maintenance")
    exc = closed_by_broker(c)
    assert isinstance(exc, pika.exceptions.ConnectionClosedByBroker)
    assert (exc.reply_code, exc.reply_text) == (320, "CONNECTION_FORCED - maintenance")
    mq.wait_for(lambda: mq.connections() == [], timeout=5)


def test_drop_every_connection_with_any_code(mq: Broker) -> None:
    conns = [connect(mq.url) for _ in range(3)]
    assert mq.drop_connection(code=541) == 3
    for c in conns:
        exc = closed_by_broker(c)
        assert exc.reply_code == 541 and exc.reply_text.startswith("INTERNAL_ERROR")
    with pytest.raises(KeyError):
        mq.drop_connection(12345)


def test_close_channel_with_a_code(mq: Broker, client) -> None:
    ch1, ch2 = client.channel(), client.channel()
    ch1.queue_declare("q")
    ch1.basic_publish("", "q", b"held")
    got: list = []
    ch1.basic_consume("q", lambda _c, m, _p, b: got.append(b))
    pump_until(client, lambda: got, what="a delivery")
    closed: list = []
    # BlockingChannel has no close callback of its own; its underlying channel does.
    ch1._impl.add_on_close_callback(lambda _ch, reason: closed.append(reason))
    [conn] = mq.connections()
    mq.close_channel(conn, ch1.channel_number, code=404, text="queue went away")
    pump_until(client, lambda: closed, what="channel.close")
    assert isinstance(closed[0], pika.exceptions.ChannelClosedByBroker)
    assert (closed[0].reply_code, closed[0].reply_text) == (404, "NOT_FOUND - queue went away")
    # the connection and its other channel live on; the channel's delivery was requeued
    assert client.is_open and ch2.is_open
    assert mq.consumers() == []
    mq.wait_for(lambda: mq.queue("q").messages_ready == 1, timeout=5)
    assert [c.number for c in mq.channels(conn)] == [ch2.channel_number]
    with pytest.raises(KeyError):
        mq.close_channel(conn, 99)


def test_block_and_unblock_publishers(mq: Broker) -> None:
    publisher = connect(mq.url)
    consumer = connect(mq.url)
    events: list = []
    publisher.add_on_connection_blocked_callback(lambda _c, m: events.append(("blocked", m.method.reason)))
    publisher.add_on_connection_unblocked_callback(lambda _c, m: events.append(("unblocked",)))
    pch, cch = publisher.channel(), consumer.channel()
    pch.queue_declare("work")
    cch.queue_declare("work")
    got: list = []
    cch.basic_consume("work", lambda _c, _m, _p, b: got.append(b), auto_ack=True)

    consumer_events: list = []
    consumer.add_on_connection_blocked_callback(lambda _c, m: consumer_events.append("blocked"))

    mq.block("low on memory")
    assert mq.blocked
    assert all(c.blocked for c in mq.connections())
    # As RabbitMQ 3.10: nobody is told until a connection publishes.
    publisher.process_data_events(time_limit=0.2)
    assert events == []
    pch.basic_publish("", "work", b"1")  # held: the broker stops reading at this publish
    pump_until(publisher, lambda: events, what="connection.blocked")
    assert events == [("blocked", "low on memory")]
    pch.basic_publish("", "work", b"2")
    pch.basic_publish("", "work", b"3")
    publisher.process_data_events(time_limit=0)  # flush the writes
    with pytest.raises(TimeoutError):  # nothing routed: the held publish and those behind it
        mq.wait_for(lambda: got or mq.queue("work").messages_ready, timeout=0.3)
    consumer.process_data_events(time_limit=0.1)  # consumers go on, and are never told
    assert consumer.is_open and consumer_events == []

    mq.unblock()
    pump_until(publisher, lambda: len(events) == 2, what="connection.unblocked")
    assert events[1] == ("unblocked",)
    pump_until(consumer, lambda: got == [b"1", b"2", b"3"], what="the held messages")
    assert not mq.blocked and not any(c.blocked for c in mq.connections())
    publisher.close()
    consumer.close()


def test_block_without_the_capability_sends_nothing_but_still_blocks() -> None:
    from integration.rawamqp import RawAMQP

    with Broker() as mq:
        c = RawAMQP.connect("127.0.0.1", mq.port)
        try:
            c.channel_open(1)
            c.queue_declare(1, "q")
            mq.block()
            c.publish(1, "", "q", b"a")
            c.publish(1, "", "q", b"b")
            with pytest.raises(TimeoutError):
                c.read_frame(timeout=0.2)  # no connection.blocked for this client
            assert mq.queue("q").messages_ready == 0  # "a" waits, and "b" behind it
            mq.unblock()
            mq.wait_for(lambda: mq.queue("q").messages_ready == 2, timeout=5)
        finally:
            c.sock.close()
