"""The store does not grow without bound (in-process, with 64 KiB segments).

Drives a DurableStore through the broker core with the in-memory CoreClient, doing what the
server does after each batch: write(), roll() when needs_roll, sync(), broker.synced().
A "restart" closes the store (no session is closed first: like a kill -9 after the last
sync) and recovers a new one from the same directory.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from minimq.broker import Broker
from minimq.codec import spec
from minimq.codec.properties import BasicProperties
from minimq.store import DurableStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from core_client import CoreClient  # noqa: E402

SEGMENT = 64 * 1024
P = BasicProperties(delivery_mode=2)


def clock() -> float:
    return 1000.0


class Node:
    """A store + broker + client on one directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = DurableStore(str(path), segment_size=SEGMENT)
        self.recovered = self.store.recover()
        self.broker = Broker(store=self.store, clock=clock)
        self.broker.restore(self.recovered)
        self.client = CoreClient(self.broker)
        self.ch = self.client.channel()
        self.pump()

    def pump(self) -> None:
        store = self.store
        if store.pending:
            store.write()
        if store.needs_roll:
            store.roll()
        self.broker.synced(store.sync())

    def segments(self) -> list[Path]:
        return sorted(self.path.glob("msgs-*.log"))

    def churn(self, queue: str, rounds: int, per_round: int = 50, size: int = 1000, max_segments: int = 0) -> int:
        """Publish and consume-with-ack `rounds` x `per_round` messages; returns the most segments seen."""
        most = 0
        c, ch = self.client, self.ch
        for _ in range(rounds):
            c.publish_many(ch, "", queue, [b"c" * size] * per_round, properties=P)
            self.pump()
            for _ in range(per_round):
                got = c.get(ch, queue, no_ack=True)
                assert got is not None
            self.pump()
            most = max(most, len(self.segments()))
            if max_segments:
                assert most <= max_segments, f"{most} segments after churn: the log is pinned"
        return most

    def close(self) -> None:
        self.pump()
        self.store.close()


def test_publish_ack_reclaims_old_segments(tmp_path):
    node = Node(tmp_path)
    node.client.declare(node.ch, "q", durable=True)
    most = node.churn("q", rounds=60, max_segments=4)  # ~3 MB through 64 KiB segments
    assert node.store._next_id > 3000
    assert len(node.segments()) <= 3, node.segments()
    node.close()
    again = Node(tmp_path)
    assert again.recovered.message_count == 0
    assert len(again.segments()) <= 2
    print(f"max {most} segment files alive while ~3 MB went through")
    again.close()


def _restart_and_check(tmp_path, expect: list[str]) -> "Node":
    node = Node(tmp_path)
    (rq,) = [q for q in node.recovered.queues if q.name == "keep"]
    got = [m.body.decode() for m in rq.messages]
    assert got == expect, got
    assert len({m.id for m in rq.messages}) == len(rq.messages)
    return node


def test_long_unacked_messages_do_not_pin_the_log(tmp_path):
    node = Node(tmp_path)
    c, ch = node.client, node.ch
    c.declare(ch, "keep", durable=True)
    c.declare(ch, "q", durable=True)
    c.publish(ch, "", "keep", b"held-unacked", P)
    c.publish(ch, "", "keep", b"ready-forever", P)
    node.pump()
    held = c.get(ch, "keep", no_ack=False)  # delivered, never acked
    assert held.body == b"held-unacked"
    node.pump()
    # Many segments' worth of traffic: the two messages get compacted forward, repeatedly.
    node.churn("q", rounds=60, max_segments=4)
    node.close()
    # Restart: both are there exactly once, in order.
    node = _restart_and_check(tmp_path, ["held-unacked", "ready-forever"])
    node.churn("q", rounds=60, max_segments=4)
    node.close()
    node = _restart_and_check(tmp_path, ["held-unacked", "ready-forever"])
    first = node.client.get(node.ch, "keep", no_ack=True)
    second = node.client.get(node.ch, "keep", no_ack=True)
    assert (first.body, second.body) == (b"held-unacked", b"ready-forever")
    node.close()
    node = Node(tmp_path)
    assert node.recovered.message_count == 0
    node.close()


def test_mostly_dead_segment_from_before_a_restart_is_still_compacted(tmp_path):
    """After a restart the store must still see that an old segment is mostly dead."""
    node = Node(tmp_path)
    c, ch = node.client, node.ch
    c.declare(ch, "keep", durable=True)
    c.declare(ch, "q", durable=True)
    c.publish(ch, "", "keep", b"long-lived", P)
    node.pump()
    node.churn("q", rounds=1)  # the same segment: one live message among many dead ones
    node.close()
    node = _restart_and_check(tmp_path, ["long-lived"])
    node.churn("q", rounds=60, max_segments=4)
    node.close()
    _restart_and_check(tmp_path, ["long-lived"]).close()


def test_unacked_message_is_still_redelivered_after_compaction(tmp_path):
    node = Node(tmp_path)
    c, ch = node.client, node.ch
    c.declare(ch, "keep", durable=True)
    c.declare(ch, "q", durable=True)
    c.publish(ch, "", "keep", b"held-unacked", P)
    c.publish(ch, "", "keep", b"never-delivered", P)
    node.pump()
    assert c.get(ch, "keep", no_ack=False).body == b"held-unacked"
    node.pump()
    node.churn("q", rounds=4)  # enough for the first segment to be compacted away
    assert not (tmp_path / "msgs-00000001.log").exists(), "precondition: segment 1 compacted"
    node.close()  # like a kill -9: the delivery is still outstanding
    node = Node(tmp_path)
    (rq,) = [q for q in node.recovered.queues if q.name == "keep"]
    got = [(m.body, m.delivered) for m in rq.messages]
    assert got == [(b"held-unacked", True), (b"never-delivered", False)], (
        f"delivered-but-unacked flag lost when its segment was compacted: {got}")
    node.close()


def test_compacted_messages_survive_restart_then_reclaim(tmp_path):
    """Compaction copies live messages forward in whatever order the broker lists them (here:
    the ready one, id 2, before the unacked one, id 1). After a restart that segment is the
    oldest; consuming the ready message must not let the segment go while it still holds
    the only copy of the other one."""
    node = Node(tmp_path)
    c, ch = node.client, node.ch
    c.declare(ch, "keep", durable=True)
    c.declare(ch, "q", durable=True)
    c.publish(ch, "", "keep", b"held-unacked", P)
    c.publish(ch, "", "keep", b"ready", P)
    node.pump()
    assert c.get(ch, "keep", no_ack=False).body == b"held-unacked"
    node.pump()
    node.churn("q", rounds=4)  # segment 1 compacted: both copied forward
    assert not (tmp_path / "msgs-00000001.log").exists(), "precondition: segment 1 compacted"
    node.churn("q", rounds=30)  # (and more traffic, whatever compaction does next)
    node.close()  # kill -9: the delivery was outstanding, so both are in the queue again
    node = _restart_and_check(tmp_path, ["held-unacked", "ready"])
    c, ch = node.client, node.ch
    first = c.get(ch, "keep", no_ack=False)  # held-unacked: delivered again, left unacked
    second = c.get(ch, "keep", no_ack=True)  # ready: consumed for good
    assert (first.body, second.body) == (b"held-unacked", b"ready")
    node.churn("q", rounds=30)
    node.close()
    node = _restart_and_check(tmp_path, ["held-unacked"])
    node.close()


def test_message_in_two_queues_acked_in_one_survives_compaction(tmp_path):
    node = Node(tmp_path)
    c, ch = node.client, node.ch
    c.call(ch, spec.ExchangeDeclare(exchange="fan", type="fanout", durable=True))
    for q in ("a", "b", "q"):
        c.declare(ch, q, durable=True)
    c.call(ch, spec.QueueBind(queue="a", exchange="fan"))
    c.call(ch, spec.QueueBind(queue="b", exchange="fan"))
    c.publish(ch, "fan", "", b"both", P)
    node.pump()
    assert c.get(ch, "a", no_ack=True).body == b"both"  # gone from a, still in b
    node.churn("q", rounds=30, max_segments=4)
    node.close()
    node = Node(tmp_path)
    counts = {q.name: [m.body for m in q.messages] for q in node.recovered.queues}
    assert counts["a"] == [] and counts["b"] == [b"both"] and counts["q"] == []
    node.close()


@pytest.mark.parametrize("restart_every", [7, 23])
def test_restarts_during_churn_keep_exactly_the_live_messages(tmp_path, restart_every):
    """Interleave restarts with traffic: the live set after each restart is exactly what the
    broker held (in order, once each), and the directory stays small."""
    node = Node(tmp_path)
    c, ch = node.client, node.ch
    c.declare(ch, "live", durable=True)
    c.declare(ch, "q", durable=True)
    expected: list[bytes] = []
    for rnd in range(40):
        body = b"live-%d" % rnd
        c.publish(ch, "", "live", body, P)
        expected.append(body)
        if rnd % 3 == 0:  # consume the oldest
            got = c.get(ch, "live", no_ack=True)
            assert got.body == expected.pop(0)
        node.churn("q", rounds=2)
        if rnd % restart_every == restart_every - 1:
            node.close()
            node = Node(tmp_path)
            c, ch = node.client, node.ch
            (rq,) = [q for q in node.recovered.queues if q.name == "live"]
            assert [m.body for m in rq.messages] == expected
        assert len(node.segments()) <= 5
    node.close()
