"""Injected faults inside the broker: a stand-in for a bug, to prove what a bug may cost.

minimq promises that an internal error costs at most the connection it happened on: a
publisher in confirm mode gets basic.nack (never silence), teardown still requeues,
cancels and deletes what it must. Tests check that promise by making one exchange's routing
plug-in raise where they choose (`minimq.testing.Broker.break_exchange`).
"""
from __future__ import annotations

from typing import Any, Iterable

FAULT_POINTS = ("route", "unbind")


class InjectedFault(RuntimeError):
    """The error a broken exchange raises (a RuntimeError, as an unexpected bug would be)."""


class FaultyRouting:
    """Wraps an exchange's routing plug-in; raises InjectedFault at the chosen points.

    "route": routing through the exchange (publishing to it, dead-lettering into it, an
    exchange-to-exchange binding or alternate exchange leading to it).
    "unbind": removing bindings from it (queue.unbind, and deleting a queue or exchange
    bound from it, as happens when an exclusive queue's connection goes away).
    """

    def __init__(self, inner: Any, exchange: str, on: Iterable[str]) -> None:
        points = frozenset(on)
        unknown = points - set(FAULT_POINTS)
        if unknown or not points:
            raise ValueError(f"fault points must be some of {FAULT_POINTS}, got {sorted(points)}")
        self.inner = inner
        self.exchange = exchange
        self.points = points

    def _fail(self, point: str) -> None:
        if point in self.points:
            raise InjectedFault(f"injected fault: {point} on exchange {self.exchange!r}")

    def route(self, routing_key: str, headers: dict | None = None):
        self._fail("route")
        return self.inner.route(routing_key, headers)

    def remove_binding(self, destination: Any, routing_key: str, arguments: dict) -> None:
        self._fail("unbind")
        self.inner.remove_binding(destination, routing_key, arguments)

    def remove_destination(self, destination: Any) -> None:
        self._fail("unbind")
        self.inner.remove_destination(destination)

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ConfirmReordering:
    """Publisher confirms out of publish order, as RabbitMQ may send them.

    RabbitMQ confirms a message once every queue it went to has it: an unroutable or a
    transient message is confirmed at once, a persistent one only after the disk write, so a
    channel may see `ack 2, ack 4, ack 7 multiple` for publishes 1..7. A publisher that takes
    `ack 4` to mean "1 to 4 are safe", or that expects one ack per message in order, loses
    track. Given a run of confirms (first..last), this spells it as individual acks of a
    random non-empty subset of first+1..last, in increasing order, then one ack covering the
    rest (multiple when it covers more than one). Seeded, so a failing run replays.
    """

    def __init__(self, seed: int | None = None) -> None:
        import random

        self.seed = seed
        self._rng = random.Random(seed)

    def __call__(self, first: int, last: int) -> list[tuple[int, bool]]:
        later = list(range(first + 1, last + 1))
        early = sorted(self._rng.sample(later, self._rng.randint(1, len(later))))
        taken = set(early)
        rest = [tag for tag in range(first, last + 1) if tag not in taken]
        return [(tag, False) for tag in early] + [(rest[-1], len(rest) > 1)]
