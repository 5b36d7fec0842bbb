"""One set of tests, run against both clients (asyncio and blocking) where their APIs match.

Both drive the same sans-I/O core, so they must behave the same: same results, same errors,
same flow control, same robust reconnect. `drivers.Driver` runs the asyncio client on a loop
thread behind a blocking facade; the blocking client is used as it is.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Callable, Iterator

import pytest

import minimq.client as mc
from conftest import start_broker  # tests/conftest.py
from minimq.codec import spec

from .conftest import TIMEOUT, FakeServer, url_with
from .drivers import AsyncDriven, Driver


@pytest.fixture(params=["async", "sync"])
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    d = Driver(request.param)
    yield d
    d.close()


def wait_until(driver: Driver, conn: Any, predicate: Callable[[], bool],
               timeout: float = TIMEOUT) -> bool:
    """Let ``conn`` read until ``predicate()`` holds: the blocking client reads while a call
    waits (process_data_events), the asyncio one wakes waiters on every state change."""
    if isinstance(conn, AsyncDriven):
        target = conn._target

        async def wait() -> bool:
            async def until() -> None:
                while not predicate():
                    await target.state_changed()

            try:
                await asyncio.wait_for(until(), timeout)
            except asyncio.TimeoutError:
                return False
            return True

        return driver.runner.run(wait, timeout + 5)  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        try:
            conn.process_data_events(0.05)
        except mc.ClientError:
            return predicate()
    return True


def test_declare_publish_get_settle(driver: Driver, amqp_url: str, unique: str) -> None:
    with driver.connect(amqp_url) as conn:
        ch = conn.channel()
        ex = ch.declare_exchange(f"{unique}.t", "topic")
        assert ex.name == f"{unique}.t"
        q = ch.declare_queue("", exclusive=True)
        assert q.name.startswith("amq.gen-") and (q.message_count, q.consumer_count) == (0, 0)
        q.bind(ex, "a.*")
        ex.publish(mc.Message(b"hello", headers={"n": 1}, correlation_id="c1", persistent=True),
                   "a.b")
        ch.publish(b"plain", q.name)
        assert ch.declare_queue(q.name, passive=True).message_count == 2
        m = ch.get(q.name)
        assert (m.body, m.headers, m.correlation_id, m.delivery_mode) == (b"hello", {"n": 1},
                                                                          "c1", 2)
        assert (m.exchange, m.routing_key, m.redelivered, m.is_stale) == (ex.name, "a.b",
                                                                          False, False)
        m.nack()  # requeued
        again = ch.get(q.name)
        assert again.body == b"hello" and again.redelivered
        with again.process():
            pass
        with pytest.raises(RuntimeError):
            again.ack()
        plain = ch.get(q.name)
        with pytest.raises(ZeroDivisionError):
            with plain.process(requeue=True):
                1 / 0
        assert ch.get(q.name).body == b"plain"  # rejected with requeue, left unacked now
        assert ch.get(q.name) is None
        q.unbind(ex, "a.*")
        ex.publish(b"not routed", "a.b")
        assert q.purge() == 0
        ch.delete_exchange(ex.name)
        assert q.delete() == 0


def test_publisher_confirms(driver: Driver, amqp_url: str, unique: str) -> None:
    with driver.connect(amqp_url) as conn:
        ch = conn.channel(publisher_confirms=True)
        ch.declare_queue(unique, exclusive=True,
                         arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        ch.publish(b"ok", unique)
        with pytest.raises(mc.MessageNacked):
            ch.publish(b"full", unique)
        returned: list[mc.ReturnedMessage] = []
        ch.add_on_return_callback(returned.append)
        with pytest.raises(mc.MessageReturned) as info:
            ch.publish(b"lost", unique + ".nowhere", mandatory=True)
        assert info.value.code == 312 and info.value.routing_key == unique + ".nowhere"
        assert [r.body for r in returned] == [b"lost"]
        ch.publish(b"unroutable but not mandatory", unique + ".nowhere")
        assert ch.declare_queue(unique, passive=True).message_count == 1


def test_channel_error_leaves_the_connection_usable(driver: Driver, amqp_url: str,
                                                    unique: str) -> None:
    with driver.connect(amqp_url) as conn:
        ch = conn.channel()
        with pytest.raises(mc.NotFound) as info:
            ch.declare_queue(unique, passive=True)
        assert info.value.code == 404 and isinstance(info.value, mc.ChannelClosed)
        assert ch.is_closed and ch.close_reason is info.value
        with pytest.raises(mc.NotFound):
            ch.publish(b"x", unique)
        assert not conn.is_closed
        assert conn.channel().declare_queue(unique, exclusive=True).name == unique


def test_connection_errors(driver: Driver, amqp_url: str) -> None:
    with pytest.raises(mc.AuthenticationError) as auth:
        driver.connect(url_with(amqp_url, password="wrong"))
    assert auth.value.code == 403 and isinstance(auth.value, mc.ConnectionClosed)
    with pytest.raises(mc.NotAllowed) as vhost:
        driver.connect(url_with(amqp_url, vhost="no-such-vhost"))
    assert vhost.value.code == 530
    with pytest.raises(mc.ConnectionLost):
        driver.connect("amqp://guest:guest@127.0.0.1:1/?connection_timeout=2")


def test_transactions_and_large_messages(driver: Driver, amqp_url: str) -> None:
    with driver.connect(url_with(amqp_url, query="frame_max=4096")) as conn:
        ch = conn.channel()
        q = ch.declare_queue("", exclusive=True).name
        ch.tx_select()
        ch.publish(b"nope", q)
        ch.tx_rollback()
        big = bytes(range(256)) * 4096 * 2  # 2 MiB in 4 KiB frames
        ch.publish(big, q)
        assert ch.get(q) is None
        ch.tx_commit()
        m = ch.get(q, no_ack=True)
        assert m is not None and m.body == big


def test_timed_out_call_closes_only_the_channel(driver: Driver, amqp_url: str) -> None:
    with driver.connect(amqp_url) as conn:
        ch = conn.channel()
        q = ch.declare_queue("", exclusive=True).name
        with pytest.raises(TimeoutError):
            ch.get(q, timeout=0)
        assert ch.is_closed and not conn.is_closed
        assert conn.channel().get(q) is None


# -- against a scripted server: corners a real broker does not produce on demand ------------


def test_an_unexpected_reply_closes_the_connection_with_503(driver: Driver,
                                                            fake_server: FakeServer) -> None:
    conn = driver.connect(fake_server.url)
    conn.channel()
    fake_server.send(1, spec.QueueDeclareOk("q", 0, 0))  # nobody asked
    assert wait_until(driver, conn, lambda: conn.is_closed)
    _, close, _ = fake_server.wait_for(lambda item: isinstance(item[1], spec.ConnectionClose))
    assert close.reply_code == 503
    assert isinstance(conn.close_reason, mc.errors.CommandInvalid)
    conn.close()


def test_channel_flow_pauses_publishing(driver: Driver, fake_server: FakeServer) -> None:
    conn = driver.connect(fake_server.url)
    ch = conn.channel()
    fake_server.send(1, spec.ChannelFlow(False))
    assert wait_until(driver, conn, lambda: not ch.is_flowing)
    _, ok, _ = fake_server.wait_for(lambda item: isinstance(item[1], spec.ChannelFlowOk))
    assert ok.active is False
    with pytest.raises(TimeoutError):
        ch.publish(b"held back", "q", timeout=0.2)
    fake_server.send(1, spec.ChannelFlow(True))
    ch.publish(b"goes", "q", timeout=TIMEOUT)
    assert ch.is_flowing
    _, publish, _ = fake_server.wait_for(lambda item: isinstance(item[1], spec.BasicPublish))
    assert publish.routing_key == "q"
    conn.close()


def test_blocked_right_after_open_ok_is_kept(driver: Driver) -> None:
    server = FakeServer(blocked_on_open="low on disk")
    try:
        conn = driver.connect(server.url)
        assert wait_until(driver, conn, lambda: conn.is_blocked)
        assert conn.blocked_reason == "low on disk"
        ch = conn.channel()
        with pytest.raises(TimeoutError):
            ch.publish(b"x", "q", timeout=0.2)
        server.send(0, spec.ConnectionUnblocked())
        ch.publish(b"x", "q", timeout=TIMEOUT)
        assert not conn.is_blocked
        conn.close()
    finally:
        server.close()


# -- robust reconnect, against a broker of its own -------------------------------------------


def test_robust_reconnect_restores_topology(driver: Driver, unique: str) -> None:
    broker = start_broker()
    brokers = [broker]
    try:
        conn = driver.connect(broker.url, robust=True, reconnect_interval=0.05,
                              max_reconnect_interval=0.5)
        reconnected = threading.Event()
        conn.add_reconnect_callback(lambda c: reconnected.set())
        ch = conn.channel(publisher_confirms=True, prefetch_count=10)
        ex = ch.declare_exchange(f"{unique}.ex", "direct")
        named = ch.declare_queue(f"{unique}.q")
        anonymous = ch.declare_queue("", exclusive=True)
        named.bind(ex, "k")
        anonymous.bind(ex, "k")
        ex.publish(b"before", "k")
        unacked = named.get()
        assert unacked.body == b"before" and not unacked.is_stale
        old_name = anonymous.name

        broker.proc.kill()
        broker.proc.wait(TIMEOUT)
        brokers.append(start_broker("--port", str(broker.port)))  # same port, empty broker
        assert wait_until(driver, conn, reconnected.is_set, 20)
        assert not conn.is_closed and not ch.is_closed

        assert unacked.is_stale
        unacked.ack()  # its tag died with the old channel: ignored, no error
        ex.publish(b"after", "k")  # confirmed: the exchange was re-declared
        assert named.get().body == b"after"
        assert anonymous.name != old_name  # a new server-named queue, bound again
        assert anonymous.get().body == b"after"
        conn.close()
        assert conn.is_closed
    finally:
        for b in brokers:
            b.stop()


def test_robust_restore_goes_on_past_a_refused_declaration(driver: Driver, unique: str, tmp_path) -> None:
    """After a reconnect, a declaration the new broker refuses (here: the queue was declared
    meanwhile with other arguments, 406) is dropped and the channel reopened; the rest of the
    topology is restored."""
    broker = start_broker()
    brokers = [broker]
    try:
        conn = driver.connect(broker.url, robust=True, reconnect_interval=3,
                              max_reconnect_interval=3)
        reconnected = threading.Event()
        conn.add_reconnect_callback(lambda c: reconnected.set())
        ch = conn.channel()
        ch.declare_queue(f"{unique}.limited", arguments={"x-max-length": 5})
        kept = ch.declare_queue(f"{unique}.kept")
        broker.proc.kill()
        broker.proc.wait(TIMEOUT)
        # The new broker has the queue with other arguments before it accepts anyone (from a
        # definitions file: no race with the client's first reconnect attempt).
        defs = tmp_path / "defs.json"
        defs.write_text(json.dumps({"queues": [{
            "name": f"{unique}.limited", "vhost": "/", "durable": False, "auto_delete": False,
            "arguments": {"x-max-length": 9}}]}))
        brokers.append(start_broker("--port", str(broker.port), "--definitions", str(defs)))
        assert wait_until(driver, conn, reconnected.is_set, 20)
        assert not ch.is_closed
        ch.publish(b"x", kept.name)
        assert kept.get().body == b"x"
        conn.close()
    finally:
        for b in brokers:
            b.stop()


def test_robust_publish_waits_for_the_reconnect(driver: Driver, unique: str) -> None:
    """A publish made while the connection is down (known lost) waits for the reconnect and
    the restored channel, then goes through."""
    broker = start_broker()
    brokers = [broker]
    try:
        conn = driver.connect(broker.url, robust=True, reconnect_interval=0.2,
                              max_reconnect_interval=0.5)
        ch = conn.channel(publisher_confirms=True)
        queue = ch.declare_queue(f"{unique}.q")
        broker.proc.kill()
        broker.proc.wait(TIMEOUT)
        assert wait_until(driver, conn, lambda: conn.is_closed)
        brokers.append(start_broker("--port", str(broker.port)))
        ch.publish(b"while down", queue.name, timeout=20)
        assert not ch.is_closed and queue.get().body == b"while down"
        conn.close()
    finally:
        for b in brokers:
            b.stop()
