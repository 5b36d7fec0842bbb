"""Caches bounded in bytes, so that no input can grow them past a known cost.

The broker memoises a few pure functions on the hot path (a publish's exchange and routing
key to the bytes of basic.deliver's tail; a topic exchange's routing key to its queues).
Each entry is charged an approximate size; a cache that would go over its budget is cleared
and starts again, which costs a few recomputations and never memory. The charges are part of
what the memory alarm counts (Broker.held_memory).
"""
from __future__ import annotations

from typing import Any, Hashable


class BoundedCache(dict):
    """A dict with a byte budget: `put` charges `cost`, and clears everything when full."""

    __slots__ = ("limit", "bytes")

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.bytes = 0

    def put(self, key: Hashable, value: Any, cost: int) -> None:
        if self.bytes + cost > self.limit:
            self.clear()
        self[key] = value
        self.bytes += cost

    def clear(self) -> None:
        super().clear()
        self.bytes = 0
