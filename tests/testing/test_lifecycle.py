"""Starting and stopping embedded brokers: threads, event loops, ports, speed."""
from __future__ import annotations

import asyncio
import socket
import statistics
import time

import pika
import pytest

from minimq.testing import Broker

from .conftest import closed_by_broker, connect


def test_with_block_runs_in_a_thread_on_a_free_port() -> None:
    with Broker() as broker:
        assert broker.running and broker.port and broker.port != 5672
        assert broker.url == f"amqp://guest:guest@127.0.0.1:{broker.port}/"
        c = connect(broker.url)
        ch = c.channel()
        ch.queue_declare("q")
        ch.basic_publish("", "q", b"x")
        broker.wait_for(lambda: broker.queue("q").messages_ready == 1, timeout=5)
        c.close()
    assert not broker.running


def test_stop_closes_connections_and_frees_the_port() -> None:
    broker = Broker().start()
    port = broker.port
    c = connect(broker.url)
    broker.stop()
    assert closed_by_broker(c).reply_code == 320
    # The port is free again: we can bind it ourselves.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), 1)


def test_two_brokers_side_by_side_are_independent() -> None:
    with Broker() as a, Broker() as b:
        assert a.port != b.port
        ca, cb = connect(a.url), connect(b.url)
        ca.channel().queue_declare("only-in-a")
        assert [q.name for q in a.queues()] == ["only-in-a"]
        assert b.queues() == []
        ca.close()
        cb.close()


def test_url_quotes_the_vhost_and_users() -> None:
    with Broker(vhost="my vhost/1", users={"u@x": "p:w"}) as broker:
        assert broker.url.endswith("/my%20vhost%2F1")
        assert broker.url.startswith("amqp://u%40x:p%3Aw@127.0.0.1:")
        c = connect(broker.url)
        assert broker.connections()[0].vhost == "my vhost/1"
        assert broker.connections()[0].user == "u@x"
        c.close()


def test_start_plus_stop_is_well_under_50ms() -> None:
    Broker().start().stop()  # warm up imports
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        b = Broker().start()
        # accepting: a TCP connect succeeds
        socket.create_connection(("127.0.0.1", b.port), 1).close()
        b.stop()
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.05, times


def test_async_with_runs_in_the_current_loop() -> None:
    aio_pika = pytest.importorskip("aio_pika")

    async def main() -> None:
        async with Broker() as broker:
            assert broker._loop is asyncio.get_running_loop()
            conn = await aio_pika.connect(broker.url)
            ch = await conn.channel()
            q = await ch.declare_queue("aq")
            await ch.default_exchange.publish(aio_pika.Message(b"hi", content_type="text/plain"), "aq")
            await broker.wait_for(lambda: broker.queue("aq").messages_ready == 1, timeout=5)
            [m] = broker.messages("aq")
            assert (m.body, m.content_type) == (b"hi", "text/plain")
            got = await q.get(timeout=5)
            await got.ack()
            await broker.wait_for(lambda: broker.queue("aq").messages == 0, timeout=5)
            await conn.close()
        assert not broker.running

    asyncio.run(asyncio.wait_for(main(), 20))


def test_async_wait_for_against_a_threaded_broker() -> None:
    """A coroutine awaits wait_for on a broker running in another thread."""
    with Broker() as broker:
        async def main() -> None:
            waiting = asyncio.ensure_future(broker.wait_for(lambda: broker.vhosts() == ["/", "late"], timeout=5))
            await asyncio.sleep(0)
            await asyncio.to_thread(broker.add_vhost, "late")
            assert await waiting

        asyncio.run(asyncio.wait_for(main(), 10))


def make_durable_state(url: str):
    """Durable and transient things, one persistent message delivered but not acked."""
    c = connect(url)
    ch = c.channel()
    ch.exchange_declare("dx", "topic", durable=True)
    ch.exchange_declare("tx", "fanout")
    ch.queue_declare("dq", durable=True, arguments={"x-max-length": 100})
    ch.queue_declare("tq")
    ch.queue_bind("dq", "dx", "a.#")
    ch.queue_bind("tq", "dx", "b.#")
    ch.queue_bind("dq", "amq.fanout")
    ch.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2, headers={"n": 1})
    ch.basic_publish("dx", "a.1", b"p1", persistent)
    ch.basic_publish("dx", "a.2", b"t1")
    ch.basic_publish("dx", "a.3", b"p2", persistent)
    ch.basic_publish("dx", "b.1", b"p-in-transient-queue", persistent)
    method, _props, body = ch.basic_get("dq")  # p1: delivered, not acked
    assert body == b"p1"
    return c


def check_durable_state(broker: Broker) -> None:
    assert [q.name for q in broker.queues()] == ["dq"]
    assert broker.queue("dq").arguments == {"x-max-length": 100}
    names = {e.name for e in broker.exchanges()}
    assert "dx" in names and "tx" not in names
    assert [(b.source, b.routing_key) for b in broker.bindings(destination="dq")] == [
        ("", "dq"), ("amq.fanout", "dq"), ("dx", "a.#"),  # pika binds with the queue name
    ]
    # persistent messages only, in order; the one delivered before comes back redelivered
    assert [(m.body, m.redelivered, m.headers) for m in broker.messages("dq")] == [
        (b"p1", True, {"n": 1}), (b"p2", False, {"n": 1}),
    ]


def test_restart_keeps_durable_state_and_disconnects_clients() -> None:
    with Broker(vhosts=("/", "other")) as broker:
        port = broker.port
        c = make_durable_state(broker.url)
        broker.restart()
        assert broker.port == port and broker.restarts == 1
        assert closed_by_broker(c).reply_code == 320
        assert broker.vhosts() == ["/", "other"]
        check_durable_state(broker)
        c2 = connect(broker.url)  # clients reconnect to the same URL
        c2.channel().queue_declare("dq", passive=True)
        c2.close()


def test_data_dir_keeps_durable_state_across_restarts_and_brokers(tmp_path) -> None:
    data = tmp_path / "data"
    with Broker(data_dir=data) as broker:
        assert data.is_dir()
        c = make_durable_state(broker.url)
        broker.restart()
        assert closed_by_broker(c).reply_code == 320
        check_durable_state(broker)
    with Broker(data_dir=data) as broker:  # a new broker on the same directory
        check_durable_state(broker)
        with pytest.raises(RuntimeError):  # one broker per data directory
            Broker(data_dir=data).start()


def test_stop_then_start_in_memory_is_a_fresh_broker() -> None:
    broker = Broker().start()
    make_durable_state(broker.url).close()
    broker.stop()
    with broker:
        assert broker.queues() == []


def test_restart_in_async_mode() -> None:
    async def main() -> None:
        async with Broker() as broker:
            port = broker.port
            await broker.restart()
            assert broker.port == port
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"AMQP\x00\x00\x09\x01")
            assert (await reader.read(7))[:1] == b"\x01"  # connection.start method frame
            writer.close()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_misuse_is_reported() -> None:
    broker = Broker()
    with pytest.raises(RuntimeError):
        broker.queues()
    with pytest.raises(RuntimeError):
        broker.advance(1)
    with broker:
        with pytest.raises(RuntimeError):
            broker.start()
        with pytest.raises(RuntimeError):
            broker.advance(1)  # real clock
    broker.stop()  # stopping twice is fine
