"""Inspection without a client connection, and waiting on broker events."""
from __future__ import annotations

import threading

import pika
import pytest

from minimq.testing import Broker, MessageView

from .conftest import closed_by_broker, connect, pump_until


def test_queues_exchanges_bindings(mq: Broker, client) -> None:
    ch = client.channel()
    ch.exchange_declare("orders", "topic", durable=True, arguments={"alternate-exchange": "ae"})
    ch.exchange_declare("ae", "fanout")
    ch.exchange_declare("e2e", "direct")
    ch.queue_declare("eu", durable=True, arguments={"x-max-length": 10})
    ch.queue_declare("all", exclusive=True)
    ch.queue_bind("eu", "orders", "eu.#")
    ch.queue_bind("all", "orders", "#", arguments={"k": "v"})
    ch.exchange_bind("e2e", "orders", "x.*")

    names = [q.name for q in mq.queues()]
    assert names == ["all", "eu"]
    eu = mq.queue("eu")
    assert (eu.vhost, eu.durable, eu.exclusive, eu.auto_delete) == ("/", True, False, False)
    assert eu.arguments == {"x-max-length": 10}
    assert mq.queue("all").exclusive
    with pytest.raises(KeyError):
        mq.queue("nope")

    x = mq.exchange("orders")
    assert (x.type, x.durable, x.internal, x.arguments) == ("topic", True, False, {"alternate-exchange": "ae"})
    all_names = {e.name for e in mq.exchanges()}
    assert {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"} <= all_names
    assert {"orders", "ae", "e2e"} <= all_names

    rows = [(b.source, b.destination, b.destination_type, b.routing_key, b.arguments)
            for b in mq.bindings(source="orders")]
    assert rows == [
        ("orders", "e2e", "exchange", "x.*", {}),
        ("orders", "all", "queue", "#", {"k": "v"}),
        ("orders", "eu", "queue", "eu.#", {}),
    ]
    # The default exchange's implicit bindings are listed, as rabbitmqctl list_bindings does.
    assert [(b.source, b.destination, b.routing_key) for b in mq.bindings(destination="eu")] == [
        ("", "eu", "eu"), ("orders", "eu", "eu.#"),
    ]


def test_views_are_read_only_snapshots(mq: Broker, client) -> None:
    ch = client.channel()
    ch.queue_declare("q", arguments={"x-max-length": 5})
    info = mq.queue("q")
    info.arguments["x-max-length"] = 1  # changing the copy...
    assert mq.queue("q").arguments == {"x-max-length": 5}  # ...changes nothing in the broker
    with pytest.raises(AttributeError):
        info.name = "other"  # type: ignore[misc]


def test_messages_show_body_and_properties(mq: Broker, client) -> None:
    ch = client.channel()
    ch.queue_declare("q")
    ch.confirm_delivery()
    props = pika.BasicProperties(
        content_type="application/json", headers={"attempt": 2, "tags": ["a", "b"]},
        delivery_mode=2, correlation_id="c-1", message_id="m-1",
    )
    ch.basic_publish("", "q", b'{"n": 1}', props)
    ch.basic_publish("", "q", "héllo".encode(), pika.BasicProperties(content_type="text/plain"))
    [first, second] = mq.messages("q")
    assert isinstance(first, MessageView)
    assert (first.exchange, first.routing_key, first.body) == ("", "q", b'{"n": 1}')
    assert first.json() == {"n": 1}
    assert first.headers == {"attempt": 2, "tags": ["a", "b"]}
    assert first.properties.correlation_id == "c-1" and first.properties.message_id == "m-1"
    assert first.persistent and not first.redelivered
    assert second.text == "héllo" and second.headers == {} and not second.persistent
    first.properties.headers["attempt"] = 99  # a copy: the broker's message is untouched
    assert mq.messages("q")[0].headers["attempt"] == 2
    # peeking takes nothing
    assert mq.queue("q").messages_ready == 2


def test_consumers_unacked_channels_connections(mq: Broker) -> None:
    c = connect(mq.url, client_properties={"connection_name": "worker-1"})
    ch = c.channel()
    ch.queue_declare("jobs")
    for i in range(3):
        ch.basic_publish("", "jobs", f"job {i}".encode())
    ch.basic_qos(prefetch_count=2)
    got: list = []
    tag = ch.basic_consume("jobs", lambda _ch, method, _p, body: got.append((method.delivery_tag, body)),
                           consumer_tag="c1")
    pump_until(c, lambda: len(got) == 2, what="two deliveries")

    [conn] = mq.connections()
    assert (conn.name, conn.user, conn.vhost, conn.state, conn.channels) == ("worker-1", "guest", "/", "open", 1)
    assert conn.client_properties["product"] == "Pika Python Client Library"
    assert mq.connection("worker-1") == conn and mq.connection(conn.id) == conn

    [consumer] = mq.consumers()
    assert (consumer.queue, consumer.tag, consumer.connection, consumer.channel) == ("jobs", "c1", conn.id, 1)
    assert consumer.ack_required and consumer.prefetch_count == 2 and consumer.unacked == 2
    assert mq.consumers(queue="other") == []

    unacked = mq.unacked()
    assert [(u.delivery_tag, u.queue, u.consumer_tag, u.message.body) for u in unacked] == [
        (1, "jobs", "c1", b"job 0"), (2, "jobs", "c1", b"job 1"),
    ]
    q = mq.queue("jobs")
    assert (q.messages_ready, q.messages_unacknowledged, q.messages, q.consumers) == (1, 2, 3, 1)
    assert q.consumer_tags == ("c1",)
    [chan] = mq.channels(conn)
    assert (chan.number, chan.consumers, chan.messages_unacknowledged, chan.prefetch_count) == (1, 1, 2, 2)

    ch.basic_ack(1)
    mq.wait_for(lambda: [u.delivery_tag for u in mq.unacked()] == [2, 3], timeout=5)
    ch.basic_cancel(tag)
    c.close()
    # closing requeues: the messages come back, redelivered
    mq.wait_for(lambda: mq.queue("jobs").messages_ready == 2, timeout=5)
    assert [(m.body, m.redelivered) for m in mq.messages("jobs")] == [(b"job 1", True), (b"job 2", True)]
    assert mq.connections() == []


def test_get_deliveries_show_in_unacked(mq: Broker, client) -> None:
    ch = client.channel()
    ch.queue_declare("g")
    ch.basic_publish("", "g", b"one")
    mq.wait_for(lambda: mq.queue("g").messages_ready == 1, timeout=5)
    method, _props, _body = ch.basic_get("g")
    [u] = mq.unacked(queue="g")
    assert (u.consumer_tag, u.delivery_tag, u.message.body) == (None, method.delivery_tag, b"one")


def test_wait_for_wakes_on_broker_events(mq: Broker) -> None:
    """The waiter is woken by the publish itself, from a client in another thread."""
    ready = threading.Event()

    def publisher() -> None:
        c = connect(mq.url)
        ch = c.channel()
        ch.queue_declare("w")
        ready.wait(5)
        for i in range(5):
            ch.basic_publish("", "w", b"%d" % i)
        c.close()

    t = threading.Thread(target=publisher)
    t.start()
    mq.wait_for(lambda: "w" in [q.name for q in mq.queues()], timeout=5)
    ready.set()
    assert mq.wait_for(lambda: mq.queue("w").messages_ready == 5, timeout=5) is True
    t.join(5)


def test_wait_for_returns_the_value_and_times_out(mq: Broker) -> None:
    assert mq.wait_for(lambda: mq.vhosts(), timeout=1) == ["/"]
    with pytest.raises(TimeoutError) as info:
        mq.wait_for(lambda: mq.queue("never"), timeout=0.2, what="queue 'never'")
    assert "queue 'never'" in str(info.value) and "KeyError" in str(info.value)


def test_vhost_helpers_and_reset(mq: Broker, client) -> None:
    mq.add_vhost("v2")
    assert mq.vhosts() == ["/", "v2"]
    c2 = connect(mq.url_for("v2"))
    c2.channel().queue_declare("in-v2")
    assert [q.name for q in mq.queues("v2")] == ["in-v2"]
    assert mq.queues() == []

    ch = client.channel()
    ch.exchange_declare("x", "fanout")
    ch.queue_declare("q")
    ch.queue_bind("q", "x")
    ch.queue_bind("q", "amq.direct", "k")
    ch.exchange_bind("amq.fanout", "amq.topic", "#")
    mq.reset()
    assert mq.queues() == []
    assert sorted(e.name for e in mq.exchanges()) == [
        "", "amq.direct", "amq.fanout", "amq.headers", "amq.match", "amq.topic",
    ]
    assert mq.bindings() == []
    assert client.is_open  # reset keeps connections
    assert [q.name for q in mq.queues("v2")] == ["in-v2"]  # other vhosts untouched

    mq.delete_vhost("v2")
    assert closed_by_broker(c2).reply_code == 320
    assert mq.vhosts() == ["/"]
