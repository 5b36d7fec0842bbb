"""Interop: aiormq (low-level asyncio AMQP client, the core of aio-pika)."""
from __future__ import annotations

import asyncio

import aiormq
import aiormq.exceptions as ae
import pytest
from pamqp import commands as spec

from .conftest import REQUIRED_CAPABILITIES, TIMEOUT, run, url_with


async def connect(url: str) -> aiormq.Connection:
    return await asyncio.wait_for(aiormq.connect(url), TIMEOUT)


async def publish_all(ch, queue: str, bodies, exchange: str = "") -> None:
    """Publish and wait for each confirm (aiormq channels are in confirm mode by default)."""
    for body in bodies:
        await ch.basic_publish(body, exchange=exchange, routing_key=queue)


class Inbox:
    """A consumer callback that queues deliveries for `await inbox.next()`."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    async def __call__(self, message) -> None:
        await self.queue.put(message)

    async def next(self, timeout: float = TIMEOUT):
        return await asyncio.wait_for(self.queue.get(), timeout)


def test_connect_tune_and_server_properties(amqp_url):
    async def body():
        conn = await connect(url_with(amqp_url, query="heartbeat=5"))
        try:
            props = conn.server_properties
            assert props["product"] and props["version"] and props["platform"]
            for cap in REQUIRED_CAPABILITIES:
                assert conn.server_capabilities[cap] is True, cap
            tune = conn.connection_tune
            assert tune.heartbeat == 5  # what was sent back in tune-ok
            # RabbitMQ proposes frame_max 131072 and channel_max 2047
            assert tune.frame_max >= 4096 and tune.channel_max > 0
        finally:
            await conn.close()
        assert conn.is_closed

    run(body())


def test_unknown_vhost_and_wrong_password(amqp_url, unique):
    async def body():
        # aiormq does not map a connection.close in reply to connection.open: it raises
        # InvalidFrameError("Expected one of ['Connection.OpenOk'], got
        # <Connection.Close ...>"). (RabbitMQ sends 530 "NOT_ALLOWED - vhost <v> not
        # found", checked with pika and py-amqp.)
        with pytest.raises((ae.ConnectionNotAllowed, ae.InvalidFrameError)) as info:
            await connect(url_with(amqp_url, vhost=unique))
        assert "NOT_ALLOWED" in str(info.value) or "Connection.Close" in str(info.value)
        with pytest.raises(ae.ProbableAuthenticationError) as info:
            await connect(url_with(amqp_url, password="bad"))
        assert info.value.args[0].startswith("ACCESS_REFUSED - Login was refused")

    run(body())


def test_get_get_empty_and_delete_counts(amqp_url, unique):
    async def body():
        conn = await connect(amqp_url)
        try:
            ch = await conn.channel()
            ok = await ch.queue_declare(unique, auto_delete=False)
            assert ok.queue == unique and ok.message_count == 0
            empty = await ch.basic_get(unique)
            assert isinstance(empty.delivery, spec.Basic.GetEmpty)
            await publish_all(ch, unique, [b"a", b"b", b"c"])
            msg = await ch.basic_get(unique, no_ack=True)
            assert isinstance(msg.delivery, spec.Basic.GetOk)
            assert msg.body == b"a" and msg.delivery.message_count == 2
            assert msg.delivery.routing_key == unique and msg.delivery.exchange == ""
            purge = await ch.queue_purge(unique)
            assert purge.message_count == 2
            await publish_all(ch, unique, [b"d"])
            deleted = await ch.queue_delete(unique)
            assert deleted.message_count == 1
        finally:
            await conn.close()

    run(body())


def test_exclusive_consumer_refuses_others(amqp_url, unique):
    async def body():
        conn = await connect(amqp_url)
        try:
            ch = await conn.channel()
            await ch.queue_declare(unique, exclusive=True)
            await ch.basic_consume(unique, Inbox(), exclusive=True)
            ch2 = await conn.channel()
            with pytest.raises(ae.ChannelAccessRefused) as info:
                await ch2.basic_consume(unique, Inbox())
            # RabbitMQ: "ACCESS_REFUSED - queue '<name>' in vhost '/' in exclusive use"
            assert "in exclusive use" in str(info.value)
            assert ch2.is_closed and not ch.is_closed and not conn.is_closed
            # and the reverse: an exclusive consume on a queue with consumers is refused
            q2 = (await ch.queue_declare("", exclusive=True)).queue
            await ch.basic_consume(q2, Inbox())
            ch3 = await conn.channel()
            with pytest.raises(ae.ChannelAccessRefused):
                await ch3.basic_consume(q2, Inbox(), exclusive=True)
        finally:
            await conn.close()

    run(body())


def test_ack_errors_are_channel_level_406(amqp_url, unique):
    async def body():
        conn = await connect(amqp_url)
        try:
            ch = await conn.channel()
            await ch.queue_declare(unique, exclusive=True)
            await publish_all(ch, unique, [b"x"])
            msg = await ch.basic_get(unique)
            tag = msg.delivery.delivery_tag
            await ch.basic_ack(tag)
            await ch.basic_ack(tag)  # double ack
            with pytest.raises(ae.ChannelPreconditionFailed) as info:
                await ch.queue_declare(unique, passive=True)
            assert str(info.value).find("unknown delivery tag 1") >= 0
            assert not conn.is_closed
            ch2 = await conn.channel()
            await ch2.basic_reject(42)
            with pytest.raises(ae.ChannelPreconditionFailed):
                await ch2.basic_qos(prefetch_count=1)
            ch3 = await conn.channel()
            await ch3.basic_nack(7, multiple=True)
            with pytest.raises(ae.ChannelPreconditionFailed):
                await ch3.basic_qos(prefetch_count=1)
            ch4 = await conn.channel()  # connection still fine
            await ch4.queue_declare(unique, passive=True)
        finally:
            await conn.close()

    run(body())


def test_nack_multiple_requeue_order_and_reject_drop(amqp_url, unique):
    async def body():
        conn = await connect(amqp_url)
        try:
            ch = await conn.channel()
            await ch.queue_declare(unique, exclusive=True)
            await publish_all(ch, unique, [str(i).encode() for i in range(1, 7)])
            tags = []
            for _ in range(6):
                tags.append((await ch.basic_get(unique)).delivery.delivery_tag)
            await ch.basic_reject(tags[5], requeue=False)  # "6" dropped
            await ch.basic_nack(tags[4], multiple=True, requeue=True)  # 1..5 back
            inbox = Inbox()
            await ch.basic_consume(unique, inbox, no_ack=True)
            got = [await inbox.next() for _ in range(5)]
            assert [(m.body, m.delivery.redelivered) for m in got] == \
                [(str(i).encode(), True) for i in range(1, 6)]
            assert (await ch.queue_declare(unique, passive=True)).message_count == 0
        finally:
            await conn.close()

    run(body())


def test_basic_recover_and_qos_prefetch(amqp_url, unique):
    async def body():
        conn = await connect(amqp_url)
        try:
            ch = await conn.channel()
            await ch.queue_declare(unique, exclusive=True)
            await publish_all(ch, unique, [str(i).encode() for i in range(5)])
            await ch.basic_qos(prefetch_count=2)
            inbox = Inbox()
            await ch.basic_consume(unique, inbox)
            first = [await inbox.next() for _ in range(2)]
            assert [m.body for m in first] == [b"0", b"1"]
            ok = await ch.queue_declare(unique, passive=True)
            assert ok.message_count == 3 and ok.consumer_count == 1
            await ch.basic_recover(requeue=True)
            again = [await inbox.next() for _ in range(2)]
            assert [(m.body, m.delivery.redelivered) for m in again] == \
                [(b"0", True), (b"1", True)]
            await ch.basic_ack(again[1].delivery.delivery_tag, multiple=True)
            rest = [await inbox.next() for _ in range(2)]
            assert [m.body for m in rest] == [b"2", b"3"]
        finally:
            await conn.close()

    run(body())


def test_exchange_bind_unbind_and_delete_if_unused(amqp_url, unique):
    async def body():
        conn = await connect(amqp_url)
        src, dst = f"{unique}-s", f"{unique}-d"
        try:
            ch = await conn.channel()
            await ch.exchange_declare(src, exchange_type="fanout")
            await ch.exchange_declare(dst, exchange_type="topic")
            q = (await ch.queue_declare("", exclusive=True)).queue
            await ch.queue_bind(q, dst, routing_key="#")
            await ch.exchange_bind(destination=dst, source=src, routing_key="")
            await ch.basic_publish(b"hop", exchange=src, routing_key="a.b")
            msg = await ch.basic_get(q, no_ack=True)
            # the delivery names the exchange the message was published to
            assert msg.body == b"hop" and msg.delivery.exchange == src
            assert msg.delivery.routing_key == "a.b"
            ch2 = await conn.channel()
            with pytest.raises(ae.ChannelPreconditionFailed):
                await ch2.exchange_delete(src, if_unused=True)
            await ch.exchange_unbind(destination=dst, source=src, routing_key="")
            await ch.basic_publish(b"nope", exchange=src, routing_key="a.b")
            assert isinstance((await ch.basic_get(q)).delivery, spec.Basic.GetEmpty)
            await ch.exchange_delete(src, if_unused=True)  # unused now
        finally:
            ch = await conn.channel()
            await ch.exchange_delete(src)
            await ch.exchange_delete(dst)
            await conn.close()

    run(body())


def test_confirm_select_and_tx(amqp_url, unique):
    async def body():
        conn = await connect(amqp_url)
        try:
            ch = await conn.channel(publisher_confirms=True)
            await ch.queue_declare(unique, exclusive=True)
            confirms = await asyncio.gather(*(
                ch.basic_publish(str(i).encode(), routing_key=unique) for i in range(10)))
            assert all(isinstance(c, spec.Basic.Ack) for c in confirms)
            assert max(c.delivery_tag for c in confirms) == 10
            tx = await conn.channel(publisher_confirms=False)
            await tx.tx_select()
            await tx.basic_publish(b"r", routing_key=unique)
            await tx.tx_rollback()
            await tx.basic_publish(b"c", routing_key=unique)
            assert (await ch.queue_declare(unique, passive=True)).message_count == 10
            await tx.tx_commit()
            assert (await ch.queue_declare(unique, passive=True)).message_count == 11
        finally:
            await conn.close()

    run(body())


def test_soft_errors_leave_connection_usable(amqp_url, unique):
    async def body():
        conn = await connect(amqp_url)
        try:
            ch = await conn.channel()
            with pytest.raises(ae.ChannelNotFoundEntity) as info:
                await ch.queue_declare(unique, passive=True)
            assert f"no queue '{unique}'" in str(info.value)
            ch = await conn.channel()
            with pytest.raises(ae.ChannelNotFoundEntity):
                await ch.queue_bind("", "amq.direct", routing_key="x")  # no last queue
            ch = await conn.channel()
            with pytest.raises(ae.ChannelNotFoundEntity):
                await ch.basic_publish(b"x", exchange=unique, routing_key="k")
                await ch.basic_qos(prefetch_count=1)
            ch = await conn.channel()
            with pytest.raises(ae.ChannelAccessRefused):
                # RabbitMQ: 403 "ACCESS_REFUSED - operation not permitted on the default
                # exchange"
                await ch.queue_bind(unique + "q", "", routing_key="x")
            ch = await conn.channel()
            with pytest.raises(ae.ChannelAccessRefused):
                # amq.* names are reserved: 403 ACCESS_REFUSED
                await ch.exchange_declare(f"amq.{unique}", exchange_type="direct")
            assert not conn.is_closed
            ch = await conn.channel()
            await ch.queue_declare("", exclusive=True)
        finally:
            await conn.close()

    run(body())
