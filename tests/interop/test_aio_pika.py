"""Interop: aio-pika (asyncio, high-level API on top of aiormq)."""
from __future__ import annotations

import asyncio
import datetime
import decimal
import os

import aio_pika
import aiormq.exceptions as ae
import pytest
from aio_pika import DeliveryMode, ExchangeType, Message

from .conftest import REQUIRED_CAPABILITIES, TIMEOUT, aeventually, run


async def take(iterator, n: int, timeout: float = TIMEOUT) -> list:
    """The next n messages from a queue iterator."""
    out = []

    async def loop() -> None:
        async for message in iterator:
            out.append(message)
            if len(out) == n:
                return

    await asyncio.wait_for(loop(), timeout)
    return out


async def queue_gone(conn, name: str) -> bool:
    ch = await conn.channel()
    try:
        await ch.declare_queue(name, passive=True)
    except ae.ChannelNotFoundEntity:
        return True
    await ch.close()
    return False


async def _ignore(message) -> None:
    """A consumer that does nothing."""


def test_connect_and_server_properties(amqp_url):
    async def body():
        conn = await aio_pika.connect(amqp_url)
        async with conn:
            ch = await conn.channel()
            raw = await ch.get_underlay_channel()
            props = raw.connection.server_properties
            assert props["product"] and props["version"] and props["platform"]
            for cap in REQUIRED_CAPABILITIES:
                assert props["capabilities"][cap] is True, cap
            flow = await ch.flow(True)
            assert flow.active is True
        assert conn.is_closed

    run(body())


def test_exclusive_queue_locked_then_gone_with_owner(amqp_url, unique):
    async def body():
        owner = await aio_pika.connect(amqp_url)
        other = await aio_pika.connect(amqp_url)
        try:
            await (await owner.channel()).declare_queue(unique, exclusive=True)
            ch = await other.channel()
            with pytest.raises(ae.ChannelLockedResource) as info:
                await ch.declare_queue(unique, passive=True)
            assert "RESOURCE_LOCKED" in str(info.value)
            assert not other.is_closed
            await owner.close()
            await aeventually(lambda: queue_gone(other, unique),
                              what="exclusive queue deletion")
        finally:
            await other.close()
            await owner.close()

    run(body())


def test_auto_delete_queue_goes_after_last_consumer(amqp_url, unique):
    async def body():
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue(unique, auto_delete=True)
            # auto-delete only triggers on a consumer going away, not on declare
            tag = await q.consume(_ignore)
            assert (await ch.declare_queue(unique, passive=True)) is not None
            await q.cancel(tag)
            await aeventually(lambda: queue_gone(conn, unique), what="auto-delete")

    run(body())


def test_topic_and_headers_routing(amqp_url, unique):
    async def body():
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel(publisher_confirms=True)
            topic = await ch.declare_exchange(f"{unique}-t", ExchangeType.TOPIC,
                                              auto_delete=True)
            headers = await ch.declare_exchange(f"{unique}-h", ExchangeType.HEADERS,
                                                auto_delete=True)
            q_hash = await ch.declare_queue(exclusive=True)
            q_star = await ch.declare_queue(exclusive=True)
            q_any = await ch.declare_queue(exclusive=True)
            q_all = await ch.declare_queue(exclusive=True)
            await q_hash.bind(topic, "stock.#")
            await q_star.bind(topic, "stock.*.nyse")
            await q_any.bind(headers, arguments={"x-match": "any", "a": 1, "b": "two"})
            await q_all.bind(headers, arguments={"x-match": "all", "a": 1, "b": "two"})
            for key in ["stock", "stock.ibm.nyse", "stock.ibm.x.nyse", "stocks.ibm.nyse"]:
                await topic.publish(Message(key.encode()), key)
            for i, hdrs in enumerate([{"a": 1}, {"a": 1, "b": "two"}, {"b": "two", "c": 3},
                                      {"a": 2}, {}]):
                await headers.publish(Message(str(i).encode(), headers=hdrs), "")

            async def bodies(q):
                out = []
                while (m := await q.get(no_ack=True, fail=False)) is not None:
                    out.append(m.body)
                return out

            assert await bodies(q_hash) == [b"stock", b"stock.ibm.nyse", b"stock.ibm.x.nyse"]
            assert await bodies(q_star) == [b"stock.ibm.nyse"]
            assert await bodies(q_any) == [b"0", b"1", b"2"]
            assert await bodies(q_all) == [b"1"]
            await topic.delete()
            await headers.delete()

    run(body())


def test_publisher_confirms_and_mandatory_return(amqp_url, unique):
    async def body():
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
            q = await ch.declare_queue(unique, exclusive=True)
            confirm = await ch.default_exchange.publish(Message(b"x"), q.name)
            assert confirm.name == "Basic.Ack"
            with pytest.raises(aio_pika.exceptions.DeliveryError) as info:
                await ch.default_exchange.publish(Message(b"lost"), unique + ".none",
                                                  mandatory=True)
            # basic.return 312 NO_ROUTE arrives before the basic.ack for that tag
            assert info.value.frame.reply_code == 312
            assert info.value.frame.reply_text == "NO_ROUTE"
            # the channel keeps working and sequence numbers keep counting
            confirm = await ch.default_exchange.publish(Message(b"y"), q.name)
            assert confirm.name == "Basic.Ack" and confirm.delivery_tag == 3
            assert q.declaration_result.message_count == 0
            assert (await ch.declare_queue(unique, passive=True)
                    ).declaration_result.message_count == 2

    run(body())


def test_all_properties_and_rich_headers_round_trip(amqp_url, unique):
    async def body():
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel(publisher_confirms=True)
            q = await ch.declare_queue(unique, exclusive=True)
            ts = datetime.datetime(2023, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
            headers = {
                "s": "text",
                "i": 7,
                "big": -(2**40),
                "f": 2.5,
                "t": True,
                "fa": False,
                "d": decimal.Decimal("12.345"),
                "ts": ts,
                "raw": bytearray(b"\x00bin\xff"),  # pamqp encodes bytearray, not bytes
                "arr": [1, "x", [2.5, False], {"k": "v"}],
                "tbl": {"inner": {"deep": [1, 2, 3]}, "n": None},
            }
            msg = Message(
                b"payload",
                headers=headers,
                content_type="application/octet-stream",
                content_encoding="identity",
                delivery_mode=DeliveryMode.PERSISTENT,
                priority=3,
                correlation_id="c-1",
                reply_to="rq",
                expiration=30,  # seconds in aio-pika; sent as "30000"
                message_id="m-1",
                timestamp=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
                type="t1",
                user_id="guest",
                app_id="app",
            )
            await ch.default_exchange.publish(msg, q.name)
            got = await q.get(no_ack=True)
            assert got.body == b"payload"
            assert got.content_type == "application/octet-stream"
            assert got.content_encoding == "identity"
            assert got.delivery_mode == DeliveryMode.PERSISTENT
            assert got.priority == 3
            assert got.correlation_id == "c-1" and got.reply_to == "rq"
            assert got.properties.expiration == "30000"
            assert got.message_id == "m-1" and got.type == "t1"
            assert got.user_id == "guest" and got.app_id == "app"
            assert got.timestamp == datetime.datetime(2020, 1, 1,
                                                      tzinfo=datetime.timezone.utc)
            h = got.headers
            assert h["s"] == "text" and h["i"] == 7 and h["big"] == -(2**40)
            assert h["f"] == 2.5 and h["t"] is True and h["fa"] is False
            assert h["d"] == decimal.Decimal("12.345")
            assert h["ts"].replace(tzinfo=datetime.timezone.utc) == ts
            assert bytes(h["raw"]) == b"\x00bin\xff"
            assert h["arr"][0] == 1 and h["arr"][1] == "x"
            assert h["arr"][2] == [2.5, False] and h["arr"][3] == {"k": "v"}
            assert h["tbl"] == {"inner": {"deep": [1, 2, 3]}, "n": None}

    run(body())


def test_large_messages_byte_exact(amqp_url, unique):
    async def body():
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel(publisher_confirms=True)
            q = await ch.declare_queue(unique, exclusive=True)
            bodies = [os.urandom(3 * 1024 * 1024), b"", os.urandom(1024 * 1024 + 1)]
            for b in bodies:
                await ch.default_exchange.publish(Message(b), q.name)
            async with q.iterator(no_ack=True) as it:
                got = await take(it, 3)
            assert [m.body for m in got] == bodies

    run(body())


def test_server_cancels_consumer_when_queue_deleted(amqp_url, unique):
    async def body():
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue(unique)
            tag = await q.consume(_ignore)
            raw = await ch.get_underlay_channel()
            cancelled: asyncio.Future = asyncio.get_running_loop().create_future()
            raw.on_consumer_cancel_callbacks.add(
                lambda frame: cancelled.done() or cancelled.set_result(frame))
            other = await conn.channel()
            await other.queue_delete(unique)
            frame = await asyncio.wait_for(cancelled, TIMEOUT)
            assert frame.consumer_tag == tag
            assert not ch.is_closed

    run(body())


def test_prefetch_round_robin_and_redelivery_on_channel_close(amqp_url, unique):
    async def body():
        async with await aio_pika.connect(amqp_url) as conn:
            pub = await conn.channel(publisher_confirms=True)
            q = await pub.declare_queue(unique, exclusive=True)
            c1 = await conn.channel()
            c2 = await conn.channel()
            await c1.set_qos(prefetch_count=1)
            await c2.set_qos(prefetch_count=1)
            inbox1: asyncio.Queue = asyncio.Queue()
            inbox2: asyncio.Queue = asyncio.Queue()
            await (await c1.get_queue(unique, ensure=False)).consume(inbox1.put)
            await (await c2.get_queue(unique, ensure=False)).consume(inbox2.put)
            for i in range(4):
                await pub.default_exchange.publish(Message(str(i).encode()), q.name)
            m1 = await asyncio.wait_for(inbox1.get(), TIMEOUT)
            m2 = await asyncio.wait_for(inbox2.get(), TIMEOUT)
            # prefetch 1 each: round robin hands out 0 and 1, one per consumer
            assert sorted([m1.body, m2.body]) == [b"0", b"1"]
            # closing c2 with its message unacked requeues it (redelivered=True); c1
            # then gets everything that is left, one at a time as it acks.
            await c2.close()
            await m1.ack()
            rest = []
            for _ in range(3):
                m = await asyncio.wait_for(inbox1.get(), TIMEOUT)
                rest.append((m.body, m.redelivered))
                await m.ack()
            assert sorted(b for b, _ in rest) == sorted({b"0", b"1", b"2", b"3"} - {m1.body})
            assert (m2.body, True) in rest
            # RabbitMQ puts a requeued message back at its original position, so the
            # redelivered one (older) comes before the never-delivered 2 and 3.
            assert rest[0] == (m2.body, True)

    run(body())


def test_transactions(amqp_url, unique):
    async def body():
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel(publisher_confirms=False)
            q = await ch.declare_queue(unique, exclusive=True)
            tx = ch.transaction()
            await tx.select()
            await ch.default_exchange.publish(Message(b"rolled"), q.name)
            await tx.rollback()
            await ch.default_exchange.publish(Message(b"committed"), q.name)
            await tx.commit()
            m = await q.get(no_ack=True)
            assert m.body == b"committed"
            assert await q.get(fail=False) is None

    run(body())
