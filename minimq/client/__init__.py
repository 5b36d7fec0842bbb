"""minimq.client: AMQP 0-9-1 clients in the standard library, for minimq and RabbitMQ alike.

Asyncio::

    import minimq.client

    async with minimq.client.connect("amqp://guest:guest@127.0.0.1:5672/") as connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue("tasks", durable=True)
        await channel.publish(minimq.client.Message(b"hello", persistent=True), "tasks")
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    print(message.body)
                break

Blocking (scripts, web request handlers)::

    with minimq.client.sync.connect("amqp://guest:guest@127.0.0.1:5672/") as connection:
        channel = connection.channel()
        channel.publish(b"hello", "tasks")

See `connect`, `Connection`, `Channel`, `Queue`, `Exchange`, `Message`, `IncomingMessage`,
`RPC`, `RPCServer` and `minimq.client.sync`. Errors are in `minimq.client.errors`.
"""
from __future__ import annotations

from . import errors
from .channel import Channel, Consumer, Exchange, ExchangeType, Queue, QueueIterator, Transaction
from .connection import Connection, connect, connect_robust
from .errors import (
    AccessRefused,
    AMQPError,
    AuthenticationError,
    ChannelClosed,
    ClientError,
    ConnectionClosed,
    ConnectionForced,
    ConnectionLost,
    MessageNacked,
    MessageReturned,
    NotAllowed,
    NotFound,
    PreconditionFailed,
    PublishError,
    ResourceLocked,
)
from .message import DeliveryMode, IncomingMessage, Message, ReturnedMessage
from .rpc import RPC, RPCError, RPCServer
from .url import ConnectionParameters, parse_url

from . import sync  # noqa: E402  (the blocking client; imports only the standard library)

__all__ = [
    "connect",
    "connect_robust",
    "Connection",
    "Channel",
    "Consumer",
    "Exchange",
    "ExchangeType",
    "Queue",
    "QueueIterator",
    "Transaction",
    "Message",
    "IncomingMessage",
    "ReturnedMessage",
    "DeliveryMode",
    "RPC",
    "RPCServer",
    "RPCError",
    "ConnectionParameters",
    "parse_url",
    "errors",
    "sync",
    "ClientError",
    "AMQPError",
    "ChannelClosed",
    "ConnectionClosed",
    "ConnectionLost",
    "ConnectionForced",
    "AuthenticationError",
    "AccessRefused",
    "NotFound",
    "NotAllowed",
    "PreconditionFailed",
    "ResourceLocked",
    "PublishError",
    "MessageReturned",
    "MessageNacked",
]
