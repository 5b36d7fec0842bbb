"""Message rates: the core's plain counters, sampled every few seconds.

The broker core only adds to integer attributes (`stat_*` on queues, exchanges and channels)
on its hot path. Every `interval` seconds (5, as RabbitMQ) this sampler reads them, in
chunks so a broker with many queues is never paused for long, and keeps for each object
its last two samples (enough for a rate) and, for the node as a whole, a short history that
the UI charts and `?msg_rates_age=` returns.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Callable

log = logging.getLogger("minimq.admin.stats")

QUEUE_FIELDS = ("publish", "deliver", "deliver_no_ack", "get", "get_no_ack", "ack", "redeliver")
EXCHANGE_NAMES = ("publish_in", "publish_out")
TOTAL_FIELDS = (
    "publish", "confirm", "return_unroutable", "drop_unroutable", "deliver", "deliver_no_ack",
    "get", "get_no_ack", "get_empty", "ack", "redeliver",
)
CHUNK = 250  # objects read per loop iteration while sampling
HISTORY = 120  # samples of the node's totals kept: 10 minutes at 5 s


def queue_counts(q: Any) -> tuple[int, ...]:
    return (
        q.stat_publish, q.stat_deliver, q.stat_deliver_no_ack, q.stat_get, q.stat_get_no_ack,
        q.stat_ack, q.stat_redeliver,
    )


def channel_counts(ch: Any) -> tuple[int, ...]:
    return tuple(getattr(ch, "stat_" + name) for name in TOTAL_FIELDS)


def exchange_counts(ex: Any) -> tuple[int, int]:
    return ex.stat_in, ex.stat_in - ex.stat_unroutable


def unacked_by_queue(broker: Any) -> dict[Any, int]:
    """Unacknowledged deliveries per queue (walks every channel's outstanding deliveries)."""
    counts: dict[Any, int] = {}
    get = counts.get
    for session in list(broker.sessions):
        for ch in list(session.channels.values()):
            for entry in list(ch.unacked.values()):
                q = entry[1]
                counts[q] = get(q, 0) + 1
            for taken, _requeue in ch.tx_acks or ():
                for _tag, entry in taken:
                    counts[entry[1]] = get(entry[1], 0) + 1
    return counts


class Sample:
    """Two readings of one object: the rates between them, and when it last changed."""

    __slots__ = ("t", "counts", "rates", "changed_at")

    def __init__(self, t: float, counts: tuple, rates: tuple, changed_at: float) -> None:
        self.t = t
        self.counts = counts
        self.rates = rates
        self.changed_at = changed_at


class RateSampler:
    def __init__(
        self, broker: Any, interval: float = 5.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.broker = broker
        self.interval = interval
        self.clock = clock
        self.samples: dict[Any, Sample] = {}
        # The node's totals over time: (time, {field: count}) oldest first.
        self.history: deque[tuple[float, dict[str, int]]] = deque(maxlen=HISTORY)
        self.started = clock()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sampling message rates failed")
            await asyncio.sleep(self.interval)

    # ------------------------------------------------------------- sampling

    def _record(self, new: dict, obj: Any, now: float, counts: tuple) -> None:
        old = self.samples.get(obj)
        if old is None:
            new[obj] = Sample(now, counts, (0.0,) * len(counts), now)
            return
        dt = now - old.t
        if dt <= 0:
            new[obj] = old
            return
        rates = tuple((a - b) / dt for a, b in zip(counts, old.counts))
        changed = now if counts != old.counts else old.changed_at
        new[obj] = Sample(now, counts, rates, changed)

    async def sample(self) -> None:
        broker = self.broker
        now = self.clock()
        new: dict[Any, Sample] = {}
        unacked = unacked_by_queue(broker)
        totals = broker.message_totals()
        ready = unacked_total = 0
        n = 0
        for vhost in list(broker.vhosts.values()):
            for ex in list(vhost.exchanges.values()):
                self._record(new, ex, now, exchange_counts(ex))
                n += 1
                if n % CHUNK == 0:
                    await asyncio.sleep(0)
            for q in list(vhost.queues.values()):
                if q.deleted:
                    continue
                r = len(q.ready)
                u = unacked.get(q, 0)
                ready += r
                unacked_total += u
                self._record(new, q, now, queue_counts(q) + (r + u, r, u))
                n += 1
                if n % CHUNK == 0:
                    await asyncio.sleep(0)
        for session in list(broker.sessions):
            for ch in list(session.channels.values()):
                self._record(new, ch, now, channel_counts(ch))
        totals["messages"] = ready + unacked_total
        totals["messages_ready"] = ready
        totals["messages_unacknowledged"] = unacked_total
        self.samples = new
        self.history.append((now, totals))

    # -------------------------------------------------------------- reading

    def rates(self, obj: Any) -> tuple | None:
        s = self.samples.get(obj)
        return s.rates if s is not None else None

    def changed_at(self, obj: Any) -> float | None:
        s = self.samples.get(obj)
        return s.changed_at if s is not None else None

    def idle_since(self, obj: Any) -> float | None:
        """When the object's counters last moved, if they did not in the last interval."""
        s = self.samples.get(obj)
        if s is None or s.changed_at >= s.t:
            return None
        return s.changed_at

    def node_rates(self) -> dict[str, float]:
        """Per-second rates of the node's totals over the last sampling interval."""
        h = self.history
        if len(h) < 2:
            return {}
        (t0, a), (t1, b) = h[-2], h[-1]
        dt = t1 - t0
        if dt <= 0:
            return {}
        return {k: (b[k] - a.get(k, 0)) / dt for k in b}

    def node_samples(self, name: str, age: float, incr: float) -> list[dict]:
        """RabbitMQ's `samples` list for one total: newest first, within `age` seconds."""
        if not self.history:
            return []
        newest = self.history[-1][0]
        out = []
        last_t = None
        for t, totals in reversed(self.history):
            if newest - t > age:
                break
            if last_t is not None and last_t - t < incr * 0.999:
                continue
            last_t = t
            out.append({"timestamp": int(t * 1000), "sample": totals.get(name, 0)})
        return out
