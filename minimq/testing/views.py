"""Read-only snapshots of broker state, for tests.

Every object here is a frozen copy taken in the broker's event loop at the moment of the
call: holding one never blocks the broker, and changing it (or the dicts inside) never
changes the broker. Take a new snapshot to see new state. Field names follow
`rabbitmqctl list_*` where there is an equivalent.
"""
from __future__ import annotations

import copy
import json as _json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from minimq.codec.properties import PROPERTIES_OFFSET, BasicProperties

if TYPE_CHECKING:
    from minimq.broker.message import Message


@dataclass(frozen=True)
class MessageView:
    """A message as the broker holds it: where it was published, its body and properties."""

    exchange: str
    routing_key: str
    body: bytes
    properties: BasicProperties
    redelivered: bool

    @property
    def headers(self) -> dict:
        return self.properties.headers or {}

    @property
    def content_type(self) -> str | None:
        return self.properties.content_type

    @property
    def delivery_mode(self) -> int | None:
        return self.properties.delivery_mode

    @property
    def persistent(self) -> bool:
        return self.properties.delivery_mode == 2

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (or the content_encoding, if that is a codec)."""
        encoding = self.properties.content_encoding or "utf-8"
        try:
            return self.body.decode(encoding)
        except LookupError:
            return self.body.decode("utf-8")

    def json(self) -> Any:
        return _json.loads(self.body)


@dataclass(frozen=True)
class QueueInfo:
    vhost: str
    name: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: dict
    messages_ready: int
    messages_unacknowledged: int
    consumers: int
    consumer_tags: tuple[str, ...] = ()

    @property
    def messages(self) -> int:
        """Ready plus unacknowledged, as `rabbitmqctl list_queues messages` counts."""
        return self.messages_ready + self.messages_unacknowledged


@dataclass(frozen=True)
class ExchangeInfo:
    vhost: str
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict


@dataclass(frozen=True)
class BindingInfo:
    """One binding. The default exchange ('') lists one per queue, as RabbitMQ does."""

    vhost: str
    source: str
    destination: str
    destination_type: str  # "queue" or "exchange"
    routing_key: str
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ConsumerInfo:
    vhost: str
    queue: str
    tag: str
    connection: int  # ConnectionInfo.id
    channel: int
    ack_required: bool
    exclusive: bool
    prefetch_count: int
    unacked: int
    arguments: dict


@dataclass(frozen=True)
class ChannelInfo:
    connection: int
    number: int
    consumers: int
    messages_unacknowledged: int
    prefetch_count: int
    global_prefetch_count: int
    confirm: bool
    transactional: bool
    flow_active: bool


@dataclass(frozen=True)
class ConnectionInfo:
    """A client connection. `id` is what the fault-injection helpers take."""

    id: int
    name: str | None  # the client's connection_name property, if it sent one
    peer: str
    user: str
    vhost: str | None  # None until connection.open
    state: str
    heartbeat: int
    channels: int
    blocked: bool
    client_properties: dict


@dataclass(frozen=True)
class UnackedInfo:
    """A delivery awaiting ack/nack/reject."""

    connection: int
    channel: int
    delivery_tag: int
    queue: str
    consumer_tag: str | None  # None for basic.get
    message: MessageView


# ---------------------------------------------------------------- builders
# These run in the broker's loop and only read.


def message_view(msg: "Message") -> MessageView:
    # Decode the properties afresh so the view shares no mutable object with the broker.
    props = BasicProperties.decode(msg.header, PROPERTIES_OFFSET)
    return MessageView(msg.exchange, msg.routing_key, bytes(msg.body), props, bool(msg.redelivered))


def copy_arguments(arguments: Any) -> dict:
    """A deep copy of an arguments table (None: empty), so a view never aliases live state."""
    return copy.deepcopy(dict(arguments or {}))


def queue_info(vhost: str, q: Any, unacked: int) -> QueueInfo:
    return QueueInfo(
        vhost=vhost,
        name=q.name,
        durable=bool(q.durable),
        exclusive=bool(q.exclusive),
        auto_delete=bool(q.auto_delete),
        arguments=copy_arguments(q.arguments),
        messages_ready=len(q.ready),
        messages_unacknowledged=unacked,
        consumers=len(q.consumers),
        consumer_tags=tuple(c.tag for c in q.consumers),
    )


def exchange_info(vhost: str, ex: Any) -> ExchangeInfo:
    return ExchangeInfo(
        vhost=vhost,
        name=ex.name,
        type=ex.type_name,
        durable=bool(ex.durable),
        auto_delete=bool(ex.auto_delete),
        internal=bool(ex.internal),
        arguments=copy_arguments(ex.arguments),
    )
