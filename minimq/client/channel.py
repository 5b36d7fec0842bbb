"""Channels, exchanges, queues and consumers of the asyncio client.

A `Channel` runs one synchronous AMQP method at a time (declare, bind, qos, get, ...): each
waits for its reply, and a reply is checked against the replies the method allows. Publishing,
acknowledging and deliveries do not wait on that lock.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Union

from minimq.codec import spec
from minimq.protocol import client_channel as core_events

from .base import BaseChannel, BaseQueue
from .errors import (
    ChannelClosed,
    ClientError,
    MessageNacked,
    MessageReturned,
    channel_error,
)
from .message import Body, IncomingMessage, ReturnedMessage, body_and_properties

if TYPE_CHECKING:
    from .connection import Connection

__all__ = [
    "Channel",
    "Exchange",
    "ExchangeType",
    "Queue",
    "QueueIterator",
    "Consumer",
    "Transaction",
]

log = logging.getLogger("minimq.client")

MessageCallback = Callable[[IncomingMessage], Union[Awaitable[Any], Any]]
ReturnCallback = Callable[[ReturnedMessage], Any]


class ExchangeType:
    """Exchange type names."""

    DIRECT = "direct"
    FANOUT = "fanout"
    TOPIC = "topic"
    HEADERS = "headers"


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _Buffer:
    """A FIFO of messages with at most one waiting reader and no future when items are ready."""

    __slots__ = ("_items", "_waiter", "_error", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._items: deque[IncomingMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._loop = loop

    def put(self, item: IncomingMessage) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: BaseException) -> None:
        """Wake the reader with ``error`` once the buffered items are taken."""
        self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, timeout: float | None = None) -> IncomingMessage:
        items = self._items
        while not items:
            if self._error is not None:
                raise self._error
            waiter = self._waiter = self._loop.create_future()
            try:
                if timeout is None:
                    await waiter
                else:
                    await asyncio.wait_for(waiter, timeout)
            finally:
                self._waiter = None
        return items.popleft()


class Consumer:
    """A basic.consume subscription: delivers to a callback or to a `QueueIterator` buffer."""

    __slots__ = ("channel", "queue", "tag", "no_ack", "exclusive", "arguments", "callback",
                 "buffer", "_workers", "concurrency", "cancelled", "on_cancel")

    def __init__(self, channel: Channel, queue: Queue | str, tag: str, no_ack: bool,
                 exclusive: bool, arguments: dict[str, Any] | None,
                 callback: MessageCallback | None, concurrency: int) -> None:
        self.channel = channel
        self.queue = queue
        self.tag = tag
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.arguments = arguments
        self.callback = callback
        self.concurrency = concurrency
        self.buffer: _Buffer | None = None
        self._workers: list[asyncio.Task[None]] = []
        self.cancelled = False
        #: Called (no arguments) when the broker cancels this consumer (queue deleted, ...).
        self.on_cancel: Callable[[], Any] | None = None
        if callback is None or inspect.iscoroutinefunction(callback):
            self.buffer = _Buffer(channel._loop)
        if callback is not None and self.buffer is not None:
            for _ in range(max(1, concurrency)):
                self._workers.append(channel._loop.create_task(self._work()))

    @property
    def queue_name(self) -> str:
        return self.queue.name if isinstance(self.queue, Queue) else self.queue

    def deliver(self, message: IncomingMessage) -> None:
        buffer = self.buffer
        if buffer is not None:
            buffer.put(message)
            return
        try:
            self.callback(message)  # type: ignore[misc]
        except Exception:
            log.exception("consumer %s callback failed", self.tag)

    async def _work(self) -> None:
        buffer = self.buffer
        callback = self.callback
        assert buffer is not None and callback is not None
        while True:
            try:
                message = await buffer.get()
            except (ClientError, _ConsumerEnded, asyncio.CancelledError):
                return
            try:
                await callback(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumer %s callback failed on message %s", self.tag,
                              message.delivery_tag)

    def stop(self, error: BaseException) -> None:
        """No more deliveries: wake readers with ``error`` and end callback workers."""
        self.cancelled = True
        if self.buffer is not None:
            self.buffer.fail(error)
        for task in self._workers:
            if not task.done() and task is not asyncio.current_task():
                task.cancel()


class _ConsumerEnded(StopAsyncIteration):
    """Raised inside a buffer when its consumer is cancelled: the iterator just stops."""


class Channel(BaseChannel):
    """An AMQP channel; get one with ``await connection.channel()``.

    Use it as ``async with await connection.channel() as channel:`` to close it afterwards.
    With ``publisher_confirms=True`` every `publish` waits for the broker's ack and raises
    `MessageNacked` or `MessageReturned` (mandatory messages without a route).
    """

    connection: Connection

    def __init__(self, connection: Connection, number: int,
                 publisher_confirms: bool = False) -> None:
        super().__init__(connection, number, publisher_confirms)
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self._waiter: asyncio.Future[Any] | None = None
        self._close_waiter: asyncio.Future[None] | None = None
        self._closing = False
        self._consumers: dict[str, Consumer] = {}
        self._confirms: dict[int, tuple[asyncio.Future[None], Any]] = {}
        self._pending_consumer: Consumer | None = None
        self._get_no_ack = False

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or, after a reconnect, re-open) the channel with its confirm and tx modes;
        `Connection.channel` does this for you."""
        self._closing = False
        try:
            await self._rpc(None)
            if self.publisher_confirms:
                await self._rpc(spec.ConfirmSelect(False))
            if self._transactional:
                await self._rpc(spec.TxSelect())
        except BaseException:
            self._open = False
            raise

    async def restore(self) -> None:
        """Robust mode, after a reconnect: re-open, then replay qos, declarations, bindings
        and consumers (called by the connection)."""
        await self.open()
        self._restoring = True
        try:
            for key, replay in self.topology.entries():
                try:
                    await replay()
                except ChannelClosed as exc:
                    log.warning("robust channel %s: could not restore %s: %s", self.number,
                                key, exc)
                    self.topology.forget(key)
                    await self.open()
        finally:
            self._restoring = False

    async def close(self, timeout: float = 10.0) -> None:
        """Close the channel: first waits (up to ``timeout``) for outstanding publisher
        confirms, then sends channel.close. Closing a closed channel does nothing."""
        if not self._open or self._closing:
            return
        pending = [fut for fut, _ in self._confirms.values() if not fut.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        if not self._open or self._closing:
            return
        self._closing = True
        waiter = self._close_waiter = self._loop.create_future()
        assert self._core is not None
        self._core.close()
        self.connection.flush_soon()
        try:
            await asyncio.wait_for(waiter, timeout)
        except (ClientError, asyncio.TimeoutError):
            pass
        finally:
            self._mark_closed(ChannelClosed("channel closed by the client", code=200))

    def connection_closed(self, error: ClientError) -> None:
        """The connection is gone (for good, or until a robust reconnect): fail what waits."""
        self._mark_closed(error)

    def _mark_closed(self, exc: ClientError, release: bool = True) -> None:
        """Mark closed and fail everything that waits on this channel. ``release=False``
        keeps the channel in the connection's table (a robust reconnect restores it)."""
        if not self._open and self._close_exc is not None:
            if release and not self._keeps_consumers(exc) and not self._restoring:
                self.connection.forget_channel(self)
            return
        self._open = False
        self._close_exc = exc
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        close_waiter, self._close_waiter = self._close_waiter, None
        if close_waiter is not None and not close_waiter.done():
            close_waiter.set_result(None)
        confirms, self._confirms = self._confirms, {}
        for fut, _ in confirms.values():
            if not fut.done():
                fut.set_exception(exc)
        if not self._keeps_consumers(exc):
            for consumer in list(self._consumers.values()):
                consumer.stop(exc)
            self._consumers.clear()
            if release and not self._restoring:
                self.connection.forget_channel(self)
        self.connection.wake()

    # -- incoming (called by the connection with the core's events) -----------------------

    def deliver(self, event: core_events.Delivered) -> None:
        """A basic.deliver for one of this channel's consumers."""
        method = event.method
        consumer = self._consumers.get(method.consumer_tag)
        if consumer is None:
            log.debug("delivery for unknown consumer %s dropped", method.consumer_tag)
            return
        consumer.deliver(IncomingMessage(
            self, event.body, event.properties, method.delivery_tag, method.redelivered,
            method.exchange, method.routing_key, method.consumer_tag, None, consumer.no_ack))

    def handle_event(self, event: core_events.ChannelEvent) -> None:
        """Any other event of this channel's core."""
        cls = event.__class__
        if cls is core_events.ConfirmsResolved:
            assert isinstance(event, core_events.ConfirmsResolved)
            confirms = self._confirms
            for tag in event.tags:
                entry = confirms.pop(tag, None)
                if entry is not None and not entry[0].done():
                    if event.ack:
                        entry[0].set_result(None)
                    else:
                        entry[0].set_exception(
                            MessageNacked(entry[1], "the broker nacked the message"))
        elif cls is core_events.Reply:
            assert isinstance(event, core_events.Reply)
            self._on_reply(event)
        elif cls is core_events.Returned:
            assert isinstance(event, core_events.Returned)
            self._returned(event)
            tag = event.delivery_tag
            entry = self._confirms.get(tag) if tag is not None else None
            if entry is not None and not entry[0].done():
                m = event.method
                entry[0].set_exception(MessageReturned(entry[1], m.reply_code, m.reply_text,
                                                       m.exchange, m.routing_key))
        elif cls is core_events.ChannelClosedByServer:
            assert isinstance(event, core_events.ChannelClosedByServer)
            self._mark_closed(channel_error(event.reply_code, event.reply_text,
                                            event.class_id, event.method_id))
        elif cls is core_events.ChannelCloseCompleted:
            waiter = self._close_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if not self._open:
                self.connection.forget_channel(self)
        elif cls is core_events.FlowChanged:
            self.connection.wake()
        elif cls is core_events.ConsumerCancelled:
            assert isinstance(event, core_events.ConsumerCancelled)
            consumer = self._consumers.pop(event.consumer_tag, None)
            self.topology.forget(("consumer", event.consumer_tag))
            if consumer is not None:
                log.info("broker cancelled consumer %s", event.consumer_tag)
                consumer.stop(_ConsumerEnded())
                if consumer.on_cancel is not None:
                    consumer.on_cancel()

    def _on_reply(self, event: core_events.Reply) -> None:
        method = event.method
        if method.__class__ is spec.BasicConsumeOk and self._pending_consumer is not None:
            # Deliveries may follow in this same read: register before they are dispatched.
            consumer, self._pending_consumer = self._pending_consumer, None
            consumer.tag = method.consumer_tag
            self._consumers[consumer.tag] = consumer
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if event.body is None:
            waiter.set_result(method)
        else:
            waiter.set_result(IncomingMessage(
                self, event.body, event.properties or b"", method.delivery_tag,
                method.redelivered, method.exchange, method.routing_key, None,
                method.message_count, self._get_no_ack))

    # -- synchronous methods ------------------------------------------------------------

    async def _rpc(self, method: spec.Method | None, timeout: float | None = None,
                   consumer: Consumer | None = None) -> Any:
        """Send ``method`` and wait for one of its valid replies, one call at a time.
        ``None`` opens the channel (channel.open and its reply)."""
        async with self._lock:
            core = self._start_call(method)
            self._pending_consumer = consumer
            waiter = self._waiter = self._loop.create_future()
            self.connection.flush_soon()
            try:
                if timeout is None:
                    return await waiter
                return await asyncio.wait_for(waiter, timeout)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                if self._waiter is waiter and self._open:
                    # The reply may still come and would be taken for the next call's: the
                    # channel's state is unknown, so close it.
                    self._waiter = None
                    core.close(200, "call abandoned")
                    self.connection.flush_soon()
                    self._closing = True
                    name = method.NAME if method is not None else "channel.open"
                    self._mark_closed(ChannelClosed(
                        f"{name} was cancelled or timed out; channel closed", code=0),
                        release=False)
                raise
            finally:
                self._pending_consumer = None

    async def declare_exchange(
        self,
        name: str,
        type: str = ExchangeType.DIRECT,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Exchange:
        """Declare an exchange (``passive=True`` only checks that it exists)."""
        exchange = Exchange(self, name, type, durable=durable, auto_delete=auto_delete,
                            internal=internal, passive=passive, arguments=arguments)
        await exchange.declare(timeout)
        return exchange

    async def get_exchange(self, name: str) -> Exchange:
        """An existing exchange (checked with a passive declare)."""
        return await self.declare_exchange(name, passive=True)

    @property
    def default_exchange(self) -> Exchange:
        """The default (nameless direct) exchange: routing key = queue name."""
        return Exchange(self, "", ExchangeType.DIRECT, passive=True)

    async def declare_queue(
        self,
        name: str = "",
        *,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Queue:
        """Declare a queue; an empty name asks the broker to make one up (see ``queue.name``).

        The returned `Queue` carries ``message_count`` and ``consumer_count`` from the reply.
        """
        queue = Queue(self, name, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
                      passive=passive, arguments=arguments)
        await queue.declare(timeout)
        return queue

    async def get_queue(self, name: str) -> Queue:
        """An existing queue (checked with a passive declare)."""
        return await self.declare_queue(name, passive=True)

    async def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange."""
        await self._rpc(spec.ExchangeDelete(0, name, if_unused, False))
        self.topology.forget(("exchange", name))

    async def delete_queue(self, name: str, *, if_unused: bool = False,
                           if_empty: bool = False) -> int:
        """Delete a queue; returns how many messages it held."""
        ok = await self._rpc(spec.QueueDelete(0, name, if_unused, if_empty, False))
        self.topology.forget_about(name)
        return ok.message_count

    async def set_qos(self, prefetch_count: int = 0, prefetch_size: int = 0,
                      global_: bool = False) -> None:
        """Limit unacknowledged deliveries (per consumer; per channel with ``global_``)."""
        await self._rpc(spec.BasicQos(prefetch_size, prefetch_count, global_))
        self._remember(("qos", global_), lambda: self._rpc(
            spec.BasicQos(prefetch_size, prefetch_count, global_)))

    async def flow(self, active: bool) -> bool:
        """Send channel.flow. RabbitMQ (and minimq) acknowledge ``True`` and close the
        connection with 540 NOT_IMPLEMENTED for ``False``: throttle with ``set_qos``."""
        ok = await self._rpc(spec.ChannelFlow(active))
        return bool(ok.active)

    async def recover(self, requeue: bool = True) -> None:
        """Redeliver every unacknowledged message of this channel."""
        await self._rpc(spec.BasicRecover(requeue))

    async def confirm_delivery(self) -> None:
        """Switch to publisher-confirm mode (same as ``publisher_confirms=True``)."""
        if not self.publisher_confirms:
            await self._rpc(spec.ConfirmSelect(False))
            self.publisher_confirms = True

    def _remember(self, key: tuple[Any, ...], replay: Callable[[], Awaitable[Any]]) -> None:
        self.topology.remember(key, replay)

    def _forget(self, key: tuple[Any, ...]) -> None:
        self.topology.forget(key)

    def _forget_about(self, name: Any) -> None:
        self.topology.forget_about(name)

    # -- publishing ---------------------------------------------------------------------

    async def publish(
        self,
        message: Body,
        routing_key: str = "",
        exchange: str = "",
        *,
        mandatory: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Publish a `Message` (or bare bytes/str) to ``exchange`` with ``routing_key``.

        Waits while the connection is blocked by the broker (connection.blocked), while the
        broker paused the channel (channel.flow), while the socket's write buffer is full, or
        (robust mode) while reconnecting. With publisher confirms, waits for the broker's ack
        and raises `MessageNacked` on nack and `MessageReturned` if a ``mandatory`` message
        was unroutable. ``timeout`` bounds the whole wait (`TimeoutError`).
        """
        conn = self.connection
        core = self._core
        if not self._open or not conn.can_publish or not core.active:  # type: ignore[union-attr]
            await self._wait_ready(timeout)
            core = self._core
        assert core is not None
        body, props = body_and_properties(message)
        tag = core.publish(exchange, routing_key, body, props, mandatory)
        if not self.publisher_confirms:
            conn.flush_soon(len(body) + 64)
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._confirms[tag] = (fut, message)
        conn.flush_soon(len(body) + 64)
        try:
            if timeout is None:
                await fut
            else:
                await asyncio.wait_for(asyncio.shield(fut), timeout)
        except (asyncio.CancelledError, asyncio.TimeoutError):
            # Nobody will await the confirm any more; keep its outcome from being reported
            # as "never retrieved".
            fut.add_done_callback(_retrieve)
            raise

    async def _wait_ready(self, timeout: float | None) -> None:
        conn = self.connection

        async def wait() -> None:
            while True:
                if not self._open and self._close_exc is not None \
                        and self._keeps_consumers(self._close_exc):
                    await conn.state_changed()  # robust: restored after the reconnect
                    continue
                self._check()
                if not conn.can_publish:
                    await conn.wait_publishable()
                    continue
                if not self.is_flowing:
                    await conn.state_changed()
                    continue
                self._check()
                return

        if timeout is None:
            await wait()
        else:
            await asyncio.wait_for(wait(), timeout)

    # -- consuming and getting ----------------------------------------------------------

    async def _consume(self, queue: Queue | str, callback: MessageCallback | None, *,
                       no_ack: bool = False, exclusive: bool = False,
                       arguments: dict[str, Any] | None = None, consumer_tag: str = "",
                       concurrency: int = 1) -> Consumer:
        name = queue.name if isinstance(queue, Queue) else queue
        consumer = Consumer(self, queue, consumer_tag, no_ack, exclusive, arguments,
                            callback, concurrency)
        try:
            await self._rpc(spec.BasicConsume(0, name, consumer_tag, False, no_ack, exclusive,
                                              False, arguments), consumer=consumer)
        except BaseException as exc:
            self._consumers.pop(consumer.tag, None)
            consumer.stop(exc if isinstance(exc, ClientError) else _ConsumerEnded())
            raise
        self._remember(("consumer", consumer.tag), lambda: self._reconsume(consumer))
        return consumer

    async def _reconsume(self, consumer: Consumer) -> None:
        self._consumers[consumer.tag] = consumer
        await self._rpc(spec.BasicConsume(0, consumer.queue_name, consumer.tag, False,
                                          consumer.no_ack, consumer.exclusive, False,
                                          consumer.arguments))

    async def consume(self, queue: Queue | str, callback: MessageCallback, *,
                      no_ack: bool = False, exclusive: bool = False,
                      arguments: dict[str, Any] | None = None, consumer_tag: str = "",
                      concurrency: int = 1) -> str:
        """Start a consumer calling ``callback(message)`` for each delivery; returns its tag.

        A coroutine function callback runs in ``concurrency`` worker tasks (messages are
        processed in order when it is 1); a plain function is called directly as each
        delivery is read, which is fastest. Stop with `cancel`.
        """
        consumer = await self._consume(queue, callback, no_ack=no_ack, exclusive=exclusive,
                                       arguments=arguments, consumer_tag=consumer_tag,
                                       concurrency=concurrency)
        return consumer.tag

    async def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer. Messages already delivered to it stay unacked until settled."""
        consumer = self._consumers.get(consumer_tag)
        self.topology.forget(("consumer", consumer_tag))
        if self._open:
            await self._rpc(spec.BasicCancel(consumer_tag, False))
        consumer = self._consumers.pop(consumer_tag, consumer)
        if consumer is not None:
            consumer.stop(_ConsumerEnded())

    async def get(self, queue: Queue | str, *, no_ack: bool = False,
                  timeout: float | None = None) -> IncomingMessage | None:
        """Fetch one message with basic.get, or None if the queue is empty."""
        name = queue.name if isinstance(queue, Queue) else queue
        self._get_no_ack = no_ack
        result = await self._rpc(spec.BasicGet(0, name, no_ack), timeout)
        if isinstance(result, IncomingMessage):
            return result
        return None

    def _send(self, method: spec.Method) -> None:
        self._check()
        assert self._core is not None
        self._core.send(method)
        self.connection.flush_soon()

    # -- transactions -------------------------------------------------------------------

    async def tx_select(self) -> None:
        """Put the channel in transaction mode."""
        await self._rpc(spec.TxSelect())
        self._transactional = True

    async def tx_commit(self) -> None:
        """Commit the publishes and acks made since the last commit or rollback."""
        await self._rpc(spec.TxCommit())

    async def tx_rollback(self) -> None:
        """Discard the publishes and acks made since the last commit or rollback."""
        await self._rpc(spec.TxRollback())

    def transaction(self) -> Transaction:
        """``async with channel.transaction():`` selects tx mode once, then commits when the
        block succeeds and rolls back when it raises."""
        return Transaction(self)


class Transaction:
    """Async context manager from `Channel.transaction`."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def __aenter__(self) -> Transaction:
        if not self.channel._transactional:
            await self.channel.tx_select()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is None:
            await self.channel.tx_commit()
        elif not self.channel.is_closed:
            await self.channel.tx_rollback()


class Exchange:
    """An exchange on a channel (from `Channel.declare_exchange`)."""

    def __init__(self, channel: Channel, name: str, type: str = ExchangeType.DIRECT, *,
                 durable: bool = False, auto_delete: bool = False, internal: bool = False,
                 passive: bool = False, arguments: dict[str, Any] | None = None) -> None:
        self.channel = channel
        self.name = name
        self.type = type
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.passive = passive
        self.arguments = arguments

    def __repr__(self) -> str:
        return f"<Exchange {self.name!r} ({self.type})>"

    async def declare(self, timeout: float | None = None) -> None:
        """(Re-)declare this exchange."""
        await self.channel._rpc(spec.ExchangeDeclare(
            0, self.name, self.type, self.passive, self.durable, self.auto_delete, self.internal,
            False, self.arguments), timeout)
        if self.name and not self.passive:
            self.channel._remember(("exchange", self.name), self.declare)

    async def publish(self, message: Body, routing_key: str = "", *, mandatory: bool = False,
                      timeout: float | None = None) -> None:
        """Publish to this exchange; see `Channel.publish`."""
        await self.channel.publish(message, routing_key, self.name, mandatory=mandatory,
                                   timeout=timeout)

    async def bind(self, source: Exchange | str, routing_key: str = "", *,
                   arguments: dict[str, Any] | None = None) -> None:
        """Route messages from exchange ``source`` to this exchange (exchange-to-exchange)."""
        src = source.name if isinstance(source, Exchange) else source
        method = spec.ExchangeBind(0, self.name, src, routing_key, False, arguments)
        await self.channel._rpc(method)
        self.channel._remember(("ebind", self.name, src, routing_key, repr(arguments)),
                               lambda: self.channel._rpc(method))

    async def unbind(self, source: Exchange | str, routing_key: str = "", *,
                     arguments: dict[str, Any] | None = None) -> None:
        """Remove a binding made with `bind`."""
        src = source.name if isinstance(source, Exchange) else source
        await self.channel._rpc(spec.ExchangeUnbind(0, self.name, src, routing_key, False,
                                                    arguments))
        self.channel._forget(("ebind", self.name, src, routing_key, repr(arguments)))

    async def delete(self, *, if_unused: bool = False) -> None:
        """Delete this exchange."""
        await self.channel.delete_exchange(self.name, if_unused=if_unused)


class Queue(BaseQueue):
    """A queue on a channel (from `Channel.declare_queue`).

    ``name`` is the broker-generated name for a queue declared with an empty name (in robust
    mode it changes when such a queue is re-declared after a reconnect).
    """

    channel: Channel

    async def declare(self, timeout: float | None = None) -> Queue:
        """(Re-)declare; updates ``name``, ``message_count`` and ``consumer_count``."""
        self._declared(await self.channel._rpc(self._declaration(), timeout))
        if not self.passive:
            self.channel._remember(("queue", id(self)), self.declare)
        return self

    async def bind(self, exchange: Exchange | str, routing_key: str | None = None, *,
                   arguments: dict[str, Any] | None = None) -> None:
        """Bind to ``exchange``; the routing key defaults to the queue name."""
        ex = exchange.name if isinstance(exchange, Exchange) else exchange
        key = self.name if routing_key is None else routing_key

        async def do() -> None:
            await self.channel._rpc(spec.QueueBind(0, self.name, ex, key, False, arguments))

        await do()
        self.channel._remember(("qbind", id(self), ex, key, repr(arguments)), do)

    async def unbind(self, exchange: Exchange | str, routing_key: str | None = None, *,
                     arguments: dict[str, Any] | None = None) -> None:
        """Remove a binding."""
        ex = exchange.name if isinstance(exchange, Exchange) else exchange
        key = self.name if routing_key is None else routing_key
        await self.channel._rpc(spec.QueueUnbind(0, self.name, ex, key, arguments))
        self.channel._forget(("qbind", id(self), ex, key, repr(arguments)))

    async def consume(self, callback: MessageCallback, *, no_ack: bool = False,
                      exclusive: bool = False, arguments: dict[str, Any] | None = None,
                      consumer_tag: str = "", concurrency: int = 1) -> str:
        """Start a consumer on this queue; see `Channel.consume`."""
        consumer = await self.channel._consume(
            self, callback, no_ack=no_ack, exclusive=exclusive, arguments=arguments,
            consumer_tag=consumer_tag, concurrency=concurrency)
        return consumer.tag

    async def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer started with `consume`."""
        await self.channel.cancel(consumer_tag)

    def iterator(self, *, no_ack: bool = False, exclusive: bool = False,
                 arguments: dict[str, Any] | None = None, timeout: float | None = None,
                 ) -> QueueIterator:
        """``async with queue.iterator() as messages: async for message in messages:``

        ``timeout`` ends the iteration after that many seconds without a message.
        """
        return QueueIterator(self, no_ack=no_ack, exclusive=exclusive, arguments=arguments,
                             timeout=timeout)

    def __aiter__(self) -> AsyncIterator[IncomingMessage]:
        return self.iterator().__aiter__()

    async def get(self, *, no_ack: bool = False, fail: bool = False,
                  timeout: float | None = None) -> IncomingMessage | None:
        """Fetch one message (basic.get); None when empty, or `LookupError` with ``fail``."""
        message = await self.channel.get(self, no_ack=no_ack, timeout=timeout)
        if message is None and fail:
            raise LookupError(f"queue {self.name!r} is empty")
        return message

    async def purge(self) -> int:
        """Remove every ready message; returns how many."""
        ok = await self.channel._rpc(spec.QueuePurge(0, self.name, False))
        return ok.message_count

    async def delete(self, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete the queue; returns how many messages it held."""
        count = await self.channel.delete_queue(self.name, if_unused=if_unused,
                                                if_empty=if_empty)
        self.channel._forget_about(id(self))
        return count


class QueueIterator:
    """Consume a queue as an async iterator; made by `Queue.iterator`.

    The consumer starts on ``async with`` (or the first ``__anext__``) and is cancelled on
    leaving the block or calling `close`. Iteration also ends if the broker cancels the
    consumer or ``timeout`` seconds pass without a message; it raises if the channel closes.
    """

    def __init__(self, queue: Queue, *, no_ack: bool = False, exclusive: bool = False,
                 arguments: dict[str, Any] | None = None, timeout: float | None = None) -> None:
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.arguments = arguments
        self.timeout = timeout
        self._consumer: Consumer | None = None
        self._closed = False

    @property
    def consumer_tag(self) -> str | None:
        return self._consumer.tag if self._consumer else None

    async def start(self) -> None:
        """Start consuming (done for you by ``async with`` / ``async for``)."""
        if self._consumer is None:
            self._consumer = await self.queue.channel._consume(
                self.queue, None, no_ack=self.no_ack, exclusive=self.exclusive,
                arguments=self.arguments)

    async def close(self) -> None:
        """Cancel the consumer. Unsettled delivered messages are requeued by the broker when
        the channel closes; settle them before if you want to keep them processed."""
        if self._closed:
            return
        self._closed = True
        consumer = self._consumer
        if consumer is not None and not consumer.cancelled:
            channel = self.queue.channel
            if not channel.is_closed:
                try:
                    await channel.cancel(consumer.tag)
                except ClientError:
                    pass
            consumer.stop(_ConsumerEnded())

    async def __aenter__(self) -> QueueIterator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __aiter__(self) -> QueueIterator:
        return self

    async def __anext__(self) -> IncomingMessage:
        if self._consumer is None:
            await self.start()
        consumer = self._consumer
        assert consumer is not None and consumer.buffer is not None
        try:
            return await consumer.buffer.get(self.timeout)
        except _ConsumerEnded:
            raise StopAsyncIteration from None
        except asyncio.TimeoutError:
            await self.close()
            raise StopAsyncIteration from None
