"""basic.* in the broker core: consume/deliver, prefetch, get, ack/nack/reject, requeue order,
recover, cancel, and the errors RabbitMQ raises for them."""
from __future__ import annotations

import pytest

from core_client import Broker, ChannelClosed, ConnectionClosed, CoreClient, spec


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
def client(broker: Broker) -> CoreClient:
    return CoreClient(broker)


@pytest.fixture
def ch(client: CoreClient) -> int:
    ch = client.channel()
    client.declare(ch, "q")
    return ch


def fill(c: CoreClient, ch: int, n: int, queue: str = "q", start: int = 1) -> None:
    c.publish_many(ch, "", queue, [str(i).encode() for i in range(start, start + n)])


def ids(items) -> list[int]:
    return [int(r.body) for r in items]


def get_all(c: CoreClient, ch: int, queue: str = "q") -> list:
    out = []
    while True:
        r = c.get(ch, queue, no_ack=True)
        if r is None:
            return out
        out.append(r)


# --------------------------------------------------------------------------- get


def test_get_and_get_empty(client, ch):
    assert client.call(ch, spec.BasicGet(queue="q")) == spec.BasicGetEmpty()
    fill(client, ch, 3)
    r = client.get(ch, "q")
    assert isinstance(r.method, spec.BasicGetOk)
    assert (r.delivery_tag, r.redelivered, r.exchange, r.routing_key, r.message_count) == (1, False, "", "q", 2)
    assert r.body == b"1"
    r = client.get(ch, "q", no_ack=True)
    assert (r.delivery_tag, r.message_count, r.body) == (2, 1, b"2")
    r = client.get(ch, "q")
    assert (r.delivery_tag, r.message_count, r.body) == (3, 0, b"3")
    assert client.get(ch, "q") is None


def test_get_on_missing_queue_is_404(client, ch):
    with pytest.raises(ChannelClosed) as ei:
        client.get(ch, "missing")
    assert ei.value.code == 404
    assert (ei.value.class_id, ei.value.method_id) == (60, 70)


def test_large_body_is_split_by_frame_max(broker):
    c = CoreClient(broker, frame_max=4096)
    ch = c.channel()
    c.declare(ch, "big")
    body = bytes(range(256)) * 100  # 25600 bytes, > 6 frames at 4096
    c.publish(ch, "", "big", body)
    assert c.get(ch, "big", no_ack=True).body == body  # the client checks each frame's size


def test_empty_body(client, ch):
    client.publish(ch, "", "q", b"")
    client.consume(ch, "q", "t", no_ack=True)
    [d] = client.deliveries(ch)
    assert d.body == b""


# ----------------------------------------------------------------------- consume


def test_consume_delivers_in_order_with_increasing_tags(client, ch):
    fill(client, ch, 3)
    tag = client.consume(ch, "q")
    assert tag.startswith("amq.ctag-")
    fill(client, ch, 2, start=4)
    ds = client.deliveries(ch)
    assert ids(ds) == [1, 2, 3, 4, 5]
    assert [d.delivery_tag for d in ds] == [1, 2, 3, 4, 5]
    assert all(d.consumer_tag == tag and not d.redelivered for d in ds)
    assert all((d.exchange, d.routing_key) == ("", "q") for d in ds)


def test_consume_ok_comes_before_first_delivery(client, ch):
    fill(client, ch, 1)
    client.send(ch, spec.BasicConsume(queue="q", consumer_tag="t"))
    items = client.drain(ch)
    assert [type(i.method) for i in items] == [spec.BasicConsumeOk, spec.BasicDeliver]


def test_delivery_tags_are_per_channel_and_shared_with_get(client, ch):
    fill(client, ch, 4)
    ch2 = client.channel()
    assert client.get(ch, "q").delivery_tag == 1
    assert client.get(ch2, "q").delivery_tag == 1
    client.qos(ch, 1)
    client.consume(ch, "q", "c")
    [d] = client.deliveries(ch)
    assert d.delivery_tag == 2


def test_no_ack_consumer_is_not_limited_by_prefetch(client, ch):
    client.qos(ch, 1)
    client.qos(ch, 1, global_=True)
    fill(client, ch, 5)
    client.consume(ch, "q", "t", no_ack=True)
    assert ids(client.deliveries(ch)) == [1, 2, 3, 4, 5]
    assert client.counts(ch, "q") == (0, 1)
    client.ack(ch, 1)  # nothing outstanding: unknown tag
    assert client.channel_close(ch).reply_code == 406


def test_cancel_stops_deliveries_but_keeps_unacked(client, ch):
    client.qos(ch, 2)
    fill(client, ch, 5)
    client.consume(ch, "q", "mytag")
    assert ids(client.deliveries(ch)) == [1, 2]
    assert client.call(ch, spec.BasicCancel("mytag")) == spec.BasicCancelOk("mytag")
    client.ack(ch, 1)
    assert client.deliveries(ch) == []
    assert client.counts(ch, "q") == (3, 0)
    client.ack(ch, 2)  # still a valid tag after the cancel
    assert client.drain(ch) == []
    # cancel of an unknown tag is fine
    assert client.call(ch, spec.BasicCancel("unknown")) == spec.BasicCancelOk("unknown")


def test_cancel_no_wait(client, ch):
    client.consume(ch, "q", "t")
    client.send(ch, spec.BasicCancel("t", True))
    assert client.drain(ch) == []
    assert client.counts(ch, "q") == (0, 0)


def test_consume_no_wait(client, ch):
    fill(client, ch, 1)
    client.send(ch, spec.BasicConsume(queue="q", consumer_tag="t", no_wait=True))
    assert [type(i.method) for i in client.drain(ch)] == [spec.BasicDeliver]


def test_consumer_tag_reuse_on_channel_is_530_connection_error(client, ch):
    client.consume(ch, "q", "dup")
    with pytest.raises(ConnectionClosed) as ei:
        client.consume(ch, "q", "dup")
    assert ei.value.code == 530
    assert ei.value.text == "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"
    assert (ei.value.class_id, ei.value.method_id) == (60, 20)


def test_same_consumer_tag_on_other_channel_is_fine(client, ch):
    client.consume(ch, "q", "same")
    ch2 = client.channel()
    assert client.consume(ch2, "q", "same") == "same"


def test_exclusive_consumer(broker, client, ch):
    client.consume(ch, "q", "excl", exclusive=True)
    other = CoreClient(broker)
    och = other.channel()
    with pytest.raises(ChannelClosed) as ei:
        other.consume(och, "q", "c2")
    assert ei.value.code == 403
    assert ei.value.text == "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
    assert (ei.value.class_id, ei.value.method_id) == (60, 20)
    # same connection, other channel: refused too
    ch2 = client.channel()
    with pytest.raises(ChannelClosed) as ei:
        client.consume(ch2, "q", "c3")
    assert ei.value.code == 403
    # after cancel the queue is free again
    client.call(ch, spec.BasicCancel("excl"))
    och = other.channel()
    assert other.consume(och, "q", "c2") == "c2"


def test_exclusive_consume_refused_when_queue_has_consumers(client, ch):
    client.consume(ch, "q", "plain")
    ch2 = client.channel()
    with pytest.raises(ChannelClosed) as ei:
        client.consume(ch2, "q", "excl", exclusive=True)
    assert ei.value.code == 403


def test_consume_from_missing_queue_is_404(client, ch):
    with pytest.raises(ChannelClosed) as ei:
        client.consume(ch, "missing")
    assert ei.value.code == 404
    assert (ei.value.class_id, ei.value.method_id) == (60, 20)


def test_channel_flow_false_is_not_implemented(client, ch):
    # As RabbitMQ: flow(true) is acknowledged, flow(false) is a 540 connection error.
    assert client.call(ch, spec.ChannelFlow(True)) == spec.ChannelFlowOk(True)
    client.send(ch, spec.ChannelFlow(False))
    close = client.connection_closed()
    assert (close.reply_code, close.reply_text) == (540, "NOT_IMPLEMENTED - active=false")


# ---------------------------------------------------------------------- fairness


def test_round_robin_across_three_consumers(broker, client, ch):
    other = CoreClient(broker)
    ch2, ch3 = client.channel(), other.channel()
    client.consume(ch, "q", "A")
    client.consume(ch2, "q", "B")
    other.consume(ch3, "q", "C")
    fill(client, ch, 30)
    a = client.deliveries(ch)
    b = client.deliveries(ch2)
    c = other.deliveries(ch3)
    assert len(a) == len(b) == len(c) == 10
    # strict rotation: each consumer gets every third message
    by_id = {}
    for tag, ds in (("A", a), ("B", b), ("C", c)):
        for d in ds:
            by_id[int(d.body)] = tag
        got = ids(ds)
        assert got == sorted(got)
        assert all(y - x == 3 for x, y in zip(got, got[1:])), (tag, got)
    seq = [by_id[i] for i in range(1, 31)]
    assert len(set(seq[:3])) == 3


def test_round_robin_skips_consumers_at_their_limit(client, ch):
    ch2 = client.channel()
    client.qos(ch, 1)
    client.consume(ch, "q", "slow")
    client.consume(ch2, "q", "fast")
    fill(client, ch, 6)
    slow = client.deliveries(ch)
    fast = client.deliveries(ch2)
    assert len(slow) == 1 and len(fast) == 5
    assert sorted(ids(slow) + ids(fast)) == [1, 2, 3, 4, 5, 6]
    client.ack(ch, slow[0].delivery_tag)
    fill(client, ch, 1, start=7)
    # slow has room again; it takes its turn
    assert ids(client.deliveries(ch)) + ids(client.deliveries(ch2)) == [7]


# ---------------------------------------------------------------------- prefetch


def test_prefetch_per_consumer(client, ch):
    client.qos(ch, 2)
    fill(client, ch, 10)
    client.consume(ch, "q", "a")
    client.consume(ch, "q", "b")
    ds = client.deliveries(ch)
    per = {}
    for d in ds:
        per.setdefault(d.consumer_tag, []).append(d)
    assert {k: len(v) for k, v in per.items()} == {"a": 2, "b": 2}
    assert client.counts(ch, "q") == (6, 2)
    # acking one of a's frees exactly one slot, for a
    client.ack(ch, per["a"][0].delivery_tag)
    more = client.deliveries(ch)
    assert [d.consumer_tag for d in more] == ["a"]
    # ack multiple frees as many as it acked
    client.ack(ch, more[0].delivery_tag, multiple=True)
    more = client.deliveries(ch)
    assert sorted(d.consumer_tag for d in more) == ["a", "a", "b", "b"]


def test_prefetch_applies_to_consumers_created_afterwards(client, ch):
    fill(client, ch, 10)
    client.qos(ch, 1)
    client.consume(ch, "q", "one")
    client.qos(ch, 3)
    client.consume(ch, "q", "three")
    tags = [d.consumer_tag for d in client.deliveries(ch)]
    assert tags.count("one") == 1 and tags.count("three") == 3


def test_prefetch_zero_is_unlimited(client, ch):
    client.qos(ch, 0)
    fill(client, ch, 50)
    client.consume(ch, "q", "t")
    assert len(client.deliveries(ch)) == 50


def test_global_prefetch_is_shared_by_the_channels_consumers(client, ch):
    client.qos(ch, 3, global_=True)
    fill(client, ch, 10)
    client.consume(ch, "q", "a")
    client.consume(ch, "q", "b")
    ds = client.deliveries(ch)
    assert len(ds) == 3
    client.ack(ch, ds[-1].delivery_tag, multiple=True)
    assert len(client.deliveries(ch)) == 3
    # raising the global limit lets more flow at once
    client.qos(ch, 5, global_=True)
    assert len(client.deliveries(ch)) == 2


def test_global_and_per_consumer_prefetch_combine(client, ch):
    client.qos(ch, 1)
    client.qos(ch, 3, global_=True)
    fill(client, ch, 10)
    for t in ("a", "b", "c", "d"):
        client.consume(ch, "q", t)
    ds = client.deliveries(ch)
    assert len(ds) == 3
    assert len({d.consumer_tag for d in ds}) == 3


def test_global_prefetch_across_two_queues(client, ch):
    """Capacity freed by an ack on one queue must let *any* queue the channel consumes
    from deliver, not just the queue the acked message came from."""
    client.declare(ch, "q2")
    client.qos(ch, 1, global_=True)
    client.consume(ch, "q", "c1")
    client.consume(ch, "q2", "c2")
    client.publish(ch, "", "q", b"from-q")
    [d1] = client.deliveries(ch)
    client.publish(ch, "", "q2", b"from-q2")
    assert client.deliveries(ch) == []  # channel at its global limit
    client.ack(ch, d1.delivery_tag)
    ds = client.deliveries(ch)
    assert [d.body for d in ds] == [b"from-q2"], "q2's message stuck after capacity came free"


def test_get_ignores_prefetch(client, ch):
    client.qos(ch, 1, global_=True)
    client.qos(ch, 1)
    fill(client, ch, 3)
    assert [client.get(ch, "q").body for _ in range(3)] == [b"1", b"2", b"3"]


def test_prefetch_size_is_not_implemented(client, ch):
    with pytest.raises(ConnectionClosed) as ei:
        client.call(ch, spec.BasicQos(1024, 0, False))
    assert ei.value.code == 540
    assert (ei.value.class_id, ei.value.method_id) == (60, 10)


# ---------------------------------------------------------------- ack/nack/reject


def consume_all(c: CoreClient, ch: int, n: int, queue: str = "q") -> list:
    c.consume(ch, queue, f"c{ch}")
    ds = c.deliveries(ch)
    assert len(ds) == n
    return ds


def test_ack_single_and_multiple(client, ch):
    fill(client, ch, 6)
    ds = consume_all(client, ch, 6)
    client.ack(ch, ds[0].delivery_tag)
    client.ack(ch, ds[3].delivery_tag, multiple=True)  # acks 2,3,4
    client.ack(ch, ds[5].delivery_tag)
    assert client.drain(ch) == []
    # only tag 5 remains: closing the channel requeues just it
    client.close_channel(ch)
    ch = client.channel()
    assert ids(get_all(client, ch)) == [5]


def test_ack_multiple_zero_acks_everything(client, ch):
    fill(client, ch, 4)
    consume_all(client, ch, 4)
    client.ack(ch, 0, multiple=True)
    client.close_channel(ch)
    ch = client.channel()
    assert client.counts(ch, "q") == (0, 0)


def test_nack_multiple_requeue(client, ch):
    fill(client, ch, 5)
    ds = consume_all(client, ch, 5)
    client.call(ch, spec.BasicCancel(f"c{ch}"))
    client.nack(ch, ds[2].delivery_tag, multiple=True, requeue=True)  # 1,2,3 back
    got = get_all(client, ch)
    assert ids(got) == [1, 2, 3]
    assert all(r.redelivered for r in got)


def test_nack_and_reject_without_requeue_drop(client, ch):
    fill(client, ch, 4)
    ds = consume_all(client, ch, 4)
    client.call(ch, spec.BasicCancel(f"c{ch}"))
    client.nack(ch, ds[1].delivery_tag, multiple=True, requeue=False)
    client.reject(ch, ds[2].delivery_tag, requeue=False)
    client.reject(ch, ds[3].delivery_tag, requeue=True)
    got = get_all(client, ch)
    assert ids(got) == [4]
    assert got[0].redelivered


def test_unknown_delivery_tag_is_406(client, ch):
    client.ack(ch, 99)
    close = client.channel_close(ch)
    assert close.reply_code == 406
    assert close.reply_text == "PRECONDITION_FAILED - unknown delivery tag 99"
    assert (close.class_id, close.method_id) == (60, 80)


@pytest.mark.parametrize(
    "second",
    [
        spec.BasicAck(1, False),
        spec.BasicNack(1, False, True),
        spec.BasicReject(1, True),
        spec.BasicAck(1, True),
    ],
    ids=lambda m: f"{m.NAME}",
)
def test_double_settle_is_406(client, ch, second):
    fill(client, ch, 2)
    r = client.get(ch, "q")
    client.get(ch, "q")
    client.ack(ch, r.delivery_tag)
    client.send(ch, second)
    close = client.channel_close(ch)
    assert close.reply_code == 406
    assert (close.class_id, close.method_id) == (second.CLASS_ID, second.METHOD_ID)
    # the channel error requeued the other unacked message
    ch = client.channel()
    [r2] = get_all(client, ch)
    assert (r2.body, r2.redelivered) == (b"2", True)


def test_multiple_ack_with_unknown_upper_tag_is_406(client, ch):
    """RabbitMQ: with multiple=true the named tag itself must be outstanding."""
    fill(client, ch, 3)
    consume_all(client, ch, 3)
    client.ack(ch, 2)
    client.ack(ch, 2, multiple=True)
    assert client.channel_close(ch).reply_code == 406


def test_nack_of_get_with_requeue(client, ch):
    fill(client, ch, 3)
    r1 = client.get(ch, "q")
    r2 = client.get(ch, "q")
    client.nack(ch, r2.delivery_tag, requeue=True)
    client.nack(ch, r1.delivery_tag, requeue=True)
    got = get_all(client, ch)
    assert ids(got) == [1, 2, 3]
    assert [r.redelivered for r in got] == [True, True, False]


# ----------------------------------------------------------------- requeue order


def test_requeue_interleaved_two_consumers_restores_original_order(client, ch):
    """Deliver 1..6 round-robin to two consumers on two channels, nack some from each in
    different orders: the queue must hold them by original position, marked redelivered."""
    ch_a, ch_b = ch, client.channel()
    client.consume(ch_a, "q", "A")
    client.consume(ch_b, "q", "B")
    fill(client, ch, 6)
    a, b = client.deliveries(ch_a), client.deliveries(ch_b)
    assert ids(a) == [1, 3, 5] and ids(b) == [2, 4, 6]
    client.call(ch_a, spec.BasicCancel("A"))
    client.call(ch_b, spec.BasicCancel("B"))
    fill(client, ch, 2, start=7)  # 7, 8 wait in the queue behind everything
    tag_a = {int(d.body): d.delivery_tag for d in a}
    tag_b = {int(d.body): d.delivery_tag for d in b}
    client.nack(ch_b, tag_b[6])
    client.nack(ch_a, tag_a[5])
    client.reject(ch_b, tag_b[2])
    client.nack(ch_a, tag_a[3])
    client.nack(ch_b, tag_b[4])
    client.reject(ch_a, tag_a[1])
    got = get_all(client, client.channel())
    assert ids(got) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [r.redelivered for r in got] == [True] * 6 + [False] * 2


def test_requeue_into_the_middle_of_the_queue(client, ch):
    fill(client, ch, 6)
    rs = [client.get(ch, "q") for _ in range(6)]
    # requeue 5 first: queue [5]; then 2 (goes in front), then 4 (between 2 and 5),
    # then 6 (at the end), then 1 (front), then 3.
    for n in (5, 2, 4, 6, 1, 3):
        client.nack(ch, rs[n - 1].delivery_tag, requeue=True)
    assert ids(get_all(client, ch)) == [1, 2, 3, 4, 5, 6]


def test_requeued_message_goes_to_a_waiting_consumer(client, ch):
    fill(client, ch, 2)
    r = client.get(ch, "q")
    ch2 = client.channel()
    client.qos(ch2, 1)
    client.consume(ch2, "q", "w")
    [d] = client.deliveries(ch2)
    assert (int(d.body), d.redelivered) == (2, False)
    client.ack(ch2, d.delivery_tag)
    client.nack(ch, r.delivery_tag, requeue=True)
    [d] = client.deliveries(ch2)
    assert (int(d.body), d.redelivered) == (1, True)


def test_recover_requeues_all_unacked_in_order(client, ch):
    fill(client, ch, 5)
    client.qos(ch, 3)
    client.consume(ch, "q", "t")
    ds = client.deliveries(ch)
    assert ids(ds) == [1, 2, 3]
    client.ack(ch, ds[1].delivery_tag)
    [d4] = client.deliveries(ch)
    assert (int(d4.body), d4.delivery_tag) == (4, 4)
    assert client.call(ch, spec.BasicRecover(True)) == spec.BasicRecoverOk()
    ds = client.deliveries(ch)
    # 1, 3 and 4 come back, redelivered, in their original order, ahead of 5
    assert [(int(d.body), d.redelivered) for d in ds] == [(1, True), (3, True), (4, True)]
    # new tags: the old ones are gone
    assert [d.delivery_tag for d in ds] == [5, 6, 7]
    client.ack(ch, 1)
    assert client.channel_close(ch).reply_code == 406


def test_recover_async(client, ch):
    fill(client, ch, 2)
    client.get(ch, "q")
    client.send(ch, spec.BasicRecoverAsync(True))
    assert client.drain(ch) == []
    r = client.get(ch, "q")
    assert (r.body, r.redelivered) == (b"1", True)


def test_recover_without_requeue_not_implemented(client, ch):
    with pytest.raises(ConnectionClosed) as ei:
        client.call(ch, spec.BasicRecover(False))
    assert ei.value.code == 540
    assert (ei.value.class_id, ei.value.method_id) == (60, 110)


# ------------------------------------------------------ channel / connection close


def test_channel_close_requeues_unacked_in_order_as_redelivered(client, ch):
    fill(client, ch, 6)
    cch = client.channel()
    client.consume(cch, "q", "t")
    ds = client.deliveries(cch)
    client.ack(cch, ds[1].delivery_tag)
    client.ack(cch, ds[4].delivery_tag)
    client.close_channel(cch)
    got = get_all(client, ch)
    assert ids(got) == [1, 3, 4, 6]
    assert all(r.redelivered for r in got)


def test_channel_close_requeue_goes_to_other_consumers_not_back(broker, client, ch):
    other = CoreClient(broker)
    och = other.channel()
    cch = client.channel()
    client.consume(cch, "q", "first")
    fill(client, ch, 3)
    assert len(client.deliveries(cch)) == 3
    other.consume(och, "q", "second")
    client.close_channel(cch)
    ds = other.deliveries(och)
    assert [(int(d.body), d.redelivered) for d in ds] == [(1, True), (2, True), (3, True)]


@pytest.mark.parametrize("how", ["close", "drop"])
def test_connection_end_requeues_all_channels_in_order(broker, how):
    a = CoreClient(broker)
    ach = a.channel()
    a.declare(ach, "q")
    c = CoreClient(broker)
    c1, c2 = c.channel(), c.channel()
    c.consume(c1, "q", "x")
    c.consume(c2, "q", "y")
    fill(a, ach, 8)
    d1, d2 = c.deliveries(c1), c.deliveries(c2)
    assert ids(d1) == [1, 3, 5, 7] and ids(d2) == [2, 4, 6, 8]
    c.ack(c1, d1[1].delivery_tag)  # 3 done
    c.get(c2, "q")  # nothing there
    c.close() if how == "close" else c.drop()
    got = get_all(a, ach)
    assert ids(got) == [1, 2, 4, 5, 6, 7, 8]
    assert all(r.redelivered for r in got)
    assert a.counts(ach, "q") == (0, 0)


def test_requeue_on_close_with_uncancelled_consumer_on_same_session(client, ch):
    """Channel A's unacked go back to the queue and on to channel B's consumer of the same
    connection; closing the connection then requeues everything once, in order."""
    fill(client, ch, 4)
    cha, chb = client.channel(), client.channel()
    client.consume(cha, "q", "a")
    assert len(client.deliveries(cha)) == 4
    client.consume(chb, "q", "b")
    client.close_channel(cha)
    db = client.deliveries(chb)
    assert [(int(d.body), d.redelivered) for d in db] == [(1, True), (2, True), (3, True), (4, True)]
    client.drop()
    other = CoreClient(client.broker)
    och = other.channel()
    got = get_all(other, och)
    assert ids(got) == [1, 2, 3, 4]


@pytest.mark.parametrize("how", ["close", "drop"])
def test_connection_end_does_not_hand_requeued_messages_to_its_own_no_ack_consumer(broker, how):
    """Channel 1 holds unacked messages; channel 2 of the same connection has a no-ack
    consumer on the same queue. When the connection ends, the requeued messages must stay in
    the queue: handing them to the dying connection's no-ack consumer loses them."""
    c = CoreClient(broker)
    ch1, ch2 = c.channel(), c.channel()
    c.declare(ch1, "q")
    c.consume(ch1, "q", "acking")
    fill(c, ch1, 3)
    assert len(c.deliveries(ch1)) == 3
    c.consume(ch2, "q", "auto", no_ack=True)
    c.close() if how == "close" else c.drop()
    other = CoreClient(broker)
    och = other.channel()
    got = get_all(other, och)
    assert [(int(r.body), r.redelivered) for r in got] == [(1, True), (2, True), (3, True)]


def test_nack_multiple_across_two_queues_restores_each_queue_order(client, ch):
    client.declare(ch, "q2")
    client.publish_many(ch, "", "q", [b"1", b"2", b"3"])
    client.publish_many(ch, "", "q2", [b"1", b"2", b"3"])
    rs = []
    for _ in range(3):
        rs.append(client.get(ch, "q2"))
        rs.append(client.get(ch, "q"))
    client.ack(ch, rs[2].delivery_tag)  # q2's "2"
    client.nack(ch, rs[-1].delivery_tag, multiple=True, requeue=True)
    assert ids(get_all(client, ch, "q")) == [1, 2, 3]
    assert ids(get_all(client, ch, "q2")) == [1, 3]
