"""The client side of one AMQP channel, without I/O.

A `ClientChannel` knows what the methods on a channel mean to a client, so that the asyncio
and the blocking client only turn its events into futures or condition waits:

- **reply matching**: `call` sends one synchronous method and remembers its valid replies
  (``method.RESPONSES``); the reply comes back as a `Reply`, anything else the broker sends
  that is neither a valid reply nor an asynchronous method is a protocol error (503);
- **publisher confirms**: after ``confirm.select`` every `publish` gets the next delivery tag;
  basic.ack/basic.nack (``multiple`` included) come back as one `ConfirmsResolved` naming the
  tags they settle;
- **basic.return matching**: a returned mandatory message in confirm mode is matched to its
  delivery tag through its message id (one is set when the publisher gave none);
- **consumers**: a tag is live from its consume-ok until its cancel-ok or the broker's
  basic.cancel (`ConsumerCancelled`, cancel-ok already queued); deliveries for other tags are
  dropped;
- **flow**: the broker's channel.flow is answered and reported (`FlowChanged`); ``active``
  says whether publishing may go on;
- **closing**: the broker's channel.close is answered (`ChannelClosedByServer`); our own close
  ends with `ChannelCloseCompleted`, and frames in between are dropped.

Rules of the channel states, in one place:
``opening`` (channel.open sent) -> ``open`` (open-ok) -> ``closing`` (we sent channel.close) ->
``closed`` (close-ok, or the broker closed it). A closed channel's number may be reused.
"""
from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING

from minimq.codec import spec
from minimq.codec.errors import CommandInvalid
from minimq.codec.properties import BasicProperties

if TYPE_CHECKING:
    from .client import ClientConnection

__all__ = [
    "ClientChannel",
    "ChannelEvent",
    "Reply",
    "Delivered",
    "ConfirmsResolved",
    "Returned",
    "ChannelClosedByServer",
    "ChannelCloseCompleted",
    "FlowChanged",
    "ConsumerCancelled",
]

_PROPERTIES_AT = 12  # a content header's properties follow class, weight and body size


class ChannelEvent:
    """Base of the events a `ClientChannel` produces; ``channel`` is its number."""

    __slots__ = ("channel",)


class Reply(ChannelEvent):
    """The reply to the call in progress. ``properties``/``body`` are set for basic.get-ok
    (raw property bytes, decoded on demand) and None for replies without content."""

    __slots__ = ("method", "properties", "body")

    def __init__(self, channel: int, method: spec.Method, properties: bytes | None = None,
                 body: bytes | None = None) -> None:
        self.channel = channel
        self.method = method
        self.properties = properties
        self.body = body


class Delivered(ChannelEvent):
    """basic.deliver for a live consumer, with its raw properties and whole body."""

    __slots__ = ("method", "properties", "body")

    def __init__(self, channel: int, method: spec.BasicDeliver, properties: bytes,
                 body: bytes) -> None:
        self.channel = channel
        self.method = method
        self.properties = properties
        self.body = body


class ConfirmsResolved(ChannelEvent):
    """basic.ack (``ack`` True) or basic.nack settled these publishes (delivery tags, in
    order). A tag already reported by `Returned` is named again here: the first outcome
    counts."""

    __slots__ = ("tags", "ack")

    def __init__(self, channel: int, tags: list[int], ack: bool) -> None:
        self.channel = channel
        self.tags = tags
        self.ack = ack


class Returned(ChannelEvent):
    """basic.return; ``delivery_tag`` is the confirm-mode publish it matches, else None."""

    __slots__ = ("method", "properties", "body", "delivery_tag")

    def __init__(self, channel: int, method: spec.BasicReturn, properties: bytes, body: bytes,
                 delivery_tag: int | None) -> None:
        self.channel = channel
        self.method = method
        self.properties = properties
        self.body = body
        self.delivery_tag = delivery_tag


class ChannelClosedByServer(ChannelEvent):
    """The broker closed the channel (close-ok already queued)."""

    __slots__ = ("reply_code", "reply_text", "class_id", "method_id")

    def __init__(self, channel: int, reply_code: int, reply_text: str, class_id: int,
                 method_id: int) -> None:
        self.channel = channel
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id


class ChannelCloseCompleted(ChannelEvent):
    """Our channel.close is done (close-ok, or a crossing close from the broker)."""

    __slots__ = ()

    def __init__(self, channel: int) -> None:
        self.channel = channel


class FlowChanged(ChannelEvent):
    """The broker's channel.flow: publishing must pause (``active`` False) or may resume."""

    __slots__ = ("active",)

    def __init__(self, channel: int, active: bool) -> None:
        self.channel = channel
        self.active = active


class ConsumerCancelled(ChannelEvent):
    """The broker cancelled a consumer (queue deleted, ...); cancel-ok already queued."""

    __slots__ = ("consumer_tag",)

    def __init__(self, channel: int, consumer_tag: str) -> None:
        self.channel = channel
        self.consumer_tag = consumer_tag


class ClientChannel:
    """One channel's protocol state; made by `ClientConnection.channel`.

    Frames go out through the connection's ``out`` list; events come back from
    `ClientConnection.receive_data`. Nothing here blocks or waits: a driver sends a `call`,
    and wakes its caller when the `Reply` event arrives.
    """

    __slots__ = ("number", "state", "active", "confirming", "consumers", "_conn", "_expect",
                 "_next_tag", "_unconfirmed", "_by_message_id")

    def __init__(self, connection: ClientConnection, number: int) -> None:
        self.number = number
        #: "new", "opening", "open", "closing" or "closed" (see the module docstring).
        self.state = "new"
        #: False while the broker has paused publishing with channel.flow.
        self.active = True
        #: True after confirm.select: publishes are numbered and confirmed.
        self.confirming = False
        #: Tags of the consumers the broker delivers to.
        self.consumers: set[str] = set()
        self._conn = connection
        self._expect: tuple[type[spec.Method], ...] = ()
        self._next_tag = 0
        self._unconfirmed: OrderedDict[int, str | None] = OrderedDict()
        self._by_message_id: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<ClientChannel {self.number} {self.state}>"

    @property
    def call_in_progress(self) -> bool:
        """Whether a synchronous method awaits its reply."""
        return bool(self._expect)

    @property
    def unconfirmed(self) -> int:
        """How many confirm-mode publishes await the broker's ack or nack."""
        return len(self._unconfirmed)

    # -- outgoing ---------------------------------------------------------------------------

    def open(self) -> None:
        """Queue channel.open; `Reply` (open-ok) makes the channel ``open``."""
        self.state = "opening"
        self.call(spec.ChannelOpen())

    def call(self, method: spec.Method) -> None:
        """Queue a synchronous method; its reply comes back as a `Reply` event.

        One call at a time: the drivers serialise callers, a second call before the reply is
        a bug in the driver (RuntimeError). ``channel.close`` goes through `close`.
        """
        if self._expect:
            raise RuntimeError(f"channel {self.number}: {method.NAME} while a call is pending")
        if self.state in ("closing", "closed"):
            raise RuntimeError(f"channel {self.number} is {self.state}")
        self._expect = method.RESPONSES
        if method.__class__ is spec.ConfirmSelect:
            self.confirming = True
        self._conn.send_method(self.number, method)

    def send(self, method: spec.Method) -> None:
        """Queue an asynchronous method (basic.ack, basic.nack, basic.reject, ...)."""
        self._conn.send_method(self.number, method)

    def publish(self, exchange: str, routing_key: str, body: bytes,
                properties: BasicProperties | None = None, mandatory: bool = False) -> int:
        """Queue one basic.publish; returns its delivery tag in confirm mode, else 0.

        A mandatory confirm-mode publish gets a message id when it has none (set on
        ``properties``), so that a basic.return can be matched to its delivery tag.
        """
        if not self.confirming:
            self._conn.send_publish(self.number, exchange, routing_key, body, properties,
                                    mandatory)
            return 0
        self._next_tag += 1
        tag = self._next_tag
        message_id = None
        if mandatory:
            if properties is None:
                properties = BasicProperties()
            if not properties.message_id:
                properties.message_id = uuid.uuid4().hex
            message_id = properties.message_id
            self._by_message_id[message_id] = tag
        self._unconfirmed[tag] = message_id
        self._conn.send_publish(self.number, exchange, routing_key, body, properties, mandatory)
        return tag

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown") -> None:
        """Queue channel.close; `ChannelCloseCompleted` follows. A pending call is dropped:
        its reply, if it still comes, is discarded with everything else until close-ok."""
        if self.state in ("closing", "closed"):
            return
        self.state = "closing"
        self._expect = ()
        self._conn.send_method(self.number, spec.ChannelClose(reply_code, reply_text[:255], 0, 0))

    # -- incoming ---------------------------------------------------------------------------

    def method_received(self, method: spec.Method) -> ChannelEvent | None:
        """A method without content for this channel; returns its event, if any."""
        cls = method.__class__
        if cls is spec.BasicAck or cls is spec.BasicNack:
            return self._resolve(method.delivery_tag, method.multiple, cls is spec.BasicAck)
        if self.state == "closing":
            if cls is spec.ChannelCloseOk or cls is spec.ChannelClose:
                if cls is spec.ChannelClose:
                    self.send(spec.ChannelCloseOk())
                self._finish()
                return ChannelCloseCompleted(self.number)
            return None
        if self.state == "closed":
            return None
        if cls is spec.ChannelClose:
            self.send(spec.ChannelCloseOk())
            self._finish()
            return ChannelClosedByServer(self.number, method.reply_code, method.reply_text,
                                         method.class_id, method.method_id)
        if cls is spec.BasicCancel:
            self.consumers.discard(method.consumer_tag)
            if not method.no_wait:
                self.send(spec.BasicCancelOk(method.consumer_tag))
            return ConsumerCancelled(self.number, method.consumer_tag)
        if cls is spec.ChannelFlow:
            self.active = bool(method.active)
            self.send(spec.ChannelFlowOk(method.active))
            return FlowChanged(self.number, self.active)
        if cls in self._expect:
            self._expect = ()
            if cls is spec.ChannelOpenOk:
                self.state = "open"
            elif cls is spec.BasicConsumeOk:
                self.consumers.add(method.consumer_tag)
            elif cls is spec.BasicCancelOk:
                self.consumers.discard(method.consumer_tag)
            return Reply(self.number, method)
        raise CommandInvalid(f"unexpected {method.NAME} on channel {self.number}")

    def content_received(self, method: spec.Method, header: bytes, body: bytes,
                         ) -> ChannelEvent | None:
        """A complete basic.deliver, basic.get-ok or basic.return (header payload as sent)."""
        cls = method.__class__
        if cls is spec.BasicDeliver:
            if self.state != "open" or method.consumer_tag not in self.consumers:
                return None  # a cancelled consumer's or a closing channel's: the broker requeues
            return Delivered(self.number, method, header[_PROPERTIES_AT:], body)
        if cls is spec.BasicReturn:
            properties = header[_PROPERTIES_AT:]
            tag = None
            if self._by_message_id:
                message_id = BasicProperties.decode(properties).message_id
                if message_id:
                    tag = self._by_message_id.pop(message_id, None)
            return Returned(self.number, method, properties, body, tag)
        if self.state != "open":
            return None
        if cls in self._expect:  # basic.get-ok
            self._expect = ()
            return Reply(self.number, method, header[_PROPERTIES_AT:], body)
        raise CommandInvalid(f"unexpected {method.NAME} on channel {self.number}")

    def _resolve(self, tag: int, multiple: bool, ack: bool) -> ConfirmsResolved | None:
        unconfirmed = self._unconfirmed
        by_id = self._by_message_id
        if multiple:
            tags = []
            while unconfirmed:
                first = next(iter(unconfirmed))
                if first > tag:
                    break
                message_id = unconfirmed.popitem(last=False)[1]
                if message_id is not None:
                    by_id.pop(message_id, None)
                tags.append(first)
            if not tags:
                return None
        else:
            if tag not in unconfirmed:
                return None
            message_id = unconfirmed.pop(tag)
            if message_id is not None:
                by_id.pop(message_id, None)
            tags = [tag]
        return ConfirmsResolved(self.number, tags, ack)

    def _finish(self) -> None:
        self.state = "closed"
        self._expect = ()
        self.consumers.clear()
        self._unconfirmed.clear()
        self._by_message_id.clear()
        self._conn.channel_finished(self)
