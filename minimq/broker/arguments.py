"""Queue arguments (x-message-ttl, x-max-length, ...): parsing and validation.

Reply texts follow RabbitMQ's (checked against RabbitMQ 3.10), since users search for them:
e.g. "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}".
"""
from __future__ import annotations

from typing import Any

from minimq.broker.exchange_types import erlang_type_name
from minimq.codec.errors import PreconditionFailed

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum", "stream")
QUEUE_MODES = ("default", "lazy")
MAX_PRIORITY = 255


def type_name(value: Any) -> str:
    """RabbitMQ's name for a field value's type (signedint, longstr, ...)."""
    return erlang_type_name(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "surrogateescape")
    return None


class QueueArgs:
    """The queue arguments minimq acts on, parsed once at declare time."""

    __slots__ = (
        "message_ttl",
        "expires",
        "dlx",
        "dlrk",
        "max_length",
        "max_length_bytes",
        "overflow",
        "max_priority",
        "single_active",
        "queue_type",
        "delivery_limit",
    )

    def __init__(self) -> None:
        self.message_ttl: int | None = None  # ms
        self.expires: int | None = None  # ms
        self.dlx: str | None = None
        self.dlrk: str | None = None
        self.max_length: int | None = None
        self.max_length_bytes: int | None = None
        self.overflow = "drop-head"
        self.max_priority: int | None = None
        self.single_active = False
        self.queue_type = "classic"
        self.delivery_limit: int | None = None

    @property
    def special(self) -> bool:
        """Whether the queue needs the feature-aware (slower) paths."""
        return (
            self.queue_type == "quorum"
            or self.message_ttl is not None
            or self.max_length is not None
            or self.max_length_bytes is not None
            or self.max_priority is not None
            or self.single_active
            or self.delivery_limit is not None
        )


# Arguments each replicated queue type refuses, in the order RabbitMQ 3.10 names them.
_INVALID_FOR_TYPE = {
    "quorum": ("x-queue-mode", "x-max-priority"),
    "stream": ("x-queue-mode", "x-max-priority", "x-message-ttl"),
}


def check_queue_type_declare(arguments: dict | None, queue: str, vhost: str, *, durable: bool,
                             exclusive: bool, auto_delete: bool, server_named: bool) -> None:
    """Refuse what RabbitMQ 3.10 refuses for a new quorum or stream queue (406), first match
    first: a server-named one, an argument its type has no use for, then auto-delete,
    exclusive and non-durable. minimq serves these types as classic queues, but a declare
    RabbitMQ would refuse must not succeed here (seen on the wire with the Go client)."""
    qtype = _text((arguments or {}).get("x-queue-type"))
    if qtype not in _INVALID_FOR_TYPE:
        return
    if server_named:
        raise PreconditionFailed(f"Cannot declare a server-named queue for type rabbit_{qtype}_queue")
    where = f"for queue '{queue}' in vhost '{vhost}'"
    for key in _INVALID_FOR_TYPE[qtype]:
        if key in arguments:
            raise PreconditionFailed(f"invalid arg '{key}' {where} of queue type rabbit_{qtype}_queue")
    for bad, prop in ((auto_delete, "auto-delete"), (exclusive, "exclusive-owner"), (not durable, "non-durable")):
        if bad:
            raise PreconditionFailed(f"invalid property '{prop}' {where}")


def parse_queue_args(arguments: dict | None, queue: str, vhost: str) -> QueueArgs:
    """Validate and parse queue arguments; raise 406 PRECONDITION_FAILED like RabbitMQ."""
    qa = QueueArgs()
    if not arguments:
        return qa
    where = f"for queue '{queue}' in vhost '{vhost}'"

    def invalid(arg: str, detail: str) -> PreconditionFailed:
        return PreconditionFailed(f"invalid arg '{arg}' {where}: {detail}")

    def integer(arg: str, *, zero_ok: bool = True, most: int | None = None) -> int | None:
        if arg not in arguments:
            return None
        value = arguments[arg]
        if not _is_int(value):
            raise invalid(arg, f'"expected integer, got {type_name(value)}"')
        if value < 0:
            raise invalid(arg, f"{{value_negative,{value}}}")
        if value == 0 and not zero_ok:
            raise invalid(arg, f"{{value_zero,{value}}}")
        if most is not None and value > most:
            raise invalid(arg, f"{{value_too_large,{value}}}")
        return int(value)

    qa.message_ttl = integer("x-message-ttl", most=MAX_EXPIRATION)
    qa.expires = integer("x-expires", zero_ok=False, most=MAX_EXPIRATION)
    qa.max_length = integer("x-max-length")
    qa.max_length_bytes = integer("x-max-length-bytes")
    prio = integer("x-max-priority")
    if prio is not None:
        if prio > MAX_PRIORITY:
            raise invalid("x-max-priority", f"{{max_value_exceeded,{prio}}}")
        qa.max_priority = prio

    if "x-overflow" in arguments:
        value = arguments["x-overflow"]
        text = _text(value)
        if text is None:
            raise invalid("x-overflow", f"{{unacceptable_type,{type_name(value)}}}")
        if text not in OVERFLOW_MODES:
            raise invalid("x-overflow", "invalid_overflow")
        qa.overflow = text

    if "x-dead-letter-exchange" in arguments:
        value = arguments["x-dead-letter-exchange"]
        text = _text(value)
        if text is None:
            raise PreconditionFailed(
                f"invalid type '{type_name(value)}' for arg 'x-dead-letter-exchange' in queue "
                f"'{queue}' in vhost '{vhost}'"
            )
        qa.dlx = text
    if "x-dead-letter-routing-key" in arguments:
        value = arguments["x-dead-letter-routing-key"]
        text = _text(value)
        if text is None:
            raise invalid("x-dead-letter-routing-key", f"{{unacceptable_type,{type_name(value)}}}")
        if qa.dlx is None:
            raise invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
        qa.dlrk = text

    if "x-single-active-consumer" in arguments:
        value = arguments["x-single-active-consumer"]
        if not isinstance(value, bool):
            raise invalid("x-single-active-consumer", f"{{unacceptable_type,{type_name(value)}}}")
        qa.single_active = value

    if "x-queue-type" in arguments:
        text = _text(arguments["x-queue-type"])
        if text not in QUEUE_TYPES:
            raise invalid("x-queue-type", f"\"unsupported queue type '{text}'\"")
        qa.queue_type = text
    if "x-queue-mode" in arguments:
        text = _text(arguments["x-queue-mode"])
        if text not in QUEUE_MODES:
            raise invalid("x-queue-mode", f"\"unsupported queue mode '{text}'\"")

    if "x-delivery-limit" in arguments:
        if qa.queue_type != "quorum":
            raise PreconditionFailed(
                f"invalid arg 'x-delivery-limit' {where} of queue type rabbit_classic_queue"
            )
        qa.delivery_limit = integer("x-delivery-limit")
    return qa


#: The longest TTL, expiry or per-message expiration RabbitMQ 3.10 accepts: ten years of ms.
MAX_EXPIRATION = 315_360_000_000


def parse_expiration(value: Any) -> int:
    """A message's `expiration` property (a string of milliseconds) -> ms, or 406.

    Parsed as RabbitMQ does (Erlang's string:to_integer): an optional sign and digits at the
    very start; anything left over is an error.
    """
    text = _text(value)
    if text is None:
        raise PreconditionFailed(f"invalid expiration '{value}': no_integer")
    i = 0
    if text[:1] in ("+", "-"):
        i = 1
    j = i
    while j < len(text) and "0" <= text[j] <= "9":
        j += 1
    if j == i:
        raise PreconditionFailed(f"invalid expiration '{text}': no_integer")
    ms = int(text[:j])
    if j < len(text):
        raise _bad_expiration(text, "leftover_string", f'"{text[j:]}"')
    if ms < 0:
        raise _bad_expiration(text, "value_negative", str(ms))
    if ms > MAX_EXPIRATION:
        raise _bad_expiration(text, "value_too_large", str(ms))
    return ms


def _bad_expiration(text: str, reason: str, value: str) -> PreconditionFailed:
    """RabbitMQ formats this one with Erlang's ~p: a {Reason,Value} tuple that would reach
    column 79 is broken after its first element, the value aligned under it."""
    prefix = f"invalid expiration '{text}': "
    term = f"{{{reason},{value}}}"
    if len(prefix) + len(term) > 78:
        term = f"{{{reason},\n{' ' * (len(prefix) + 1)}{value}}}"
    return PreconditionFailed(prefix + term)


def describe_arg(value: Any) -> str:
    """How RabbitMQ shows an argument value in an 'inequivalent arg' error."""
    if value is None:
        return "none"
    return f"the value '{_plain(value)}' of type '{type_name(value)}'"


def _plain(value: Any) -> str:
    text = _text(value)
    if text is not None:
        return text
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def inequivalent(arg: str, what: str, new: Any, old: Any) -> PreconditionFailed:
    if new is not None and old is not None:
        return PreconditionFailed(
            f"inequivalent arg '{arg}' {what}: received '{_plain(new)}' but current is '{_plain(old)}'"
        )
    return PreconditionFailed(
        f"inequivalent arg '{arg}' {what}: received {describe_arg(new)} but current is {describe_arg(old)}"
    )
