"""The extensions' timing, driven by a virtual clock: no sockets, no waiting.

The broker core reads time only from the clock it is given and keeps its deadlines in
`broker.timers`; here a FakeClock stands still until a test moves it, and `advance` walks
it from deadline to deadline calling `broker.tick()` at each, as the server's loop does
in real time. So deadlines can be checked to the exact instant (not a millisecond early)
and big queues can be expired in no time.
"""
from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))

from core_client import BasicProperties, Broker, ChannelClosed, CoreClient, spec  # noqa: E402

T0 = 1_700_000_000.0  # the virtual epoch: a realistic wall-clock time


class FakeClock:
    """A clock (a callable returning seconds) that only moves when told to."""

    def __init__(self, start: float = T0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


def advance(broker: Broker, clock: FakeClock, to: float) -> int:
    """Move the clock to `to`, stopping at each deadline on the way to run what is due."""
    ran = 0
    while True:
        when = broker.timers.next_deadline()
        if when is None or when > to:
            break
        clock.t = max(clock.t, when)
        ran += broker.tick()
    clock.t = to
    ran += broker.tick()
    return ran


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock) -> Broker:  # shadows the socket broker fixture: none is started here
    return Broker(clock=clock)


@pytest.fixture
def client(broker) -> CoreClient:
    return CoreClient(broker)


def count(c: CoreClient, ch: int, queue: str) -> int:
    return c.counts(ch, queue)[0]


def exists(c: CoreClient, queue: str) -> bool:
    ch = c.channel()
    try:
        c.call(ch, spec.QueueDeclare(queue=queue, passive=True))
    except ChannelClosed as exc:
        assert exc.code == 404
        return False
    c.close_channel(ch)
    return True


def text(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode()
    if isinstance(v, list):
        return [text(x) for x in v]
    return v


def setup_dlx(c: CoreClient, ch: int, queue: str, sink: str, **args) -> None:
    c.declare(ch, sink)
    c.declare(ch, queue, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": sink, **args})


# ----------------------------------------------------------------------- TTL


def test_queue_ttl_expires_exactly_at_the_deadline(broker, clock, client):
    c = client
    ch = c.channel()
    setup_dlx(c, ch, "q", "sink", **{"x-message-ttl": 1000})
    c.publish(ch, "", "q", b"m")
    advance(broker, clock, T0 + 0.999)
    assert count(c, ch, "q") == 1 and count(c, ch, "sink") == 0
    advance(broker, clock, T0 + 1.0)
    assert count(c, ch, "q") == 0 and count(c, ch, "sink") == 1
    got = c.get(ch, "sink", no_ack=True)
    (death,) = got.properties.headers["x-death"]
    assert text(death["reason"]) == "expired" and text(death["queue"]) == "q"
    # x-death's time comes from the broker's clock (seconds resolution).
    assert death["time"] == datetime.datetime.fromtimestamp(int(T0 + 1.0), datetime.timezone.utc)


def test_queue_ttl_counts_from_each_message_enqueue(broker, clock, client):
    c = client
    ch = c.channel()
    setup_dlx(c, ch, "q", "sink", **{"x-message-ttl": 1000})
    for i in range(5):
        clock.t = T0 + i * 0.25
        c.publish(ch, "", "q", str(i).encode())
    for i in range(5):
        advance(broker, clock, T0 + 1.0 + i * 0.25 - 0.001)
        assert count(c, ch, "sink") == i
        advance(broker, clock, T0 + 1.0 + i * 0.25)
        assert count(c, ch, "sink") == i + 1
    assert [c.get(ch, "sink", no_ack=True).body for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]


def test_expired_message_not_delivered_even_before_the_timer_runs(broker, clock, client):
    c = client
    ch = c.channel()
    setup_dlx(c, ch, "q", "sink", **{"x-message-ttl": 1000})
    c.publish(ch, "", "q", b"m")
    clock.t = T0 + 2  # time passed, but no tick yet
    assert c.get(ch, "q") is None
    assert count(c, ch, "sink") == 1


def test_per_message_ttl_exact(broker, clock, client):
    c = client
    ch = c.channel()
    setup_dlx(c, ch, "q", "sink")
    c.publish(ch, "", "q", b"m", BasicProperties(expiration="500"))
    advance(broker, clock, T0 + 0.499)
    assert count(c, ch, "sink") == 0
    advance(broker, clock, T0 + 0.5)
    assert count(c, ch, "sink") == 1
    assert count(c, ch, "q") == 0
    got = c.get(ch, "sink", no_ack=True)
    assert got.properties.expiration is None
    assert text(got.properties.headers["x-death"][0]["original-expiration"]) == "500"


def test_per_message_ttl_on_a_plain_queue_is_not_delivered_late(broker, clock, client):
    # A queue with no arguments at all.
    c = client
    ch = c.channel()
    c.declare(ch, "plain")
    c.publish(ch, "", "plain", b"m", BasicProperties(expiration="500"))
    advance(broker, clock, T0 + 1)
    assert c.get(ch, "plain") is None


def test_lower_of_queue_and_message_ttl_wins(broker, clock, client):
    c = client
    ch = c.channel()
    setup_dlx(c, ch, "q", "sink", **{"x-message-ttl": 1000})
    c.publish(ch, "", "q", b"queue-ttl", BasicProperties(expiration="5000"))
    c.publish(ch, "", "q", b"msg-ttl", BasicProperties(expiration="200"))
    # msg-ttl is behind the head: it expires at 0.2 s but is discarded when it reaches the
    # head, i.e. when queue-ttl expires at 1.0 s (RabbitMQ expires at the head only).
    advance(broker, clock, T0 + 0.999)
    assert count(c, ch, "sink") == 0
    advance(broker, clock, T0 + 1.0)
    assert count(c, ch, "sink") == 2 and count(c, ch, "q") == 0


def test_ttl_zero_with_no_consumer_expires_at_once(broker, clock, client):
    c = client
    ch = c.channel()
    setup_dlx(c, ch, "q", "sink", **{"x-message-ttl": 0})
    c.publish(ch, "", "q", b"m")
    assert count(c, ch, "sink") == 1  # no tick, no time passing needed


def test_ttl_timer_rearms_after_head_consumed(broker, clock, client):
    c = client
    ch = c.channel()
    setup_dlx(c, ch, "q", "sink", **{"x-message-ttl": 10_000})
    c.publish(ch, "", "q", b"first")
    clock.t = T0 + 5
    c.publish(ch, "", "q", b"second")
    clock.t = T0 + 6
    assert c.get(ch, "q", no_ack=True).body == b"first"
    advance(broker, clock, T0 + 14.999)
    assert count(c, ch, "sink") == 0 and count(c, ch, "q") == 1
    advance(broker, clock, T0 + 15)
    assert count(c, ch, "sink") == 1 and count(c, ch, "q") == 0


def test_retry_cycle_in_virtual_time(broker, clock, client):
    c = client
    ch = c.channel()
    c.declare(ch, "work", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "retry"})
    c.declare(ch, "retry", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "work",
                                      "x-message-ttl": 30_000})
    c.publish(ch, "", "work", b"job")
    for n in range(1, 4):
        got = c.get(ch, "work")
        c.reject(ch, got.delivery_tag, requeue=False)
        start = clock.t
        advance(broker, clock, start + 29.999)
        assert count(c, ch, "work") == 0
        advance(broker, clock, start + 30)
        assert count(c, ch, "work") == 1
        got = c.call(ch, spec.BasicGet(queue="work"))
        counts = {(text(d["queue"]), text(d["reason"])): d["count"] for d in got.properties.headers["x-death"]}
        assert counts == {("work", "rejected"): n, ("retry", "expired"): n}
        c.nack(ch, got.delivery_tag, requeue=True)


# ------------------------------------------------------------------ x-expires


def test_x_expires_exact(broker, clock, client):
    c = client
    ch = c.channel()
    c.declare(ch, "q", arguments={"x-expires": 2000})
    advance(broker, clock, T0 + 1.999)
    assert "q" in broker.vhosts["/"].queues
    advance(broker, clock, T0 + 2.0)
    assert "q" not in broker.vhosts["/"].queues
    assert not exists(c, "q")


def test_x_expires_consumer_keeps_alive_then_expires_after_cancel(broker, clock, client):
    c = client
    ch = c.channel()
    c.declare(ch, "q", arguments={"x-expires": 2000})
    tag = c.consume(ch, "q", no_ack=True)
    advance(broker, clock, T0 + 5)
    assert exists(c, "q")
    c.call(ch, spec.BasicCancel(consumer_tag=tag))
    advance(broker, clock, T0 + 6.999)
    assert "q" in broker.vhosts["/"].queues
    advance(broker, clock, T0 + 7.0)
    assert "q" not in broker.vhosts["/"].queues


def test_x_expires_consumer_connection_dropped(broker, clock, client):
    c = client
    ch = c.channel()
    c.declare(ch, "q", arguments={"x-expires": 1000})
    other = CoreClient(broker)
    och = other.channel()
    other.consume(och, "q")
    advance(broker, clock, T0 + 3)
    other.drop()
    advance(broker, clock, T0 + 3.999)
    assert "q" in broker.vhosts["/"].queues
    advance(broker, clock, T0 + 4.0)
    assert "q" not in broker.vhosts["/"].queues


def test_x_expires_get_and_redeclare_reset_the_lease(broker, clock, client):
    c = client
    ch = c.channel()
    c.declare(ch, "q", arguments={"x-expires": 1000})
    advance(broker, clock, T0 + 0.9)
    c.get(ch, "q")
    advance(broker, clock, T0 + 1.8)
    c.declare(ch, "q", arguments={"x-expires": 1000})
    advance(broker, clock, T0 + 2.799)
    assert "q" in broker.vhosts["/"].queues
    advance(broker, clock, T0 + 2.8)
    assert "q" not in broker.vhosts["/"].queues


def test_x_expires_with_messages_and_ttl(broker, clock, client):
    c = client
    ch = c.channel()
    c.declare(ch, "q", arguments={"x-expires": 1000, "x-message-ttl": 5000})
    c.publish(ch, "", "q", b"m")  # publishing is not use
    advance(broker, clock, T0 + 1.0)
    assert "q" not in broker.vhosts["/"].queues
    advance(broker, clock, T0 + 10)  # the message's timer finds the queue gone: no error


# -------------------------------------------------------- delayed-message exchange


def test_delayed_message_released_at_its_delay(broker, clock, client):
    c = client
    ch = c.channel()
    c.call(ch, spec.ExchangeDeclare(exchange="d", type="x-delayed-message",
                                    arguments={"x-delayed-type": "direct"}))
    c.declare(ch, "q")
    c.call(ch, spec.QueueBind(queue="q", exchange="d", routing_key="k"))
    c.publish(ch, "d", "k", b"later", BasicProperties(headers={"x-delay": 300}))
    c.publish(ch, "d", "k", b"now")
    assert count(c, ch, "q") == 1
    advance(broker, clock, T0 + 0.299)
    assert count(c, ch, "q") == 1
    advance(broker, clock, T0 + 0.3)
    assert count(c, ch, "q") == 2
    assert [c.get(ch, "q", no_ack=True).body for _ in range(2)] == [b"now", b"later"]


def test_delayed_messages_ordered_by_release_time(broker, clock, client):
    c = client
    ch = c.channel()
    c.call(ch, spec.ExchangeDeclare(exchange="d", type="x-delayed-message",
                                    arguments={"x-delayed-type": "fanout"}))
    c.declare(ch, "q")
    c.call(ch, spec.QueueBind(queue="q", exchange="d"))
    for body, delay in ((b"c", 3000), (b"a", 1000), (b"b1", 2000), (b"b2", 2000)):
        c.publish(ch, "d", "", body, BasicProperties(headers={"x-delay": delay}))
    clock.t = T0 + 0.5
    c.publish(ch, "d", "", b"a2", BasicProperties(headers={"x-delay": 500}))  # due at 1.0 too
    advance(broker, clock, T0 + 5)
    assert [c.get(ch, "q", no_ack=True).body for _ in range(5)] == [b"a", b"a2", b"b1", b"b2", b"c"]


def test_delayed_message_with_consumer(broker, clock, client):
    c = client
    ch = c.channel()
    c.call(ch, spec.ExchangeDeclare(exchange="d", type="x-delayed-message",
                                    arguments={"x-delayed-type": "direct"}))
    c.declare(ch, "q")
    c.call(ch, spec.QueueBind(queue="q", exchange="d", routing_key="k"))
    other = CoreClient(broker)
    och = other.channel()
    other.consume(och, "q", no_ack=True)
    c.publish(ch, "d", "k", b"m", BasicProperties(headers={"x-delay": 1000}))
    advance(broker, clock, T0 + 0.999)
    assert other.bodies(och) == []
    advance(broker, clock, T0 + 1)
    assert other.bodies(och) == [b"m"]


def test_delayed_exchange_deleted_before_release(broker, clock, client):
    c = client
    ch = c.channel()
    c.call(ch, spec.ExchangeDeclare(exchange="d", type="x-delayed-message",
                                    arguments={"x-delayed-type": "fanout"}))
    c.declare(ch, "q")
    c.call(ch, spec.QueueBind(queue="q", exchange="d"))
    c.publish(ch, "d", "", b"m", BasicProperties(headers={"x-delay": 1000}))
    c.call(ch, spec.ExchangeDelete(exchange="d"))
    advance(broker, clock, T0 + 2)
    assert count(c, ch, "q") == 0


# --------------------------------------------------------------------- at scale


def test_ttl_at_scale_expires_exactly_what_is_due(broker, clock, client):
    """100k messages, TTL 10 s, published in ten batches at t = 0..9 s."""
    c = client
    ch = c.channel()
    c.declare(ch, "big", arguments={"x-message-ttl": 10_000})
    per_step = 10_000
    for step in range(10):
        clock.t = T0 + step
        c.publish_many(ch, "", "big", (b"%d" % step for _ in range(per_step)))
    assert c.counts(ch, "big")[0] == 100_000
    # One deadline per queue (the head's), not one per message.
    assert len(broker.timers) <= 2
    ran = advance(broker, clock, T0 + 10.5)
    assert ran >= 1
    assert c.counts(ch, "big")[0] == 90_000
    # Nothing is due now: a tick does nothing (and the queue still has one timer).
    assert broker.tick() == 0
    assert len(broker.timers) <= 2
    assert c.get(ch, "big", no_ack=True).body == b"1"
    advance(broker, clock, T0 + 13.999)
    assert c.counts(ch, "big")[0] == 60_000  # steps 1, 2, 3 expired at 11, 12, 13 s
    advance(broker, clock, T0 + 19.0)
    assert c.counts(ch, "big")[0] == 0


def test_ttl_at_scale_dead_letters_only_the_expired(broker, clock, client):
    c = client
    ch = c.channel()
    setup_dlx(c, ch, "big", "sink", **{"x-message-ttl": 10_000})
    for step in range(10):
        clock.t = T0 + step
        c.publish_many(ch, "", "big", (b"%d" % step for _ in range(2_000)))
    vhost = broker.vhosts["/"]
    advance(broker, clock, T0 + 10.5)
    assert c.counts(ch, "sink")[0] == 2_000
    assert c.counts(ch, "big")[0] == 18_000
    advance(broker, clock, T0 + 11.0)
    assert c.counts(ch, "sink")[0] == 4_000
    assert all(m.body == b"0" for m in list(vhost.queues["sink"].messages())[:2_000])
    assert all(m.body == b"1" for m in list(vhost.queues["sink"].messages())[2_000:])
