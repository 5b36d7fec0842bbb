"""Messages: `Message` to publish, `IncomingMessage` as delivered or fetched.

Both expose the AMQP basic properties as attributes (``message.headers``,
``message.correlation_id``, ...) and as a `BasicProperties` (``message.properties``).
"""
from __future__ import annotations

import datetime
import logging
from types import TracebackType
from typing import Any, Generator, Protocol, Union

from minimq.codec.properties import BasicProperties

__all__ = ["Message", "IncomingMessage", "ReturnedMessage", "DeliveryMode", "ProcessContext",
           "Body", "body_and_properties"]

log = logging.getLogger("minimq.client")


class DeliveryMode:
    """Values for ``delivery_mode``: 1 transient, 2 persistent."""

    NOT_PERSISTENT = 1
    PERSISTENT = 2


def _timestamp(value: int | float | datetime.datetime | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    return int(value)


def _expiration(value: str | int | float | datetime.timedelta | None) -> str | None:
    """RabbitMQ wants the per-message TTL as a string of milliseconds; numbers are seconds."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    return str(max(0, int(round(value * 1000))))


class _PropertyView:
    """Attribute access to the basic properties of ``self.properties``."""

    __slots__ = ()

    properties: BasicProperties

    @property
    def content_type(self) -> str | None:
        return self.properties.content_type

    @property
    def content_encoding(self) -> str | None:
        return self.properties.content_encoding

    @property
    def headers(self) -> dict[str, Any]:
        """The headers table (an empty dict when absent)."""
        props = self.properties
        if props.headers is None:
            props.headers = {}
        return props.headers

    @property
    def delivery_mode(self) -> int | None:
        return self.properties.delivery_mode

    @property
    def priority(self) -> int | None:
        return self.properties.priority

    @property
    def correlation_id(self) -> str | None:
        return self.properties.correlation_id

    @property
    def reply_to(self) -> str | None:
        return self.properties.reply_to

    @property
    def expiration(self) -> str | None:
        return self.properties.expiration

    @property
    def message_id(self) -> str | None:
        return self.properties.message_id

    @property
    def timestamp(self) -> int | None:
        return self.properties.timestamp

    @property
    def type(self) -> str | None:
        return self.properties.type

    @property
    def user_id(self) -> str | None:
        return self.properties.user_id

    @property
    def app_id(self) -> str | None:
        return self.properties.app_id


class Message(_PropertyView):
    """A message to publish: a body (bytes; a str is encoded as UTF-8) and its properties.

    ``persistent=True`` is shorthand for ``delivery_mode=2``. ``expiration`` is a per-message
    TTL: seconds (int, float or `timedelta`) or RabbitMQ's string of milliseconds.
    ``timestamp`` accepts seconds since the epoch or a `datetime`.

    >>> Message(b"hi", content_type="text/plain", headers={"k": 1}, persistent=True).delivery_mode
    2
    """

    __slots__ = ("body", "properties")

    def __init__(
        self,
        body: bytes | bytearray | memoryview | str = b"",
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        headers: dict[str, Any] | None = None,
        delivery_mode: int | None = None,
        persistent: bool = False,
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: str | int | float | datetime.timedelta | None = None,
        message_id: str | None = None,
        timestamp: int | float | datetime.datetime | None = None,
        type: str | None = None,
        user_id: str | None = None,
        app_id: str | None = None,
        properties: BasicProperties | None = None,
    ) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8")
            if content_type is None and properties is None:
                content_type = "text/plain"
        elif not isinstance(body, bytes):
            body = bytes(body)
        self.body: bytes = body
        if properties is not None:
            self.properties = properties
            return
        if persistent and delivery_mode is None:
            delivery_mode = DeliveryMode.PERSISTENT
        self.properties = BasicProperties(
            content_type=content_type,
            content_encoding=content_encoding,
            headers=headers,
            delivery_mode=delivery_mode,
            priority=priority,
            correlation_id=correlation_id,
            reply_to=reply_to,
            expiration=_expiration(expiration),
            message_id=message_id,
            timestamp=_timestamp(timestamp),
            type=type,
            user_id=user_id,
            app_id=app_id,
        )

    def __repr__(self) -> str:
        return f"Message({self.body[:64]!r}, {self.properties!r})"


Body = Union[Message, bytes, bytearray, memoryview, str]
"""What `publish` takes: a `Message`, or a bare body (a str is encoded as UTF-8)."""


def body_and_properties(message: Body) -> tuple[bytes, BasicProperties | None]:
    """The body bytes and properties (None for a bare body) to publish ``message`` with."""
    if message.__class__ is Message or isinstance(message, Message):
        return message.body, message.properties  # type: ignore[union-attr]
    if isinstance(message, bytes):
        return message, None
    if isinstance(message, str):
        return message.encode("utf-8"), None
    return bytes(message), None


class _ReceivedBase(_PropertyView):
    """Fields every received message has."""

    __slots__ = ("body", "exchange", "routing_key", "_raw_properties", "_properties")

    body: bytes
    exchange: str
    routing_key: str

    @property
    def properties(self) -> BasicProperties:  # type: ignore[override]
        """The decoded properties (decoded on first access)."""
        props = self._properties
        if props is None:
            props = self._properties = BasicProperties.decode(self._raw_properties)
        return props

    def text(self, encoding: str = "utf-8") -> str:
        """The body decoded as text."""
        return self.body.decode(encoding)


class SettlingChannel(Protocol):
    """What a message needs from the channel it came on (both drivers' channels are one)."""

    @property
    def generation(self) -> int: ...

    @property
    def is_closed(self) -> bool: ...

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None: ...

    def basic_nack(self, delivery_tag: int, multiple: bool = False,
                   requeue: bool = True) -> None: ...

    def basic_reject(self, delivery_tag: int, requeue: bool = False) -> None: ...


class _Done:
    """What `ack`/`nack`/`reject` return: the frame is already queued when they return, so
    blocking code just calls them and asyncio code may ``await`` them (nothing to wait for)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator

    def __repr__(self) -> str:
        return "<settled>"


_DONE = _Done()


class IncomingMessage(_ReceivedBase):
    """A message from a consumer or a basic.get, of either client.

    Settle it exactly once with `ack`, `nack` or `reject` (unless it was consumed with
    ``no_ack=True``), or let ``message.process()`` do it: ack on success, reject on an
    exception (``async with`` in asyncio code, ``with`` in blocking code).
    ``await message.ack()`` and plain ``message.ack()`` both work: the frame is queued at once.

    Attributes: ``body``, ``delivery_tag``, ``redelivered``, ``exchange``, ``routing_key``,
    ``consumer_tag`` (None for a get), ``message_count`` (messages left, get only),
    ``channel`` and the property attributes.
    """

    __slots__ = ("channel", "delivery_tag", "redelivered", "consumer_tag", "message_count",
                 "no_ack", "settled", "_generation")

    def __init__(
        self,
        channel: SettlingChannel,
        body: bytes,
        raw_properties: bytes,
        delivery_tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        consumer_tag: str | None = None,
        message_count: int | None = None,
        no_ack: bool = False,
    ) -> None:
        self.channel = channel
        self.body = body
        self._raw_properties = raw_properties
        self._properties: BasicProperties | None = None
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.consumer_tag = consumer_tag
        self.message_count = message_count
        self.no_ack = no_ack
        #: True once acked, nacked or rejected (always True for no_ack deliveries).
        self.settled = no_ack
        self._generation = channel.generation

    @property
    def stale(self) -> bool:
        """True when the channel this came on has been reopened since (a robust reconnect).

        Its delivery tag then belongs to the old channel: settling it does nothing, and the
        broker has already requeued the message, so a consumer should skip it rather than
        run its handler a second time.
        """
        return self._generation != self.channel.generation

    @property
    def is_stale(self) -> bool:
        """The same as `stale`."""
        return self.stale

    def _settle(self) -> bool:
        if self.settled:
            raise RuntimeError(f"message {self.delivery_tag} was already acknowledged or "
                               "rejected (or consumed with no_ack)")
        self.settled = True
        return not self.is_stale

    def ack(self, multiple: bool = False) -> _Done:
        """Acknowledge this message (and with ``multiple`` every earlier unsettled one)."""
        if self._settle():
            self.channel.basic_ack(self.delivery_tag, multiple)
        return _DONE

    def nack(self, requeue: bool = True, multiple: bool = False) -> _Done:
        """Negatively acknowledge: requeue it (default) or drop/dead-letter it."""
        if self._settle():
            self.channel.basic_nack(self.delivery_tag, multiple, requeue)
        return _DONE

    def reject(self, requeue: bool = False) -> _Done:
        """Reject this message: drop/dead-letter it, or requeue it with ``requeue=True``."""
        if self._settle():
            self.channel.basic_reject(self.delivery_tag, requeue)
        return _DONE

    def process(self, requeue: bool = False, ignore_processed: bool = False) -> ProcessContext:
        """``async with message.process():`` (or ``with``) acks when the block succeeds and
        rejects (requeued if ``requeue``) when it raises; the exception propagates. If the
        block settled the message itself that is fine with ``ignore_processed=True``, else it
        is an error."""
        return ProcessContext(self, requeue, ignore_processed)

    def __repr__(self) -> str:
        return (f"IncomingMessage(tag={self.delivery_tag}, rk={self.routing_key!r}, "
                f"body={self.body[:64]!r})")


class ProcessContext:
    """The context manager returned by `IncomingMessage.process` (``with`` or ``async with``)."""

    __slots__ = ("message", "requeue", "ignore_processed")

    def __init__(self, message: IncomingMessage, requeue: bool, ignore_processed: bool) -> None:
        self.message = message
        self.requeue = requeue
        self.ignore_processed = ignore_processed

    def __enter__(self) -> IncomingMessage:
        return self.message

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        message = self.message
        if message.settled:
            if not self.ignore_processed and not message.no_ack and exc_type is None:
                raise RuntimeError("message settled inside process(); pass ignore_processed=True")
            return
        if message.channel.is_closed:
            log.debug("channel closed before message %s could be settled", message.delivery_tag)
            return
        if exc_type is None:
            message.ack()
        else:
            message.reject(requeue=self.requeue)

    async def __aenter__(self) -> IncomingMessage:
        return self.message

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


class ReturnedMessage(_ReceivedBase):
    """A mandatory message the broker could not route (basic.return)."""

    __slots__ = ("reply_code", "reply_text")

    def __init__(self, body: bytes, raw_properties: bytes, reply_code: int, reply_text: str,
                 exchange: str, routing_key: str) -> None:
        self.body = body
        self._raw_properties = raw_properties
        self._properties: BasicProperties | None = None
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.exchange = exchange
        self.routing_key = routing_key

    def __repr__(self) -> str:
        return (f"ReturnedMessage({self.reply_code} {self.reply_text}, "
                f"rk={self.routing_key!r}, body={self.body[:64]!r})")
