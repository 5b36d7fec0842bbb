"""The virtual clock: advance() drives the broker's timers and heartbeats without sleeping."""
from __future__ import annotations

import pika
import pytest

from minimq.testing import Broker, VirtualClock

from integration.rawamqp import FRAME_HEARTBEAT, RawAMQP
from .conftest import connect


@pytest.fixture
def hb() -> Broker:
    with Broker(clock="virtual", heartbeat=10) as b:
        yield b


def test_clock_forms() -> None:
    assert Broker(clock=1000).clock() == 1000.0
    clock = VirtualClock(5)
    b = Broker(clock=clock)
    assert b.virtual and b.clock is clock and b.now() == 5
    assert not Broker().virtual
    with pytest.raises(ValueError):
        clock.set(4)


def test_advance_runs_timers_in_order_at_their_time(vmq: Broker) -> None:
    start = vmq.now()
    fired: list = []
    timers = vmq.core.timers
    for delay in (30, 10, 20, 100):
        vmq.call_in_loop(timers.call_at, start + delay, lambda d=delay: fired.append((d, vmq.now() - start)))
    assert vmq.advance(25) == start + 25
    assert fired == [(10, 10), (20, 20)]
    vmq.advance(5)
    assert fired[-1] == (30, 30)
    vmq.advance(1000)
    assert fired[-1] == (100, 100) and vmq.now() == start + 1030


def test_server_sends_heartbeats_on_advance(hb: Broker) -> None:
    c = RawAMQP.connect("127.0.0.1", hb.port, heartbeat=10)
    try:
        assert hb.connections()[0].heartbeat == 10
        hb.advance(5)  # half the interval without output: the server sends a heartbeat
        assert c.read_frame(timeout=5, heartbeats=True).type == FRAME_HEARTBEAT
        with pytest.raises(TimeoutError):  # and nothing else, in real time
            c.read_frame(timeout=0.1, heartbeats=True)
    finally:
        c.sock.close()


def test_silent_client_is_dropped_after_two_intervals(hb: Broker) -> None:
    c = RawAMQP.connect("127.0.0.1", hb.port, heartbeat=10)
    try:
        hb.advance(15)
        # Talking (here: a queue.declare round trip) counts as a sign of life.
        c.channel_open(1)
        c.queue_declare(1, "alive")
        hb.advance(15)
        assert len(hb.connections()) == 1
        hb.advance(10)  # 25 s of silence > 2 x 10 s
        hb.wait_for(lambda: hb.connections() == [], timeout=5)
        assert c.closed(timeout=5)
    finally:
        c.sock.close()


def test_pika_client_that_stops_pumping_is_dropped(hb: Broker) -> None:
    c = connect(hb.url, heartbeat=10)
    assert hb.connections()[0].heartbeat == 10
    hb.advance(30)  # pika is not pumped, so it sends nothing
    hb.wait_for(lambda: hb.connections() == [], timeout=5)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        c.process_data_events(time_limit=1)
        c.channel()


def test_message_ttl(vmq: Broker) -> None:
    c = connect(vmq.url)
    ch = c.channel()
    ch.queue_declare("ttl", arguments={"x-message-ttl": 60_000})
    ch.queue_declare("per-message")
    ch.confirm_delivery()
    ch.basic_publish("", "ttl", b"a")
    ch.basic_publish("", "per-message", b"b", pika.BasicProperties(expiration="5000"))
    vmq.advance(4.9)
    assert [q.messages_ready for q in vmq.queues()] == [1, 1]
    vmq.advance(0.2)
    assert [(q.name, q.messages_ready) for q in vmq.queues()] == [("per-message", 0), ("ttl", 1)]
    vmq.advance(55)
    assert vmq.queue("ttl").messages_ready == 0
    c.close()


def test_queue_expiry(vmq: Broker) -> None:
    c = connect(vmq.url)
    ch = c.channel()
    ch.queue_declare("idle", arguments={"x-expires": 10_000})
    vmq.advance(9)
    assert [q.name for q in vmq.queues()] == ["idle"]
    vmq.advance(2)
    assert vmq.queues() == []
    c.close()


def test_delayed_message_exchange(vmq: Broker) -> None:
    c = connect(vmq.url)
    ch = c.channel()
    ch.exchange_declare("delayed", "x-delayed-message", arguments={"x-delayed-type": "direct"})
    ch.queue_declare("later")
    ch.queue_bind("later", "delayed", "k")
    ch.confirm_delivery()
    ch.basic_publish("delayed", "k", b"soon", pika.BasicProperties(headers={"x-delay": 30_000}))
    vmq.advance(29)
    assert vmq.queue("later").messages_ready == 0
    vmq.advance(1)
    assert [m.body for m in vmq.messages("later")] == [b"soon"]
    c.close()


def test_a_consumer_receives_a_delayed_message_on_advance(vmq: Broker) -> None:
    c = connect(vmq.url)
    ch = c.channel()
    ch.exchange_declare("d", "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    ch.queue_declare("q")
    ch.queue_bind("q", "d")
    got: list = []
    ch.basic_consume("q", lambda _c, _m, _p, body: got.append(body), auto_ack=True)
    ch.basic_publish("d", "", b"x", pika.BasicProperties(headers={"x-delay": 1000}))
    vmq.wait_for(lambda: vmq.consumers(), timeout=5)
    vmq.advance(1)
    from .conftest import pump_until

    pump_until(c, lambda: got == [b"x"], what="the delayed delivery")
    c.close()
