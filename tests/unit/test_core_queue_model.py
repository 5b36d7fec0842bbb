"""Stateful model test of one queue, in the spirit of RabbitMQ's classic_queue_prop_SUITE.

Random sequences of operations (publish, consume/cancel with prefetch, global qos, get, ack,
nack requeue/drop, reject, recover, purge, channel close, bad ack = channel error, connection
drop) run against the broker core through CoreClient, and against a small pure-Python model
of what RabbitMQ guarantees:

- ready messages sit in original publish order (requeue puts a message back at its position)
  and every delivery (basic.deliver or basic.get-ok) takes the head; a nack, reject or
  recover gives messages back one consumer at a time (basic.get's first, then by consumer
  tag), as RabbitMQ's channel does, and the queue may deliver each group before the next;
- `redelivered` is set exactly on messages that were requeued before;
- delivery tags count up from 1 per channel;
- a consumer only receives while under its prefetch (per consumer) and its channel under the
  global prefetch; and while a consumer has room, nothing stays ready (no stuck messages);
- every published message is, at every step, in exactly one place: ready, unacked on one
  channel, acknowledged, or deliberately dropped (purge, nack/reject without requeue,
  no-ack delivery) -- never lost, never duplicated;
- queue.declare(passive) reports len(ready) and the number of consumers.

The whole run is deterministic per seed; a failure message names the seed and the last steps.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from core_client import Broker, CoreClient, Received, spec
from minimq.codec.frames import encode_method_frame

QUEUE = "model-q"
PUBLISHER = 1
WORKERS = (2, 3, 4)
STEPS = 60
SEEDS_PER_CASE = 15
CASES = 8


@dataclass
class ConsumerModel:
    tag: str
    limit: int
    no_ack: bool
    priority: int = 0


@dataclass
class ChannelModel:
    number: int
    next_tag: int = 1
    prefetch: int = 0
    global_limit: int = 0
    # tag -> (message id, consumer tag or None for basic.get); dict order = tag order
    unacked: dict = field(default_factory=dict)
    consumers: dict = field(default_factory=dict)
    # Prefetch credit of deliveries given back but whose requeue group is not back yet: a
    # consumer's returns with its group, the channel-wide count after the last group.
    pending: dict = field(default_factory=dict)
    pending_total: int = 0

    def consumer_unacked(self, ctag: str) -> int:
        return sum(1 for _mid, c in self.unacked.values() if c == ctag) + self.pending.get(ctag, 0)

    def consumer_total(self) -> int:
        return sum(1 for _mid, c in self.unacked.values() if c is not None) + self.pending_total

    def can_take(self, cons: ConsumerModel) -> bool:
        if cons.no_ack:
            return True
        if cons.limit and self.consumer_unacked(cons.tag) >= cons.limit:
            return False
        return not self.global_limit or self.consumer_total() < self.global_limit


class ModelFailure(AssertionError):
    pass


class QueueModelRun:
    def __init__(self, seed: int, *, drops: bool = False, priorities: bool = False) -> None:
        self.seed = seed
        self.drops = drops
        self.priorities = priorities  # consumers get x-priority: the highest that can take wins
        self.rng = random.Random(seed)
        self.broker = Broker()
        self.log: list[str] = []
        self.next_id = 1
        self.next_ctag = 1
        self.ready: list[int] = []
        self.redelivered: set[int] = set()
        # Given back by one nack/reject/recover, not yet in `ready`: one group per consumer
        # (basic.get's first, then by consumer tag), as RabbitMQ's channel requeues them; the
        # queue may hand out a group before the next one is back.
        self.requeue_groups: list[tuple[ChannelModel, str | None, list[int], bool]] = []
        self.acked: set[int] = set()
        self.dropped: set[int] = set()
        self.channels: dict[int, ChannelModel] = {}
        self._connect()
        self.client.declare(PUBLISHER, QUEUE)

    # ------------------------------------------------------------------ helpers

    def fail(self, msg: str) -> None:
        tail = "\n  ".join(self.log[-25:])
        raise ModelFailure(f"seed {self.seed}: {msg}\nlast steps:\n  {tail}")

    def check(self, cond: bool, msg: str) -> None:
        if not cond:
            self.fail(msg)

    def _connect(self) -> None:
        self.client = CoreClient(self.broker)
        self.client.channel(PUBLISHER)
        for n in WORKERS:
            self.client.channel(n)
            self.channels[n] = ChannelModel(n)

    def _requeue(self, ids) -> None:
        ids = list(ids)
        self.redelivered.update(ids)
        self.ready = sorted(self.ready + ids)

    def _settle(self, ch: ChannelModel, tags: list[int], requeue: bool | None) -> None:
        entries = [ch.unacked.pop(t) for t in tags]
        ids = [mid for mid, _c in entries]
        if requeue is None:
            self.acked.update(ids)
        elif requeue:
            self._requeue_by_consumer(ch, entries)
        else:
            self.dropped.update(ids)

    def _requeue_by_consumer(self, ch: ChannelModel, entries: list[tuple[int, str | None]]) -> None:
        groups: dict[str | None, list[int]] = {}
        for mid, ctag in entries:
            groups.setdefault(ctag, []).append(mid)
            if ctag is not None:
                ch.pending[ctag] = ch.pending.get(ctag, 0) + 1
                ch.pending_total += 1
        for ctag in sorted(groups, key=lambda c: (c is not None, c or "")):
            self.requeue_groups.append((ch, ctag, groups[ctag], False))
        # Then the channel-wide credit, once every group is back (a step of its own: the
        # queue delivers after the last group before it).
        self.requeue_groups.append((ch, None, [], True))

    def _requeued_up_to(self, mid: int | None) -> None:
        """Put requeue groups back into `ready`, in order, until `mid` is its head (all of
        them for None)."""
        while self.requeue_groups and (mid is None or not self.ready or self.ready[0] != mid):
            self._requeue_next_group()

    def _requeue_next_group(self) -> None:
        ch, ctag, ids, channel_credit = self.requeue_groups.pop(0)
        if channel_credit:
            ch.pending.clear()
            ch.pending_total = 0
            return
        if ctag is not None:
            ch.pending[ctag] -= len(ids)
        self._requeue(ids)

    def _release(self, ch: ChannelModel) -> None:
        """Channel gone: consumers cancelled, unacked requeued."""
        ch.consumers.clear()
        ids = [mid for mid, _c in ch.unacked.values()]
        ch.unacked.clear()
        self._requeue(ids)

    def _pick_channel(self) -> ChannelModel:
        return self.channels[self.rng.choice(WORKERS)]

    def _pick_tag(self, ch: ChannelModel) -> int | None:
        return self.rng.choice(list(ch.unacked)) if ch.unacked else None

    # ------------------------------------------------------------------ running

    def run(self, steps: int) -> None:
        ops = [
            (self.op_publish, 8),
            (self.op_consume, 3),
            (self.op_cancel, 2),
            (self.op_qos_global, 1),
            (self.op_get, 3),
            (self.op_ack, 5),
            (self.op_nack, 4),
            (self.op_reject, 3),
            (self.op_recover, 1),
            (self.op_close_channel, 1),
            (self.op_bad_ack, 0.3),
            (self.op_purge, 0.4),
            (self.op_drop_connection, 0.5 if self.drops else 0),
        ]
        funcs = [f for f, _w in ops]
        weights = [w for _f, w in ops]
        for step in range(steps):
            op = self.rng.choices(funcs, weights)[0]
            op()
            self.observe([])
            self.check_invariants(step)
        # finally: everything still around must come out, in order, exactly once
        self.op_close_all_and_drain()

    def send(self, *methods_on: tuple[int, object]) -> None:
        self.client.feed(b"".join(encode_method_frame(ch, m) for ch, m in methods_on))

    def observe(self, expected: list[type]) -> list[Received]:
        """Process everything received; `expected` lists the non-delivery replies, in order."""
        items = self.client.drain()
        replies = []
        for item in items:
            m = item.method
            if isinstance(m, spec.BasicDeliver):
                self._on_deliver(item)
            elif isinstance(m, spec.BasicGetOk):
                self._on_get_ok(item)
                replies.append(item)
            else:
                if isinstance(m, spec.BasicGetEmpty):
                    self.check(not self.ready, f"get-empty with ready {self.ready}")
                replies.append(item)
        self._requeued_up_to(None)
        got = [type(r.method) for r in replies]
        self.check(got == expected, f"replies {got}, expected {expected}")
        return replies

    def _on_deliver(self, item: Received) -> None:
        m = item.method
        ch = self.channels.get(item.channel)
        self.check(ch is not None, f"delivery on unknown channel {item.channel}")
        cons = ch.consumers.get(m.consumer_tag)
        self.check(cons is not None, f"delivery to unknown/cancelled consumer {m.consumer_tag} on {ch.number}")
        # The groups given back before this delivery: up to the one that holds it, and on
        # until the consumer has the credit for it (its own group gives that back).
        self._requeued_up_to(int(item.body))
        while self.requeue_groups and not ch.can_take(cons):
            self._requeue_next_group()
        self.check(ch.can_take(cons), f"delivery to {m.consumer_tag} beyond its prefetch: {ch}")
        best = max(c.priority for other in self.channels.values()
                   for c in other.consumers.values() if other.can_take(c))
        self.check(cons.priority == best,
                   f"delivery to {cons.tag} (priority {cons.priority}) while one of priority "
                   f"{best} could take it")
        self._take_head(item, ch, m.delivery_tag, m.redelivered, cons.tag, cons.no_ack)

    def _on_get_ok(self, item: Received) -> None:
        m = item.method
        ch = self.channels[item.channel]
        no_ack = self._pending_get_no_ack
        self._take_head(item, ch, m.delivery_tag, m.redelivered, None, no_ack)
        self.check(m.message_count == len(self.ready), f"get-ok message_count {m.message_count} != {len(self.ready)}")

    def _take_head(self, item, ch: ChannelModel, tag: int, redelivered: bool, ctag, no_ack: bool) -> None:
        mid = int(item.body)
        self._requeued_up_to(mid)
        self.check(bool(self.ready), f"message {mid} delivered but the model has nothing ready")
        self.check(
            mid == self.ready[0],
            f"delivered {mid} but head of the queue is {self.ready[0]} (ready {self.ready[:10]})",
        )
        self.ready.pop(0)
        self.check(
            redelivered == (mid in self.redelivered),
            f"message {mid} redelivered={redelivered}, model says {mid in self.redelivered}",
        )
        self.check(tag == ch.next_tag, f"delivery tag {tag} on channel {ch.number}, expected {ch.next_tag}")
        ch.next_tag += 1
        if no_ack:
            self.acked.add(mid)
        else:
            ch.unacked[tag] = (mid, ctag)

    def check_invariants(self, step: int) -> None:
        # partition of all published messages
        unacked = [mid for ch in self.channels.values() for mid, _c in ch.unacked.values()]
        places = self.ready + unacked + list(self.acked) + list(self.dropped)
        self.check(len(places) == len(set(places)), f"step {step}: a message is in two places")
        self.check(set(places) == set(range(1, self.next_id)), f"step {step}: a message was lost")
        self.check(self.ready == sorted(self.ready), "model ready out of order")
        # nothing stuck: a consumer with room means nothing is ready
        if self.ready:
            for ch in self.channels.values():
                for cons in ch.consumers.values():
                    self.check(
                        not ch.can_take(cons),
                        f"step {step}: consumer {cons.tag} on channel {ch.number} has room "
                        f"but {len(self.ready)} messages are ready",
                    )
        # broker's view
        self.send((PUBLISHER, spec.QueueDeclare(queue=QUEUE, passive=True)))
        [ok] = self.observe([spec.QueueDeclareOk])
        consumers = sum(len(ch.consumers) for ch in self.channels.values())
        self.check(
            (ok.method.message_count, ok.method.consumer_count) == (len(self.ready), consumers),
            f"step {step}: declare-ok counts {(ok.method.message_count, ok.method.consumer_count)}, "
            f"model {(len(self.ready), consumers)}",
        )

    # ---------------------------------------------------------------------- ops

    def op_publish(self) -> None:
        n = self.rng.randint(1, 4)
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        self.log.append(f"publish {ids}")
        self.ready.extend(ids)
        self.client.publish_many(PUBLISHER, "", QUEUE, [str(i).encode() for i in ids])

    def op_consume(self) -> None:
        ch = self._pick_channel()
        if len(ch.consumers) >= 2:
            return
        prefetch = self.rng.choice((0, 1, 1, 2, 3))
        no_ack = self.rng.random() < 0.1
        priority = self.rng.choice((0, 0, 1, 5, -2)) if self.priorities else 0
        tag = f"c{self.next_ctag}"
        self.next_ctag += 1
        self.log.append(f"consume ch{ch.number} {tag} prefetch={prefetch} no_ack={no_ack} "
                        f"priority={priority}")
        ch.prefetch = prefetch
        ch.consumers[tag] = ConsumerModel(tag, prefetch, no_ack, priority)
        self.send(
            (ch.number, spec.BasicQos(0, prefetch, False)),
            (ch.number, spec.BasicConsume(queue=QUEUE, consumer_tag=tag, no_ack=no_ack,
                                          arguments={"x-priority": priority} if priority else None)),
        )
        self.observe([spec.BasicQosOk, spec.BasicConsumeOk])

    def op_cancel(self) -> None:
        ch = self._pick_channel()
        if not ch.consumers:
            return
        tag = self.rng.choice(sorted(ch.consumers))
        self.log.append(f"cancel ch{ch.number} {tag}")
        del ch.consumers[tag]
        self.send((ch.number, spec.BasicCancel(tag)))
        self.observe([spec.BasicCancelOk])

    def op_qos_global(self) -> None:
        ch = self._pick_channel()
        n = self.rng.choice((0, 1, 2, 4))
        self.log.append(f"qos global ch{ch.number} {n}")
        ch.global_limit = n
        self.send((ch.number, spec.BasicQos(0, n, True)))
        self.observe([spec.BasicQosOk])

    def op_get(self) -> None:
        ch = self._pick_channel()
        no_ack = self.rng.random() < 0.3
        self.log.append(f"get ch{ch.number} no_ack={no_ack}")
        self._pending_get_no_ack = no_ack
        self.send((ch.number, spec.BasicGet(queue=QUEUE, no_ack=no_ack)))
        self.observe([spec.BasicGetOk] if self.ready else [spec.BasicGetEmpty])

    def _settle_op(self, name: str, multiple_ok: bool) -> None:
        ch = self._pick_channel()
        tag = self._pick_tag(ch)
        if tag is None:
            return
        multiple = multiple_ok and self.rng.random() < 0.3
        if multiple and self.rng.random() < 0.1:
            tag = 0
        if name == "ack":
            requeue = None
            method = spec.BasicAck(tag, multiple)
        else:
            requeue = self.rng.random() < 0.7
            method = (
                spec.BasicNack(tag, multiple, requeue) if name == "nack" else spec.BasicReject(tag, requeue)
            )
        if multiple:
            tags = [t for t in ch.unacked if tag == 0 or t <= tag]
        else:
            tags = [tag]
        self.log.append(
            f"{name} ch{ch.number} tag={tag} multiple={multiple} requeue={requeue} "
            f"-> ids {[ch.unacked[t][0] for t in tags]}"
        )
        self._settle(ch, tags, requeue)
        self.send((ch.number, method))
        self.observe([])

    def op_ack(self) -> None:
        self._settle_op("ack", True)

    def op_nack(self) -> None:
        self._settle_op("nack", True)

    def op_reject(self) -> None:
        self._settle_op("reject", False)

    def op_recover(self) -> None:
        ch = self._pick_channel()
        self.log.append(f"recover ch{ch.number} ids {[m for m, _c in ch.unacked.values()]}")
        entries = list(ch.unacked.values())
        ch.unacked.clear()
        self._requeue_by_consumer(ch, entries)
        self.send((ch.number, spec.BasicRecover(True)))
        self.observe([spec.BasicRecoverOk])

    def op_purge(self) -> None:
        self.log.append(f"purge ({len(self.ready)} ready)")
        n = len(self.ready)
        self.dropped.update(self.ready)
        self.ready = []
        self.send((PUBLISHER, spec.QueuePurge(queue=QUEUE)))
        [ok] = self.observe([spec.QueuePurgeOk])
        self.check(ok.method.message_count == n, f"purge-ok {ok.method.message_count}, model {n}")

    def _reopen(self, ch: ChannelModel) -> None:
        self.channels[ch.number] = ChannelModel(ch.number)
        self.send((ch.number, spec.ChannelOpen()))
        self.observe([spec.ChannelOpenOk])

    def op_close_channel(self) -> None:
        ch = self._pick_channel()
        self.log.append(f"close ch{ch.number} unacked ids {[m for m, _c in ch.unacked.values()]}")
        self._release(ch)
        self.send((ch.number, spec.ChannelClose(200, "bye", 0, 0)))
        self.observe([spec.ChannelCloseOk])
        self._reopen(ch)

    def op_bad_ack(self) -> None:
        ch = self._pick_channel()
        bad = ch.next_tag + 1000
        self.log.append(f"bad ack ch{ch.number} tag={bad}")
        self._release(ch)
        self.send((ch.number, spec.BasicAck(bad, False)))
        [close] = self.observe([spec.ChannelClose])
        self.check(close.method.reply_code == 406, f"bad ack closed with {close.method}")
        self._reopen(ch)

    def op_drop_connection(self) -> None:
        self.log.append("drop connection")
        for ch in self.channels.values():
            self._release(ch)
        self.client.drop()
        self.channels = {}
        self._connect()

    def op_close_all_and_drain(self) -> None:
        self.log.append("final: close all channels, drain by get")
        for n in WORKERS:
            ch = self.channels[n]
            self._release(ch)
            self.send((n, spec.ChannelClose(200, "bye", 0, 0)))
            self.observe([spec.ChannelCloseOk])
            self._reopen(ch)
        ch = self.channels[WORKERS[0]]
        while self.ready:
            self._pending_get_no_ack = True
            self.send((ch.number, spec.BasicGet(queue=QUEUE, no_ack=True)))
            self.observe([spec.BasicGetOk])
        self.send((ch.number, spec.BasicGet(queue=QUEUE, no_ack=True)))
        self.observe([spec.BasicGetEmpty])
        self.check_invariants(-1)
        self.check(
            self.acked | self.dropped == set(range(1, self.next_id)),
            "not every message was acknowledged or dropped at the end",
        )


@pytest.mark.parametrize("case", range(CASES))
def test_queue_model(case):
    for seed in range(case * SEEDS_PER_CASE, (case + 1) * SEEDS_PER_CASE):
        QueueModelRun(seed).run(STEPS)


@pytest.mark.parametrize("case", range(CASES // 2))
def test_queue_model_with_connection_drops(case):
    """As above, plus the whole connection vanishing now and then (all channels at once)."""
    for seed in range(1000 + case * SEEDS_PER_CASE, 1000 + (case + 1) * SEEDS_PER_CASE):
        QueueModelRun(seed, drops=True).run(STEPS)


@pytest.mark.parametrize("case", range(CASES // 2))
def test_queue_model_with_consumer_priorities(case):
    """As above, consumers with x-priority 0, 1, 5 or -2 coming and going (so the queue
    moves in and out of priority dispatch): each delivery goes to the highest priority
    that can take it."""
    for seed in range(2000 + case * SEEDS_PER_CASE, 2000 + (case + 1) * SEEDS_PER_CASE):
        QueueModelRun(seed, drops=case % 2 == 1, priorities=True).run(STEPS)


def test_queue_model_long_run():
    QueueModelRun(10_000).run(1000)
