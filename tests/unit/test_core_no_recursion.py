"""No routing path of the broker core recurses in Python.

Each test builds a long structure (a dead-letter chain, exchange-to-exchange bindings,
alternate exchanges, auto-delete exchanges) and then sets it off with the interpreter's
recursion limit only a little above the caller's depth: anything that recursed once per
queue or exchange would raise RecursionError at once. The chains here are a few hundred
long to stay fast; tests/extensions runs thousand-queue chains through real clients.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator

import pytest

from core_client import Broker, ChannelClosed, CoreClient, spec

HEADROOM = 150  # frames one publish, delivery or teardown may use, whatever the depth
N = 200


@contextmanager
def shallow_stack() -> Iterator[None]:
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + HEADROOM)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(autouse=True)
def no_errors_logged(caplog) -> Iterator[None]:
    # A hop that failed (a RecursionError included) is logged and dropped: that fails here.
    with caplog.at_level(logging.ERROR):
        yield
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def run_timers(broker: Broker, clock: Clock) -> None:
    """Let the long run of dead-lettering finish: its later slices run on the timers."""
    while (when := broker.timers.next_deadline()) is not None:
        clock.now = max(clock.now, when)
        broker.tick()


@pytest.fixture
def broker(clock: Clock) -> Broker:
    return Broker(clock=clock)


@pytest.fixture
def c(broker: Broker) -> CoreClient:
    return CoreClient(broker)


def chain(c: CoreClient, ch: int, n: int = N, first: dict | None = None, each: dict | None = None) -> list[str]:
    """q0 -> q1 -> ... -> q(n-1) -> sink through the default exchange."""
    names = [f"q{i}" for i in range(n)]
    c.declare(ch, "sink")
    for i, name in enumerate(names):
        args = dict(first if i == 0 and first is not None else (each if each is not None else {"x-message-ttl": 0}))
        args.update({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": names[i + 1] if i + 1 < n else "sink"})
        c.declare(ch, name, arguments=args)
    return names


def sink_deaths(c: CoreClient, ch: int) -> list[str]:
    with shallow_stack():
        run_timers(c.broker, c.broker.clock)
    got = c.get(ch, "sink", no_ack=True)
    assert got is not None, "nothing reached the end of the chain"
    return [d["queue"] for d in got.properties.headers["x-death"]]


def test_ttl_chain_started_by_a_publish(c: CoreClient) -> None:
    ch = c.channel()
    names = chain(c, ch)
    with shallow_stack():
        c.publish(ch, "", "q0", b"m")
    assert sink_deaths(c, ch) == names[::-1]


def test_max_length_chain(c: CoreClient) -> None:
    ch = c.channel()
    names = chain(c, ch, each={"x-max-length": 0})
    with shallow_stack():
        c.publish(ch, "", "q0", b"m")
    assert sink_deaths(c, ch) == names[::-1]


def test_chain_started_by_a_rejection(c: CoreClient) -> None:
    ch = c.channel()
    names = chain(c, ch, first={})
    c.publish(ch, "", "q0", b"m")
    got = c.get(ch, "q0")
    with shallow_stack():
        c.reject(ch, got.method.delivery_tag, requeue=False)
    assert sink_deaths(c, ch) == names[::-1]


def test_chain_started_by_an_expiry_timer(c: CoreClient, broker: Broker, clock: Clock) -> None:
    ch = c.channel()
    names = chain(c, ch, first={"x-message-ttl": 50})
    c.publish(ch, "", "q0", b"m")
    clock.now += 0.1
    with shallow_stack():
        broker.tick()
    assert sink_deaths(c, ch) == names[::-1]


def test_chain_started_by_a_dropped_consumer(c: CoreClient, broker: Broker) -> None:
    # The teardown of a connection requeues a quorum queue's message past its delivery
    # limit: it dead-letters into the chain, and the teardown still completes.
    ch = c.channel()
    names = chain(c, ch)
    c.declare(ch, "work", durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 0,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q0",
    })
    holder = CoreClient(broker)
    hch = holder.channel()
    holder.declare(hch, "mine", exclusive=True)
    holder.consume(hch, "work")
    c.publish(ch, "", "work", b"m")
    assert len(holder.deliveries(hch)) == 1
    with shallow_stack():
        holder.drop()
    assert sink_deaths(c, ch) == (["work"] + names)[::-1]
    c.declare(ch, "mine", exclusive=True)  # the dead connection's exclusive queue is gone
    assert broker.sessions == {c.session}


def test_exchange_to_exchange_and_alternate_exchange_chains(c: CoreClient) -> None:
    ch = c.channel()
    c.declare(ch, "end")
    # x0 -> x1 -> ... (bindings), then a run of alternate exchanges, then the queue.
    xs = [f"x{i}" for i in range(N)]
    alts = [f"a{i}" for i in range(N)]
    for i, name in enumerate(alts):
        args = {"alternate-exchange": alts[i + 1]} if i + 1 < N else {}
        c.call(ch, spec.ExchangeDeclare(exchange=name, type="direct", arguments=args))
    c.call(ch, spec.QueueBind(queue="end", exchange=alts[-1], routing_key="k"))
    for name in xs:
        c.call(ch, spec.ExchangeDeclare(exchange=name, type="fanout"))
    for src, dest in zip(xs, xs[1:] + [alts[0]]):
        c.call(ch, spec.ExchangeBind(destination=dest, source=src))
    with shallow_stack():
        c.publish(ch, "x0", "k", b"m")
    assert c.counts(ch, "end") == (1, 0)


def test_auto_delete_exchange_cascade(c: CoreClient, broker: Broker) -> None:
    ch = c.channel()
    xs = [f"x{i}" for i in range(N)]
    for name in xs:
        c.call(ch, spec.ExchangeDeclare(exchange=name, type="fanout", auto_delete=True))
    for src, dest in zip(xs, xs[1:]):
        c.call(ch, spec.ExchangeBind(destination=dest, source=src))
    c.declare(ch, "end")
    c.call(ch, spec.QueueBind(queue="end", exchange=xs[-1]))
    with shallow_stack():
        c.call(ch, spec.QueueDelete(queue="end"))
    assert not set(xs) & set(broker.vhosts["/"].exchanges)


def test_endless_cycle_is_worked_through_in_slices(c: CoreClient, broker: Broker, clock: Clock) -> None:
    # A message rejected once may cycle through TTL-0 queues forever (RabbitMQ's rule):
    # the call that sets it off returns, the rest goes on in timer slices.
    ch = c.channel()
    c.declare(ch, "start", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "ping"})
    for name, nxt in (("ping", "pong"), ("pong", "ping")):
        c.declare(ch, name, arguments={
            "x-message-ttl": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": nxt})
    c.publish(ch, "", "start", b"m")
    got = c.get(ch, "start")
    c.reject(ch, got.method.delivery_tag, requeue=False)  # returns: the slice ran out
    vhost = broker.vhosts["/"]
    assert vhost.pending_dead_letters == 1
    # The rest is due at once, but each run of the timers does one slice only, so the
    # driver (the server's event loop) serves everyone else between slices.
    assert broker.timers.next_deadline() == clock.now
    assert broker.tick() == 1
    assert vhost.pending_dead_letters == 1
    assert broker.tick() == 1
    assert vhost.pending_dead_letters == 1
    c.call(ch, spec.QueueDelete(queue="ping"))
    broker.tick()
    assert vhost.pending_dead_letters == 0
    with pytest.raises(ChannelClosed):
        c.counts(ch, "ping")


def test_a_flood_into_a_long_chain_cannot_hold_the_broker(c: CoreClient, broker: Broker, clock: Clock) -> None:
    # Fifty publishes in one read, each setting off a 200-queue chain: the read is done
    # after about one slice of work, the rest waits for the event loop's next turns.
    ch = c.channel()
    chain(c, ch)
    c.publish_many(ch, "", "q0", [b"m%d" % i for i in range(50)])
    vhost = broker.vhosts["/"]
    assert vhost.pending_dead_letters > 0
    assert c.counts(ch, "sink")[0] < 50
    run_timers(broker, clock)
    assert vhost.pending_dead_letters == 0
    assert c.counts(ch, "sink")[0] == 50
