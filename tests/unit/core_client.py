"""An in-memory AMQP 0-9-1 client for the broker core: no sockets, no event loop.

A `CoreClient` owns one `Session` of a `Broker` (`broker.new_session()`), writes encoded
frames into `session.feed(...)` and reads what the broker left in `session.out`. Several
clients may share one broker: a publish by client A leaves deliveries in client B's
`session.out`, which B picks up the next time it looks (`drain`, `call`, ...).

Everything received is parsed with the codec's own FrameParser/decode_method and kept, in
arrival order, in `inbox` as `Received` items; content-bearing methods (deliver, get-ok,
return) are assembled with their properties and body first.

    broker = Broker()
    c = CoreClient(broker)          # handshake done
    ch = c.channel()
    c.call(ch, spec.QueueDeclare(queue="q"))        # -> QueueDeclareOk
    c.publish(ch, "", "q", b"body")
    c.call(ch, spec.BasicGet(queue="q"))            # -> Received(get-ok, with body)

A channel.close / connection.close from the broker is answered with close-ok (as a real client
does) and, when it answers a `call`, raised as `ChannelClosed` / `ConnectionClosed`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from minimq.broker import Broker
from minimq.codec import spec
from minimq.codec.constants import FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD
from minimq.codec.frames import (
    PROTOCOL_HEADER,
    FrameParser,
    encode_content_frames,
    encode_method_frame,
)
from minimq.codec.properties import BasicProperties, encode_content_header

__all__ = [
    "CoreClient",
    "Received",
    "ChannelClosed",
    "ConnectionClosed",
    "ProtocolViolation",
    "Broker",
    "spec",
    "BasicProperties",
]


# The AMQP 0-9-1 XML declares basic.recover without its response (RabbitMQ's own codegen
# marks it synchronous, answered by basic.recover-ok).
_RESPONSES = {spec.BasicRecover: (spec.BasicRecoverOk,)}


class ChannelClosed(Exception):
    """The broker closed a channel; carries the channel.close method it sent."""

    def __init__(self, channel: int, close: spec.ChannelClose) -> None:
        super().__init__(f"channel {channel} closed: {close.reply_code} {close.reply_text}")
        self.channel = channel
        self.close = close
        self.code = close.reply_code
        self.text = close.reply_text
        self.class_id = close.class_id
        self.method_id = close.method_id


class ConnectionClosed(Exception):
    """The broker closed the connection; carries the connection.close method it sent."""

    def __init__(self, close: spec.ConnectionClose) -> None:
        super().__init__(f"connection closed: {close.reply_code} {close.reply_text}")
        self.close = close
        self.code = close.reply_code
        self.text = close.reply_text
        self.class_id = close.class_id
        self.method_id = close.method_id


class ProtocolViolation(AssertionError):
    """The broker sent something a correct AMQP peer never sends."""


@dataclass
class Received:
    """One method from the broker, with its content when it carries some."""

    channel: int
    method: Any
    properties: BasicProperties | None = None
    body: bytes | None = None

    @property
    def name(self) -> str:
        return self.method.NAME

    @property
    def is_content(self) -> bool:
        return self.method.HAS_CONTENT

    def __getattr__(self, attr: str) -> Any:
        # Convenience: r.delivery_tag, r.consumer_tag, r.redelivered ... of the method.
        if attr.startswith("__"):
            raise AttributeError(attr)
        method = self.__dict__.get("method")
        if method is not None and attr in getattr(type(method), "__slots__", ()):
            return getattr(method, attr)
        raise AttributeError(attr)


@dataclass
class _Partial:
    channel: int
    method: Any
    size: int = -1
    properties: BasicProperties | None = None
    parts: list = field(default_factory=list)
    received: int = 0


class CoreClient:
    """A synchronous client of one broker session, for tests."""

    def __init__(
        self,
        broker: Broker,
        *,
        user: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        capabilities: dict | None = None,
        client_properties: dict | None = None,
        frame_max: int = 131072,
        peer: str = "test",
        open: bool = True,
    ) -> None:
        self.broker = broker
        self.session = broker.new_session(peer)
        self.parser = FrameParser(0)
        self.inbox: list[Received] = []
        self.frame_max = frame_max
        self.user = user
        self.password = password
        self.vhost_name = vhost
        props = dict(client_properties or {"product": "minimq-core-client"})
        if capabilities is not None:
            props["capabilities"] = dict(capabilities)
        self.client_properties = props
        self.open_channels: set[int] = set()
        self.closed_channels: dict[int, spec.ChannelClose] = {}
        self.connection_close: spec.ConnectionClose | None = None
        self.connection_open = False
        self._partial: dict[int, _Partial] = {}
        self._next_channel = 1
        self.server_properties: dict | None = None
        if open:
            self.open()

    # ---------------------------------------------------------------- raw I/O

    def feed(self, data: bytes) -> None:
        """Hand bytes to the broker session and collect what it answered.

        As the transport does: the session handles input in slices and stops while its
        output is full, so collect and feed again until it has handled everything.
        """
        more = self.session.feed(data)
        self.collect()
        while more:
            more = self.session.feed()
            self.collect()

    def collect(self) -> None:
        """Parse everything waiting in the session's output into the inbox."""
        out = self.session.out
        if not out:
            return
        data = b"".join(bytes(x) for x in out)
        out.clear()
        self.session.output_taken()
        self.session.wake_pending = False
        for ftype, channel, payload in self.parser.feed(data):
            self._frame(ftype, channel, payload)

    def _frame(self, ftype: int, channel: int, payload: bytes) -> None:
        if ftype == FRAME_HEARTBEAT:
            return
        if ftype == FRAME_METHOD:
            if channel in self._partial:
                raise ProtocolViolation(f"method frame inside content on channel {channel}")
            method = spec.decode_method(payload)
            if method.HAS_CONTENT:
                self._partial[channel] = _Partial(channel, method)
                return
            self._method(channel, method)
            return
        part = self._partial.get(channel)
        if part is None:
            raise ProtocolViolation(f"content frame type {ftype} without a method on channel {channel}")
        if ftype == FRAME_HEADER:
            if part.size != -1:
                raise ProtocolViolation("second content header")
            class_id = int.from_bytes(payload[0:2], "big")
            if class_id != 60:
                raise ProtocolViolation(f"content header class {class_id}")
            part.size = int.from_bytes(payload[4:12], "big")
            part.properties = BasicProperties.decode(payload, 12)
            if part.size == 0:
                self._content_done(part)
            return
        if ftype == FRAME_BODY:
            if part.size == -1:
                raise ProtocolViolation("body frame before the content header")
            if self.frame_max and len(payload) + 8 > self.frame_max:
                raise ProtocolViolation(f"body frame of {len(payload) + 8} bytes > frame_max")
            part.parts.append(payload)
            part.received += len(payload)
            if part.received > part.size:
                raise ProtocolViolation("more body than announced")
            if part.received == part.size:
                self._content_done(part)
            return
        raise ProtocolViolation(f"unknown frame type {ftype}")

    def _content_done(self, part: _Partial) -> None:
        del self._partial[part.channel]
        self.inbox.append(Received(part.channel, part.method, part.properties, b"".join(part.parts)))

    def _method(self, channel: int, method: Any) -> None:
        if isinstance(method, spec.ChannelClose):
            self.open_channels.discard(channel)
            self.closed_channels[channel] = method
            self.inbox.append(Received(channel, method))
            # Answer as a client library does, so the broker can reuse the channel number.
            self.session.feed(encode_method_frame(channel, spec.ChannelCloseOk()))
            return
        if isinstance(method, spec.ConnectionClose):
            self.connection_close = method
            self.connection_open = False
            self.open_channels.clear()
            self.inbox.append(Received(channel, method))
            self.session.feed(encode_method_frame(0, spec.ConnectionCloseOk()))
            return
        self.inbox.append(Received(channel, method))

    def send(self, channel: int, method: Any) -> None:
        """Send one method without waiting for anything."""
        self.feed(encode_method_frame(channel, method))

    def send_many(self, items: Iterable[tuple[int, Any]]) -> None:
        """Several methods in one read, as a pipelining client would send them."""
        self.feed(b"".join(encode_method_frame(ch, m) for ch, m in items))

    # ---------------------------------------------------------------- handshake

    def open(self) -> None:
        self.feed(PROTOCOL_HEADER)
        start = self._take_method(0, spec.ConnectionStart)
        self.server_properties = start.server_properties
        response = b"\x00" + self.user.encode() + b"\x00" + self.password.encode()
        self.feed(
            encode_method_frame(
                0, spec.ConnectionStartOk(self.client_properties, "PLAIN", response, "en_US")
            )
        )
        tune = self._take_method(0, spec.ConnectionTune)
        frame_max = min(self.frame_max, tune.frame_max) if tune.frame_max else self.frame_max
        self.frame_max = frame_max
        self.feed(
            encode_method_frame(0, spec.ConnectionTuneOk(tune.channel_max, frame_max, 0))
            + encode_method_frame(0, spec.ConnectionOpen(self.vhost_name))
        )
        self._take_method(0, spec.ConnectionOpenOk)
        self.connection_open = True

    def _take_method(self, channel: int, cls: type) -> Any:
        for i, item in enumerate(self.inbox):
            if item.channel != channel:
                continue
            if isinstance(item.method, cls):
                del self.inbox[i]
                return item.method
            if isinstance(item.method, spec.ConnectionClose):
                del self.inbox[i]
                raise ConnectionClosed(item.method)
        raise AssertionError(f"expected {cls.__name__} on channel {channel}, inbox: {self.inbox!r}")

    # ------------------------------------------------------------------ channels

    def channel(self, number: int | None = None) -> int:
        if number is None:
            number = self._next_channel
            while number in self.open_channels:
                number += 1
            self._next_channel = number + 1
        self.closed_channels.pop(number, None)
        self.call(number, spec.ChannelOpen())
        self.open_channels.add(number)
        return number

    def close_channel(self, channel: int) -> None:
        self.call(channel, spec.ChannelClose(200, "bye", 0, 0))
        self.open_channels.discard(channel)

    def close(self) -> None:
        """Clean connection.close handshake."""
        self.send(0, spec.ConnectionClose(200, "bye", 0, 0))
        self._take_method(0, spec.ConnectionCloseOk)
        self.connection_open = False
        self.open_channels.clear()

    def drop(self) -> None:
        """The socket vanished: no close handshake."""
        self.session.connection_lost()
        self.connection_open = False
        self.open_channels.clear()

    # -------------------------------------------------------------------- calls

    def call(self, channel: int, method: Any) -> Any:
        """Send a synchronous method and return the broker's reply.

        The reply is the method (or, for basic.get-ok, the `Received` with its content).
        Raises ChannelClosed/ConnectionClosed when the broker closed instead of replying.
        Other items (deliveries, returns, acks) stay in the inbox.
        """
        self.send(channel, method)
        return self.reply(channel, method.RESPONSES or _RESPONSES[type(method)])

    def reply(self, channel: int, responses: tuple) -> Any:
        self.collect()
        for i, item in enumerate(self.inbox):
            m = item.method
            if item.channel == 0 and isinstance(m, spec.ConnectionClose):
                del self.inbox[i]
                raise ConnectionClosed(m)
            if item.channel != channel:
                continue
            if isinstance(m, spec.ChannelClose):
                del self.inbox[i]
                raise ChannelClosed(channel, m)
            if isinstance(m, responses):
                del self.inbox[i]
                return item if item.is_content else m
        raise AssertionError(
            f"no reply among {[r.__name__ for r in responses]} on channel {channel}; inbox: {self.inbox!r}"
        )

    def publish(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        body: bytes = b"",
        properties: BasicProperties | None = None,
        *,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> None:
        self.feed(self.encode_publish(channel, exchange, routing_key, body, properties, mandatory=mandatory, immediate=immediate))

    def encode_publish(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        body: bytes = b"",
        properties: BasicProperties | None = None,
        *,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> bytes:
        frames = [
            encode_method_frame(
                channel,
                spec.BasicPublish(0, exchange, routing_key, mandatory, immediate),
            )
        ]
        header = encode_content_header(len(body), properties)
        frames.extend(encode_content_frames(channel, header, body, self.frame_max))
        return b"".join(frames)

    def publish_many(self, channel: int, exchange: str, routing_key: str, bodies: Iterable[bytes], **kw: Any) -> None:
        """Several publishes in one read (one feed)."""
        self.feed(b"".join(self.encode_publish(channel, exchange, routing_key, b, **kw) for b in bodies))

    # ----------------------------------------------------------------- shortcuts

    def declare(self, channel: int, queue: str = "", **kw: Any) -> spec.QueueDeclareOk:
        return self.call(channel, spec.QueueDeclare(queue=queue, **kw))

    def counts(self, channel: int, queue: str) -> tuple[int, int]:
        """(message_count, consumer_count) by passive declare."""
        ok = self.call(channel, spec.QueueDeclare(queue=queue, passive=True))
        return ok.message_count, ok.consumer_count

    def consume(self, channel: int, queue: str, tag: str = "", **kw: Any) -> str:
        return self.call(channel, spec.BasicConsume(queue=queue, consumer_tag=tag, **kw)).consumer_tag

    def qos(self, channel: int, prefetch_count: int, global_: bool = False) -> None:
        self.call(channel, spec.BasicQos(0, prefetch_count, global_))

    def get(self, channel: int, queue: str, no_ack: bool = False) -> Received | None:
        r = self.call(channel, spec.BasicGet(queue=queue, no_ack=no_ack))
        return None if isinstance(r, spec.BasicGetEmpty) else r

    def ack(self, channel: int, tag: int, multiple: bool = False) -> None:
        self.send(channel, spec.BasicAck(tag, multiple))

    def nack(self, channel: int, tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self.send(channel, spec.BasicNack(tag, multiple, requeue))

    def reject(self, channel: int, tag: int, requeue: bool = True) -> None:
        self.send(channel, spec.BasicReject(tag, requeue))

    # ------------------------------------------------------------------- inbox

    def drain(self, channel: int | None = None) -> list[Received]:
        """Remove and return what has arrived (on `channel`, or everywhere)."""
        self.collect()
        if channel is None:
            items, self.inbox = self.inbox, []
            return items
        items = [r for r in self.inbox if r.channel == channel]
        self.inbox = [r for r in self.inbox if r.channel != channel]
        return items

    def deliveries(self, channel: int | None = None) -> list[Received]:
        """Remove and return the basic.deliver items (other items stay in the inbox)."""
        self.collect()
        picked = [
            r for r in self.inbox
            if isinstance(r.method, spec.BasicDeliver) and (channel is None or r.channel == channel)
        ]
        if picked:
            ids = {id(r) for r in picked}
            self.inbox = [r for r in self.inbox if id(r) not in ids]
        return picked

    def bodies(self, channel: int | None = None) -> list[bytes]:
        return [r.body for r in self.deliveries(channel)]

    def channel_close(self, channel: int) -> spec.ChannelClose:
        """The channel.close the broker sent on `channel` (removed from the inbox)."""
        self.collect()
        for i, item in enumerate(self.inbox):
            if item.channel == channel and isinstance(item.method, spec.ChannelClose):
                del self.inbox[i]
                return item.method
        raise AssertionError(f"no channel.close on channel {channel}; inbox: {self.inbox!r}")

    def connection_closed(self) -> spec.ConnectionClose:
        self.collect()
        for i, item in enumerate(self.inbox):
            if isinstance(item.method, spec.ConnectionClose):
                del self.inbox[i]
                return item.method
        raise AssertionError(f"no connection.close; inbox: {self.inbox!r}")
