"""Publisher confirms and transactions in the broker core."""
from __future__ import annotations

import pytest

from core_client import Broker, ChannelClosed, CoreClient, spec


@pytest.fixture
def client() -> CoreClient:
    return CoreClient(Broker())


@pytest.fixture
def ch(client: CoreClient) -> int:
    ch = client.channel()
    client.declare(ch, "q")
    return ch


def confirmed(acks, after: int = 0) -> list[int]:
    """The publish sequence numbers a list of basic.ack methods confirms, in order
    (`after`: the highest sequence number confirmed before these acks)."""
    seen: list[int] = []
    for a in acks:
        assert isinstance(a, spec.BasicAck), a
        if a.multiple:
            low = seen[-1] + 1 if seen else after + 1
            assert a.delivery_tag >= low, f"multiple ack {a.delivery_tag} goes backwards"
            seen.extend(range(low, a.delivery_tag + 1))
        else:
            assert a.delivery_tag not in seen, f"ack {a.delivery_tag} twice"
            seen.append(a.delivery_tag)
    return seen


def acks_on(c: CoreClient, ch: int) -> list:
    return [r.method for r in c.drain(ch) if isinstance(r.method, (spec.BasicAck, spec.BasicNack))]


def get_bodies(c: CoreClient, ch: int, queue: str = "q") -> list[bytes]:
    out = []
    while (r := c.get(ch, queue, no_ack=True)) is not None:
        out.append(r.body)
    return out


# ---------------------------------------------------------------------- confirms


def test_confirm_select(client, ch):
    assert client.call(ch, spec.ConfirmSelect()) == spec.ConfirmSelectOk()
    assert client.call(ch, spec.ConfirmSelect()) == spec.ConfirmSelectOk()  # idempotent
    client.send(ch, spec.ConfirmSelect(nowait=True))
    assert client.drain(ch) == []


def test_each_publish_is_acked_with_sequence_numbers_from_one(client, ch):
    client.call(ch, spec.ConfirmSelect())
    for i in range(1, 4):
        client.publish(ch, "", "q", b"m")
        assert acks_on(client, ch) == [spec.BasicAck(i, False)]


def test_batched_publishes_are_all_covered(client, ch):
    client.call(ch, spec.ConfirmSelect())
    client.publish_many(ch, "", "q", [b"%d" % i for i in range(10)])
    acks = acks_on(client, ch)
    assert confirmed(acks) == list(range(1, 11))
    assert all(not isinstance(a, spec.BasicNack) for a in acks)
    client.publish_many(ch, "", "q", [b"x", b"y"])
    assert confirmed(acks_on(client, ch), after=10) == [11, 12]
    assert client.counts(ch, "q") == (12, 0)


def test_sequence_numbers_are_per_channel(client, ch):
    ch2 = client.channel()
    client.call(ch, spec.ConfirmSelect())
    client.call(ch2, spec.ConfirmSelect())
    client.publish(ch, "", "q", b"a")
    client.publish(ch, "", "q", b"b")
    client.publish(ch2, "", "q", b"c")
    assert confirmed(acks_on(client, ch)) == [1, 2]
    assert confirmed(acks_on(client, ch2)) == [1]


def test_publishes_before_confirm_select_are_not_counted(client, ch):
    client.publish(ch, "", "q", b"before")
    client.call(ch, spec.ConfirmSelect())
    client.publish(ch, "", "q", b"after")
    assert acks_on(client, ch) == [spec.BasicAck(1, False)]


def test_unroutable_is_acked(client, ch):
    client.call(ch, spec.ConfirmSelect())
    client.publish(ch, "amq.direct", "nowhere", b"m")
    assert acks_on(client, ch) == [spec.BasicAck(1, False)]


def test_unroutable_mandatory_is_returned_before_its_ack(client, ch):
    client.call(ch, spec.ConfirmSelect())
    client.publish(ch, "amq.direct", "nowhere", b"m", mandatory=True)
    items = client.drain(ch)
    assert [type(i.method) for i in items] == [spec.BasicReturn, spec.BasicAck]
    assert items[0].body == b"m"
    assert items[1].method == spec.BasicAck(1, False)


def test_return_before_ack_within_a_batch(client, ch):
    client.call(ch, spec.ConfirmSelect())
    data = b"".join(
        [
            client.encode_publish(ch, "", "q", b"1", mandatory=True),
            client.encode_publish(ch, "", "nowhere", b"2", mandatory=True),
            client.encode_publish(ch, "", "q", b"3", mandatory=True),
        ]
    )
    client.feed(data)
    items = client.drain(ch)
    kinds = [type(i.method) for i in items]
    assert kinds.count(spec.BasicReturn) == 1
    ret = kinds.index(spec.BasicReturn)
    assert items[ret].body == b"2"
    acks = [i.method for i in items if isinstance(i.method, spec.BasicAck)]
    assert confirmed(acks) == [1, 2, 3]
    # the ack that covers publish 2 comes after its return
    seen: list[int] = []
    for pos, item in enumerate(items):
        if isinstance(item.method, spec.BasicAck):
            seen += confirmed([item.method], after=seen[-1] if seen else 0)
            if 2 in seen:
                assert pos > ret
                break


def test_confirm_then_error_closes_channel_without_ack(client, ch):
    client.call(ch, spec.ConfirmSelect())
    client.publish(ch, "missing-exchange", "k", b"m")
    items = client.drain(ch)
    assert [type(i.method) for i in items] == [spec.ChannelClose]
    assert items[0].method.reply_code == 404
    # a fresh channel starts again at 1
    ch = client.channel()
    client.call(ch, spec.ConfirmSelect())
    client.publish(ch, "", "q", b"m")
    assert acks_on(client, ch) == [spec.BasicAck(1, False)]


def test_confirm_and_tx_exclude_each_other(client, ch):
    client.call(ch, spec.ConfirmSelect())
    with pytest.raises(ChannelClosed) as ei:
        client.call(ch, spec.TxSelect())
    assert ei.value.code == 406
    assert (ei.value.class_id, ei.value.method_id) == (90, 10)
    ch = client.channel()
    client.call(ch, spec.TxSelect())
    with pytest.raises(ChannelClosed) as ei:
        client.call(ch, spec.ConfirmSelect())
    assert ei.value.code == 406
    assert (ei.value.class_id, ei.value.method_id) == (85, 10)


# ---------------------------------------------------------------------------- tx


def test_tx_commit_applies_publishes(client, ch):
    assert client.call(ch, spec.TxSelect()) == spec.TxSelectOk()
    client.publish(ch, "", "q", b"1")
    client.publish(ch, "", "q", b"2")
    assert client.counts(ch, "q") == (0, 0)
    assert client.call(ch, spec.TxCommit()) == spec.TxCommitOk()
    assert client.counts(ch, "q") == (2, 0)
    # the channel stays transactional
    client.publish(ch, "", "q", b"3")
    assert client.counts(ch, "q") == (2, 0)
    client.call(ch, spec.TxCommit())
    assert get_bodies(client, client.channel()) == [b"1", b"2", b"3"]


def test_tx_rollback_discards_publishes(client, ch):
    client.call(ch, spec.TxSelect())
    client.publish(ch, "", "q", b"gone")
    assert client.call(ch, spec.TxRollback()) == spec.TxRollbackOk()
    client.call(ch, spec.TxCommit())
    assert client.counts(ch, "q") == (0, 0)
    client.publish(ch, "", "q", b"kept")
    client.call(ch, spec.TxCommit())
    assert get_bodies(client, client.channel()) == [b"kept"]


def test_tx_channel_close_discards_uncommitted_publishes(client, ch):
    tch = client.channel()
    client.call(tch, spec.TxSelect())
    client.publish(tch, "", "q", b"gone")
    client.close_channel(tch)
    assert client.counts(ch, "q") == (0, 0)


def test_tx_mandatory_return_happens_at_commit(client, ch):
    client.call(ch, spec.TxSelect())
    client.publish(ch, "", "nowhere", b"m", mandatory=True)
    assert client.drain(ch) == []
    client.send(ch, spec.TxCommit())
    items = client.drain(ch)
    assert [type(i.method) for i in items] == [spec.BasicReturn, spec.TxCommitOk]


def test_tx_commit_applies_acks(client, ch):
    client.publish_many(ch, "", "q", [b"1", b"2", b"3"])
    cch = client.channel()
    client.call(cch, spec.TxSelect())
    client.consume(cch, "q", "t")
    ds = client.deliveries(cch)
    client.ack(cch, ds[1].delivery_tag, multiple=True)  # 1, 2
    client.call(cch, spec.TxCommit())
    client.close_channel(cch)
    r = client.get(ch, "q", no_ack=True)
    assert (r.body, r.redelivered) == (b"3", True)
    assert client.get(ch, "q") is None


def test_tx_acks_free_prefetch_only_at_commit(client, ch):
    client.publish_many(ch, "", "q", [b"1", b"2"])
    cch = client.channel()
    client.call(cch, spec.TxSelect())
    client.qos(cch, 1)
    client.consume(cch, "q", "t")
    [d1] = client.deliveries(cch)
    client.ack(cch, d1.delivery_tag)
    assert client.deliveries(cch) == []
    client.call(cch, spec.TxCommit())
    assert [d.body for d in client.deliveries(cch)] == [b"2"]


def test_tx_rollback_restores_acked_deliveries_as_unacked(client, ch):
    client.publish_many(ch, "", "q", [b"1", b"2", b"3", b"4"])
    cch = client.channel()
    client.call(cch, spec.TxSelect())
    rs = [client.get(cch, "q") for _ in range(4)]
    client.ack(cch, rs[0].delivery_tag)
    client.ack(cch, rs[2].delivery_tag, multiple=True)  # 2 and 3
    client.call(cch, spec.TxRollback())
    # nothing was requeued by the rollback ...
    assert client.counts(ch, "q") == (0, 0)
    # ... the deliveries are outstanding again: acking them again is no 406
    client.ack(cch, rs[1].delivery_tag)
    client.call(cch, spec.TxCommit())
    assert not any(isinstance(i.method, spec.ChannelClose) for i in client.drain(cch))
    client.close_channel(cch)
    got = []
    while (r := client.get(ch, "q", no_ack=True)) is not None:
        got.append((r.body, r.redelivered))
    assert got == [(b"1", True), (b"3", True), (b"4", True)]


def test_tx_rollback_then_multiple_ack_covers_restored_tags(client, ch):
    client.publish_many(ch, "", "q", [b"1", b"2", b"3"])
    cch = client.channel()
    client.call(cch, spec.TxSelect())
    rs = [client.get(cch, "q") for _ in range(3)]
    client.ack(cch, rs[0].delivery_tag)
    client.call(cch, spec.TxRollback())
    client.ack(cch, rs[2].delivery_tag, multiple=True)
    client.call(cch, spec.TxCommit())
    client.close_channel(cch)
    assert client.counts(ch, "q") == (0, 0)


def test_tx_nack_requeue_applies_at_commit(client, ch):
    client.publish_many(ch, "", "q", [b"1", b"2"])
    cch = client.channel()
    client.call(cch, spec.TxSelect())
    rs = [client.get(cch, "q") for _ in range(2)]
    client.nack(cch, rs[1].delivery_tag, multiple=True, requeue=True)
    assert client.counts(ch, "q") == (0, 0)
    client.call(cch, spec.TxCommit())
    assert client.counts(ch, "q") == (2, 0)
    assert get_bodies(client, ch) == [b"1", b"2"]


def test_tx_uncommitted_acks_are_requeued_on_channel_close(client, ch):
    client.publish_many(ch, "", "q", [b"1", b"2", b"3"])
    cch = client.channel()
    client.call(cch, spec.TxSelect())
    rs = [client.get(cch, "q") for _ in range(3)]
    client.ack(cch, rs[2].delivery_tag)
    client.reject(cch, rs[0].delivery_tag, requeue=False)
    client.close_channel(cch)
    got = []
    while (r := client.get(ch, "q", no_ack=True)) is not None:
        got.append((r.body, r.redelivered))
    assert got == [(b"1", True), (b"2", True), (b"3", True)]


def test_tx_commit_and_rollback_require_select(client, ch):
    with pytest.raises(ChannelClosed) as ei:
        client.call(ch, spec.TxCommit())
    assert ei.value.code == 406
    assert (ei.value.class_id, ei.value.method_id) == (90, 20)
    ch = client.channel()
    with pytest.raises(ChannelClosed) as ei:
        client.call(ch, spec.TxRollback())
    assert ei.value.code == 406
    assert (ei.value.class_id, ei.value.method_id) == (90, 30)


def test_tx_publish_to_exchange_deleted_before_commit_is_dropped(client, ch):
    client.call(ch, spec.ExchangeDeclare(exchange="x", type="fanout"))
    client.call(ch, spec.QueueBind(queue="q", exchange="x"))
    tch = client.channel()
    client.call(tch, spec.TxSelect())
    client.publish(tch, "x", "", b"m")
    client.call(ch, spec.ExchangeDelete(exchange="x"))
    assert client.call(tch, spec.TxCommit()) == spec.TxCommitOk()
    assert client.counts(ch, "q") == (0, 0)
