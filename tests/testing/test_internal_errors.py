"""What an internal error costs, proven with faults injected through minimq.testing.

`Broker.break_exchange` makes one exchange's routing plug-in raise, as a bug would. The
promises: a publish that hits the bug is nacked (never silence) before the 541
connection.close; and a connection torn down across the bug still runs every other step
of its teardown (consumers cancelled, unacked messages requeued, exclusive queues deleted,
the connection forgotten), logging the failure with its traceback at error level.
"""
from __future__ import annotations

import logging

import pika
import pytest

from integration.rawamqp import RawAMQP
from minimq.codec import spec
from minimq.testing import Broker

from .conftest import closed_by_broker, connect, pump_until


def raw_client(mq: Broker) -> RawAMQP:
    c = RawAMQP.connect(mq.host, mq.port)
    c.channel_open(1)
    return c


def test_publish_hitting_an_internal_error_is_nacked_before_the_close(mq: Broker) -> None:
    c = raw_client(mq)
    c.send_method(1, spec.ExchangeDeclare(exchange="hub", type="fanout"))
    c.expect(spec.ExchangeDeclareOk)
    c.queue_declare(1, "q")
    c.send_method(1, spec.QueueBind(queue="q", exchange="hub"))
    c.expect(spec.QueueBindOk)
    c.send_method(1, spec.ConfirmSelect())
    c.expect(spec.ConfirmSelectOk)
    c.publish(1, "hub", "", b"one")
    assert c.expect(spec.BasicAck).delivery_tag == 1
    mq.break_exchange("hub")
    # In one write: a publish that routes fine (2), one that hits the fault (3).
    c.send_raw(b"".join(_publish_bytes(c, exchange, body) for exchange, body in (("", b"two"), ("hub", b"three"))))
    frames = [c.read_method() for _ in range(3)]
    assert [type(m) for _ch, m in frames] == [spec.BasicAck, spec.BasicNack, spec.ConnectionClose]
    (_, ack), (_, nack), (_, close) = frames
    assert (ack.delivery_tag, ack.multiple) == (2, False)
    assert (nack.delivery_tag, nack.multiple, nack.requeue) == (3, False, False)
    assert close.reply_code == 541
    assert close.reply_text == "INTERNAL_ERROR - internal error: InjectedFault"
    c.send_method(0, spec.ConnectionCloseOk())
    c.sock.close()
    assert [m.body for m in mq.messages("q")] == [b"one", b"two"]


def _publish_bytes(c: RawAMQP, exchange: str, body: bytes) -> bytes:
    from integration.rawamqp import content_frames
    from minimq.codec.frames import encode_method_frame

    return encode_method_frame(1, spec.BasicPublish(0, exchange, exchange or "q", False, False)) + content_frames(
        1, body, None, c.frame_max
    )


def test_every_unconfirmed_publish_is_nacked(mq: Broker) -> None:
    # Publishes waiting in the pipeline when the fault hits are all nacked, in one
    # basic.nack(multiple), after the ack of those already routed.
    c = raw_client(mq)
    c.queue_declare(1, "q")
    c.send_method(1, spec.ExchangeDeclare(exchange="hub", type="fanout"))
    c.expect(spec.ExchangeDeclareOk)
    c.send_method(1, spec.ConfirmSelect())
    c.expect(spec.ConfirmSelectOk)
    mq.break_exchange("hub")
    c.send_raw(b"".join(_publish_bytes(c, e, b"m") for e in ("", "", "hub", "")))
    frames = [m for _ch, m in (c.read_method() for _ in range(3))]
    assert [type(m) for m in frames] == [spec.BasicAck, spec.BasicNack, spec.ConnectionClose]
    assert (frames[0].delivery_tag, frames[0].multiple) == (2, True)
    assert (frames[1].delivery_tag, frames[1].multiple) == (3, False)
    # The 4th publish came after the close: the broker discarded it, the client knows it
    # was never confirmed because the connection closed first.
    c.send_method(0, spec.ConnectionCloseOk())
    c.sock.close()


def test_pika_blocking_publisher_gets_an_error_not_silence(mq: Broker) -> None:
    # BlockingConnection reads the nack and the close in one go and reports the close.
    conn = connect(mq.url)
    ch = conn.channel()
    ch.exchange_declare("hub", "fanout")
    ch.confirm_delivery()
    mq.break_exchange("hub")
    with pytest.raises((pika.exceptions.NackError, pika.exceptions.ConnectionClosedByBroker)) as info:
        ch.basic_publish("hub", "", b"m")
    if isinstance(info.value, pika.exceptions.ConnectionClosedByBroker):
        assert info.value.reply_code == 541
    else:
        assert closed_by_broker(conn).reply_code == 541


def test_aio_pika_publisher_gets_the_nack(mq: Broker) -> None:
    aio_pika = pytest.importorskip("aio_pika")
    import asyncio

    async def run() -> tuple[BaseException, bool]:
        conn = await aio_pika.connect(mq.url)
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.declare_exchange("hub", aio_pika.ExchangeType.FANOUT)
        mq.break_exchange("hub")
        try:
            await asyncio.wait_for(ex.publish(aio_pika.Message(b"m"), routing_key=""), 10)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            error = exc
        else:
            raise AssertionError("the publish was confirmed")
        # The 541 close follows the nack: the connection's next use fails with it.
        with pytest.raises(Exception) as later:
            await asyncio.wait_for(ch.declare_queue("q"), 10)
        await conn.close()
        return error, later.value

    error, later = asyncio.run(run())
    assert isinstance(error, aio_pika.exceptions.DeliveryError), repr(error)  # basic.nack
    assert "541" in repr(later) or "INTERNAL_ERROR" in repr(later), repr(later)


def test_dead_lettering_into_a_broken_exchange_costs_only_that_message(mq: Broker, caplog) -> None:
    # Dead-lettering is at most once, as in RabbitMQ: a hop that fails is logged with its
    # traceback and that copy is dropped; the publisher (its message was accepted) and the
    # other copies are unaffected.
    conn = connect(mq.url)
    ch = conn.channel()
    ch.exchange_declare("dlx", "fanout")
    ch.queue_declare("sink")
    ch.queue_bind("sink", "dlx")
    ch.queue_declare("doomed", arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "dlx"})
    ch.queue_declare("plain")
    ch.exchange_declare("both", "fanout")
    ch.queue_bind("doomed", "both")
    ch.queue_bind("plain", "both")
    ch.confirm_delivery()
    mq.break_exchange("dlx")
    with caplog.at_level(logging.ERROR, logger="minimq"):
        ch.basic_publish("both", "", b"m")  # confirmed (no exception)
    assert [m.body for m in mq.messages("plain")] == [b"m"]
    assert mq.messages("sink") == []
    [record] = [r for r in caplog.records if "dead-lettering" in r.getMessage()]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    mq.repair_exchange("dlx")
    ch.basic_publish("both", "", b"again")
    mq.wait_for(lambda: [m.body for m in mq.messages("sink")] == [b"again"], timeout=5)
    conn.close()


def test_teardown_runs_every_step_when_one_fails(mq: Broker, caplog) -> None:
    setup = connect(mq.url)
    sch = setup.channel()
    sch.exchange_declare("hub", "fanout")
    sch.queue_declare("work")
    for body in (b"w1", b"w2"):
        sch.basic_publish("", "work", body)

    victim = connect(mq.url, client_properties={"connection_name": "victim"})
    ch1, ch2, ch3 = victim.channel(), victim.channel(), victim.channel()
    # Channel 1, released first: a consumer on an auto-delete queue bound from "hub".
    # Cancelling it deletes the queue, which unbinds it from "hub": the step that fails.
    ch1.queue_declare("auto", auto_delete=True)
    ch1.queue_bind("auto", "hub")
    ch1.basic_consume("auto", lambda *a: None)
    # Channel 2 holds two unacked messages; channel 3 a direct reply-to consumer.
    held: list = []
    ch2.basic_consume("work", lambda _c, m, _p, b: held.append(b))
    ch3.basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=True)
    # An exclusive queue, also bound from "hub" (its deletion fails the same way).
    ch2.queue_declare("private", exclusive=True)
    ch2.queue_bind("private", "hub")
    pump_until(victim, lambda: len(held) == 2, what="two deliveries held")
    assert len(mq.consumers()) == 2
    # Learn the victim's reply-to address (what a request it sent would carry).
    sch.queue_declare("requests")
    ch3.basic_publish("", "requests", b"req", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    _m, props, _b = pump_until(setup, lambda: _get(sch, "requests"), what="the request")
    reply_to = props.reply_to
    assert reply_to.startswith("amq.rabbitmq.reply-to.")

    mq.break_exchange("hub", on=["unbind"])
    with caplog.at_level(logging.ERROR, logger="minimq"):
        assert mq.drop_connection("victim") == 1  # a reset, as a crash looks
        mq.wait_for(lambda: mq.connections() == [setup_info(mq)], timeout=10, what="the victim gone")
        # Everything else still happened:
        mq.wait_for(lambda: mq.consumers() == [], timeout=10, what="consumers cancelled")
    names = {q.name for q in mq.queues()}
    assert "auto" not in names and "private" not in names
    assert [(m.body, m.redelivered) for m in mq.messages("work")] == [(b"w1", True), (b"w2", True)]
    # ...and each failure was logged with its traceback at error level.
    failures = [r for r in caplog.records if r.name == "minimq.teardown"]
    assert len(failures) == 2
    assert all(r.levelno == logging.ERROR and r.exc_info is not None for r in failures)
    assert "InjectedFault" in caplog.text

    # Its reply-to address routes nowhere any more.
    sch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        sch.basic_publish("", reply_to, b"late reply", mandatory=True)
    # Nobody is locked out of the dead connection's exclusive queue.
    mq.repair_exchange("hub")
    other = connect(mq.url)
    och = other.channel()
    och.queue_declare("private", exclusive=True)
    got: list = []
    och.basic_consume("work", lambda _c, m, _p, b: got.append((b, m.redelivered)))
    pump_until(other, lambda: len(got) == 2, what="the requeued messages")
    assert got == [(b"w1", True), (b"w2", True)]
    other.close()
    setup.close()


def _get(ch, queue: str):
    method, props, body = ch.basic_get(queue, auto_ack=True)
    return None if method is None else (method, props, body)


def setup_info(mq: Broker):
    [info] = mq.connections()
    return info


def test_endless_dead_letter_cycle_keeps_the_broker_serving(mq: Broker) -> None:
    # RabbitMQ's cycle rule lets a message cycle forever once it was rejected: here through
    # two TTL-0 queues, with no pause at all. The broker works through it in slices and
    # goes on serving everyone else meanwhile.
    a = connect(mq.url)
    ach = a.channel()
    ach.queue_declare("start", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "ping"})
    ach.queue_declare("ping", arguments={
        "x-message-ttl": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "pong"})
    ach.queue_declare("pong", arguments={
        "x-message-ttl": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "ping"})
    ach.basic_publish("", "start", b"spin")
    method, _p, _b = ach.basic_get("start")
    ach.basic_reject(method.delivery_tag, requeue=False)  # sets it off

    b = connect(mq.url)
    bch = b.channel()
    for i in range(10):  # round trips while the cycle spins
        bch.queue_declare("other")
        bch.basic_publish("", "other", b"%d" % i)
        got, _p, body = bch.basic_get("other", auto_ack=True)
        assert got is not None and body == b"%d" % i
    assert mq.call_in_loop(lambda: mq.core.vhosts["/"].pending_dead_letters) == 1  # still going

    ach.queue_delete("ping")  # breaks the cycle: pong's dead-letters route nowhere now
    mq.wait_for(lambda: mq.core.vhosts["/"].pending_dead_letters == 0, timeout=10)
    a.close()
    b.close()
