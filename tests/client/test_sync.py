"""The blocking client (minimq.client.sync) against the session broker."""
from __future__ import annotations

import threading

import pytest

import minimq.client as mc
from minimq.client import Message, sync

from .conftest import TIMEOUT, url_with


def test_connect_and_close(amqp_url: str) -> None:
    with sync.connect(amqp_url) as conn:
        assert not conn.is_closed and conn.server_properties["product"]
        assert conn.capabilities["publisher_confirms"] is True
        with conn.channel() as ch:
            assert not ch.is_closed
        assert ch.is_closed
        ch2 = conn.channel()
    assert conn.is_closed and ch2.is_closed
    assert conn.close_reason is not None and conn.close_reason.code == 200


def test_connection_errors(amqp_url: str) -> None:
    with pytest.raises(mc.AuthenticationError):
        sync.connect(url_with(amqp_url, password="nope"))
    with pytest.raises(mc.NotAllowed):
        sync.connect(url_with(amqp_url, vhost="no-such-vhost"))
    with pytest.raises(mc.ConnectionLost):
        sync.connect("amqp://guest:guest@127.0.0.1:1/?connection_timeout=2")


def test_channel_error(amqp_url: str, unique: str) -> None:
    with sync.connect(amqp_url) as conn:
        ch = conn.channel()
        with pytest.raises(mc.NotFound) as info:
            ch.declare_queue(unique, passive=True)
        assert info.value.code == 404 and ch.is_closed and ch.close_reason is info.value
        with pytest.raises(mc.NotFound):
            ch.publish(b"x", unique)
        assert not conn.is_closed
        assert conn.channel().declare_queue(unique, exclusive=True).queue == unique


def test_topology_publish_and_get(amqp_url: str, unique: str) -> None:
    with sync.connect(amqp_url) as conn:
        ch = conn.channel()
        ch.declare_exchange(f"{unique}.t", "topic")
        ch.declare_exchange(f"{unique}.f", "fanout")
        ch.bind_exchange(f"{unique}.f", f"{unique}.t", "a.*")
        q = ch.declare_queue("", exclusive=True).queue
        ch.bind_queue(q, f"{unique}.f")
        ch.publish(Message(b"hello", headers={"n": 1}, correlation_id="c1", persistent=True),
                   "a.b", f"{unique}.t")
        ch.publish(b"not routed", "b.b", f"{unique}.t")
        m = ch.get(q)
        assert m is not None and m.body == b"hello" and m.headers == {"n": 1}
        assert (m.correlation_id, m.delivery_mode, m.routing_key) == ("c1", 2, "a.b")
        m.ack()
        assert ch.get(q) is None
        ch.unbind_queue(q, f"{unique}.f")
        ch.publish(b"x", "a.b", f"{unique}.t")
        assert ch.get(q) is None
        ch.publish(b"y", q)
        assert ch.purge_queue(q) == 1
        ch.delete_exchange(f"{unique}.f")
        ch.delete_exchange(f"{unique}.t")
        assert ch.delete_queue(q) == 0


def test_confirmed_publish(amqp_url: str, unique: str) -> None:
    with sync.connect(amqp_url) as conn:
        ch = conn.channel(publisher_confirms=True)
        ch.declare_queue(unique, exclusive=True,
                         arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        ch.publish(b"ok", unique)
        with pytest.raises(mc.MessageNacked):
            ch.publish(b"full", unique)
        with pytest.raises(mc.MessageReturned) as info:
            ch.publish(b"lost", unique + ".nowhere", mandatory=True)
        assert info.value.code == 312
        ch.publish(b"unroutable but not mandatory", unique + ".nowhere")
        assert ch.declare_queue(unique, passive=True).message_count == 1


def test_consume_loop_with_timeout(amqp_url: str) -> None:
    with sync.connect(amqp_url) as conn:
        ch = conn.channel(prefetch_count=3)
        q = ch.declare_queue("", exclusive=True).queue
        for i in range(6):
            ch.publish(b"%d" % i, q)
        got = []
        for message in ch.consume(q, inactivity_timeout=0.3):
            with message.process():
                got.append(message.body)
            if len(got) == 4:
                break
        assert got == [b"0", b"1", b"2", b"3"]
        # Prefetched but not yielded messages went back; the rest follow.
        rest = [m.body for m in ch.consume(q, no_ack=True, inactivity_timeout=0.3)]
        assert sorted(rest) == [b"4", b"5"]
        assert ch.declare_queue(q, passive=True).message_count == 0


def test_ack_nack_reject_and_process(amqp_url: str) -> None:
    with sync.connect(amqp_url) as conn:
        ch = conn.channel()
        q = ch.declare_queue("", exclusive=True).queue
        for body in (b"a", b"b", b"c"):
            ch.publish(body, q)
        a, b, c = ch.get(q), ch.get(q), ch.get(q)
        a.nack()
        b.reject()
        c.reject(requeue=True)
        again = [ch.get(q), ch.get(q)]
        assert sorted(m.body for m in again) == [b"a", b"c"] and all(m.redelivered for m in again)
        again[1].ack(multiple=True)
        assert ch.get(q) is None
        ch.publish(b"d", q)
        d = ch.get(q)
        with pytest.raises(ZeroDivisionError):
            with d.process(requeue=True):
                1 / 0
        d2 = ch.get(q)
        assert d2.body == b"d" and d2.redelivered
        with d2.process():
            pass
        assert ch.get(q) is None
        with pytest.raises(RuntimeError):
            d2.ack()


def test_publishing_from_many_threads(amqp_url: str) -> None:
    with sync.connect(amqp_url) as conn:
        ch = conn.channel(publisher_confirms=True)
        q = ch.declare_queue("", exclusive=True).queue
        errors: list[BaseException] = []

        def publish(worker: int) -> None:
            try:
                for i in range(250):
                    ch.publish(b"%d-%d" % (worker, i), q)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=publish, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT * 3)
        assert not errors
        assert ch.declare_queue(q, passive=True).message_count == 1000
        # Per-thread order is kept.
        bodies = [m.body for m in ch.consume(q, no_ack=True, inactivity_timeout=0.3)]
        assert len(bodies) == 1000
        for w in range(4):
            mine = [b for b in bodies if b.startswith(b"%d-" % w)]
            assert mine == [b"%d-%d" % (w, i) for i in range(250)]


def test_consumer_thread_and_publisher_thread(amqp_url: str) -> None:
    with sync.connect(amqp_url) as conn:
        ch_in = conn.channel()
        q = ch_in.declare_queue("", exclusive=True).queue
        ch_out = conn.channel()
        received: list[bytes] = []

        def consume() -> None:
            for message in ch_in.consume(q, inactivity_timeout=2):
                received.append(message.body)
                message.ack()
                if len(received) == 200:
                    break

        consumer = threading.Thread(target=consume)
        consumer.start()
        for i in range(200):
            ch_out.publish(b"%d" % i, q)
        consumer.join(TIMEOUT)
        assert received == [b"%d" % i for i in range(200)]


def test_transactions_and_large_messages(amqp_url: str) -> None:
    with sync.connect(url_with(amqp_url, query="frame_max=4096")) as conn:
        ch = conn.channel()
        q = ch.declare_queue("", exclusive=True).queue
        ch.tx_select()
        ch.publish(b"nope", q)
        ch.tx_rollback()
        big = bytes(range(256)) * 4096 * 4  # 4 MiB
        ch.publish(big, q)
        assert ch.get(q) is None
        ch.tx_commit()
        m = ch.get(q, no_ack=True)
        assert m is not None and m.body == big


def test_get_timeout_closes_channel_only(amqp_url: str) -> None:
    # A call that times out leaves the channel in an unknown state, so it is closed.
    with sync.connect(amqp_url) as conn:
        ch = conn.channel()
        q = ch.declare_queue("", exclusive=True).queue
        with pytest.raises(TimeoutError):
            ch.get(q, timeout=0)
        assert ch.is_closed and not conn.is_closed
        assert conn.channel().get(q) is None
