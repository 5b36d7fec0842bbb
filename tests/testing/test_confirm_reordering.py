"""The confirm-reordering fault: confirms out of publish order, as RabbitMQ may send them.

Raw sockets show the exact acks; minimq.client and aio-pika show that a correct publisher
still gets every confirm, and a naive reading of the acks is caught.
"""
from __future__ import annotations

import asyncio

import pytest

from minimq.codec import spec
from minimq.testing import Broker

from integration.rawamqp import RawAMQP, content_frames, encode_method_frame


def publish_batch(broker: Broker, count: int) -> list[spec.BasicAck]:
    """Publish `count` messages in confirm mode in one write; the acks until all are confirmed."""
    c = RawAMQP.connect("127.0.0.1", broker.port)
    try:
        c.channel_open(1)
        c.send_method(1, spec.ConfirmSelect())
        c.expect(spec.ConfirmSelectOk)
        c.queue_declare(1, "reorder", auto_delete=False)
        data = b"".join(
            encode_method_frame(1, spec.BasicPublish(0, "", "reorder" if i % 3 else "nowhere"))
            + content_frames(1, b"m%d" % i)
            for i in range(count)
        )
        c.send_raw(data)
        acks: list[spec.BasicAck] = []
        while not confirmed(acks) >= set(range(1, count + 1)):
            acks.append(c.expect(spec.BasicAck, channel=1))
        return acks
    finally:
        c.sock.close()


def confirmed(acks: list[spec.BasicAck]) -> set[int]:
    """The publish seqs the acks confirm, read as the AMQP spec says (multiple: all up to)."""
    done: set[int] = set()
    for ack in acks:
        if ack.multiple:
            done |= set(range(1, ack.delivery_tag + 1))
        else:
            done.add(ack.delivery_tag)
    return done


def overtaken(acks: list[spec.BasicAck]) -> int:
    """How many single acks confirm a seq while an earlier seq is still unconfirmed."""
    seen: set[int] = set()
    count = 0
    for ack in acks:
        if not ack.multiple and any(t not in seen for t in range(1, ack.delivery_tag)):
            count += 1
        seen |= confirmed([ack])
    return count


def test_confirms_are_in_order_by_default():
    with Broker() as b:
        acks = publish_batch(b, 30)
    tags = [a.delivery_tag for a in acks]
    assert tags == sorted(tags) and tags[-1] == 30
    assert overtaken(acks) == 0


def test_reordered_confirms_cover_every_publish_once_and_out_of_order():
    with Broker(reorder_confirms=7) as b:
        acks = publish_batch(b, 30)
    assert confirmed(acks) == set(range(1, 31))
    assert overtaken(acks) >= 1, acks
    # Each seq is acked individually at most once and never after a multiple ack covered it.
    singles = [a.delivery_tag for a in acks if not a.multiple]
    assert len(singles) == len(set(singles))


def test_a_naive_confirm_reader_is_caught():
    """Reading `ack N` as "1..N are safe" (ignoring multiple=false) claims too much."""
    with Broker() as b:
        b.reorder_confirms(seed=3)
        acks = publish_batch(b, 10)
    first_single = next(a for a in acks if not a.multiple)
    naive = set(range(1, first_single.delivery_tag + 1))
    assert naive - confirmed(acks[: acks.index(first_single) + 1]), "the fault did not reorder"


def test_reordering_can_be_turned_off_and_survives_restart():
    with Broker() as b:
        b.reorder_confirms(seed=1)
        b.restart()
        assert any(not a.multiple for a in publish_batch(b, 10))
        b.reorder_confirms(False)
        tags = [a.delivery_tag for a in publish_batch(b, 10)]
        assert tags == sorted(tags)


def test_minimq_client_gets_every_confirm_when_reordered():
    from minimq.client import connect

    async def main(url: str) -> None:
        conn = await connect(url)
        try:
            ch = await conn.channel(publisher_confirms=True)
            await ch.declare_queue("client-reorder")
            await asyncio.wait_for(
                asyncio.gather(*(ch.publish(b"x%d" % i, "client-reorder") for i in range(200))), 30
            )
        finally:
            await conn.close()

    with Broker(reorder_confirms=11) as b:
        asyncio.run(main(b.url))
        assert b.queue("client-reorder").messages == 200


def test_aio_pika_gets_every_confirm_when_reordered():
    aio_pika = pytest.importorskip("aio_pika")

    async def main(url: str) -> None:
        conn = await aio_pika.connect(url)
        try:
            ch = await conn.channel(publisher_confirms=True)
            await ch.declare_queue("aio-reorder")
            await asyncio.wait_for(asyncio.gather(*(
                ch.default_exchange.publish(aio_pika.Message(b"x%d" % i), "aio-reorder")
                for i in range(200)
            )), 30)
        finally:
            await conn.close()

    with Broker(reorder_confirms=5) as b:
        asyncio.run(main(b.url))
        assert b.queue("aio-reorder").messages == 200
