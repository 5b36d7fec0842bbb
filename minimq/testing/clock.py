"""A clock that only moves when a test says so."""
from __future__ import annotations

import time


class VirtualClock:
    """Seconds since the epoch, frozen until advanced.

    Give it to `minimq.testing.Broker(clock=VirtualClock())` (or pass `clock="virtual"`)
    and move it with `broker.advance(seconds)`, which also runs every broker deadline
    (heartbeats, TTL, expiry, delayed messages, ...) that falls within the step, in order.
    Setting the clock directly moves time without running those deadlines.
    """

    def __init__(self, start: float | None = None) -> None:
        self.now = float(time.time() if start is None else start)

    def __call__(self) -> float:
        return self.now

    def set(self, when: float) -> None:
        if when < self.now:
            raise ValueError(f"a clock does not go back: {when} < {self.now}")
        self.now = float(when)

    def __repr__(self) -> str:
        return f"<VirtualClock {self.now:.3f}>"
