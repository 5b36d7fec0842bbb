"""Queue lifecycle in the broker core: declare, exclusive, auto-delete, purge, delete."""
from __future__ import annotations

import re

import pytest

from core_client import Broker, ChannelClosed, CoreClient, spec


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
def client(broker: Broker) -> CoreClient:
    return CoreClient(broker)


@pytest.fixture
def ch(client: CoreClient) -> int:
    return client.channel()


def exists(c: CoreClient, name: str) -> bool:
    ch = c.channel()
    try:
        c.call(ch, spec.QueueDeclare(queue=name, passive=True))
    except ChannelClosed as exc:
        assert exc.code in (404, 405)
        return exc.code == 405
    c.close_channel(ch)
    return True


# ---------------------------------------------------------------------- declare


def test_declare_ok_reports_ready_messages_and_consumers(client, ch):
    ok = client.declare(ch, "q")
    assert (ok.queue, ok.message_count, ok.consumer_count) == ("q", 0, 0)
    for i in range(3):
        client.publish(ch, "", "q", b"%d" % i)
    assert client.counts(ch, "q") == (3, 0)
    # a delivered-but-unacked message is not counted as ready
    r = client.get(ch, "q")
    assert client.counts(ch, "q") == (2, 0)
    ch2 = client.channel()
    client.qos(ch2, 1)
    client.consume(ch2, "q")
    assert client.counts(ch, "q") == (1, 1)
    ok = client.declare(ch, "q")  # non-passive redeclare reports too
    assert (ok.message_count, ok.consumer_count) == (1, 1)
    client.ack(ch, r.delivery_tag)
    assert client.counts(ch, "q") == (1, 1)


def test_passive_declare_of_missing_queue_is_404(client, ch):
    with pytest.raises(ChannelClosed) as ei:
        client.call(ch, spec.QueueDeclare(queue="missing", passive=True))
    assert ei.value.code == 404
    assert ei.value.text == "NOT_FOUND - no queue 'missing' in vhost '/'"
    assert (ei.value.class_id, ei.value.method_id) == (50, 10)


def test_server_named_queue(client, ch):
    ok = client.declare(ch, "")
    assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_\-]{22}", ok.queue), ok.queue
    ok2 = client.declare(ch, "")
    assert ok2.queue != ok.queue
    # the empty name means "the channel's last declared queue" for bind/consume/get
    client.call(ch, spec.QueueBind(queue="", exchange="amq.fanout", routing_key=""))
    client.publish(ch, "amq.fanout", "", b"m")
    assert client.counts(ch, ok2.queue) == (1, 0)
    assert client.counts(ch, ok.queue) == (0, 0)


def test_reserved_amq_prefix_refused(client, ch):
    with pytest.raises(ChannelClosed) as ei:
        client.declare(ch, "amq.mine")
    assert ei.value.code == 403


def test_inequivalent_redeclare_is_406(client, ch):
    client.declare(ch, "q", durable=False)
    with pytest.raises(ChannelClosed) as ei:
        client.declare(ch, "q", durable=True)
    assert ei.value.code == 406
    assert "inequivalent arg 'durable'" in ei.value.text
    ch = client.channel()
    client.declare(ch, "q2", arguments={"x-max-length": 10})
    with pytest.raises(ChannelClosed) as ei:
        client.declare(ch, "q2", arguments={"x-max-length": 11})
    assert ei.value.code == 406


# -------------------------------------------------------------------- exclusive


def test_exclusive_queue_is_deleted_when_its_connection_closes(broker):
    owner, other = CoreClient(broker), CoreClient(broker)
    ch = owner.channel()
    owner.declare(ch, "excl", exclusive=True)
    owner.publish(ch, "", "excl", b"m")
    assert exists(other, "excl")  # 405 for others but it exists
    owner.close()
    assert not exists(other, "excl")
    assert "excl" not in broker.vhosts["/"].queues


def test_exclusive_queue_is_deleted_when_the_connection_drops(broker):
    owner, other = CoreClient(broker), CoreClient(broker)
    ch = owner.channel()
    name = owner.declare(ch, "", exclusive=True).queue
    assert exists(other, name)
    owner.drop()
    assert not exists(other, name)


def test_exclusive_queue_survives_its_channel(broker):
    owner = CoreClient(broker)
    ch = owner.channel()
    owner.declare(ch, "excl", exclusive=True)
    owner.close_channel(ch)
    ch = owner.channel()
    assert owner.counts(ch, "excl") == (0, 0)


@pytest.mark.parametrize(
    "method",
    [
        spec.QueueDeclare(queue="excl"),
        spec.QueueDeclare(queue="excl", exclusive=True),
        spec.QueueDeclare(queue="excl", passive=True),
        spec.QueueBind(queue="excl", exchange="amq.direct", routing_key="k"),
        spec.QueuePurge(queue="excl"),
        spec.QueueDelete(queue="excl"),
        spec.BasicConsume(queue="excl"),
        spec.BasicGet(queue="excl"),
    ],
    ids=lambda m: m.NAME,
)
def test_other_sessions_get_405_on_exclusive_queue(broker, method):
    owner, other = CoreClient(broker), CoreClient(broker)
    och = owner.channel()
    owner.declare(och, "excl", exclusive=True)
    owner.publish(och, "", "excl", b"m")
    ch = other.channel()
    with pytest.raises(ChannelClosed) as ei:
        other.call(ch, method)
    assert ei.value.code == 405
    assert ei.value.text.startswith("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'excl'")
    assert (ei.value.class_id, ei.value.method_id) == (method.CLASS_ID, method.METHOD_ID)
    # nothing happened to the queue
    assert owner.counts(och, "excl") == (1, 0)


def test_other_sessions_can_publish_to_exclusive_queue(broker):
    owner, other = CoreClient(broker), CoreClient(broker)
    och = owner.channel()
    owner.declare(och, "excl", exclusive=True)
    owner.consume(och, "excl", "c")
    other.publish(other.channel(), "", "excl", b"from-other")
    assert owner.bodies(och) == [b"from-other"]


# ------------------------------------------------------------------- auto-delete


def test_auto_delete_queue_lives_until_a_consumer_came_and_went(broker):
    c = CoreClient(broker)
    ch = c.channel()
    c.declare(ch, "ad", auto_delete=True)
    c.publish(ch, "", "ad", b"1")
    # no consumer ever: the queue stays, basic.get does not count as a consumer
    c.get(ch, "ad", no_ack=True)
    assert exists(c, "ad")
    tag1 = c.consume(ch, "ad")
    tag2 = c.consume(ch, "ad")
    c.call(ch, spec.BasicCancel(tag1))
    assert exists(c, "ad")  # one consumer left
    assert c.counts(ch, "ad") == (0, 1)
    assert isinstance(c.call(ch, spec.BasicCancel(tag2)), spec.BasicCancelOk)
    assert not exists(c, "ad")


def test_auto_delete_queue_deleted_when_consumer_channel_closes(broker):
    c = CoreClient(broker)
    ch = c.channel()
    c.declare(ch, "ad", auto_delete=True)
    cch = c.channel()
    c.consume(cch, "ad")
    c.close_channel(cch)
    assert not exists(c, "ad")


def test_auto_delete_queue_deleted_when_consumer_connection_drops(broker):
    owner, consumer = CoreClient(broker), CoreClient(broker)
    ch = owner.channel()
    owner.declare(ch, "ad", auto_delete=True)
    consumer.consume(consumer.channel(), "ad")
    assert owner.counts(ch, "ad") == (0, 1)
    consumer.drop()
    assert not exists(owner, "ad")


def test_auto_delete_queue_removes_its_bindings(broker):
    c = CoreClient(broker)
    ch = c.channel()
    c.declare(ch, "ad", auto_delete=True)
    c.call(ch, spec.QueueBind(queue="ad", exchange="amq.direct", routing_key="k"))
    tag = c.consume(ch, "ad")
    c.call(ch, spec.BasicCancel(tag))
    c.declare(ch, "ad", auto_delete=True)  # a new queue of the same name: no old binding
    c.publish(ch, "amq.direct", "k", b"m", mandatory=True)
    assert [type(r.method) for r in c.drain(ch)] == [spec.BasicReturn]


# ------------------------------------------------------------------------- purge


def test_purge_removes_ready_not_unacked(client, ch):
    for i in range(5):
        client.publish(ch, "", "q", b"x")  # to nowhere, queue does not exist yet
    client.declare(ch, "q")
    for i in range(5):
        client.publish(ch, "", "q", b"%d" % i)
    r = client.get(ch, "q")
    ok = client.call(ch, spec.QueuePurge(queue="q"))
    assert ok == spec.QueuePurgeOk(4)
    assert client.counts(ch, "q") == (0, 0)
    client.nack(ch, r.delivery_tag, requeue=True)
    assert client.counts(ch, "q") == (1, 0)
    r = client.get(ch, "q", no_ack=True)
    assert (r.body, r.redelivered) == (b"0", True)
    assert client.call(ch, spec.QueuePurge(queue="q")) == spec.QueuePurgeOk(0)


def test_purge_missing_queue_is_404(client, ch):
    with pytest.raises(ChannelClosed) as ei:
        client.call(ch, spec.QueuePurge(queue="nope"))
    assert ei.value.code == 404
    assert (ei.value.class_id, ei.value.method_id) == (50, 30)


# ------------------------------------------------------------------------ delete


def test_delete_reports_ready_count(client, ch):
    client.declare(ch, "q")
    for i in range(3):
        client.publish(ch, "", "q", b"m")
    client.get(ch, "q")
    assert client.call(ch, spec.QueueDelete(queue="q")) == spec.QueueDeleteOk(2)
    assert not exists(client, "q")


def test_delete_if_unused(client, ch):
    client.declare(ch, "q")
    cch = client.channel()
    tag = client.consume(cch, "q")
    with pytest.raises(ChannelClosed) as ei:
        client.call(ch, spec.QueueDelete(queue="q", if_unused=True))
    assert ei.value.code == 406
    assert ei.value.text == "PRECONDITION_FAILED - queue 'q' in vhost '/' in use"
    assert (ei.value.class_id, ei.value.method_id) == (50, 40)
    client.call(cch, spec.BasicCancel(tag))
    ch = client.channel()
    assert client.call(ch, spec.QueueDelete(queue="q", if_unused=True)) == spec.QueueDeleteOk(0)


def test_delete_if_empty(client, ch):
    client.declare(ch, "q")
    client.publish(ch, "", "q", b"m")
    with pytest.raises(ChannelClosed) as ei:
        client.call(ch, spec.QueueDelete(queue="q", if_empty=True))
    assert ei.value.code == 406
    assert ei.value.text == "PRECONDITION_FAILED - queue 'q' in vhost '/' not empty"
    ch = client.channel()
    client.get(ch, "q", no_ack=True)
    assert client.call(ch, spec.QueueDelete(queue="q", if_empty=True)) == spec.QueueDeleteOk(0)


def test_delete_missing_queue_is_ok(client, ch):
    assert client.call(ch, spec.QueueDelete(queue="never")) == spec.QueueDeleteOk(0)


def test_deleted_queue_bindings_are_gone(client, ch):
    client.declare(ch, "q")
    client.call(ch, spec.QueueBind(queue="q", exchange="amq.topic", routing_key="#"))
    client.call(ch, spec.QueueDelete(queue="q"))
    client.declare(ch, "q")
    client.publish(ch, "amq.topic", "a", b"m")
    assert client.counts(ch, "q") == (0, 0)


def test_unacked_from_deleted_queue_can_still_be_acked(client, ch):
    client.declare(ch, "q")
    client.publish(ch, "", "q", b"m")
    r1 = client.get(ch, "q")
    client.publish(ch, "", "q", b"m2")
    r2 = client.get(ch, "q")
    other = client.channel()
    client.call(other, spec.QueueDelete(queue="q"))
    client.ack(ch, r1.delivery_tag)
    client.nack(ch, r2.delivery_tag, requeue=True)  # requeue into a deleted queue: dropped
    assert client.drain(ch) == []
    # the channel is still fine
    client.declare(ch, "q")
    assert client.counts(ch, "q") == (0, 0)


# --------------------------------------------------------------- server cancel


def test_queue_deletion_cancels_consumers_with_notify(broker):
    owner = CoreClient(broker)
    notified = CoreClient(broker, capabilities={"consumer_cancel_notify": True})
    silent = CoreClient(broker, capabilities={"consumer_cancel_notify": False})
    bare = CoreClient(broker)  # no capabilities table at all
    och = owner.channel()
    owner.declare(och, "q")
    nch, sch, bch = notified.channel(), silent.channel(), bare.channel()
    notified.consume(nch, "q", "n-tag")
    silent.consume(sch, "q", "s-tag")
    bare.consume(bch, "q", "b-tag")
    owner.call(och, spec.QueueDelete(queue="q"))
    items = notified.drain()
    assert [(r.channel, r.method) for r in items] == [(nch, spec.BasicCancel("n-tag", True))]
    assert silent.drain() == []
    assert bare.drain() == []
    # the consumer is gone: the tag can be reused (no 530), cancel of it is harmless
    owner.declare(och, "q")
    assert notified.consume(nch, "q", "n-tag") == "n-tag"
    assert silent.call(sch, spec.BasicCancel("s-tag")) == spec.BasicCancelOk("s-tag")


def test_exclusive_queue_deletion_does_not_notify_closed_owner(broker):
    owner = CoreClient(broker, capabilities={"consumer_cancel_notify": True})
    ch = owner.channel()
    owner.declare(ch, "excl", exclusive=True)
    owner.consume(ch, "excl", "t")
    owner.close()
    assert owner.drain() == []
