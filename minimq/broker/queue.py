"""Queues and their consumers: ready messages, round-robin dispatch, requeue order.

Queue semantics live here, apart from storage and from channel bookkeeping: a queue holds
ready messages in arrival order, hands them to consumers in turn (skipping those at their
prefetch limit or paused by flow control), and takes back requeued messages at the position
they originally had, as RabbitMQ does, flagged redelivered.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Iterable

from minimq.broker.message import Message

if TYPE_CHECKING:
    from minimq.broker.channel import Channel


class Consumer:
    """One basic.consume: a channel's subscription to a queue."""

    __slots__ = (
        "tag",
        "tag_bytes",
        "channel",
        "queue",
        "no_ack",
        "exclusive",
        "limit",
        "unacked",
        "arguments",
    )

    def __init__(
        self,
        tag: str,
        channel: "Channel",
        queue: "Queue",
        no_ack: bool,
        exclusive: bool,
        limit: int,
        arguments: dict,
    ) -> None:
        self.tag = tag
        raw = tag.encode("utf-8", "surrogateescape")
        self.tag_bytes = bytes((len(raw),)) + raw  # shortstr, reused by every basic.deliver
        self.channel = channel
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.limit = limit  # per-consumer prefetch; 0 = unlimited
        self.unacked = 0
        self.arguments = arguments

    def can_take(self) -> bool:
        ch = self.channel
        if not ch.active:
            return False
        if self.no_ack:
            return True
        if self.limit and self.unacked >= self.limit:
            return False
        return not ch.global_limit or ch.unacked_total < ch.global_limit

    def __repr__(self) -> str:
        return f"<Consumer {self.tag!r} on {self.queue.name!r}>"


class Queue:
    """A queue in a vhost. Pure state and logic: deliveries go out through the channel."""

    def __init__(
        self,
        vhost: Any,
        name: str,
        *,
        durable: bool = False,
        exclusive_owner: Any = None,
        auto_delete: bool = False,
        arguments: dict | None = None,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.owner = exclusive_owner  # the session of an exclusive queue
        self.exclusive = exclusive_owner is not None
        self.auto_delete = auto_delete
        self.arguments = arguments or {}
        self.ready: deque[Message] = deque()
        self.consumers: list[Consumer] = []
        self.exclusive_consumer: Consumer | None = None
        self.bound_from: set = set()  # exchanges with a binding to this queue
        self.deleted = False
        self._rr = 0
        self._next_seq = 1

    # ---------------------------------------------------------------- input

    def enqueue(self, message: Message) -> None:
        message.seq = self._next_seq
        self._next_seq += 1
        self.ready.append(message)
        if self.consumers:
            self.dispatch()

    def requeue(self, messages: list[Message]) -> None:
        """Put messages back where they were, marked redelivered."""
        if self.deleted or not messages:
            return
        messages.sort(key=_seq)
        for m in messages:
            m.redelivered = True
        ready = self.ready
        if not ready or messages[-1].seq < ready[0].seq:
            ready.extendleft(reversed(messages))
        else:
            # Rare: an earlier requeued message still waits at the head. Merge by position;
            # requeued messages sit near the front, so the scan stops early.
            for m in messages:
                seq = m.seq
                i = 0
                for i, other in enumerate(ready):
                    if other.seq > seq:
                        break
                else:
                    i = len(ready)
                ready.insert(i, m)
        if self.consumers:
            self.dispatch()

    # --------------------------------------------------------------- output

    def dispatch(self) -> None:
        """Hand ready messages to consumers in turn while any of them can take one."""
        ready = self.ready
        consumers = self.consumers
        while ready:
            n = len(consumers)
            if not n:
                return
            i = self._rr
            for _ in range(n):
                if i >= n:
                    i = 0
                c = consumers[i]
                i += 1
                if c.can_take():
                    break
            else:
                return
            self._rr = i
            c.channel.deliver(c, ready.popleft())

    def get(self) -> Message | None:
        ready = self.ready
        return ready.popleft() if ready else None

    def purge(self) -> int:
        n = len(self.ready)
        self.ready.clear()
        return n

    # ------------------------------------------------------------ consumers

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        if consumer.exclusive:
            self.exclusive_consumer = consumer
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        if self.exclusive_consumer is consumer:
            self.exclusive_consumer = None

    # ----------------------------------------------------------------- info

    @property
    def message_count(self) -> int:
        return len(self.ready)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={len(self.ready)} consumers={len(self.consumers)}>"

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


def _seq(m: Message) -> int:
    return m.seq


def requeue_grouped(entries: Iterable[tuple[Message, Queue]]) -> None:
    """Requeue (message, queue) pairs, one requeue call per queue, preserving order."""
    by_queue: dict[Queue, list[Message]] = {}
    for msg, queue in entries:
        lst = by_queue.get(queue)
        if lst is None:
            by_queue[queue] = [msg]
        else:
            lst.append(msg)
    for queue, msgs in by_queue.items():
        queue.requeue(msgs)
