"""Request/reply (RPC) over AMQP, for the asyncio client.

Client side::

    rpc = await RPC.create(channel)                  # replies via amq.rabbitmq.reply-to
    reply = await rpc.call("rpc.add", b"1 2", timeout=5)

Server side::

    async def add(request: IncomingMessage) -> bytes:
        a, b = request.body.split()
        return str(int(a) + int(b)).encode()

    server = await RPCServer.create(channel, "rpc.add", add)

By default replies travel over RabbitMQ's *direct reply-to* pseudo-queue
(``amq.rabbitmq.reply-to``): no reply queue is declared. ``RPC.create(channel,
direct_reply_to=False)`` uses an exclusive, server-named reply queue instead (works with any
broker). Requests carry ``correlation_id`` and ``reply_to``; a call's timeout is also set as the
request's ``expiration`` so a request nobody answers in time expires in the queue. A handler
exception is sent back (header ``x-rpc-error``) and raised by `RPC.call` as `RPCError`.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Awaitable, Callable, Union

from .channel import Channel, Queue
from .errors import ChannelClosed, ClientError, MessageReturned
from .message import IncomingMessage, Message, ReturnedMessage

__all__ = ["RPC", "RPCServer", "RPCError", "DIRECT_REPLY_TO", "ERROR_HEADER"]

log = logging.getLogger("minimq.client.rpc")

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
ERROR_HEADER = "x-rpc-error"

Reply = Union[Message, bytes, str, None]
Handler = Callable[[IncomingMessage], Awaitable[Reply]]


class RPCError(ClientError):
    """The remote handler raised; ``remote`` is its ``"ExceptionType: text"``."""

    def __init__(self, remote: str, reply: IncomingMessage | None = None) -> None:
        super().__init__(remote)
        self.remote = remote
        self.reply = reply


class RPC:
    """The calling side of RPC; create with `RPC.create` (one per channel)."""

    def __init__(self, channel: Channel, *, direct_reply_to: bool = True) -> None:
        self.channel = channel
        self.direct_reply_to = direct_reply_to
        #: The ``reply_to`` value put on requests.
        self.reply_to: str = ""
        self._pending: dict[str, asyncio.Future[IncomingMessage]] = {}
        self._consumer_tag: str | None = None
        self._queue: Queue | None = None

    @classmethod
    async def create(cls, channel: Channel, *, direct_reply_to: bool = True) -> RPC:
        """Start consuming replies and return the ready `RPC`."""
        rpc = cls(channel, direct_reply_to=direct_reply_to)
        await rpc.start()
        return rpc

    async def start(self) -> None:
        """Subscribe to replies (done by `create`)."""
        if self.direct_reply_to:
            self.reply_to = DIRECT_REPLY_TO
            self._consumer_tag = await self.channel.consume(DIRECT_REPLY_TO, self._on_reply,
                                                            no_ack=True)
        else:
            self._queue = await self.channel.declare_queue("", exclusive=True, auto_delete=True)
            self.reply_to = self._queue.name
            self._consumer_tag = await self._queue.consume(self._on_reply, no_ack=True)
        self.channel.add_on_return_callback(self._on_return)

    async def call(self, routing_key: str, body: Message | bytes | str = b"", *,
                   exchange: str = "", timeout: float | None = None,
                   headers: dict[str, Any] | None = None,
                   content_type: str | None = None) -> IncomingMessage:
        """Send a request and wait for its reply (an `IncomingMessage`).

        Raises `TimeoutError` after ``timeout`` seconds, `MessageReturned` when nothing is
        bound to ``routing_key`` (requests are mandatory), `RPCError` when the server's
        handler raised.
        """
        if self._consumer_tag is None:
            raise ClientError("RPC is not started (use RPC.create)")
        correlation_id = uuid.uuid4().hex
        if isinstance(body, Message):
            message = Message(body.body, properties=body.properties)
            props = message.properties
        else:
            message = Message(body, headers=headers, content_type=content_type)
            props = message.properties
        props.correlation_id = correlation_id
        props.reply_to = self.reply_to
        if timeout is not None and props.expiration is None:
            props.expiration = str(max(1, int(timeout * 1000)))
        future: asyncio.Future[IncomingMessage] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            await self.channel.publish(message, routing_key, exchange, mandatory=True,
                                       timeout=timeout)
            if timeout is None:
                return await future
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(correlation_id, None)

    def _on_reply(self, message: IncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None or future.done():
            log.debug("reply for unknown or expired call %s dropped", message.correlation_id)
            return
        error = message.properties.headers.get(ERROR_HEADER) if message.properties.headers \
            else None
        if error is not None:
            text = error.decode() if isinstance(error, bytes) else str(error)
            future.set_exception(RPCError(text, message))
        else:
            future.set_result(message)

    def _on_return(self, returned: ReturnedMessage) -> None:
        future = self._pending.pop(returned.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_exception(MessageReturned(returned, returned.reply_code,
                                                 returned.reply_text, returned.exchange,
                                                 returned.routing_key))

    async def close(self) -> None:
        """Stop consuming replies; pending calls fail with `ChannelClosed`."""
        tag, self._consumer_tag = self._consumer_tag, None
        if tag is not None and not self.channel.is_closed:
            await self.channel.cancel(tag)
        try:
            self.channel.remove_on_return_callback(self._on_return)
        except ValueError:
            pass
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ChannelClosed("RPC closed", code=0))
        self._pending.clear()


class RPCServer:
    """The serving side of RPC: consumes a queue, answers each request with the handler's
    return value (bytes, str or a `Message`; None sends an empty reply) and acks it."""

    def __init__(self, channel: Channel, queue: str, handler: Handler) -> None:
        self.channel = channel
        self.queue = queue
        self.handler = handler
        self.consumer_tag: str | None = None

    @classmethod
    async def create(cls, channel: Channel, queue: str, handler: Handler, *,
                     declare: bool = True, concurrency: int = 1,
                     **queue_options: Any) -> RPCServer:
        """Declare ``queue`` (unless ``declare=False``) and start serving it."""
        server = cls(channel, queue, handler)
        if declare:
            await channel.declare_queue(queue, **queue_options)
        server.consumer_tag = await channel.consume(queue, server._on_request,
                                                    concurrency=concurrency)
        return server

    async def _on_request(self, request: IncomingMessage) -> None:
        reply_to = request.reply_to
        try:
            result = await self.handler(request)
        except Exception as exc:  # sent back to the caller
            log.info("RPC handler for %s raised %r", self.queue, exc)
            reply = Message(b"", headers={ERROR_HEADER: f"{type(exc).__name__}: {exc}"})
        else:
            if isinstance(result, Message):
                reply = result
            else:
                reply = Message(result if result is not None else b"")
        if reply_to:
            reply.properties.correlation_id = request.correlation_id
            try:
                await self.channel.publish(reply, reply_to)
            except ClientError as exc:
                log.warning("could not send RPC reply to %s: %s", reply_to, exc)
        if not request.settled and not self.channel.is_closed:
            await request.ack()

    async def close(self) -> None:
        """Stop serving."""
        tag, self.consumer_tag = self.consumer_tag, None
        if tag is not None and not self.channel.is_closed:
            await self.channel.cancel(tag)
