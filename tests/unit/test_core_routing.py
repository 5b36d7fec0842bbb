"""Routing through the broker core, driven over the wire by the in-memory CoreClient.

Exchange types (direct, fanout, topic, headers), the default exchange, exchange-to-exchange
bindings (including a cycle) and alternate exchanges, with RabbitMQ's semantics:
- every queue gets a message at most once however many bindings/paths match;
- an alternate exchange is tried by each exchange in the graph whose own bindings matched
  nothing (rabbit_exchange:route/process_alternate), so an AE may itself have an AE;
- a missing AE is ignored; the message is then unroutable (mandatory -> basic.return 312).
"""
from __future__ import annotations

import pytest

from core_client import BasicProperties, Broker, ChannelClosed, CoreClient, spec


@pytest.fixture
def client() -> CoreClient:
    return CoreClient(Broker())


@pytest.fixture
def ch(client: CoreClient) -> int:
    return client.channel()


def xdecl(c: CoreClient, ch: int, name: str, type_: str = "direct", **kw) -> None:
    assert isinstance(c.call(ch, spec.ExchangeDeclare(exchange=name, type=type_, **kw)), spec.ExchangeDeclareOk)


def qdecl(c: CoreClient, ch: int, *names: str) -> None:
    for n in names:
        c.declare(ch, n)


def bind(c: CoreClient, ch: int, queue: str, exchange: str, key: str = "", args: dict | None = None) -> None:
    assert isinstance(
        c.call(ch, spec.QueueBind(queue=queue, exchange=exchange, routing_key=key, arguments=args)),
        spec.QueueBindOk,
    )


def xbind(c: CoreClient, ch: int, dest: str, source: str, key: str = "", args: dict | None = None) -> None:
    assert isinstance(
        c.call(ch, spec.ExchangeBind(destination=dest, source=source, routing_key=key, arguments=args)),
        spec.ExchangeBindOk,
    )


def contents(c: CoreClient, ch: int, *queues: str) -> dict[str, list[bytes]]:
    """Drain each queue with basic.get(no_ack) and return the bodies found."""
    result = {}
    for q in queues:
        got = []
        while True:
            r = c.get(ch, q, no_ack=True)
            if r is None:
                break
            got.append(r.body)
        result[q] = got
    return result


def returned(c: CoreClient, ch: int) -> list:
    return [r for r in c.drain(ch) if isinstance(r.method, spec.BasicReturn)]


# ------------------------------------------------------------------ default exchange


def test_default_exchange_routes_by_queue_name(client, ch):
    qdecl(client, ch, "a", "b")
    client.publish(ch, "", "a", b"1")
    client.publish(ch, "", "b", b"2")
    client.publish(ch, "", "nope", b"3")
    assert contents(client, ch, "a", "b") == {"a": [b"1"], "b": [b"2"]}


def test_default_exchange_unroutable_mandatory_is_returned(client, ch):
    client.publish(ch, "", "nope", b"lost", BasicProperties(message_id="m1"), mandatory=True)
    items = client.drain(ch)
    assert len(items) == 1
    r = items[0]
    assert isinstance(r.method, spec.BasicReturn)
    assert (r.reply_code, r.reply_text, r.exchange, r.routing_key) == (312, "NO_ROUTE", "", "nope")
    assert r.body == b"lost"
    assert r.properties.message_id == "m1"


def test_default_exchange_cannot_be_bound(client, ch):
    qdecl(client, ch, "a")
    with pytest.raises(ChannelClosed) as ei:
        client.call(ch, spec.QueueBind(queue="a", exchange="", routing_key="a"))
    assert ei.value.code == 403
    assert (ei.value.class_id, ei.value.method_id) == (50, 20)


def test_default_exchange_cannot_be_declared_or_deleted(client, ch):
    with pytest.raises(ChannelClosed) as ei:
        client.call(ch, spec.ExchangeDeclare(exchange="", type="direct"))
    assert ei.value.code == 403
    ch = client.channel()
    with pytest.raises(ChannelClosed) as ei:
        client.call(ch, spec.ExchangeDelete(exchange=""))
    assert ei.value.code == 403


def test_predeclared_exchanges_exist(client, ch):
    for name in ("amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"):
        assert isinstance(
            client.call(ch, spec.ExchangeDeclare(exchange=name, passive=True)), spec.ExchangeDeclareOk
        )


def test_publish_to_missing_exchange_closes_channel_404(client, ch):
    client.publish(ch, "no-such-x", "k", b"x")
    close = client.channel_close(ch)
    assert close.reply_code == 404
    assert "no exchange 'no-such-x'" in close.reply_text
    assert (close.class_id, close.method_id) == (60, 40)


# ------------------------------------------------------------------------- direct


def test_direct_exchange(client, ch):
    xdecl(client, ch, "dx", "direct")
    qdecl(client, ch, "q1", "q2", "q3")
    bind(client, ch, "q1", "dx", "k1")
    bind(client, ch, "q2", "dx", "k1")
    bind(client, ch, "q2", "dx", "k2")
    bind(client, ch, "q3", "dx", "K1")  # keys are case-sensitive
    client.publish(ch, "dx", "k1", b"a")
    client.publish(ch, "dx", "k2", b"b")
    client.publish(ch, "dx", "k3", b"c")
    assert contents(client, ch, "q1", "q2", "q3") == {
        "q1": [b"a"],
        "q2": [b"a", b"b"],
        "q3": [],
    }


def test_same_queue_bound_twice_gets_one_copy(client, ch):
    xdecl(client, ch, "tx", "topic")
    qdecl(client, ch, "q")
    bind(client, ch, "q", "tx", "a.*")
    bind(client, ch, "q", "tx", "*.b")
    bind(client, ch, "q", "tx", "#")
    client.publish(ch, "tx", "a.b", b"once")
    assert contents(client, ch, "q") == {"q": [b"once"]}


def test_unbind_stops_routing(client, ch):
    xdecl(client, ch, "dx", "direct")
    qdecl(client, ch, "q")
    bind(client, ch, "q", "dx", "k")
    client.publish(ch, "dx", "k", b"1")
    assert isinstance(
        client.call(ch, spec.QueueUnbind(queue="q", exchange="dx", routing_key="k")), spec.QueueUnbindOk
    )
    client.publish(ch, "dx", "k", b"2")
    assert contents(client, ch, "q") == {"q": [b"1"]}


def test_each_queue_gets_its_own_copy(client, ch):
    """A message routed to two queues is independent in each (redelivered flags etc.)."""
    xdecl(client, ch, "fx", "fanout")
    qdecl(client, ch, "q1", "q2")
    bind(client, ch, "q1", "fx")
    bind(client, ch, "q2", "fx")
    client.publish(ch, "fx", "", b"m")
    r1 = client.get(ch, "q1")
    client.nack(ch, r1.delivery_tag, requeue=True)
    r2 = client.get(ch, "q2", no_ack=True)
    assert r2.redelivered is False
    r1b = client.get(ch, "q1", no_ack=True)
    assert r1b.redelivered is True and r1b.body == b"m"


# ------------------------------------------------------------------------- fanout


def test_fanout_ignores_routing_key(client, ch):
    xdecl(client, ch, "fx", "fanout")
    qdecl(client, ch, "q1", "q2", "q3")
    bind(client, ch, "q1", "fx", "whatever")
    bind(client, ch, "q2", "fx", "")
    client.publish(ch, "fx", "any.key", b"1")
    client.publish(ch, "fx", "", b"2")
    assert contents(client, ch, "q1", "q2", "q3") == {
        "q1": [b"1", b"2"],
        "q2": [b"1", b"2"],
        "q3": [],
    }


def test_fanout_delivers_to_consumers_of_other_sessions():
    broker = Broker()
    a, b = CoreClient(broker), CoreClient(broker)
    cha, chb = a.channel(), b.channel()
    xdecl(a, cha, "fx", "fanout")
    qdecl(b, chb, "qb")
    bind(b, chb, "qb", "fx")
    b.consume(chb, "qb", "ctag")
    a.publish(cha, "fx", "", b"hello", BasicProperties(content_type="text/plain", headers={"h": 1}))
    assert a.drain() == []
    [d] = b.deliveries(chb)
    assert d.body == b"hello"
    assert d.consumer_tag == "ctag"
    assert d.exchange == "fx" and d.routing_key == ""
    assert d.properties.content_type == "text/plain"
    assert d.properties.headers == {"h": 1}


# -------------------------------------------------------------------------- topic


@pytest.mark.parametrize(
    "pattern, key, matches",
    [
        ("a.b.c", "a.b.c", True),
        ("a.*.c", "a.x.c", True),
        ("a.*.c", "a.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#.c", "c", True),
        ("#", "", True),
        ("*", "", False),
        ("*.*", "a.b", True),
        ("*.*", "a.b.c", False),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.b.b.c", True),
        ("a.#.c", "a.b.b.d", False),
        ("#.#", "x", True),
    ],
)
def test_topic_patterns(client, ch, pattern, key, matches):
    xdecl(client, ch, "tx", "topic")
    qdecl(client, ch, "q")
    bind(client, ch, "q", "tx", pattern)
    client.publish(ch, "tx", key, b"m")
    assert contents(client, ch, "q") == {"q": [b"m"] if matches else []}


def test_topic_multiple_queues(client, ch):
    xdecl(client, ch, "logs", "topic")
    qdecl(client, ch, "all", "errors", "kern")
    bind(client, ch, "all", "logs", "#")
    bind(client, ch, "errors", "logs", "*.error")
    bind(client, ch, "kern", "logs", "kern.*")
    client.publish(ch, "logs", "kern.error", b"1")
    client.publish(ch, "logs", "app.error", b"2")
    client.publish(ch, "logs", "kern.info", b"3")
    assert contents(client, ch, "all", "errors", "kern") == {
        "all": [b"1", b"2", b"3"],
        "errors": [b"1", b"2"],
        "kern": [b"1", b"3"],
    }


# ------------------------------------------------------------------------ headers


def test_headers_exchange_all_and_any(client, ch):
    xdecl(client, ch, "hx", "headers")
    qdecl(client, ch, "qall", "qany", "qempty")
    bind(client, ch, "qall", "hx", "", {"x-match": "all", "format": "pdf", "type": "report"})
    bind(client, ch, "qany", "hx", "", {"x-match": "any", "format": "pdf", "type": "report"})
    bind(client, ch, "qempty", "hx", "", {})
    client.publish(ch, "hx", "", b"both", BasicProperties(headers={"format": "pdf", "type": "report"}))
    client.publish(ch, "hx", "", b"one", BasicProperties(headers={"format": "pdf", "type": "log"}))
    client.publish(ch, "hx", "", b"none", BasicProperties(headers={"format": "zip"}))
    client.publish(ch, "hx", "", b"noheaders")
    assert contents(client, ch, "qall", "qany", "qempty") == {
        "qall": [b"both"],
        "qany": [b"both", b"one"],
        # x-match defaults to all; no binding headers -> matches everything
        "qempty": [b"both", b"one", b"none", b"noheaders"],
    }


def test_headers_exchange_ignores_routing_key_and_value_types(client, ch):
    xdecl(client, ch, "hx", "headers")
    qdecl(client, ch, "q")
    bind(client, ch, "q", "hx", "ignored", {"n": 1})
    client.publish(ch, "hx", "other", b"int", BasicProperties(headers={"n": 1}))
    client.publish(ch, "hx", "other", b"str", BasicProperties(headers={"n": "1"}))
    assert contents(client, ch, "q") == {"q": [b"int"]}


# ------------------------------------------------------------- exchange-to-exchange


def test_exchange_to_exchange_binding(client, ch):
    xdecl(client, ch, "src", "topic")
    xdecl(client, ch, "dst", "fanout")
    qdecl(client, ch, "q")
    bind(client, ch, "q", "dst")
    xbind(client, ch, "dst", "src", "a.#")
    client.publish(ch, "src", "a.b", b"yes")
    client.publish(ch, "src", "b.a", b"no")
    assert contents(client, ch, "q") == {"q": [b"yes"]}
    client.deliveries()
    assert isinstance(
        client.call(ch, spec.ExchangeUnbind(destination="dst", source="src", routing_key="a.#")),
        spec.ExchangeUnbindOk,
    )
    client.publish(ch, "src", "a.b", b"after-unbind")
    assert contents(client, ch, "q") == {"q": []}


def test_exchange_to_exchange_diamond_delivers_once(client, ch):
    for x in ("top", "left", "right"):
        xdecl(client, ch, x, "fanout")
    qdecl(client, ch, "q")
    xbind(client, ch, "left", "top")
    xbind(client, ch, "right", "top")
    bind(client, ch, "q", "left")
    bind(client, ch, "q", "right")
    bind(client, ch, "q", "top")
    client.publish(ch, "top", "", b"m")
    assert contents(client, ch, "q") == {"q": [b"m"]}


def test_exchange_to_exchange_cycle_terminates_and_delivers_once(client, ch):
    xdecl(client, ch, "x1", "fanout")
    xdecl(client, ch, "x2", "fanout")
    xdecl(client, ch, "x3", "direct")
    qdecl(client, ch, "q1", "q2", "q3")
    xbind(client, ch, "x2", "x1")
    xbind(client, ch, "x3", "x2")
    xbind(client, ch, "x1", "x3", "k")  # cycle x1 -> x2 -> x3 -> x1
    bind(client, ch, "q1", "x1")
    bind(client, ch, "q2", "x2")
    bind(client, ch, "q3", "x3", "k")
    for start in ("x1", "x2", "x3"):
        client.publish(ch, start, "k", start.encode())
    assert contents(client, ch, "q1", "q2", "q3") == {
        "q1": [b"x1", b"x2", b"x3"],
        "q2": [b"x1", b"x2", b"x3"],
        "q3": [b"x1", b"x2", b"x3"],
    }
    # With another key x3 routes nowhere: the walk stops there.
    client.publish(ch, "x1", "other", b"o")
    assert contents(client, ch, "q1", "q2", "q3") == {"q1": [b"o"], "q2": [b"o"], "q3": []}


def test_self_bound_exchange(client, ch):
    xdecl(client, ch, "x", "fanout")
    qdecl(client, ch, "q")
    xbind(client, ch, "x", "x")
    bind(client, ch, "q", "x")
    client.publish(ch, "x", "", b"m")
    assert contents(client, ch, "q") == {"q": [b"m"]}


def test_deleting_destination_exchange_removes_binding(client, ch):
    xdecl(client, ch, "src", "fanout")
    xdecl(client, ch, "dst", "fanout")
    qdecl(client, ch, "q")
    xbind(client, ch, "dst", "src")
    bind(client, ch, "q", "dst")
    assert isinstance(client.call(ch, spec.ExchangeDelete(exchange="dst")), spec.ExchangeDeleteOk)
    client.publish(ch, "src", "", b"m", mandatory=True)
    assert len(returned(client, ch)) == 1
    # re-creating dst does not bring the binding back
    xdecl(client, ch, "dst", "fanout")
    bind(client, ch, "q", "dst")
    client.publish(ch, "src", "", b"m2", mandatory=True)
    assert len(returned(client, ch)) == 1
    assert contents(client, ch, "q") == {"q": []}


def test_internal_exchange_reachable_only_through_bindings(client, ch):
    xdecl(client, ch, "pub", "fanout")
    xdecl(client, ch, "inner", "fanout", internal=True)
    qdecl(client, ch, "q")
    xbind(client, ch, "inner", "pub")
    bind(client, ch, "q", "inner")
    client.publish(ch, "pub", "", b"ok")
    assert contents(client, ch, "q") == {"q": [b"ok"]}
    client.publish(ch, "inner", "", b"direct")
    close = client.channel_close(ch)
    assert close.reply_code == 403
    assert (close.class_id, close.method_id) == (60, 40)


# ------------------------------------------------------------------ alternate exchange


def test_alternate_exchange_gets_unroutable(client, ch):
    xdecl(client, ch, "ae", "fanout")
    xdecl(client, ch, "main", "direct", arguments={"alternate-exchange": "ae"})
    qdecl(client, ch, "routed", "unrouted")
    bind(client, ch, "routed", "main", "k")
    bind(client, ch, "unrouted", "ae")
    client.publish(ch, "main", "k", b"1", mandatory=True)
    client.publish(ch, "main", "other", b"2", mandatory=True)
    assert returned(client, ch) == []  # routed via the AE: not returned
    assert contents(client, ch, "routed", "unrouted") == {"routed": [b"1"], "unrouted": [b"2"]}


def test_alternate_exchange_of_alternate_exchange(client, ch):
    xdecl(client, ch, "ae2", "fanout")
    xdecl(client, ch, "ae1", "direct", arguments={"alternate-exchange": "ae2"})
    xdecl(client, ch, "main", "direct", arguments={"alternate-exchange": "ae1"})
    qdecl(client, ch, "q-main", "q-ae1", "q-ae2")
    bind(client, ch, "q-main", "main", "m")
    bind(client, ch, "q-ae1", "ae1", "a")
    bind(client, ch, "q-ae2", "ae2")
    client.publish(ch, "main", "m", b"to-main", mandatory=True)
    client.publish(ch, "main", "a", b"to-ae1", mandatory=True)
    client.publish(ch, "main", "z", b"to-ae2", mandatory=True)
    assert returned(client, ch) == []
    assert contents(client, ch, "q-main", "q-ae1", "q-ae2") == {
        "q-main": [b"to-main"],
        "q-ae1": [b"to-ae1"],
        "q-ae2": [b"to-ae2"],
    }


def test_alternate_exchange_cycle(client, ch):
    xdecl(client, ch, "x1", "direct", arguments={"alternate-exchange": "x2"})
    xdecl(client, ch, "x2", "direct", arguments={"alternate-exchange": "x1"})
    qdecl(client, ch, "q")
    bind(client, ch, "q", "x2", "k")
    client.publish(ch, "x1", "k", b"via-ae", mandatory=True)
    client.publish(ch, "x1", "nothing", b"lost", mandatory=True)
    rets = returned(client, ch)
    assert [r.body for r in rets] == [b"lost"]
    assert contents(client, ch, "q") == {"q": [b"via-ae"]}


def test_missing_alternate_exchange_is_ignored(client, ch):
    xdecl(client, ch, "main", "direct", arguments={"alternate-exchange": "does-not-exist"})
    qdecl(client, ch, "q")
    bind(client, ch, "q", "main", "k")
    client.publish(ch, "main", "k", b"routed", mandatory=True)
    client.publish(ch, "main", "x", b"unroutable", mandatory=True)
    rets = returned(client, ch)
    assert [(r.reply_code, r.body) for r in rets] == [(312, b"unroutable")]
    assert contents(client, ch, "q") == {"q": [b"routed"]}


def test_alternate_exchange_declared_later_is_used(client, ch):
    xdecl(client, ch, "main", "direct", arguments={"alternate-exchange": "ae"})
    client.publish(ch, "main", "x", b"before", mandatory=True)
    assert [r.body for r in returned(client, ch)] == [b"before"]
    xdecl(client, ch, "ae", "fanout")
    qdecl(client, ch, "q")
    bind(client, ch, "q", "ae")
    client.publish(ch, "main", "x", b"after", mandatory=True)
    assert returned(client, ch) == []
    assert contents(client, ch, "q") == {"q": [b"after"]}


def test_alternate_exchange_used_inside_exchange_graph(client, ch):
    """An exchange reached through an e2e binding that matches nothing uses its own AE."""
    xdecl(client, ch, "ae", "fanout")
    xdecl(client, ch, "inner", "direct", arguments={"alternate-exchange": "ae"})
    xdecl(client, ch, "outer", "fanout")
    qdecl(client, ch, "q-ae", "q-inner")
    xbind(client, ch, "inner", "outer")
    bind(client, ch, "q-inner", "inner", "k")
    bind(client, ch, "q-ae", "ae")
    client.publish(ch, "outer", "k", b"k")
    client.publish(ch, "outer", "z", b"z")
    assert contents(client, ch, "q-ae", "q-inner") == {"q-ae": [b"z"], "q-inner": [b"k"]}


def test_alternate_exchange_not_used_when_bindings_matched_an_exchange(client, ch):
    """RabbitMQ only consults an exchange's AE when its own bindings matched nothing.

    Here main's binding matches the (empty) exchange 'sink', so main's AE is not consulted
    and the message is unroutable.
    """
    xdecl(client, ch, "ae", "fanout")
    xdecl(client, ch, "sink", "fanout")
    xdecl(client, ch, "main", "direct", arguments={"alternate-exchange": "ae"})
    qdecl(client, ch, "q-ae")
    bind(client, ch, "q-ae", "ae")
    xbind(client, ch, "sink", "main", "k")
    client.publish(ch, "main", "k", b"m", mandatory=True)
    assert [r.body for r in returned(client, ch)] == [b"m"]
    assert contents(client, ch, "q-ae") == {"q-ae": []}


def test_alternate_exchange_argument_must_be_equivalent_on_redeclare(client, ch):
    xdecl(client, ch, "main", "direct", arguments={"alternate-exchange": "ae"})
    xdecl(client, ch, "main", "direct", arguments={"alternate-exchange": "ae"})
    with pytest.raises(ChannelClosed) as ei:
        client.call(ch, spec.ExchangeDeclare(exchange="main", type="direct", arguments={"alternate-exchange": "other"}))
    assert ei.value.code == 406
    assert (ei.value.class_id, ei.value.method_id) == (40, 10)
