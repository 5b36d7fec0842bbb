"""Exchanges: a name, declaration flags and a routing plug-in (see exchange_types)."""
from __future__ import annotations

from typing import Iterable

from minimq.broker.exchange_types import ExchangeType, make_exchange_type

class DefaultExchangeType(ExchangeType):
    """The nameless exchange: routes to the queue named by the routing key, no bindings."""

    name = "direct"
    needs_headers = False

    def __init__(self, queues: dict) -> None:
        super().__init__()
        self._queues = queues

    def route(self, routing_key: str, headers: dict | None = None) -> Iterable:
        q = self._queues.get(routing_key)
        return (q,) if q is not None else ()


class Exchange:
    """A declared exchange.

    `bound_from` holds the exchanges that have a binding to this one (exchange-to-exchange),
    so deleting it can remove those bindings; `e2e_out` counts bindings from this exchange to
    other exchanges so routing can skip the graph walk when there are none.
    """

    def __init__(
        self,
        name: str,
        type_name: str,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict | None = None,
        kind: ExchangeType | None = None,
    ) -> None:
        self.name = name
        # A plain attribute, not a property: every publish asks (direct reply-to's check).
        self.is_default = name == ""
        self.type_name = type_name
        self.arguments = arguments or {}
        self.kind = kind if kind is not None else make_exchange_type(type_name, self.arguments)
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        alt = self.arguments.get("alternate-exchange")
        if isinstance(alt, bytes):
            alt = alt.decode("utf-8", "surrogateescape")
        self.alternate: str | None = alt if isinstance(alt, str) and alt else None
        self.policy = None  # its policy (minimq.broker.policies), which may set `alternate`
        self.delayed = self.kind.delays  # holds messages back before routing (x-delayed-message)
        self.bound_from: set = set()
        self.e2e_out = 0
        self.deleted = False
        self.stat_in = 0  # messages published to it (for the management API's rates)
        self.stat_unroutable = 0  # of those, the ones it routed nowhere (rare: off the hot path)

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        return f"<Exchange {self.name!r} {self.type_name}>"
