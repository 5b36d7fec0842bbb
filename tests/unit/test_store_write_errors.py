"""What a client sees when the disk refuses a write, and what the operator reads in the log."""
from __future__ import annotations

import errno
import logging
import random

import pytest

from core_client import BasicProperties, Broker, ChannelClosed, CoreClient, spec
from faulty_files import FaultyFiles
from minimq.store import DurableStore

PERSISTENT = BasicProperties(delivery_mode=2)


class Node:
    def __init__(self, path, files: FaultyFiles) -> None:
        self.path = str(path)
        self.files = files
        self.start()

    def start(self) -> None:
        enabled, self.files.enabled = self.files.enabled, False
        self.store = DurableStore(self.path, files=self.files)
        recovered = self.store.recover()
        self.broker = Broker(store=self.store, clock=lambda: 1000.0)
        self.broker.restore(recovered)
        self.files.enabled = enabled
        self.client = CoreClient(self.broker)

    def flush(self) -> None:
        """The server's round: write, fsync, release what is durable."""
        self.store.write()
        if self.store.needs_sync:
            position = self.store.sync()
            if position > self.store.synced:
                self.broker.synced(position)
        self.client.collect()

    def restart(self) -> None:
        self.store.close()
        self.start()


@pytest.fixture
def files():
    return FaultyFiles(random.Random(7))


def acks(client: CoreClient, ch: int) -> list[int]:
    return [r.method.delivery_tag for r in client.drain(ch) if isinstance(r.method, spec.BasicAck)]


def test_a_durable_declaration_the_disk_refuses_is_not_applied(tmp_path, files):
    node = Node(tmp_path, files)
    c = node.client
    ch = c.channel()
    files.set_rates(1.0)
    with pytest.raises(ChannelClosed) as info:
        c.declare(ch, "dq", durable=True)
    assert info.value.code == 506
    assert info.value.text.startswith("RESOURCE_ERROR - cannot record this on disk")
    ch = c.channel()
    with pytest.raises(ChannelClosed) as info:
        c.declare(ch, "dq", passive=True)
    assert info.value.code == 404  # not applied: no half-declared queue
    # A transient queue needs no disk: it still works.
    ch = c.channel()
    c.declare(ch, "tq")
    files.set_rates(0)
    c.declare(ch, "dq", durable=True)
    c.call(ch, spec.ExchangeDeclare(exchange="dx", type="direct", durable=True))
    files.set_rates(1.0)
    with pytest.raises(ChannelClosed) as info:  # a durable binding is refused the same way
        c.call(ch, spec.QueueBind(queue="dq", exchange="dx", routing_key="k"))
    assert info.value.code == 506
    files.set_rates(0)
    node.restart()
    ch = node.client.channel()
    node.client.declare(ch, "dq", passive=True)
    node.client.call(ch, spec.ExchangeDeclare(exchange="dx", type="direct", passive=True))
    vhost = node.broker.vhosts["/"]
    assert not vhost.exchanges["dx"].kind.has_bindings_to(vhost.queues["dq"])
    node.store.close()


def test_confirms_and_commit_wait_for_the_disk_and_come_once_it_takes_the_records(tmp_path, files):
    node = Node(tmp_path, files)
    c = node.client
    ch = c.channel()
    c.declare(ch, "q", durable=True)
    c.call(ch, spec.ConfirmSelect())
    tx = c.channel()
    c.call(tx, spec.TxSelect())
    node.flush()
    files.set_rates(1.0, 1.0, 1.0)
    c.publish_many(ch, "", "q", [b"1", b"2", b"3"], properties=PERSISTENT)
    c.publish(tx, "", "q", b"t", properties=PERSISTENT)
    c.send(tx, spec.TxCommit())
    for _ in range(5):
        node.flush()
    assert acks(c, ch) == []
    assert not any(isinstance(r.method, spec.TxCommitOk) for r in c.inbox)
    assert node.store.failing and node.store.pending
    files.set_rates(0)
    node.flush()
    node.flush()
    assert max(acks(c, ch)) == 3
    assert any(isinstance(r.method, spec.TxCommitOk) for r in c.drain(tx))
    node.restart()
    q = node.broker.vhosts["/"].queues["q"]
    assert [m.body for m in q.ready] == [b"1", b"2", b"3", b"t"]
    node.store.close()


def test_a_failing_disk_is_logged_once_per_episode_with_path_and_errno(tmp_path, files, caplog):
    node = Node(tmp_path, files)
    c = node.client
    ch = c.channel()
    c.declare(ch, "q", durable=True)
    node.flush()
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="minimq.store")

    files.full = True
    for i in range(20):
        c.publish(ch, "", "q", b"%d" % i, properties=PERSISTENT)
        node.flush()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    text = errors[0].getMessage()
    assert str(tmp_path / "msgs-00000001.log") in text
    assert "[Errno 28] No space left on device" in text
    files.full = False
    node.flush()
    node.flush()
    back = [r.getMessage() for r in caplog.records if "work again" in r.getMessage()]
    assert len(back) == 1 and "20 failed attempts" in back[0]
    node.restart()
    assert len(node.broker.vhosts["/"].queues["q"].ready) == 20
    node.store.close()


def test_a_full_disk_at_start_keeps_the_old_metadata(tmp_path, files, caplog):
    node = Node(tmp_path, files)
    ch = node.client.channel()
    node.client.declare(ch, "kept", durable=True)
    node.client.publish(ch, "", "kept", b"m", properties=PERSISTENT)
    node.flush()
    node.store.close()
    files.set_rates(1.0, 0, 0)
    files.enabled = True
    store = DurableStore(str(tmp_path), files=files)  # meta.log cannot be rewritten now
    recovered = store.recover()
    assert [q.name for q in recovered.queues] == ["kept"]
    assert [m.body for m in recovered.queues[0].messages] == [b"m"]
    assert "cannot rewrite" in caplog.text
    store.abandon()
    files.set_rates(0)
    node.start()
    assert [m.body for m in node.broker.vhosts["/"].queues["kept"].ready] == [b"m"]
    node.store.close()
