"""Clean-up that runs to the end even when one of its steps fails.

Closing a channel or a connection, or deleting a queue, is a list of independent steps
(cancel consumers, requeue what was unacked, delete exclusive queues, ...). A bug or an
unexpected state in one of them must not skip the others: that is how a dead connection's
exclusive queue would survive to lock everyone else out (405), or an unacked message would
never come back. Each step goes through `guarded`, which logs a failure with its traceback
at error level and lets the caller go on.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable

log = logging.getLogger("minimq.teardown")


def guarded(what: str, fn: Callable[..., Any], *args: Any) -> bool:
    """Run one clean-up step; False (and an error log with traceback) if it raised."""
    try:
        fn(*args)
    except Exception:
        log.error("%s failed; the rest of the clean-up goes on", what, exc_info=True)
        return False
    return True


#: Steps (e.g. consumers to cancel) one slice of clean-up may take before the rest waits for
#: the event loop to turn: about 5-10 ms of work.
TEARDOWN_SLICE = 2048


class SlicedTeardown:
    """Clean-up work that runs in slices, so that no single teardown holds the event loop.

    A connection with 400k consumers going away is 400k cancellations: done at once, that is
    seconds during which nobody else is served. Each `add` runs at once while no earlier work
    is waiting, up to TEARDOWN_SLICE steps; the rest (and whatever is added meanwhile, behind
    it, in order) continues on a timer due at once. A timer set while the timers run waits
    for their next run, so the driver turns its event loop, serving everyone else, between
    slices (the same continuation dead-lettering uses). Without a clock (a core driven by hand
    in tests) there is no loop to yield to and everything runs at once.

    A step that raises is logged with its traceback and the rest goes on, as `guarded` does.
    """

    def __init__(self, timers: Any, clock: Callable[[], float] | None,
                 slice_steps: int = TEARDOWN_SLICE) -> None:
        self._timers = timers
        self._clock = clock
        self.slice_steps = slice_steps
        # [what, step, items, next index]: one entry per `add`, first in first out.
        self._work: deque[list] = deque()
        self._timer: Any = None
        self._running = False

    def add(self, what: str, step: Callable[[Any], Any], items: list) -> None:
        """Call `step(item)` for each of `items`, in order, now or in later slices."""
        if not items:
            return
        self._work.append([what, step, items, 0])
        if self._timer is None:  # nothing waiting: a fresh slice now
            self._run()

    def call_soon(self, callback: Callable[[], None]) -> Any:
        """Run `callback` once the event loop has turned (a timer due now); None, and
        nothing scheduled, without a clock."""
        if self._clock is None:
            return None
        return self._timers.call_at(self._clock(), callback)

    @property
    def pending(self) -> int:
        """Steps still waiting for a later slice."""
        return sum(len(entry[2]) - entry[3] for entry in self._work)

    def _run(self) -> None:
        if self._running:  # a step's own clean-up added more: the outer run takes it
            return
        self._running = True
        work = self._work
        budget = self.slice_steps if self._clock is not None else None
        try:
            while work:
                entry = work[0]
                what, step, items, start = entry
                end = len(items) if budget is None else min(len(items), start + budget)
                i = start
                while i < end:
                    item = items[i]
                    i += 1
                    entry[3] = i  # before the step: one that raises is not retried
                    try:
                        step(item)
                    except Exception:
                        log.error("%s (step %d of %d) failed; the rest of the clean-up goes on",
                                  what, i, len(items), exc_info=True)
                if entry[3] >= len(items):
                    work.popleft()
                if budget is not None:
                    budget -= end - start
                    if budget <= 0:
                        break
        finally:
            self._running = False
        if work and self._timer is None:
            assert self._clock is not None
            self._timer = self._timers.call_at(self._clock(), self._later)

    def _later(self) -> None:
        self._timer = None
        self._run()
