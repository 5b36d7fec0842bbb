"""Interop: py-amqp (the `amqp` package, Celery's default transport)."""
from __future__ import annotations

import datetime
import decimal
import socket
import time
from typing import Callable, Iterator

import amqp
import amqp.exceptions as ex
import pytest

from .conftest import REQUIRED_CAPABILITIES, TIMEOUT, eventually


def drain_until(conn: amqp.Connection, condition: Callable[[], bool],
                timeout: float = TIMEOUT) -> None:
    """Dispatch incoming frames until condition() holds (or fail)."""
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timed out waiting for a condition")
        try:
            conn.drain_events(timeout=min(remaining, 0.5))
        except socket.timeout:
            pass


def make_conn(url_parts, **kw) -> amqp.Connection:
    host, port, user, password, vhost = url_parts
    options = dict(host=f"{host}:{port}", userid=user, password=password,
                   virtual_host=vhost, connect_timeout=TIMEOUT)
    options.update(kw)
    c = amqp.Connection(**options)
    c.connect()
    return c


@pytest.fixture
def conn(url_parts) -> Iterator[amqp.Connection]:
    # Publisher confirms make each basic_publish wait until the message is enqueued.
    # Without them, RabbitMQ does NOT guarantee that a later queue.declare(passive) or
    # basic.get on the same channel sees the message (seen: message_count one short).
    c = make_conn(url_parts, confirm_publish=True)
    try:
        yield c
    finally:
        if c.connected:
            c.close()


def test_amqplain_login_heartbeat_and_server_properties(url_parts):
    c = make_conn(url_parts, login_method="AMQPLAIN", heartbeat=5)
    try:
        props = c.server_properties
        assert props["product"] and props["version"] and props["platform"]
        for cap in REQUIRED_CAPABILITIES:
            assert props["capabilities"][cap] is True, cap
        # py-amqp takes min(client, server) when both are non-zero: RabbitMQ proposes 60
        assert c.heartbeat == 5
        assert c.server_heartbeat >= 0
        assert "AMQPLAIN" in c.mechanisms or b"AMQPLAIN" in c.mechanisms
        ch = c.channel()
        assert ch.queue_declare(exclusive=True).queue.startswith("amq.gen-")
        c.heartbeat_tick()  # no error: heartbeats are being tracked
    finally:
        c.close()
    assert not c.connected


def test_wrong_password_and_unknown_vhost(url_parts, unique):
    host, port, user, _pw, _vh = url_parts
    with pytest.raises(ex.AccessRefused) as info:
        make_conn(url_parts, password="definitely-wrong")
    assert info.value.reply_code == 403
    with pytest.raises(ex.AccessRefused):
        make_conn(url_parts, password="definitely-wrong", login_method="AMQPLAIN")
    with pytest.raises(ex.NotAllowed) as info:
        make_conn(url_parts, virtual_host=unique)
    assert info.value.reply_code == 530
    assert info.value.reply_text == f"NOT_ALLOWED - vhost {unique} not found"


def test_server_generated_consumer_tag_and_duplicate_tag(conn, unique):
    ch = conn.channel()
    ch.queue_declare(unique, exclusive=True)
    tag = ch.basic_consume(unique, callback=lambda m: None)  # empty tag -> server picks
    assert tag.startswith("amq.ctag-")
    tag2 = ch.basic_consume(unique, consumer_tag="mine", callback=lambda m: None)
    assert tag2 == "mine"
    with pytest.raises(ex.NotAllowed) as info:
        ch.basic_consume(unique, consumer_tag="mine", callback=lambda m: None)
    # RabbitMQ: a HARD error: connection.close 530 "NOT_ALLOWED - attempt to reuse
    # consumer tag 'mine'" (checked with a raw pika frame too: the whole connection goes).
    assert info.value.reply_code == 530
    assert info.value.reply_text == "NOT_ALLOWED - attempt to reuse consumer tag 'mine'"
    assert info.value.method_name == "Basic.consume"
    assert not conn.connected


def test_flow_and_declare_ok_tuple(conn, unique):
    ch = conn.channel()
    ch.flow(True)
    ok = ch.queue_declare(unique, exclusive=True)
    assert (ok.queue, ok.message_count, ok.consumer_count) == (unique, 0, 0)
    ch.basic_publish(amqp.Message(b"1"), routing_key=unique)
    ch.basic_consume(unique, callback=lambda m: None)
    ok = ch.queue_declare(unique, passive=True)
    assert ok.consumer_count == 1


def test_mandatory_return_then_confirm(url_parts, unique):
    c = make_conn(url_parts, confirm_publish=True)
    try:
        ch = c.channel()
        returned = []
        ch.events["basic_return"].add(
            lambda exc, exchange, routing_key, message: returned.append(
                (exc.reply_code, exc.reply_text, exchange, routing_key, message.body)))
        # basic_publish waits for the ack; the return arrives first and is dispatched
        ch.basic_publish(amqp.Message(b"nowhere"), exchange="amq.topic",
                         routing_key=unique, mandatory=True)
        assert returned == [(312, "NO_ROUTE", "amq.topic", unique, b"nowhere")]
    finally:
        c.close()


def test_delete_if_unused_and_exclusive_lock(conn, url_parts, unique):
    ch = conn.channel()
    ch.queue_declare(unique, exclusive=True)
    cancelled = []
    ch.basic_consume(unique, callback=lambda m: None, on_cancel=cancelled.append)
    with pytest.raises(ex.PreconditionFailed) as info:
        conn.channel().queue_delete(unique, if_unused=True)
    assert info.value.reply_code == 406
    other = make_conn(url_parts)
    try:
        with pytest.raises(ex.ResourceLocked) as info:
            other.channel().basic_get(unique)
        assert info.value.reply_code == 405
        assert other.connected
    finally:
        other.close()
    assert conn.channel().queue_delete(unique) == 0
    # the consumer learns about the deletion through a server-sent basic.cancel
    drain_until(conn, lambda: cancelled)
    assert cancelled[0].startswith("amq.ctag-")


def test_properties_and_headers_round_trip(conn, unique):
    ch = conn.channel()
    ch.auto_decode = False  # keep bodies as bytes even with a content_encoding
    ch.queue_declare(unique, exclusive=True)
    ts = datetime.datetime(2022, 2, 3, 4, 5, 6)
    headers = {
        "f": 0.25,
        "i": -5,
        "l": 2**45,
        "b": True,
        "d": decimal.Decimal("-1.50"),
        "ts": ts,
        "arr": [1, "two", 3.5, [True], {"x": None}],
        "tbl": {"n": {"m": "deep"}},
        "none": None,
    }
    msg = amqp.Message(
        b"\x00\x01body",
        content_type="text/x", content_encoding="utf-8", application_headers=headers,
        delivery_mode=1, priority=9, correlation_id="cid", reply_to="rt",
        expiration="1000000", message_id="mid", timestamp=1600000000, type="tp",
        user_id="guest", app_id="aid")
    ch.basic_publish(msg, routing_key=unique)
    got = ch.basic_get(unique, no_ack=True)  # the publish was confirmed
    assert got is not None
    assert got.body == b"\x00\x01body"
    p = got.properties
    for key in ("content_type", "content_encoding", "delivery_mode", "priority",
                "correlation_id", "reply_to", "expiration", "message_id", "type",
                "user_id", "app_id"):
        assert p[key] == msg.properties[key], key
    assert p["timestamp"] == 1600000000
    h = p["application_headers"]
    assert h["f"] == 0.25 and h["i"] == -5 and h["l"] == 2**45 and h["b"] is True
    assert h["d"] == decimal.Decimal("-1.50")
    assert h["ts"] == ts
    assert h["arr"] == [1, "two", 3.5, [True], {"x": None}]
    assert h["tbl"] == {"n": {"m": "deep"}} and h["none"] is None


def test_unacked_requeued_when_connection_drops(conn, url_parts, unique):
    ch = conn.channel()
    ch.queue_declare(unique, auto_delete=False)
    try:
        for i in range(3):
            ch.basic_publish(amqp.Message(str(i).encode()), routing_key=unique)
        victim = make_conn(url_parts)
        vch = victim.channel()
        got = []
        vch.basic_consume(unique, callback=got.append)
        drain_until(victim, lambda: len(got) == 3)
        victim.sock.shutdown(socket.SHUT_RDWR)  # drop TCP, no connection.close
        victim.sock.close()

        def requeued() -> bool:
            return ch.queue_declare(unique, passive=True).message_count == 3

        eventually(requeued, what="requeue after connection drop")
        out = [ch.basic_get(unique, no_ack=True) for _ in range(3)]
        assert [(m.body, m.delivery_info["redelivered"]) for m in out] == \
            [(b"0", True), (b"1", True), (b"2", True)]
    finally:
        conn.channel().queue_delete(unique)


def test_consume_ack_multiple_and_cancel(conn, unique):
    ch = conn.channel()
    # py-amqp's queue_declare defaults to auto_delete=True: the cancel below would
    # delete the queue.
    ch.queue_declare(unique, exclusive=True, auto_delete=False)
    ch.basic_qos(0, 3, False)
    got = []
    tag = ch.basic_consume(unique, callback=got.append)
    for i in range(6):
        ch.basic_publish(amqp.Message(str(i).encode()), routing_key=unique)
    drain_until(conn, lambda: len(got) == 3)
    assert ch.queue_declare(unique, passive=True).message_count == 3
    ch.basic_ack(got[2].delivery_tag, multiple=True)
    drain_until(conn, lambda: len(got) == 6)
    assert [m.body for m in got] == [str(i).encode() for i in range(6)]
    assert [m.delivery_tag for m in got] == list(range(1, 7))
    ch.basic_cancel(tag)
    # after cancel the 3 unacked messages stay with the channel until ack/close
    ch.basic_ack(6, multiple=True)
    ok = ch.queue_declare(unique, passive=True)
    assert (ok.message_count, ok.consumer_count) == (0, 0)
