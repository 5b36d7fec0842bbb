"""Deadlines for the pure core (TTL, queue expiry, delayed messages, ...).

The core cannot sleep or read the clock on its own. It records what must happen when, in
the time of the clock it was given; whoever drives it (the asyncio server, or a test's
virtual clock) asks for the next deadline, waits until then and calls `run_due(now)`.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Callable


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """A heap of one-shot timers; cancelled ones are dropped lazily."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        # Called with the new earliest deadline when it moves earlier (the driver re-arms).
        self.on_earlier: Callable[[float], None] | None = None

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        earliest = self.next_deadline()
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        if self.on_earlier is not None and (earliest is None or when < earliest):
            self.on_earlier(when)
        return timer

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> int:
        """Run every timer due at `now` (in deadline order); returns how many ran.

        A timer set while this runs waits for the next run even if it is already due, so a
        callback that re-arms itself for `now` (work continued in slices) lets the driver
        do other things in between instead of keeping one run going.
        """
        heap = self._heap
        ran = 0
        stop = next(self._seq)
        while heap and heap[0][0] <= now and heap[0][1] < stop:
            _, _, timer = heapq.heappop(heap)
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()
                ran += 1
        return ran

    def __len__(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)
