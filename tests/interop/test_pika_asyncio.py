"""Interop: pika's callback-style AsyncioConnection, driven from asyncio.

Every pika callback is turned into an awaitable future so a test reads top to bottom;
every await is bounded by `asyncio.wait_for`.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pika
import pika.exceptions as pe
from pika.adapters.asyncio_connection import AsyncioConnection

from .conftest import REQUIRED_CAPABILITIES, TIMEOUT, run, url_with


class Waiter:
    """A pika callback whose call can be awaited; resolves to the callback's arguments."""

    def __init__(self) -> None:
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()

    def __call__(self, *args: Any) -> None:
        if not self.future.done():
            self.future.set_result(args[0] if len(args) == 1 else args)

    async def wait(self, timeout: float = TIMEOUT) -> Any:
        return await asyncio.wait_for(asyncio.shield(self.future), timeout)


class Collector:
    """A callback that appends its arguments and wakes whoever waits for a count."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.changed = asyncio.Event()

    def __call__(self, *args: Any) -> None:
        self.items.append(args)
        self.changed.set()

    async def wait_for(self, n: int, timeout: float = TIMEOUT) -> list[Any]:
        async def loop() -> None:
            while len(self.items) < n:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)
        return self.items


async def connect(url: str, **overrides: Any) -> tuple[AsyncioConnection, Waiter]:
    """Open a connection; returns it and a Waiter for its on_close callback."""
    params = pika.URLParameters(url)
    for key, value in overrides.items():
        setattr(params, key, value)
    opened, failed, closed = Waiter(), Waiter(), Waiter()
    conn = AsyncioConnection(params, on_open_callback=opened,
                             on_open_error_callback=lambda c, err: failed(err),
                             on_close_callback=closed,
                             custom_ioloop=asyncio.get_running_loop())
    done, _ = await asyncio.wait({opened.future, failed.future}, timeout=TIMEOUT,
                                 return_when=asyncio.FIRST_COMPLETED)
    if failed.future in done:
        raise failed.future.result()
    assert opened.future in done, "connection did not open"
    return conn, closed


async def close(conn: AsyncioConnection, closed: Waiter) -> Any:
    if conn.is_open:
        conn.close()
    return await closed.wait()


async def open_channel(conn: AsyncioConnection) -> tuple[Any, Waiter]:
    """Open a channel; returns it and a Waiter for its close reason."""
    opened, closed = Waiter(), Waiter()
    conn.channel(on_open_callback=opened)
    ch = await opened.wait()
    ch.add_on_close_callback(closed)
    return ch, closed


async def call(method, *args: Any, **kwargs: Any) -> Any:
    """Call a pika channel method that takes `callback=` and await its reply frame."""
    w = Waiter()
    method(*args, callback=w, **kwargs)
    return await w.wait()


def test_connect_properties_and_clean_close(amqp_url):
    async def body():
        conn, closed = await connect(amqp_url)
        props = conn.server_properties
        assert props["product"] and props["version"] and props["platform"]
        for cap in REQUIRED_CAPABILITIES:
            assert props["capabilities"][cap] is True, cap
        _conn, reason = await close(conn, closed)
        assert isinstance(reason, pe.ConnectionClosedByClient)
        assert reason.reply_code == 200

    run(body())


def test_wrong_password_reports_open_error(amqp_url):
    async def body():
        try:
            await connect(url_with(amqp_url, password="nope"))
        except pe.ProbableAuthenticationError as e:
            assert "ACCESS_REFUSED" in str(e)
        else:
            raise AssertionError("connection with a wrong password opened")

    run(body())


def test_heartbeat_is_negotiated(amqp_url):
    async def body():
        conn, closed = await connect(amqp_url, heartbeat=5)
        assert conn.params.heartbeat == 5
        assert conn._heartbeat_checker is not None
        await close(conn, closed)

    run(body())


def test_many_channels_concurrently_and_closing_one(amqp_url, unique):
    async def body():
        conn, closed = await connect(amqp_url)
        chans = await asyncio.gather(*(open_channel(conn) for _ in range(16)))
        numbers = {ch.channel_number for ch, _ in chans}
        assert len(numbers) == 16
        victim, victim_closed = chans[3]
        victim.close()
        _ch, reason = await victim_closed.wait()
        assert isinstance(reason, pe.ChannelClosedByClient)
        frames = await asyncio.gather(*(
            call(ch.queue_declare, f"{unique}-{i}", exclusive=True)
            for i, (ch, _) in enumerate(chans) if ch is not victim))
        assert len(frames) == 15
        await close(conn, closed)

    run(body())


def test_channel_flow_and_soft_error(amqp_url, unique):
    async def body():
        conn, closed = await connect(amqp_url)
        ch, ch_closed = await open_channel(conn)
        ok = await call(ch.flow, active=True)
        assert ok is True  # pika passes flow-ok's `active`
        # A 404 closes the channel only.
        ch.exchange_declare(unique, passive=True, callback=lambda f: None)
        _ch, reason = await ch_closed.wait()
        assert isinstance(reason, pe.ChannelClosedByBroker)
        assert reason.reply_code == 404
        assert conn.is_open
        ch2, _ = await open_channel(conn)
        await call(ch2.exchange_declare, "amq.topic", "topic", passive=True)
        await close(conn, closed)

    run(body())


def test_publish_consume_ack(amqp_url, unique):
    async def body():
        conn, closed = await connect(amqp_url)
        ch, _ = await open_channel(conn)
        await call(ch.queue_declare, unique, exclusive=True)
        got = Collector()
        await call(ch.basic_consume, unique, got)
        props = pika.BasicProperties(content_type="text/plain", headers={"n": 1})
        for i in range(10):
            ch.basic_publish("", unique, f"m{i}".encode(), props)
        items = await got.wait_for(10)
        assert [b for _c, _m, _p, b in items] == [f"m{i}".encode() for i in range(10)]
        assert all(p.headers == {"n": 1} for _c, _m, p, _b in items)
        assert [m.delivery_tag for _c, m, _p, _b in items] == list(range(1, 11))
        ch.basic_ack(10, multiple=True)
        ok = await call(ch.queue_declare, unique, passive=True)
        assert ok.method.message_count == 0
        await close(conn, closed)

    run(body())


def test_server_cancel_notification(amqp_url, unique):
    async def body():
        conn, closed = await connect(amqp_url)
        ch, _ = await open_channel(conn)
        await call(ch.queue_declare, unique)
        cancelled = Waiter()
        ch.add_on_cancel_callback(cancelled)
        ok = await call(ch.basic_consume, unique, lambda *a: None)
        tag = ok.method.consumer_tag
        other, _ = await open_channel(conn)
        await call(other.queue_delete, unique)
        frame = await cancelled.wait()
        # RabbitMQ sends basic.cancel(consumer_tag, nowait=True) to the consumer's channel
        assert isinstance(frame.method, pika.spec.Basic.Cancel)
        assert frame.method.consumer_tag == tag
        assert ch.is_open and tag not in ch.consumer_tags
        await close(conn, closed)

    run(body())


def test_per_consumer_and_global_qos(amqp_url, unique):
    async def body():
        conn, closed = await connect(amqp_url)
        setup, _ = await open_channel(conn)
        qs = [f"{unique}-{i}" for i in range(4)]
        for q in qs:
            await call(setup.queue_declare, q, exclusive=True)
        for q in qs:
            for i in range(5):
                setup.basic_publish("", q, f"{q}:{i}".encode())

        async def ready(q: str) -> int:
            return (await call(setup.queue_declare, q, passive=True)).method.message_count

        # make sure all 20 messages are enqueued before consuming
        for q in qs:
            while await ready(q) < 5:
                pass

        # per-consumer (global=false): each of 2 consumers gets 2
        per, _ = await open_channel(conn)
        await call(per.basic_qos, prefetch_count=2)
        got = Collector()
        await call(per.basic_consume, qs[0], got)
        await call(per.basic_consume, qs[1], got)
        await got.wait_for(4)
        assert await ready(qs[0]) == 3 and await ready(qs[1]) == 3
        assert len(got.items) == 4

        # global=true: the limit is shared by every consumer on the channel
        glob, _ = await open_channel(conn)
        await call(glob.basic_qos, prefetch_count=3, global_qos=True)
        got2 = Collector()
        await call(glob.basic_consume, qs[2], got2)
        await call(glob.basic_consume, qs[3], got2)
        await got2.wait_for(3)
        assert await ready(qs[2]) + await ready(qs[3]) == 7
        assert len(got2.items) == 3
        # acking one lets exactly one more through
        glob.basic_ack(got2.items[0][1].delivery_tag)
        await got2.wait_for(4)
        assert await ready(qs[2]) + await ready(qs[3]) == 6
        await close(conn, closed)

    run(body())


def test_confirm_sequence_and_return_before_ack(amqp_url, unique):
    async def body():
        conn, closed = await connect(amqp_url)
        ch, _ = await open_channel(conn)
        await call(ch.queue_declare, unique, exclusive=True)
        events: list[tuple[str, Any]] = []
        acks = Collector()

        def on_confirm(frame):
            events.append((type(frame.method).__name__, frame.method.delivery_tag))
            acks(frame)

        ch.add_on_return_callback(
            lambda _ch, method, _props, body: events.append(("Return", body)))
        await call(ch.confirm_delivery, ack_nack_callback=on_confirm)
        ch.basic_publish("", unique, b"1")
        ch.basic_publish("", unique, b"2")
        ch.basic_publish("amq.direct", unique + ".none", b"3", mandatory=True)
        ch.basic_publish("", unique, b"4")

        async def confirmed(tag: int) -> None:
            while not any(t >= tag for n, t in events if n == "Ack"):
                await acks.wait_for(len(acks.items) + 1)

        await asyncio.wait_for(confirmed(4), TIMEOUT)
        # The return for message 3 comes before the ack covering tag 3.
        ret = events.index(("Return", b"3"))
        first_ack_covering_3 = next(i for i, (n, t) in enumerate(events)
                                    if n == "Ack" and t >= 3)
        assert ret < first_ack_covering_3
        assert all(n in ("Ack", "Return") for n, _ in events)
        await close(conn, closed)

    run(body())


def test_transactions(amqp_url, unique):
    async def body():
        conn, closed = await connect(amqp_url)
        ch, _ = await open_channel(conn)
        await call(ch.queue_declare, unique, exclusive=True)
        await call(ch.tx_select)
        ch.basic_publish("", unique, b"gone")
        await call(ch.tx_rollback)
        ch.basic_publish("", unique, b"kept")
        await call(ch.tx_commit)
        ok = await call(ch.queue_declare, unique, passive=True)
        assert ok.method.message_count == 1
        w = Waiter()
        ch.basic_get(unique, lambda *a: w(a), auto_ack=True)
        _ch, method, _props, body_ = await w.wait()
        assert body_ == b"kept"
        await close(conn, closed)

    run(body())
