"""Direct reply-to (amq.rabbitmq.reply-to), RabbitMQ's RPC shortcut without a reply queue.

A requester consumes (no-ack) from the pseudo-queue `REPLY_TO` and publishes its requests
with `reply_to=REPLY_TO`; the broker rewrites that property to a name under `REPLY_TO_PREFIX`
that belongs to the requesting channel, and a reply published to that name on the default
exchange goes straight to the channel's reply consumer: no queue, no store, no ack.

`DirectReplyTo` is the broker's registry of those names (one per broker, in its services).
Its interface to the channel is narrow: the channel asks it at queue.declare, basic.consume,
basic.publish (to rewrite reply-to, and to route a reply) and when the reply consumer goes;
the channel itself only keeps the consumer and the name it was given.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from minimq.broker.queue import Consumer
from minimq.codec.errors import NotAllowed, NotFound, PreconditionFailed

if TYPE_CHECKING:
    from minimq.broker.channel import Channel
    from minimq.broker.message import Message

REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_TO_PREFIX = REPLY_TO + "."


class DirectReplyTo:
    """Reply names -> the channels whose reply consumer they address."""

    __slots__ = ("_channels",)

    def __init__(self) -> None:
        self._channels: dict[str, "Channel"] = {}

    @staticmethod
    def names_pseudo_queue(queue: str, passive: bool) -> bool:
        """Whether a queue.declare is about direct reply-to (then `declare` answers it):
        the pseudo-queue itself, or a passive check of one of its reply names."""
        return queue == REPLY_TO or (passive and queue.startswith(REPLY_TO_PREFIX))

    def declare(self, queue: str, vhost_name: str) -> None:
        """queue.declare of a reply name: it exists while its reply consumer does (404 else)."""
        if queue != REPLY_TO and queue not in self._channels:
            raise NotFound(f"no queue '{queue}' in vhost '{vhost_name}'")

    def consume(self, ch: "Channel", tag: str, no_ack: bool, new_name: str) -> Consumer:
        """basic.consume from REPLY_TO: a no-ack pseudo-consumer on `ch`, replies addressed
        to `new_name` reach it. The channel registers the returned consumer under `tag`."""
        if not no_ack:
            raise PreconditionFailed("reply consumer cannot acknowledge")
        if ch.reply_consumer is not None:
            raise PreconditionFailed("reply consumer already set")
        if tag in ch.consumers:
            raise NotAllowed(f"attempt to reuse consumer tag '{tag}'")
        consumer = Consumer(tag, ch, None, True, False, 0, {})  # type: ignore[arg-type]
        ch.reply_consumer = consumer
        ch.reply_name = new_name
        self._channels[new_name] = ch
        return consumer

    @staticmethod
    def address(ch: "Channel") -> str:
        """What a request's reply-to=REPLY_TO becomes: the channel's reply name (406 when
        the channel has no reply consumer, as RabbitMQ's "fast reply consumer")."""
        if ch.reply_consumer is None or ch.reply_name is None:
            raise PreconditionFailed("fast reply consumer does not exist")
        return ch.reply_name

    def deliver(self, routing_key: str, msg: "Message") -> bool:
        """A publish to the default exchange with a reply name as its routing key: hand it
        to that reply consumer; False when nobody holds that name any more (unroutable)."""
        target = self._channels.get(routing_key)
        if target is None or target.reply_consumer is None:
            return False
        target.deliver(target.reply_consumer, msg)
        return True

    def forget(self, ch: "Channel") -> None:
        """The channel's reply consumer is cancelled, or the channel closed."""
        if ch.reply_name is not None:
            self._channels.pop(ch.reply_name, None)
        ch.reply_consumer = None
        ch.reply_name = None

    def __len__(self) -> int:
        return len(self._channels)
