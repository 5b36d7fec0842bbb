"""Exceptions raised by `minimq.client` and `minimq.client.sync`.

Everything derives from `ClientError`. Errors the broker reports carry its reply code and text
(`code`, `reply_text`) and say by their family what state they left behind:

* `ChannelClosed` and its subclasses (`NotFound`, `AccessRefused`, `ResourceLocked`,
  `PreconditionFailed`, ...): the broker closed **the channel**; the connection is still usable,
  open a new channel.
* `ConnectionClosed` and its subclasses (`ConnectionForced`, `NotAllowed`, `CommandInvalid`,
  `AuthenticationError`, `ConnectionLost`, ...): **the connection** is closed, and every channel
  on it; reconnect (or use ``robust=True``).

Publishing with confirms adds `MessageReturned` (mandatory message had no route) and
`MessageNacked` (the broker refused responsibility for the message); neither closes anything.
"""
from __future__ import annotations

from typing import Any

from minimq.codec import constants

__all__ = [
    "ClientError",
    "AMQPError",
    "ChannelClosed",
    "ContentTooLarge",
    "NoRoute",
    "NoConsumers",
    "AccessRefused",
    "NotFound",
    "ResourceLocked",
    "PreconditionFailed",
    "ResourceError",
    "ConnectionClosed",
    "ConnectionForced",
    "InvalidPath",
    "FrameError",
    "AMQPSyntaxError",
    "CommandInvalid",
    "ChannelError",
    "UnexpectedFrame",
    "NotAllowed",
    "AMQPNotImplemented",
    "InternalError",
    "AuthenticationError",
    "ConnectionLost",
    "PublishError",
    "MessageReturned",
    "MessageNacked",
    "channel_error",
    "connection_error",
]


class ClientError(Exception):
    """Base class of every exception this client raises."""


class AMQPError(ClientError):
    """An error with an AMQP reply code.

    Attributes: ``code`` (e.g. 404), ``name`` (e.g. ``"NOT_FOUND"``), ``reply_text`` (the
    broker's text, e.g. ``"NOT_FOUND - no queue 'q' in vhost '/'"``), and ``class_id`` /
    ``method_id`` of the method that failed (0 if none).
    """

    code: int = 0
    name: str = "ERROR"

    def __init__(self, reply_text: str = "", class_id: int = 0, method_id: int = 0,
                 code: int | None = None) -> None:
        if code is not None:
            self.code = code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id
        super().__init__(self.code, reply_text)

    def __str__(self) -> str:
        return f"({self.code}) {self.reply_text}" if self.reply_text else f"({self.code})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.reply_text!r})"


class ChannelClosed(AMQPError):
    """The channel is closed (by the broker with this code, or by the client); the connection
    itself is still open. Open a new channel to carry on."""

    name = "CHANNEL_CLOSED"


class ConnectionClosed(AMQPError):
    """The connection is closed, and with it every channel it carried."""

    name = "CONNECTION_CLOSED"


class ContentTooLarge(ChannelClosed):
    """CONTENT_TOO_LARGE: the message is larger than the broker accepts."""

    code = constants.CONTENT_TOO_LARGE
    name = "CONTENT_TOO_LARGE"


class NoRoute(ChannelClosed):
    """NO_ROUTE: a mandatory message could not be routed."""

    code = constants.NO_ROUTE
    name = "NO_ROUTE"


class NoConsumers(ChannelClosed):
    """NO_CONSUMERS: an immediate message had no consumer."""

    code = constants.NO_CONSUMERS
    name = "NO_CONSUMERS"


class AccessRefused(ChannelClosed):
    """ACCESS_REFUSED: the operation is not permitted (e.g. a reserved ``amq.`` name)."""

    code = constants.ACCESS_REFUSED
    name = "ACCESS_REFUSED"


class NotFound(ChannelClosed):
    """NOT_FOUND: no such exchange or queue."""

    code = constants.NOT_FOUND
    name = "NOT_FOUND"


class ResourceLocked(ChannelClosed):
    """RESOURCE_LOCKED: the queue is exclusive to another connection."""

    code = constants.RESOURCE_LOCKED
    name = "RESOURCE_LOCKED"


class PreconditionFailed(ChannelClosed):
    """PRECONDITION_FAILED: e.g. redeclared differently, unknown delivery tag, in use."""

    code = constants.PRECONDITION_FAILED
    name = "PRECONDITION_FAILED"


class ResourceError(ChannelClosed):
    """RESOURCE_ERROR: the broker lacks the resources for this request."""

    code = constants.RESOURCE_ERROR
    name = "RESOURCE_ERROR"


class ConnectionForced(ConnectionClosed):
    """CONNECTION_FORCED: an operator or shutdown closed the connection."""

    code = constants.CONNECTION_FORCED
    name = "CONNECTION_FORCED"


class InvalidPath(ConnectionClosed):
    """INVALID_PATH: unknown virtual host path."""

    code = constants.INVALID_PATH
    name = "INVALID_PATH"


class FrameError(ConnectionClosed):
    """FRAME_ERROR: a malformed frame."""

    code = constants.FRAME_ERROR
    name = "FRAME_ERROR"


class AMQPSyntaxError(ConnectionClosed):
    """SYNTAX_ERROR: a field had an illegal value."""

    code = constants.SYNTAX_ERROR
    name = "SYNTAX_ERROR"


class CommandInvalid(ConnectionClosed):
    """COMMAND_INVALID: a method was not valid in this state."""

    code = constants.COMMAND_INVALID
    name = "COMMAND_INVALID"


class ChannelError(ConnectionClosed):
    """CHANNEL_ERROR: a frame named a channel that is not open."""

    code = constants.CHANNEL_ERROR
    name = "CHANNEL_ERROR"


class UnexpectedFrame(ConnectionClosed):
    """UNEXPECTED_FRAME: a frame arrived out of order."""

    code = constants.UNEXPECTED_FRAME
    name = "UNEXPECTED_FRAME"


class NotAllowed(ConnectionClosed):
    """NOT_ALLOWED: e.g. the virtual host does not exist or is not allowed."""

    code = constants.NOT_ALLOWED
    name = "NOT_ALLOWED"


class AMQPNotImplemented(ConnectionClosed):
    """NOT_IMPLEMENTED: the broker does not implement this."""

    code = constants.NOT_IMPLEMENTED
    name = "NOT_IMPLEMENTED"


class InternalError(ConnectionClosed):
    """INTERNAL_ERROR: the broker failed internally."""

    code = constants.INTERNAL_ERROR
    name = "INTERNAL_ERROR"


class AuthenticationError(ConnectionClosed):
    """ACCESS_REFUSED at login: wrong user name or password (code 403)."""

    code = constants.ACCESS_REFUSED
    name = "ACCESS_REFUSED"


class ConnectionLost(ConnectionClosed):
    """The socket failed or closed without a connection.close (code 0): network error, broker
    crash, missed heartbeats, or a failure to connect at all."""

    code = 0
    name = "CONNECTION_LOST"


_CHANNEL_CODES: dict[int, type[AMQPError]] = {
    cls.code: cls
    for cls in (ContentTooLarge, NoRoute, NoConsumers, AccessRefused, NotFound, ResourceLocked,
                PreconditionFailed, ResourceError)
}
_CONNECTION_CODES: dict[int, type[AMQPError]] = {
    cls.code: cls
    for cls in (ConnectionForced, InvalidPath, FrameError, AMQPSyntaxError, CommandInvalid,
                ChannelError, UnexpectedFrame, NotAllowed, AMQPNotImplemented, InternalError)
}


def channel_error(code: int, text: str, class_id: int = 0, method_id: int = 0) -> ChannelClosed:
    """The exception for a channel.close with this reply code."""
    cls = _CHANNEL_CODES.get(code)
    if cls is None:
        return ChannelClosed(text, class_id, method_id, code=code)
    return cls(text, class_id, method_id)


def connection_error(code: int, text: str, class_id: int = 0,
                     method_id: int = 0) -> ConnectionClosed:
    """The exception for a connection.close with this reply code."""
    cls = _CONNECTION_CODES.get(code)
    if cls is None:
        return ConnectionClosed(text, class_id, method_id, code=code)
    return cls(text, class_id, method_id)


class PublishError(ClientError):
    """A confirmed publish was not accepted; ``message`` is what was published."""

    def __init__(self, message: Any, text: str) -> None:
        super().__init__(text)
        self.message = message


class MessageReturned(PublishError):
    """A mandatory message was returned by the broker (``code``: 312 NO_ROUTE usually)."""

    def __init__(self, message: Any, code: int, reply_text: str, exchange: str,
                 routing_key: str) -> None:
        super().__init__(message, f"({code}) {reply_text}")
        self.code = code
        self.reply_text = reply_text
        self.exchange = exchange
        self.routing_key = routing_key


class MessageNacked(PublishError):
    """The broker answered a confirmed publish with basic.nack."""
