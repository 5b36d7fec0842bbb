"""Queues and their consumers: ready messages, round-robin dispatch, requeue order.

Queue semantics live here, apart from storage and from channel bookkeeping: a queue holds
ready messages in arrival order, hands them to consumers in turn (skipping those at their
prefetch limit or paused by flow control), and takes back requeued messages at the position
they originally had, as RabbitMQ does, flagged redelivered.

A queue without TTL, length limits, priorities or single-active-consumer takes the plain
paths (a deque, a round-robin loop). The others go through `_take`, which drops expired
heads and keeps byte counts; expiry only ever looks at the head, never scans the queue.
"""
from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from minimq.broker.arguments import QueueArgs
from minimq.broker.message import Message
from minimq.broker.teardown import guarded
from minimq.codec.values import Int64

if TYPE_CHECKING:
    from minimq.broker.channel import Channel


#: Consumers one dispatch may set aside (they cannot take) before it lets the loop turn.
PARK_SLICE = 4096


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
        "priority",
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
        priority: int = 0,
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
        self.priority = priority

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


def _seq(m: Message) -> int:
    return m.seq


def insert_by_position(ready: deque, messages: list[Message]) -> None:
    """Put (sorted) messages back into a deque at their original positions.

    Positions are the `seq` numbers messages get at their first delivery (see
    Channel.deliver). A ready message with seq 0 was never delivered, so every delivered
    message was ahead of it in the queue.
    """
    if not ready or not ready[0].seq or messages[-1].seq < ready[0].seq:
        ready.extendleft(reversed(messages))
        return
    # Rare: an earlier requeued message still waits at the head. Requeued messages belong
    # near the front, so the scan stops early.
    for m in messages:
        seq = m.seq
        i = 0
        for i, other in enumerate(ready):
            if not other.seq or other.seq > seq:
                break
        else:
            i = len(ready)
        ready.insert(i, m)


class Turns:
    """Consumers that may take a message, in round-robin order (the next one first).

    `members` answers "has it turns?"; `order` is the rotation, a deque of one-tuples
    ``(consumer,)``, each a member's entry while ``members[consumer] is entry``. Taking
    the next consumer, rotating it to the back or parking it (it cannot take: it leaves
    until `unpark`) is O(1) at the front of the deque. A withdrawn consumer's entry stays
    behind as stale and is skipped when it comes up (compacted when such entries pile up).
    A dict alone cannot do this: deleting at its front leaves holes that every later
    ``next(iter(d))`` walks over, so parking n consumers in a row, or rotating among n, cost
    O(n) a step.
    """

    __slots__ = ("members", "order")

    def __init__(self) -> None:
        self.members: dict[Consumer, tuple] = {}
        self.order: deque[tuple] = deque()

    def __setitem__(self, c: Consumer, _value: None = None) -> None:
        """Give `c` turns, at the back of the line (no-op if it has them)."""
        if c not in self.members:
            entry = (c,)
            self.members[c] = entry
            self.order.append(entry)

    add = __setitem__

    def __delitem__(self, c: Consumer) -> None:
        """Withdraw `c`'s turns (KeyError if it has none)."""
        del self.members[c]
        self._compact()

    def discard(self, c: Consumer) -> None:
        if c in self.members:
            del self[c]

    def _compact(self) -> None:
        order, members = self.order, self.members
        if len(order) > 2 * len(members) + 32:
            # The live entries are the dict's values: rebuilt at C speed (400k withdrawn
            # consumers cost no Python loop), in the order they got their turns.
            order.clear()  # in place: a dispatch loop may hold this deque
            order.extend(members.values())

    def take(self) -> Consumer | None:
        """The next consumer that can take a message, moved to the back of the line; the
        ones before it that cannot are parked."""
        members, order = self.members, self.order
        while members:
            entry = order[0]
            c = entry[0]
            if members.get(c) is not entry:
                order.popleft()  # stale: withdrawn
            elif not c.can_take():
                order.popleft()
                del members[c]  # parked until unpark()
            else:
                if len(members) > 1:
                    order.rotate(-1)
                return c
        return None

    def first(self) -> Consumer | None:
        """The member at the front of the line (stale entries before it are dropped)."""
        members, order = self.members, self.order
        while order:
            entry = order[0]
            if members.get(entry[0]) is entry:
                return entry[0]
            order.popleft()
        return None

    def clear(self) -> None:
        self.members.clear()
        self.order.clear()

    def __contains__(self, c: Consumer) -> bool:
        return c in self.members

    def __len__(self) -> int:
        return len(self.members)

    def __bool__(self) -> bool:
        return bool(self.members)

    def __iter__(self) -> Iterator[Consumer]:
        """Members in turn order."""
        members = self.members
        return (e[0] for e in list(self.order) if members.get(e[0]) is e)


class PriorityGroups:
    """Consumers grouped by priority, each group in arrival order, the highest group at hand.

    The groups are dicts (O(1) append and removal); a heap of priorities finds the highest
    group in O(log n) without a sort, whatever the number of distinct priorities. Heap
    entries of groups gone are dropped lazily (and compacted when they pile up).
    """

    __slots__ = ("groups", "_heap", "_group")

    def __init__(self, group: type = dict) -> None:
        """`group`: what holds one priority's consumers (a dict, or Turns for rotation)."""
        self.groups: dict[int, Any] = {}
        self._heap: list[int] = []  # negated priorities: heapq is a min-heap
        self._group = group

    def add(self, c: Consumer) -> None:
        group = self.groups.get(c.priority)
        if group is None:
            group = self.groups[c.priority] = self._group()
            heap = self._heap
            if len(heap) > 2 * len(self.groups) + 8:
                heap[:] = [-p for p in self.groups]
                heapq.heapify(heap)
            else:
                heapq.heappush(heap, -c.priority)
        group[c] = None

    def discard(self, c: Consumer) -> bool:
        """Remove `c`; False if it was not there."""
        group = self.groups.get(c.priority)
        if group is None or c not in group:
            return False
        del group[c]
        if not group:
            del self.groups[c.priority]
        return True

    def __contains__(self, c: Consumer) -> bool:
        group = self.groups.get(c.priority)
        return group is not None and c in group

    def top(self) -> Any:
        """The highest non-empty group (a live dict: callers may rotate or empty it)."""
        heap, groups = self._heap, self.groups
        while heap:
            priority = -heap[0]
            group = groups.get(priority)
            if group:
                return group
            if group is not None:
                del groups[priority]  # emptied in place by a caller
            heapq.heappop(heap)
        return None

    def __iter__(self) -> Iterator[Consumer]:
        groups = self.groups
        if len(groups) == 1:
            return iter(next(iter(groups.values())))
        return (c for p in sorted(groups, reverse=True) for c in groups[p])


class ConsumerList:
    """A queue's consumers, highest priority first, then in arrival order.

    O(1) append and removal: removing one of 400k consumers (a connection going away) costs
    what removing one of ten does, with or without priorities. Indexing and slicing copy, so
    they are for the cold paths.
    """

    __slots__ = ("_groups", "_n")

    def __init__(self) -> None:
        # Turns as groups for their O(1) front: single-active-consumer asks for the first
        # consumer after each removal, and a dict's front fills with holes as they go.
        self._groups = PriorityGroups(Turns)
        self._n = 0

    def append(self, c: Consumer) -> None:
        """Add `c` after every consumer of the same or a higher priority."""
        if c not in self._groups:
            self._groups.add(c)
            self._n += 1

    def remove(self, c: Consumer) -> None:
        if not self._groups.discard(c):
            raise KeyError(c)  # as list.remove's ValueError, when absent
        self._n -= 1

    def first(self) -> Consumer | None:
        group = self._groups.top()
        return group.first() if group else None

    def __contains__(self, c: Consumer) -> bool:
        group = self._groups.groups.get(c.priority)  # inlined: unpark asks on every ack
        return group is not None and c in group.members

    def __iter__(self) -> Iterator[Consumer]:
        return iter(self._groups) if self._n else iter(())

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __getitem__(self, index):
        if index == 0 and self._n:
            return self.first()
        return list(self)[index]

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, ConsumerList) else other)

    def __repr__(self) -> str:
        return repr(list(self))


class PriorityReady:
    """Ready messages of a priority queue: one FIFO per level, highest level first.

    Offers the small part of deque's interface the queue uses.
    """

    __slots__ = ("levels", "n")

    def __init__(self, max_priority: int) -> None:
        self.levels = [deque() for _ in range(max_priority + 1)]
        self.n = 0

    def append(self, m: Message) -> None:
        self.levels[m.priority].append(m)
        self.n += 1

    def popleft(self) -> Message:
        for level in reversed(self.levels):
            if level:
                self.n -= 1
                return level.popleft()
        raise IndexError("pop from an empty queue")

    def head(self) -> Message | None:
        for level in reversed(self.levels):
            if level:
                return level[0]
        return None

    def requeue(self, messages: list[Message]) -> None:
        by_level: dict[int, list[Message]] = {}
        for m in messages:
            by_level.setdefault(m.priority, []).append(m)
        for level, msgs in by_level.items():
            insert_by_position(self.levels[level], msgs)
        self.n += len(messages)

    def clear(self) -> None:
        for level in self.levels:
            level.clear()
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __iter__(self) -> Iterator[Message]:
        for level in reversed(self.levels):
            yield from level


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
        args: QueueArgs | None = None,
    ) -> None:
        self.vhost = vhost
        self.services = vhost.services  # the broker's clock, timers and store
        self.name = name
        self.durable = durable
        self.owner = exclusive_owner  # the session of an exclusive queue
        self.exclusive = exclusive_owner is not None
        self.auto_delete = auto_delete
        self.arguments = arguments or {}
        self.args = args if args is not None else QueueArgs()
        # What it was declared with; `args` is what it acts on, the two combined with its
        # policy and operator policy (minimq.broker.policies), swapped by apply_args.
        self.declared_args = self.args
        self.policy: Any = None
        self.operator_policy: Any = None
        self.expiry_gen = 0  # bumped when a policy restarts the x-expires countdown
        self.special = self.args.special
        self.ready: Any = (
            PriorityReady(self.args.max_priority) if self.args.max_priority is not None else deque()
        )
        self.ready_bytes = 0
        self.consumers = ConsumerList()
        # Consumers that may take a message, in round-robin order (the next one first). One
        # found unable to take is parked (dropped from here) and comes back through
        # `unpark` when its ack, its channel's flow or its socket frees it: a publish never
        # walks past consumers that cannot take it.
        self._rr = Turns()
        self._turns = self._rr.members  # the same dict, read on the publish path
        # The same while consumer priorities are in use, one round-robin group per priority.
        self._prio_turns = PriorityGroups(Turns)
        self._prioritized_count = 0
        self.exclusive_consumer: Consumer | None = None
        self.prioritized = False  # some consumer has a non-zero x-priority
        self.bound_from: set = set()  # exchanges with a binding to this queue
        self.deleted = False
        self.persist = False  # durable queue with a store: persistent messages are logged
        self.last_used = 0.0  # for x-expires
        # Message counters for the management API's rates (plain ints: the hot path only
        # adds to them; minimq.admin samples them every few seconds).
        self.stat_publish = 0
        self.stat_deliver = 0
        self.stat_deliver_no_ack = 0
        self.stat_get = 0
        self.stat_get_no_ack = 0
        self.stat_ack = 0
        self.stat_redeliver = 0
        self._expiry_timer: Any = None
        self._dispatch_timer: Any = None  # a dispatch continued after the loop turns
        self._expiry_when = 0.0

    # ---------------------------------------------------------------- clock

    def _now(self) -> float:
        return self.services.clock()

    def release(self, msg: Message) -> None:
        """A message left this queue for good: forget it in the durable store."""
        if self.persist and msg.store_id:
            self.services.store.message_acked(self.vhost.name, self.name, msg.store_id)

    def _drop(self, msg: Message, reason: str) -> None:
        self.release(msg)
        self.vhost.dead_letter(self, msg, reason)

    # ---------------------------------------------------------------- input

    def enqueue(self, message: Message) -> bool:
        """Accept a routed message. False: refused (x-overflow reject-publish)."""
        self.stat_publish += 1
        if message.expires is not None and not self.special:
            # A per-message TTL: from now on this queue takes the feature-aware paths.
            self.special = True
        if not self.special:
            self.ready.append(message)
            self.ready_bytes += len(message.body)
            # Only a consumer with turns (or, with consumer priorities, any consumer) can
            # take it now; testing the plain dict costs no call on the publish path.
            if self._turns or self.prioritized:
                self.dispatch()
            return True
        return self._enqueue_special(message)

    def _enqueue_special(self, message: Message) -> bool:
        args = self.args
        ready = self.ready
        if args.max_priority is not None:
            p = message.priority_value()
            message.priority = p if p <= args.max_priority else args.max_priority
        if (args.max_length is not None or args.max_length_bytes is not None) and args.overflow != "drop-head":
            if self._full(len(message.body)):
                self.release(message)
                if args.overflow == "reject-publish-dlx":
                    self.vhost.dead_letter(self, message, "maxlen")
                return False
        expires = message.expires
        if args.message_ttl is not None:
            at = self._now() + args.message_ttl / 1000.0
            if expires is None or at < expires:
                expires = message.expires = at
        if expires is not None and not ready and self.consumers:
            # TTL 0 means "deliver now or drop": offer it to a consumer before judging expiry.
            c = self._pick()
            if c is not None:
                c.channel.deliver(c, message)
                return True
        if expires is not None and expires <= self._now():
            self._drop(message, "expired")
            return True
        ready.append(message)
        self.ready_bytes += len(message.body)
        if args.max_length is not None or args.max_length_bytes is not None:
            while ready and self._over_limit():
                self._drop(self._pop(), "maxlen")
        if self.consumers:
            self.dispatch()
        if expires is not None and ready:
            self.arm_expiry()
        return True

    def _full(self, incoming: int) -> bool:
        args = self.args
        if args.max_length is not None and len(self.ready) >= args.max_length:
            return True
        return args.max_length_bytes is not None and self.ready_bytes + incoming > args.max_length_bytes

    def _over_limit(self) -> bool:
        args = self.args
        if args.max_length is not None and len(self.ready) > args.max_length:
            return True
        return args.max_length_bytes is not None and self.ready_bytes > args.max_length_bytes

    def requeue(self, messages: list[Message]) -> None:
        """Put messages back where they were, marked redelivered."""
        if not messages:
            return
        if self.deleted:
            for m in messages:
                self.release(m)
            return
        messages.sort(key=_seq)
        for m in messages:
            m.redelivered = True
        ready = self.ready
        if self.args.queue_type == "quorum":
            # A quorum queue counts every return (its x-delivery-count), limit or not.
            limit = self.args.delivery_limit
            keep = []
            for m in messages:
                m.deliveries += 1
                if limit is not None and m.deliveries > limit:
                    self._drop(m, "delivery_limit")
                else:
                    keep.append(m)
            messages = keep
            if not messages:
                return
        self.ready_bytes += sum(len(m.body) for m in messages)
        if isinstance(ready, PriorityReady):
            ready.requeue(messages)
        else:
            insert_by_position(ready, messages)
        if self.special:
            args = self.args
            if args.overflow == "drop-head" and (args.max_length is not None or args.max_length_bytes is not None):
                # Only drop-head trims after a requeue; the reject modes only refuse publishes.
                while ready and self._over_limit():
                    self._drop(self._pop(), "maxlen")
            self.arm_expiry()
        if self.consumers:
            self.dispatch()

    def apply_args(self, new: QueueArgs) -> None:
        """Act on other arguments from now on (a policy changed), as RabbitMQ's queue does.

        Messages already here keep the TTL deadline they were given; a lower max-length or
        max-length-bytes drops heads at once (dead-lettered, reason maxlen) unless the queue
        was already refusing publishes (RabbitMQ applies the limit before the new overflow
        mode). The queue's expiry countdown is the vhost's business (restart_queue_expiry).
        """
        old = self.args
        self.args = new
        if new.special:
            self.special = True  # never back: messages here may carry a TTL deadline
        if old.overflow == "drop-head" and (new.max_length is not None or new.max_length_bytes is not None):
            ready = self.ready
            while ready and self._over_limit():
                self._drop(self._pop(), "maxlen")

    # --------------------------------------------------------------- output

    def dispatch(self) -> None:
        """Hand ready messages to consumers in turn while any of them can take one."""
        if self.special or self.prioritized:
            self._dispatch_special()
            return
        ready = self.ready
        turns = self._turns
        order = self._rr.order  # Turns.take, inlined: this is the publish path
        skipped = 0
        while ready and turns:
            entry = order[0]
            c = entry[0]
            if turns.get(c) is not entry or not c.can_take():
                order.popleft()
                if turns.get(c) is entry:
                    del turns[c]  # parked until unpark(); else stale: withdrawn
                skipped += 1
                if skipped >= PARK_SLICE and self._dispatch_later():
                    return
                continue
            if len(turns) > 1:
                order.rotate(-1)  # to the back of the line
            msg = ready.popleft()
            self.ready_bytes -= len(msg.body)
            c.channel.deliver(c, msg)

    def _dispatch_later(self) -> bool:
        """This dispatch set aside PARK_SLICE consumers that cannot take (a connection with
        400k consumers stopped reading, or is going away): the rest of it waits for the
        event loop to turn. False when there is no loop to wait for (a core without clock)."""
        if self._dispatch_timer is not None:
            return True
        self._dispatch_timer = self.services.teardown.call_soon(self._dispatch_resume)
        return self._dispatch_timer is not None

    def _dispatch_resume(self) -> None:
        self._dispatch_timer = None
        if not self.deleted and self.consumers:
            self.dispatch()

    def unpark(self, consumer: Consumer) -> None:
        """`consumer` may be able to take messages again: give it turns (cheap if it has)."""
        if self.prioritized:
            if consumer not in self._prio_turns and consumer in self.consumers:
                self._prio_turns.add(consumer)
        elif consumer not in self._turns and consumer in self.consumers:
            self._rr.add(consumer)

    def _dispatch_special(self) -> None:
        while self.ready and self.consumers:
            c = self._pick()
            if c is None:
                return
            msg = self._take()
            if msg is None:
                return
            c.channel.deliver(c, msg)

    def _pick(self) -> Consumer | None:
        """The next consumer to deliver to, honouring SAC and consumer priorities."""
        consumers = self.consumers
        if not consumers:
            return None
        if self.args.single_active:
            c = consumers.first()
            return c if c is not None and c.can_take() else None
        if not self.prioritized:
            return self._rr.take()
        # The highest-priority group with a consumer that can take, round-robin within it;
        # one that cannot is parked, as on the plain path, so this never walks past them.
        groups = self._prio_turns
        while True:
            group = groups.top()
            if group is None:
                return None
            c = group.take()
            if c is not None:
                return c

    def _pop(self) -> Message:
        msg = self.ready.popleft()
        self.ready_bytes -= len(msg.body)
        return msg

    def _take(self) -> Message | None:
        """The next live message: expired heads are dead-lettered on the way."""
        ready = self.ready
        if not self.special:
            if not ready:
                return None
            msg = ready.popleft()
            self.ready_bytes -= len(msg.body)
            return msg
        now = None
        while ready:
            msg = self._pop()
            if msg.expires is not None:
                if now is None:
                    now = self._now()
                if msg.expires <= now:
                    self._drop(msg, "expired")
                    continue
            if self.args.queue_type == "quorum":
                msg.set_header("x-delivery-count", Int64(msg.deliveries))  # a long, as RabbitMQ
            return msg
        return None

    def get(self) -> Message | None:
        self.last_used = self._now() if self.args.expires is not None else 0.0
        return self._take()

    def purge(self) -> int:
        n = len(self.ready)
        if self.persist:
            ids = [m.store_id for m in self.ready if m.store_id]
            self.services.store.queue_purged(self.vhost.name, self.name, ids)
        self.ready.clear()
        self.ready_bytes = 0
        return n

    # ----------------------------------------------------------------- expiry

    def arm_expiry(self) -> None:
        """Wake up when the head message expires (one timer per queue, re-armed on fire)."""
        ready = self.ready
        head = ready.head() if isinstance(ready, PriorityReady) else (ready[0] if ready else None)
        if head is None or head.expires is None:
            return
        if self._expiry_timer is not None and not self._expiry_timer.cancelled:
            if self._expiry_when <= head.expires:
                return
            self._expiry_timer.cancel()
        self._expiry_when = head.expires
        self._expiry_timer = self.services.timers.call_at(head.expires, self._expire_heads)

    def _expire_heads(self) -> None:
        self._expiry_timer = None
        if self.deleted:
            return
        ready = self.ready
        now = self._now()
        while ready:
            head = ready.head() if isinstance(ready, PriorityReady) else ready[0]
            if head.expires is None or head.expires > now:
                break
            self._drop(self._pop(), "expired")
        self.arm_expiry()

    # ------------------------------------------------------------ consumers

    def add_consumer(self, consumer: Consumer) -> None:
        if consumer.priority:
            self._prioritized_count += 1
            if not self.prioritized:
                # Consumer priorities from now on: the turns move into priority groups.
                self.prioritized = True
                for c in self._rr:
                    self._prio_turns.add(c)
                self._rr.clear()
        self.consumers.append(consumer)
        if self.prioritized:
            self._prio_turns.add(consumer)
        else:
            self._rr.add(consumer)
        if consumer.exclusive:
            self.exclusive_consumer = consumer
        self.dispatch()

    def withdraw(self, consumer: Consumer) -> None:
        """Give `consumer` no more turns (it is going away)."""
        self._rr.discard(consumer)
        self._prio_turns.discard(consumer)

    def remove_consumer(self, consumer: Consumer) -> None:
        self.withdraw(consumer)
        try:
            self.consumers.remove(consumer)
        except KeyError:
            return
        if self.exclusive_consumer is consumer:
            self.exclusive_consumer = None
        if consumer.priority:
            self._prioritized_count -= 1
            if not self._prioritized_count:
                # Back to the plain path: who is left has priority 0, in one group.
                self.prioritized = False
                group = self._prio_turns.top()
                if group:
                    for c in group:
                        self._rr.add(c)
                self._prio_turns = PriorityGroups(Turns)
        if self.args.expires is not None and not self.consumers:
            self.last_used = self._now()
        if self.args.single_active and self.consumers:
            self.dispatch()  # the next consumer becomes the active one

    # ----------------------------------------------------------------- info

    def messages(self) -> Iterable[Message]:
        return iter(self.ready)

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={len(self.ready)} consumers={len(self.consumers)}>"

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


def requeue_grouped(entries: Iterable[tuple[Message, Queue]]) -> None:
    """Requeue (message, queue) pairs, one requeue call per queue, preserving order.

    A queue whose requeue fails (logged) does not keep the others from getting theirs.
    """
    by_queue: dict[Queue, list[Message]] = {}
    for msg, queue in entries:
        lst = by_queue.get(queue)
        if lst is None:
            by_queue[queue] = [msg]
        else:
            lst.append(msg)
    for queue, msgs in by_queue.items():
        guarded(f"requeueing {len(msgs)} message(s) to queue {queue.name!r}", queue.requeue, msgs)
