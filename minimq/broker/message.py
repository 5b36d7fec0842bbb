"""A message as the broker holds it: the bytes that arrived, decoded only on demand.

The content header payload (class id, weight, body size, property flags, properties) and the
body are kept exactly as they came off the wire, so a delivery writes them back out without
re-encoding. Properties are decoded lazily, only when a feature needs them (headers exchange,
user-id check, TTL, priority, dead-lettering).

One Message object sits in one queue: routing to several queues makes shallow copies that
share the bytes. That lets the per-queue position (`seq`) and `redelivered` flag live on the
message itself instead of in a separate entry object, which halves the objects per queued
message.
"""
from __future__ import annotations

import copy

from minimq.codec.properties import (
    DELIVERY_MODE_FLAG,
    PRIORITY_FLAG,
    PROPERTIES_OFFSET,
    BasicProperties,
    decode_headers_only,
    encode_content_header,
    header_octet,
)


def make_route(exchange: str, routing_key: str) -> bytes:
    """shortstr(exchange) + shortstr(routing_key): the tail of basic.deliver."""
    eb = exchange.encode("utf-8", "surrogateescape")
    rb = routing_key.encode("utf-8", "surrogateescape")
    return bytes((len(eb),)) + eb + bytes((len(rb),)) + rb


class Message:
    __slots__ = (
        "exchange",
        "routing_key",
        "route",
        "header",
        "body",
        "seq",
        "redelivered",
        "expires",
        "priority",
        "deliveries",
        "store_id",
        "_props",
    )

    def __init__(self, exchange: str, routing_key: str, route: bytes, header: bytes, body: bytes) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        # shortstr(exchange) + shortstr(routing_key), ready to drop into basic.deliver.
        self.route = route
        self.header = header
        self.body = body
        self.seq = 0
        self.redelivered = False
        self.expires: float | None = None  # absolute clock time (per-message TTL, then queue's)
        self.priority = 0  # level in a priority queue
        self.deliveries = 0  # returns to the queue (x-delivery-limit)
        self.store_id = 0  # id in the durable store, when persisted
        self._props: BasicProperties | None = None

    def copy(self) -> "Message":
        """A copy for another queue: shares the bytes, has its own position and flags."""
        m = Message.__new__(Message)
        m.exchange = self.exchange
        m.routing_key = self.routing_key
        m.route = self.route
        m.header = self.header
        m.body = self.body
        m.seq = 0
        m.redelivered = False
        m.expires = self.expires
        m.priority = 0
        m.deliveries = 0
        m.store_id = self.store_id
        m._props = self._props
        return m

    def priority_value(self) -> int:
        """The message's priority property (0 when absent)."""
        return header_octet(self.header, PRIORITY_FLAG) or 0

    @property
    def persistent(self) -> bool:
        """delivery_mode == 2."""
        return header_octet(self.header, DELIVERY_MODE_FLAG) == 2

    @property
    def properties(self) -> BasicProperties:
        props = self._props
        if props is None:
            props = self._props = BasicProperties.decode(self.header, PROPERTIES_OFFSET)
        return props

    @property
    def headers(self) -> dict | None:
        if self._props is not None:
            return self._props.headers
        return decode_headers_only(memoryview(self.header)[PROPERTIES_OFFSET:])

    @property
    def flags(self) -> int:
        """The first property-flags word: which properties are present, without decoding."""
        h = self.header
        return (h[12] << 8) | h[13] if len(h) >= 14 else 0

    @property
    def size(self) -> int:
        return len(self.body)

    def rebuilt(
        self, props: BasicProperties, exchange: str | None = None, routing_key: str | None = None
    ) -> "Message":
        """A new message with other properties (and optionally another exchange/key).

        Used off the hot path only: dead-lettering, direct reply-to, BCC stripping.
        """
        exchange = self.exchange if exchange is None else exchange
        routing_key = self.routing_key if routing_key is None else routing_key
        m = Message(
            exchange,
            routing_key,
            make_route(exchange, routing_key),
            encode_content_header(len(self.body), props),
            self.body,
        )
        m._props = props
        return m

    def set_header(self, key: str, value: object) -> None:
        """Replace one header in place (this queue's copy only; the bytes are rebuilt)."""
        props = copy.copy(self.properties)
        headers = dict(props.headers or {})
        headers[key] = value
        props.headers = headers
        self.header = encode_content_header(len(self.body), props)
        self._props = props
