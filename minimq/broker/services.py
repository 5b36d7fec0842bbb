"""The services of one broker's core, handed down at construction.

Vhosts, queues, sessions and channels each keep a reference to the broker's one `Services`
and call what they need from it directly: the clock, the timers, the durable store, access
control, the waits for the store to sync, the shared caches and counters. None of them walks
back up the object graph (`queue.vhost.broker.store`) to find a service, so each can be built
and tested with just the services it is given, and the chain of attribute loads on the hot
path is one link long.

The broker owns the fields: `store` is swapped out while a restore replays what the store
already holds, and a test may set `confirm_order`, so users read the fields at the moment
they need them rather than copying them.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any, Callable

from minimq.broker.caches import BoundedCache
from minimq.broker.reply_to import DirectReplyTo
from minimq.broker.teardown import SlicedTeardown
from minimq.broker.timers import Timers

if TYPE_CHECKING:
    from minimq.broker.access import AccessControl
    from minimq.broker.channel import Channel

ROUTE_CACHE_BYTES = 4 * 1024 * 1024


def _no_clock() -> float:
    raise RuntimeError("this broker was given no clock")


class SyncWaits:
    """What waits for the durable store to sync: channels whose publisher confirms are held
    back, and callbacks due at a store position (tx.commit-ok of persistent messages)."""

    __slots__ = ("channels", "_callbacks", "_seq")

    def __init__(self) -> None:
        self.channels: set["Channel"] = set()
        self._callbacks: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0

    def after(self, position: int, callback: Callable[[], None]) -> None:
        """Run `callback` once the store has synced everything up to `position`."""
        self._seq += 1
        heapq.heappush(self._callbacks, (position, self._seq, callback))

    def synced(self, position: int) -> None:
        """Everything up to `position` is durable: release the confirms and callbacks."""
        for ch in list(self.channels):
            if ch.closed or ch.release_confirms(position):
                self.channels.discard(ch)
        waiting = self._callbacks
        while waiting and waiting[0][0] <= position:
            _, _, callback = heapq.heappop(waiting)
            callback()


class Services:
    """What the core's objects use from their broker (see the module docstring)."""

    __slots__ = (
        "clock", "timers", "store", "access", "route_cache", "sync_waits", "confirm_order",
        "retired_stats", "replies", "policies", "teardown",
    )

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        store: Any = None,
        access: "AccessControl | None" = None,
        stat_fields: tuple[str, ...] = (),
    ) -> None:
        #: Time in seconds (the server's wall clock, a test's virtual clock).
        self.clock: Callable[[], float] = clock if clock is not None else _no_clock
        #: Deadlines of the core (TTL, expiry, delayed messages), in the time of `clock`.
        self.timers = Timers()
        #: Durability (minimq.store.DurableStore) or None.
        self.store = store
        self.access = access
        #: Publishes' (exchange, routing key) -> deliver route bytes, for every connection.
        self.route_cache = BoundedCache(ROUTE_CACHE_BYTES)
        self.sync_waits = SyncWaits()
        #: How a run of confirms (first..last publish seq) goes out; see Broker.confirm_order.
        self.confirm_order: Callable[[int, int], list[tuple[int, bool]]] | None = None
        #: Message counters of channels that have closed (live ones keep their own).
        self.retired_stats: dict[str, int] = dict.fromkeys(stat_fields, 0)
        #: Direct reply-to: the channels consuming from amq.rabbitmq.reply-to, by name.
        self.replies = DirectReplyTo()
        #: Policies (minimq.broker.policies.Policies), set by the broker; vhosts give each
        #: queue and exchange they declare its policy. None: no policies (a bare vhost).
        self.policies: Any = None
        #: Clean-up too big for one turn of the event loop (a connection with 400k consumers
        #: going away) runs in slices between the turns; all at once without a clock.
        self.teardown = SlicedTeardown(self.timers, clock)
