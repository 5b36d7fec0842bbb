"""AMQP reply-code exceptions.

Every failure the broker reports to a peer is an ``AMQPError`` subclass, so the
protocol layer can turn any exception into the right ``channel.close`` (soft,
``HARD = False``) or ``connection.close`` (hard, ``HARD = True``) with a single
``except AMQPError``. The codec's own failures are ``CodecError`` (a
``FrameError``), because the spec says a peer that cannot parse a frame must
treat it as a connection-level frame error.
"""

from __future__ import annotations

from . import constants

__all__ = [
    "AMQPError",
    "ContentTooLarge",
    "NoRoute",
    "NoConsumers",
    "ConnectionForced",
    "InvalidPath",
    "AccessRefused",
    "NotFound",
    "ResourceLocked",
    "PreconditionFailed",
    "FrameError",
    "AMQPSyntaxError",
    "CommandInvalid",
    "ChannelError",
    "UnexpectedFrame",
    "ResourceError",
    "NotAllowed",
    "AMQPNotImplemented",
    "InternalError",
    "CodecError",
    "UnknownMethod",
    "ERRORS_BY_CODE",
    "error_for_code",
]


def _truncate_utf8(text: str, limit: int = 255) -> str:
    # reply-text is a shortstr: going over 255 bytes would make the close
    # method itself unencodable, turning one error into two.
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) <= limit:
        return text
    # As RabbitMQ: cut to fit and mark the cut with "...".
    return raw[: limit - 3].decode("utf-8", "ignore") + "..."


class AMQPError(Exception):
    """Base of all reply-code errors.

    ``code``, ``NAME`` and ``HARD`` are class attributes so that raising sites
    only supply the human text; the wire identity comes from the type.
    The base class itself behaves as an INTERNAL_ERROR, the safest default for
    an error that was not classified more precisely.
    """

    code: int = constants.INTERNAL_ERROR
    NAME: str = "INTERNAL_ERROR"
    HARD: bool = True

    def __init__(self, text: str = "", class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(text, class_id, method_id)
        self.text: str = text
        self.class_id: int = class_id
        self.method_id: int = method_id

    @property
    def reply_text(self) -> str:
        """RabbitMQ-style ``"NAME - text"``, capped to fit a shortstr."""
        if self.text:
            return _truncate_utf8(f"{self.NAME} - {self.text}")
        return self.NAME

    def __str__(self) -> str:
        return self.reply_text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.text!r}, class_id={self.class_id}, "
            f"method_id={self.method_id})"
        )


class ContentTooLarge(AMQPError):
    code = constants.CONTENT_TOO_LARGE
    NAME = "CONTENT_TOO_LARGE"
    HARD = False


class NoRoute(AMQPError):
    code = constants.NO_ROUTE
    NAME = "NO_ROUTE"
    HARD = False


class NoConsumers(AMQPError):
    code = constants.NO_CONSUMERS
    NAME = "NO_CONSUMERS"
    HARD = False


class ConnectionForced(AMQPError):
    code = constants.CONNECTION_FORCED
    NAME = "CONNECTION_FORCED"
    HARD = True


class InvalidPath(AMQPError):
    code = constants.INVALID_PATH
    NAME = "INVALID_PATH"
    HARD = True


class AccessRefused(AMQPError):
    code = constants.ACCESS_REFUSED
    NAME = "ACCESS_REFUSED"
    HARD = False


class NotFound(AMQPError):
    code = constants.NOT_FOUND
    NAME = "NOT_FOUND"
    HARD = False


class ResourceLocked(AMQPError):
    code = constants.RESOURCE_LOCKED
    NAME = "RESOURCE_LOCKED"
    HARD = False


class PreconditionFailed(AMQPError):
    code = constants.PRECONDITION_FAILED
    NAME = "PRECONDITION_FAILED"
    HARD = False


class FrameError(AMQPError):
    code = constants.FRAME_ERROR
    NAME = "FRAME_ERROR"
    HARD = True


class AMQPSyntaxError(AMQPError):
    code = constants.SYNTAX_ERROR
    NAME = "SYNTAX_ERROR"
    HARD = True


class CommandInvalid(AMQPError):
    code = constants.COMMAND_INVALID
    NAME = "COMMAND_INVALID"
    HARD = True


class ChannelError(AMQPError):
    code = constants.CHANNEL_ERROR
    NAME = "CHANNEL_ERROR"
    HARD = True


class UnexpectedFrame(AMQPError):
    code = constants.UNEXPECTED_FRAME
    NAME = "UNEXPECTED_FRAME"
    HARD = True


class ResourceError(AMQPError):
    # Deliberately soft, unlike the 0-9-1 XML and RabbitMQ's generated framing
    # (both class 506 as a hard error; RabbitMQ itself raises it only from
    # plug-ins). minimq raises it for one thing only: a durable declaration or
    # binding the disk refused to record (store.py). Closing just that channel
    # keeps the connection's consumers draining queues while the disk is failing.
    code = constants.RESOURCE_ERROR
    NAME = "RESOURCE_ERROR"
    HARD = False


class NotAllowed(AMQPError):
    code = constants.NOT_ALLOWED
    NAME = "NOT_ALLOWED"
    HARD = True


class AMQPNotImplemented(AMQPError):
    code = constants.NOT_IMPLEMENTED
    NAME = "NOT_IMPLEMENTED"
    HARD = True


class InternalError(AMQPError):
    code = constants.INTERNAL_ERROR
    NAME = "INTERNAL_ERROR"
    HARD = True


class CodecError(FrameError):
    """Anything the codec cannot parse or encode.

    Decoders promise to raise only this (never IndexError, struct.error, ...),
    so the connection loop can map every malformed input to FRAME_ERROR.
    """


class UnknownMethod(CodecError):
    """A well-formed frame naming a class/method we do not know.

    RabbitMQ answers this with 503 COMMAND_INVALID rather than 501, so the code
    is overridden while staying a CodecError for callers that catch broadly.
    """

    code = constants.COMMAND_INVALID
    NAME = "COMMAND_INVALID"
    HARD = True


ERRORS_BY_CODE: dict[int, type[AMQPError]] = {
    cls.code: cls
    for cls in (
        ContentTooLarge,
        NoRoute,
        NoConsumers,
        ConnectionForced,
        InvalidPath,
        AccessRefused,
        NotFound,
        ResourceLocked,
        PreconditionFailed,
        FrameError,
        AMQPSyntaxError,
        CommandInvalid,
        ChannelError,
        UnexpectedFrame,
        ResourceError,
        NotAllowed,
        AMQPNotImplemented,
        InternalError,
    )
}


def error_for_code(
    code: int, text: str = "", class_id: int = 0, method_id: int = 0
) -> AMQPError:
    """Rebuild an exception from a received close method's reply code.

    An unrecognised code still yields an AMQPError (carrying that code on the
    instance) so a peer's odd close never crashes the handler that reports it.
    """
    cls = ERRORS_BY_CODE.get(code)
    if cls is not None:
        return cls(text, class_id, method_id)
    err = AMQPError(text, class_id, method_id)
    err.code = code
    err.NAME = "UNKNOWN_ERROR"
    return err
