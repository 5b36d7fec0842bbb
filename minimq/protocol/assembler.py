"""Content assembly: a content-bearing method, then its header frame, then its body frames.

Both sides of a connection need it (the server for basic.publish, the client for basic.deliver,
basic.get-ok and basic.return), and both get it from here, apart from what the methods mean
(the way RabbitMQ keeps `rabbit_command_assembler` apart from `rabbit_channel`).

The assembler keeps at most one message in progress per channel. The header payload is kept
exactly as it arrived (class id, weight, body size, property flags, properties): a broker
stores and forwards those bytes, a client decodes the properties from ``header[12:]`` only when
asked. A body that came in one frame is handed on as it is; several are joined once.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from minimq.codec import spec
from minimq.codec.errors import FrameError, PreconditionFailed, UnexpectedFrame
from minimq.codec.properties import CONTENT_HEADER as _CONTENT_HEADER
from minimq.codec.properties import CONTENT_HEADER_SIZE

__all__ = ["ContentAssembler", "CONTENT_HEADER_SIZE"]

_BASIC_CLASS = spec.BasicPublish.CLASS_ID  # 60: only class basic carries content

Make = Callable[[int, Any, bytes, bytes], Any]
"""make(channel, method, header_payload, body) -> the event for one complete message."""


class _InProgress:
    __slots__ = ("method", "header", "size", "parts", "received")

    def __init__(self, method: Any) -> None:
        self.method = method
        self.header: bytes | None = None
        self.size = 0
        self.parts: list[bytes] = []
        self.received = 0


class ContentAssembler:
    """Per-channel content assembly; `header` and `body` return ``make(...)`` once a message is
    complete and None while it is not.

    Frames out of order and a header of another class than basic raise `UnexpectedFrame`
    (505, as RabbitMQ); a short header and a body longer than announced raise `FrameError`
    (501); a body size above ``max_size`` raises
    `PreconditionFailed` (406, the channel error RabbitMQ sends) before any body is buffered,
    so a peer cannot make us hold more than ``max_size`` bytes per channel.
    """

    __slots__ = ("_pending", "_make", "max_size", "channels")

    def __init__(self, make: Make, max_size: int | None = None) -> None:
        self._pending: dict[int, _InProgress] = {}
        #: The channels with a message in progress, as a mapping a hot path can test with
        #: ``in`` at C speed (no method call). Read it; change it only through the methods.
        self.channels: Mapping[int, object] = self._pending
        self._make = make
        self.max_size = (1 << 64) if max_size is None else max_size

    def __contains__(self, channel: int) -> bool:
        """Whether a message is in progress on ``channel`` (its method frame came)."""
        return channel in self._pending

    def start(self, channel: int, method: Any) -> None:
        """The content-bearing method frame arrived; its header must come next."""
        self._pending[channel] = _InProgress(method)

    def header(self, channel: int, payload: bytes) -> Any:
        """A content header frame; complete at once when the body size is 0."""
        pending = self._pending.get(channel)
        if pending is None or pending.header is not None:
            raise UnexpectedFrame(f"unexpected content header frame on channel {channel}")
        if len(payload) < CONTENT_HEADER_SIZE:
            raise FrameError("content header frame too short")
        class_id, _weight, size = _CONTENT_HEADER.unpack_from(payload, 0)
        if class_id != _BASIC_CLASS:
            raise UnexpectedFrame(
                f"expected content header for class {_BASIC_CLASS}, got one for class "
                f"{class_id} instead", pending.method.CLASS_ID, pending.method.METHOD_ID)
        if size > self.max_size:
            del self._pending[channel]
            # RabbitMQ's text, on basic.publish; it judges the whole body, we the announced
            # size, so an oversized message is never buffered.
            raise PreconditionFailed(
                f"message size {size} is larger than configured max size {self.max_size}",
                pending.method.CLASS_ID, pending.method.METHOD_ID,
            )
        if size == 0:
            del self._pending[channel]
            return self._make(channel, pending.method, payload, b"")
        pending.header = payload
        pending.size = size
        return None

    def body(self, channel: int, payload: bytes) -> Any:
        """A content body frame; complete when the announced size is reached."""
        pending = self._pending.get(channel)
        if pending is None or pending.header is None:
            raise UnexpectedFrame(f"unexpected content body frame on channel {channel}")
        pending.received += len(payload)
        if pending.received >= pending.size:
            if pending.received > pending.size:
                raise FrameError(
                    f"content body is {pending.received} bytes, header announced {pending.size}"
                )
            del self._pending[channel]
            parts = pending.parts
            if parts:
                parts.append(payload)
                body = b"".join(parts)
            else:
                body = payload
            return self._make(channel, pending.method, pending.header, body)
        pending.parts.append(payload)
        return None

    def in_progress(self) -> int:
        """Body bytes received for messages not complete yet (every channel)."""
        return sum(p.received for p in self._pending.values())

    def discard(self, channel: int) -> None:
        """Forget a half-received message (its channel closed)."""
        self._pending.pop(channel, None)

    def clear(self) -> None:
        """Forget every half-received message (the connection closed)."""
        self._pending.clear()
