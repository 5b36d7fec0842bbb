"""What a handler can do besides return: reply, publish, settle, from sync and async code alike.

A worker process runs one asyncio event loop that owns the broker connection; sync handlers
run in threads beside it. A coroutine method called from such a thread would only make a
coroutine object nobody awaits (the publish silently never happens), so everything here is
*loop-bound*: called on the loop it starts the operation as a task and returns it (await it;
if you don't, the worker still waits for it before settling the message), called from any
other thread it runs the operation on the loop and blocks until it is done.
"""
from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any, Awaitable, Callable

from minimq.client import IncomingMessage, Message
from minimq.client.rpc import ERROR_HEADER

__all__ = ["HandlerMessage", "Publisher", "LoopBound", "as_message", "error_reply"]


def as_message(value: Any, **properties: Any) -> Message:
    """A `Message` from what a handler returns: a Message as it is, bytes as they are, a str
    as UTF-8 ``text/plain``, anything else as JSON (``application/json``)."""
    if isinstance(value, Message):
        for name, prop in properties.items():
            setattr(value.properties, name, prop)
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Message(bytes(value), **properties)
    if isinstance(value, str):
        return Message(value, **properties)
    properties.setdefault("content_type", "application/json")
    return Message(json.dumps(value).encode(), **properties)


def error_reply(exc: BaseException) -> Message:
    """The reply a ``rpc_errors=True`` consumer sends for a handler that raised.

    The ``x-rpc-error`` header (``"ValueError: boom"``) is what `minimq.client.RPC` turns into
    an `RPCError`; the JSON body says the same for callers in other languages.
    """
    kind = type(exc)
    type_name = f"{kind.__module__}.{kind.__qualname__}"
    body = {"error": {"type": type_name, "message": str(exc)[:1000]}}
    return Message(json.dumps(body).encode(), content_type="application/json", headers={
        ERROR_HEADER: f"{kind.__name__}: {exc}"[:1000],
        "x-exception-type": type_name,
        "x-exception-message": str(exc)[:1000],
    })


class _Tracker:
    """Tasks started on the loop for one message, so its outcome can wait for them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.tasks: list[asyncio.Future[Any]] = []

    def call(self, function: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            task = asyncio.ensure_future(function(*args, **kwargs))
            self.tasks.append(task)
            return task
        return asyncio.run_coroutine_threadsafe(function(*args, **kwargs), self.loop).result()

    async def flush(self) -> None:
        """Wait for what was started and not awaited; its first error is the handler's."""
        while self.tasks:
            tasks, self.tasks = self.tasks, []
            await asyncio.gather(*tasks)


class LoopBound:
    """Any client object (a channel, say) whose coroutine methods become loop-bound."""

    __slots__ = ("_target", "_tracker")

    def __init__(self, target: Any, tracker: _Tracker) -> None:
        self._target = target
        self._tracker = tracker

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if inspect.iscoroutinefunction(value):
            tracker = self._tracker

            def bound(*args: Any, **kwargs: Any) -> Any:
                return tracker.call(value, *args, **kwargs)

            bound.__doc__ = value.__doc__
            return bound
        return value

    def __repr__(self) -> str:
        return f"LoopBound({self._target!r})"


class Publisher:
    """``app.publish(...)`` inside a worker process: the process's confirmed channel."""

    def __init__(self, channel: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.channel = channel
        self.tracker = _Tracker(loop)

    def publish(self, value: Any, routing_key: str = "", exchange: str = "", *,
                mandatory: bool = False, **properties: Any) -> Any:
        message = as_message(value, **properties)
        return self.tracker.call(self.channel.publish, message, routing_key, exchange,
                                 mandatory=mandatory)


class HandlerMessage:
    """The message a handler gets: the client's `IncomingMessage` (every attribute and
    method of it) plus `reply` and `publish`; ``ack``/``nack``/``reject`` and the methods of
    ``message.channel`` are loop-bound (see the module docstring), so they work from sync
    handlers too. ``message.message`` is the `IncomingMessage` itself."""

    __slots__ = ("message", "replied", "_tracker", "_publisher")

    def __init__(self, message: IncomingMessage, publisher: Any,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.message = message
        #: True once `reply` was called: the return value is then not sent as a reply.
        self.replied = False
        self._tracker = _Tracker(loop)
        self._publisher = publisher

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.message, name)
        if name == "channel":
            return LoopBound(value, self._tracker)
        if inspect.iscoroutinefunction(value):
            return LoopBound(self.message, self._tracker).__getattr__(name)
        return value

    def __repr__(self) -> str:
        return f"HandlerMessage({self.message!r})"

    def reply(self, value: Any, **properties: Any) -> Any:
        """Publish ``value`` (bytes, str, JSON-able or a `Message`) to this message's
        ``reply_to`` with its ``correlation_id``, publisher-confirmed. Direct reply-to
        (``amq.rabbitmq.reply-to...``) works like any other reply queue."""
        reply_to = self.message.reply_to
        if not reply_to:
            raise ValueError("this message has no reply_to to reply to")
        message = as_message(value, **properties)
        if message.properties.correlation_id is None:
            message.properties.correlation_id = self.message.correlation_id
        self.replied = True
        return self._tracker.call(self._publisher.publish, message, reply_to, "")

    def publish(self, value: Any, routing_key: str = "", exchange: str = "", *,
                mandatory: bool = False, **properties: Any) -> Any:
        """Publish a new message (bytes, str, JSON-able or a `Message`), confirmed."""
        message = as_message(value, **properties)
        return self._tracker.call(self._publisher.publish, message, routing_key, exchange,
                                  mandatory=mandatory)

    async def flush(self) -> None:
        """Wait for the operations the handler started without awaiting them."""
        await self._tracker.flush()
