"""The asyncio client against the session broker (minimq, or MINIMQ_TEST_URL's)."""
from __future__ import annotations

import asyncio
import datetime

import pytest

import minimq.client as mc
from minimq.client import Message, errors

from .conftest import TIMEOUT, run, url_with



async def take(iterator: mc.QueueIterator, n: int) -> list[mc.IncomingMessage]:
    out: list[mc.IncomingMessage] = []

    async def loop() -> None:
        async for message in iterator:
            out.append(message)
            if len(out) == n:
                return

    await asyncio.wait_for(loop(), TIMEOUT)
    return out


def test_connect_server_properties_and_close(amqp_url: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            assert not conn.is_closed
            assert conn.server_properties["product"]
            assert conn.capabilities["publisher_confirms"] is True
            assert conn.heartbeat >= 0 and conn.frame_max >= 4096
            channel = await conn.channel()
            assert channel.number == 1 and not channel.is_closed
        assert conn.is_closed and channel.is_closed
        assert conn.close_reason is not None and conn.close_reason.code == 200

        conn = await mc.connect(amqp_url)  # the awaitable form
        await conn.close()
        await conn.close()  # idempotent

    run(body())


def test_url_options_are_negotiated(amqp_url: str) -> None:
    async def body() -> None:
        url = url_with(amqp_url, vhost="/", query="heartbeat=7&frame_max=8192&channel_max=5")
        assert "%2F" in url
        async with mc.connect(url) as conn:
            assert (conn.heartbeat, conn.frame_max, conn.channel_max) == (7, 8192, 5)
            channels = [await conn.channel() for _ in range(5)]
            assert [c.number for c in channels] == [1, 2, 3, 4, 5]
            with pytest.raises(mc.ClientError):
                await conn.channel()

    run(body())


def test_connection_errors(amqp_url: str) -> None:
    async def body() -> None:
        with pytest.raises(mc.AuthenticationError) as info:
            await mc.connect(url_with(amqp_url, password="wrong"))
        assert info.value.code == 403 and isinstance(info.value, mc.ConnectionClosed)
        with pytest.raises(mc.NotAllowed) as vhost_info:
            await mc.connect(url_with(amqp_url, vhost="no-such-vhost"))
        assert vhost_info.value.code == 530
        with pytest.raises(mc.ConnectionLost):
            await mc.connect("amqp://guest:guest@127.0.0.1:1/?connection_timeout=2")

    run(body())


def test_channel_error_leaves_connection_open(amqp_url: str, unique: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            channel = await conn.channel()
            with pytest.raises(mc.NotFound) as info:
                await channel.declare_queue(unique, passive=True)
            err = info.value
            assert isinstance(err, mc.ChannelClosed) and err.code == 404
            assert "NOT_FOUND" in err.reply_text and unique in err.reply_text
            assert (err.class_id, err.method_id) == (50, 10)
            assert channel.is_closed and channel.close_reason is err
            assert not conn.is_closed
            with pytest.raises(mc.NotFound):
                await channel.publish(b"x", unique)
            other = await conn.channel()
            await other.declare_queue(unique, exclusive=True)
            with pytest.raises(mc.PreconditionFailed):
                await other.declare_queue(
                    unique, exclusive=True, arguments={"x-max-length": 10})

    run(body())


def test_exchanges_queues_bindings(amqp_url: str, unique: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel()
            topic = await ch.declare_exchange(f"{unique}.topic", mc.ExchangeType.TOPIC,
                                              auto_delete=False)
            fan = await ch.declare_exchange(f"{unique}.fan", "fanout")
            await fan.bind(topic, "a.#")  # exchange-to-exchange
            q1 = await ch.declare_queue(f"{unique}.q1", exclusive=True)
            q2 = await ch.declare_queue("", exclusive=True)
            assert q2.name.startswith("amq.gen-")
            await q1.bind(topic, "*.x")
            await q2.bind(fan)
            await topic.publish(Message(b"one"), "a.x")   # both
            await topic.publish(Message(b"two"), "b.x")   # q1 only
            await topic.publish(Message(b"three"), "a.y.z")  # q2 only
            got1 = [(await q1.get(no_ack=True)), (await q1.get(no_ack=True))]
            assert [m.body for m in got1] == [b"one", b"two"]
            got2 = [(await q2.get(no_ack=True)), (await q2.get(no_ack=True))]
            assert [m.body for m in got2] == [b"one", b"three"]
            assert await q1.get() is None

            await q1.unbind(topic, "*.x")
            await topic.publish(b"four", "b.x")
            await fan.unbind(topic, "a.#")
            await topic.publish(b"five", "a.x")
            assert await q1.get() is None and await q2.get() is None

            declared = await ch.declare_queue(q1.name, passive=True)
            assert declared.message_count == 0
            await ch.default_exchange.publish(b"six", q1.name)
            await ch.default_exchange.publish(b"seven", q1.name)
            assert await q1.purge() == 2
            await ch.default_exchange.publish(b"eight", q1.name)
            assert await q1.delete() == 1
            with pytest.raises(mc.NotFound):
                await ch.get_queue(q1.name)
            ch = await conn.channel()
            await ch.delete_exchange(fan.name)
            await ch.delete_exchange(topic.name)
            with pytest.raises(mc.NotFound):
                await ch.get_exchange(topic.name)

    run(body())


def test_publish_with_properties(amqp_url: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue("", exclusive=True)
            stamp = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
            await ch.publish(Message(
                b'{"a": 1}', content_type="application/json", content_encoding="utf-8",
                headers={"int": 1, "str": "s", "list": [1, "two"], "nested": {"b": True}},
                persistent=True, priority=3, correlation_id="corr", reply_to="replies",
                expiration=60, message_id="mid", timestamp=stamp, type="kind",
                user_id="guest", app_id="tests"), q.name)
            m = await q.get()
            assert m is not None and m.body == b'{"a": 1}'
            assert (m.content_type, m.content_encoding, m.delivery_mode, m.priority) == (
                "application/json", "utf-8", 2, 3)
            assert m.headers["int"] == 1 and m.headers["list"] == [1, "two"]
            assert m.headers["str"] in ("s", b"s") and m.headers["nested"] == {"b": True}
            assert (m.correlation_id, m.reply_to, m.expiration, m.message_id) == (
                "corr", "replies", "60000", "mid")
            assert (m.timestamp, m.type, m.user_id, m.app_id) == (
                int(stamp.timestamp()), "kind", "guest", "tests")
            assert m.routing_key == q.name and m.exchange == "" and not m.redelivered
            assert m.message_count == 0
            await m.ack()
            await ch.publish("text body", q.name)
            m = await q.get(no_ack=True)
            assert m.text() == "text body"

    run(body())


def test_publisher_confirms_ack_nack_return(amqp_url: str, unique: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel(publisher_confirms=True)
            q = await ch.declare_queue(unique, exclusive=True, arguments={
                "x-max-length": 1, "x-overflow": "reject-publish"})
            await ch.publish(b"fits", q.name)  # acked: returns None
            with pytest.raises(mc.MessageNacked):
                await ch.publish(b"overflows", q.name)
            with pytest.raises(mc.MessageReturned) as info:
                await ch.publish(Message(b"lost"), f"{unique}.nowhere", mandatory=True)
            assert info.value.code == 312 and info.value.routing_key == f"{unique}.nowhere"
            # Not mandatory: unroutable is simply acked.
            await ch.publish(b"dropped", f"{unique}.nowhere")
            # Many in flight at once, all resolved.
            await q.purge()
            await q.delete()
            q = await ch.declare_queue("", exclusive=True)
            await asyncio.gather(*(ch.publish(b"%d" % i, q.name) for i in range(300)))
            assert (await ch.declare_queue(q.name, passive=True)).message_count == 300

    run(body())


def test_returns_without_confirms_go_to_callback(amqp_url: str, unique: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel()
            loop = asyncio.get_running_loop()
            returned: asyncio.Future[mc.ReturnedMessage] = loop.create_future()
            ch.add_on_return_callback(lambda m: returned.done() or returned.set_result(m))
            await ch.publish(Message(b"r", headers={"h": 1}), unique, mandatory=True)
            message = await asyncio.wait_for(returned, TIMEOUT)
            assert message.body == b"r" and message.reply_code == 312
            assert message.routing_key == unique and message.headers == {"h": 1}

    run(body())


def test_close_resolves_in_flight_confirms(amqp_url: str) -> None:
    async def body() -> None:
        conn = await mc.connect(amqp_url)
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue("", exclusive=False, auto_delete=False)
        tasks = [asyncio.ensure_future(ch.publish(b"x" * 1000, q.name)) for _ in range(500)]
        await asyncio.sleep(0)  # let every publish reach the wire, none confirmed yet
        await conn.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results == [None] * 500
        async with mc.connect(amqp_url) as conn2:
            ch2 = await conn2.channel()
            assert await ch2.delete_queue(q.name) == 500

    run(body())


def test_consume_iterator_and_cancel(amqp_url: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue("", exclusive=True)
            for i in range(5):
                await ch.publish(b"%d" % i, q.name)
            async with q.iterator() as messages:
                got = await take(messages, 5)
                for m in got:
                    await m.ack()
                assert [m.body for m in got] == [b"0", b"1", b"2", b"3", b"4"]
                assert messages.consumer_tag and got[0].consumer_tag == messages.consumer_tag
            # Cancelled on exit: a new message stays in the queue.
            await ch.publish(b"later", q.name)
            declared = await ch.declare_queue(q.name, passive=True)
            assert declared.consumer_count == 0
            # Idle timeout ends the loop.
            async for m in q.iterator(timeout=0.2, no_ack=True):
                assert m.body == b"later"
            assert (await ch.declare_queue(q.name, passive=True)).message_count == 0

    run(body())


def test_consume_with_callbacks(amqp_url: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue("", exclusive=True)
            seen: list[bytes] = []
            done = asyncio.Event()

            async def on_message(message: mc.IncomingMessage) -> None:
                async with message.process():
                    seen.append(message.body)
                    if len(seen) == 10:
                        done.set()

            tag = await q.consume(on_message)
            for i in range(10):
                await ch.publish(b"%d" % i, q.name)
            await asyncio.wait_for(done.wait(), TIMEOUT)
            assert seen == [b"%d" % i for i in range(10)]
            await q.cancel(tag)

            plain: list[bytes] = []
            got_one = asyncio.Event()

            def on_plain(message: mc.IncomingMessage) -> None:  # a plain function works too
                plain.append(message.body)
                got_one.set()

            tag = await ch.consume(q, on_plain, no_ack=True)
            await ch.publish(b"plain", q.name)
            await asyncio.wait_for(got_one.wait(), TIMEOUT)
            assert plain == [b"plain"]
            await ch.cancel(tag)
            assert (await ch.declare_queue(q.name, passive=True)).message_count == 0

    run(body())


def test_ack_nack_reject(amqp_url: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue("", exclusive=True)
            for body_ in (b"a", b"b", b"c"):
                await ch.publish(body_, q.name)
            a, b, c = [await q.get() for _ in range(3)]
            await a.nack(requeue=True)
            await b.reject(requeue=False)
            await c.reject(requeue=True)
            again = [await q.get() for _ in range(2)]
            assert sorted(m.body for m in again) == [b"a", b"c"]
            assert all(m.redelivered for m in again)
            await again[1].ack(multiple=True)  # acks both
            assert await q.get() is None
            with pytest.raises(RuntimeError):
                await again[1].ack()

            await ch.publish(b"d", q.name)
            d = await q.get()
            await d.nack(requeue=False)
            assert await q.get() is None

    run(body())


def test_message_process(amqp_url: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue("", exclusive=True)
            await ch.publish(b"ok", q.name)
            m = await q.get()
            async with m.process():
                pass
            assert m.settled
            assert await q.get() is None

            await ch.publish(b"fails-requeued", q.name)
            m = await q.get()
            with pytest.raises(ValueError):
                async with m.process(requeue=True):
                    raise ValueError("boom")
            again = await q.get()
            assert again.body == b"fails-requeued" and again.redelivered

            with pytest.raises(ValueError):
                async with again.process():  # reject without requeue: gone
                    raise ValueError("boom")
            assert await q.get() is None
            assert not ch.is_closed

    run(body())


def test_prefetch(amqp_url: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel(prefetch_count=2)
            q = await ch.declare_queue("", exclusive=True)
            for i in range(5):
                await ch.publish(b"%d" % i, q.name)
            async with q.iterator() as messages:
                first = await take(messages, 2)
                # A third delivery must not come while two are unacked.
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(messages.__anext__(), 0.3)
                await first[0].ack()
                (third,) = await take(messages, 1)
                assert third.body == b"2"
                await first[1].ack()
                await third.ack()
                rest = await take(messages, 2)
                assert [m.body for m in rest] == [b"3", b"4"]
                for m in rest:
                    await m.ack()

    run(body())


def test_transactions(amqp_url: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue("", exclusive=True)
            await ch.tx_select()
            await ch.publish(b"rolled back", q.name)
            await ch.tx_rollback()
            await ch.publish(b"committed", q.name)
            assert (await ch.declare_queue(q.name, passive=True)).message_count == 0
            await ch.tx_commit()
            m = await q.get()
            assert m.body == b"committed"
            await m.ack()
            await ch.tx_commit()
            with pytest.raises(KeyError):
                async with ch.transaction():
                    await ch.publish(b"undone", q.name)
                    raise KeyError("x")
            async with ch.transaction():
                await ch.publish(b"done", q.name)
            m = await q.get(no_ack=True)
            assert m.body == b"done" and await q.get() is None

    run(body())


def test_large_messages(amqp_url: str) -> None:
    async def body() -> None:
        url = url_with(amqp_url, query="frame_max=4096")
        async with mc.connect(url) as conn:
            ch = await conn.channel(publisher_confirms=True)
            q = await ch.declare_queue("", exclusive=True)
            big = bytes(range(256)) * (8 * 1024 * 4)  # 8 MiB
            await ch.publish(big, q.name)
            await ch.publish(b"", q.name)
            async with q.iterator(no_ack=True) as messages:
                got = await take(messages, 2)
            assert got[0].body == big and got[1].body == b""

    run(body(), timeout=60)


def test_broker_cancels_consumer_when_queue_deleted(amqp_url: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue("", exclusive=True)
            other = await conn.channel()
            messages = q.iterator()
            await messages.start()
            await other.delete_queue(q.name)
            # The broker's basic.cancel ends the iteration.
            rest = [m async for m in messages]
            assert rest == [] and not ch.is_closed

    run(body())


def test_many_messages_throughput_sanity(amqp_url: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue("", exclusive=True)
            n = 5000
            for i in range(n):
                await ch.publish(b"m", q.name)
            count = 0
            async with q.iterator(no_ack=True) as messages:
                async for _ in messages:
                    count += 1
                    if count == n:
                        break
            assert count == n

    run(body())


def test_error_classes() -> None:
    assert isinstance(errors.channel_error(404, "x"), mc.NotFound)
    assert isinstance(errors.channel_error(499, "x"), mc.ChannelClosed)
    assert errors.channel_error(499, "x").code == 499
    assert isinstance(errors.connection_error(320, "x"), mc.ConnectionForced)
    assert isinstance(errors.connection_error(599, "x"), mc.ConnectionClosed)
    assert str(errors.connection_error(320, "CONNECTION_FORCED - bye")) == \
        "(320) CONNECTION_FORCED - bye"


def test_timed_out_call_closes_only_the_channel(amqp_url: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue("", exclusive=True)
            with pytest.raises(asyncio.TimeoutError):
                await ch.get(q, timeout=0)
            assert ch.is_closed and not conn.is_closed
            # The number stays reserved until the broker confirmed the close.
            other = await conn.channel()
            assert await other.get(q) is None
            third = await conn.channel()
            assert await third.get(q) is None

    run(body())
