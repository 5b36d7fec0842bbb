"""Dead-letter chains of any length, through pika over real sockets.

Dead-lettering is iterative in minimq (a work list, not a recursion): a message can die
and be republished along a chain of a thousand queues and still arrive, as in RabbitMQ.
Every test here also runs against RabbitMQ 3.10 with MINIMQ_TEST_URL (they take ~20 s
there: RabbitMQ's cost per hop grows with the message's x-death list, as minimq's does).

Chains are built from exclusive queues, so they vanish with the test's connection.
"""
from __future__ import annotations

import pika
import pytest

from .helpers import Collector, is_minimq, pump_until, text

CHAIN_TIMEOUT = 120.0  # a 1000-hop chain takes seconds on a loaded machine, ~20 s on RabbitMQ


def build_chain(ch, prefix: str, n: int, first: dict | None = None, each: dict | None = None) -> tuple[list[str], str]:
    """n queues, each dead-lettering into the next through the default exchange; the last
    one into a sink. `each` is every chain queue's own arguments (TTL 0 by default)."""
    names = [f"{prefix}-{i}" for i in range(n)]
    sink = prefix + "-sink"
    ch.queue_declare(sink, exclusive=True)
    for i, name in enumerate(names):
        args = dict(each if each is not None else {"x-message-ttl": 0})
        if i == 0 and first is not None:
            args = dict(first)
        args["x-dead-letter-exchange"] = ""
        args["x-dead-letter-routing-key"] = names[i + 1] if i + 1 < n else sink
        ch.queue_declare(name, exclusive=True, arguments=args)
    return names, sink


def watch(ch, queue: str) -> Collector:
    col = Collector()
    ch.basic_consume(queue, col, auto_ack=True)
    return col


def check_arrival(conn, col: Collector, names: list[str], first_reason: str, reasons: set[str]) -> None:
    pump_until(conn, lambda: len(col) == 1, timeout=CHAIN_TIMEOUT, what="the message at the chain's end")
    _method, props, body = col.items[0]
    assert body == b"through"
    xdeath = [{k: text(v) for k, v in d.items()} for d in props.headers["x-death"]]
    assert len(xdeath) == len(names)
    assert {d["queue"] for d in xdeath} == set(names)
    assert {d["reason"] for d in xdeath} == reasons
    assert all(d["count"] == 1 for d in xdeath)
    assert text(props.headers["x-first-death-queue"]) == names[0]
    assert text(props.headers["x-first-death-reason"]) == first_reason
    if is_minimq(conn):
        # minimq keeps x-death newest first (RabbitMQ 3.10 interleaves long histories).
        assert [d["queue"] for d in xdeath] == names[::-1]


def test_thousand_queue_ttl_chain_delivers_at_the_end(conn, ch, unique):
    names, sink = build_chain(ch, unique, 1000)
    col = watch(ch, sink)
    ch.confirm_delivery()
    ch.basic_publish("", names[0], b"through")  # confirmed: raises if nacked or closed
    check_arrival(conn, col, names, "expired", {"expired"})
    assert conn.is_open and ch.is_open


def test_long_chain_mixing_ttl_and_max_length_drops(conn, ch, unique):
    # Every other queue holds nothing (x-max-length 0, drop-head): the message is dropped
    # at once with reason maxlen, the others expire it (TTL 0).
    n = 600
    names, sink = build_chain(ch, unique, n, each={"x-message-ttl": 0})
    for i in range(1, n, 2):  # redeclare the odd ones as max-length queues
        nxt = names[i + 1] if i + 1 < n else sink
        ch.queue_delete(names[i])
        ch.queue_declare(names[i], exclusive=True, arguments={
            "x-max-length": 0, "x-overflow": "drop-head",
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": nxt,
        })
    col = watch(ch, sink)
    ch.basic_publish("", names[0], b"through")
    check_arrival(conn, col, names, "expired", {"expired", "maxlen"})


def test_chain_started_by_a_queue_ttl_timer(conn, ch, unique):
    names, sink = build_chain(ch, unique, 600, first={"x-message-ttl": 30})
    col = watch(ch, sink)
    ch.basic_publish("", names[0], b"through")
    check_arrival(conn, col, names, "expired", {"expired"})


def test_chain_started_by_a_rejection(conn, ch, unique):
    names, sink = build_chain(ch, unique, 600, first={})
    col = watch(ch, sink)
    ch.basic_publish("", names[0], b"through")
    method, _p, _b = ch.basic_get(names[0])
    ch.basic_reject(method.delivery_tag, requeue=False)
    check_arrival(conn, col, names, "rejected", {"rejected", "expired"})


def test_chain_through_exchange_bindings_and_alternate_exchanges(conn, ch, unique):
    # Each queue dead-letters into a fanout exchange bound to a direct exchange (an
    # exchange-to-exchange binding) that routes nothing itself: its alternate exchange (a
    # fanout) leads to the next queue. The graph walk and the dead-lettering both iterate.
    n = 300
    names = [f"{unique}-{i}" for i in range(n)]
    sink = unique + "-sink"
    ch.queue_declare(sink, exclusive=True)
    for name in names:
        ch.queue_declare(name, exclusive=True, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": name + "-f"})
    for name, target in zip(names, names[1:] + [sink]):
        fan, direct, alt = f"{name}-f", f"{name}-d", f"{name}-a"
        ch.exchange_declare(alt, "fanout", auto_delete=True)
        ch.exchange_declare(direct, "direct", auto_delete=True, arguments={"alternate-exchange": alt})
        ch.exchange_declare(fan, "fanout", auto_delete=True)
        ch.exchange_bind(direct, fan)
        ch.queue_bind(target, alt)
    col = watch(ch, sink)
    ch.basic_publish("", names[0], b"through")
    check_arrival(conn, col, names, "expired", {"expired"})


def test_long_chain_of_auto_delete_exchanges_goes_when_its_queue_goes(conn, ch, unique):
    # e0 -> e1 -> ... -> e(n-1) -> queue, all auto-delete: deleting the queue leaves the
    # last exchange unused, whose deletion leaves the one before unused, and so on.
    n = 1500
    exchanges = [f"{unique}-e{i}" for i in range(n)]
    for name in exchanges:
        ch.exchange_declare(name, "fanout", auto_delete=True)
    for src, dest in zip(exchanges, exchanges[1:]):
        ch.exchange_bind(dest, src)
    ch.queue_declare(unique)
    ch.queue_bind(unique, exchanges[-1])
    ch.basic_publish(exchanges[0], "", b"routed")
    assert ch.queue_declare(unique, passive=True).method.message_count == 1
    ch.queue_delete(unique)
    for name in (exchanges[0], exchanges[n // 2], exchanges[-1]):
        probe = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            probe.exchange_declare(name, passive=True)
        assert info.value.reply_code == 404


HOLDER = r"""
import sys, pika
url, work, mine = sys.argv[1:4]
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
ch.queue_declare(mine, exclusive=True)
def held(_ch, method, _props, body):
    print("holding", body.decode(), flush=True)
ch.basic_consume(work, held)
print("consuming", flush=True)
while True:
    conn.process_data_events(time_limit=1)
"""


def test_consumer_dying_mid_dead_letter_chain(amqp_url, conn, ch, unique, tmp_path):
    """A consumer process is killed while it holds a message from a quorum queue with
    x-delivery-limit 0: the return counts as a delivery, so the queue dead-letters the
    message into a 1000-queue TTL chain while the dead connection is being torn down.
    The message arrives at the chain's end, and the dead connection's exclusive queue is
    gone, so another connection can declare it."""
    import subprocess
    import sys

    names, sink = build_chain(ch, unique, 1000)
    work, mine = unique + "-work", unique + "-mine"
    ch.queue_declare(work, durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 0,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": names[0],
    })
    col = watch(ch, sink)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, amqp_url, work, mine], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "consuming"
        ch.basic_publish("", work, b"through")
        assert holder.stdout.readline().strip() == "holding through"
        holder.kill()  # no connection.close: the socket just goes away
        holder.wait(10)
        check_arrival(conn, col, [work] + names, "delivery_limit", {"delivery_limit", "expired"})
        # The dead connection's exclusive queue went with it: no 405 RESOURCE_LOCKED.
        other = conn.channel()
        other.queue_declare(mine, exclusive=True)
        other.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        ch.queue_delete(work)


@pytest.mark.parametrize("start", ["publish", "dead-letter"])
def test_every_copy_is_enqueued_before_one_is_dead_lettered(conn, ch, unique, start):
    # A fanout to a TTL-0 queue (dead-lettering into the sink) and to the sink itself: the
    # sink gets the direct copy first, then the one that died on the way, as in RabbitMQ
    # (checked against 3.10), whether the fanout is published to or dead-lettered into.
    fan, drop, sink, first = (unique + s for s in ("-fan", "-drop", "-sink", "-first"))
    ch.exchange_declare(fan, "fanout", auto_delete=True)
    ch.queue_declare(sink, exclusive=True)
    ch.queue_declare(drop, exclusive=True, arguments={
        "x-message-ttl": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": sink})
    ch.queue_bind(drop, fan)
    ch.queue_bind(sink, fan)
    ch.queue_declare(first, exclusive=True, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": fan})
    col = watch(ch, sink)
    if start == "publish":
        ch.basic_publish(fan, "", b"m")
    else:
        ch.basic_publish("", first, b"m")
    pump_until(conn, lambda: len(col) == 2, what="both copies in the sink")
    paths = [[text(d["queue"]) for d in (p.headers or {}).get("x-death", [])] for _m, p, _b in col.items]
    before = [] if start == "publish" else [first]
    assert paths == [before, [drop] + before]
