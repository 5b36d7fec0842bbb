"""What the asyncio and the blocking client share above the sans-I/O core.

`minimq.protocol.client` decides what bytes mean; the two drivers (`connection`/`channel` for
asyncio, `sync` for plain sockets) decide how to wait. Everything in between that is neither
lives here once: connection options, the state and callbacks a user sees, how the broker's
connection-level events change that state, channel bookkeeping, what a robust connection
replays after a reconnect, and how a basic.return is reported.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Generic, TypeVar

from minimq.codec import spec
from minimq.codec.errors import AMQPError as CodecAMQPError
from minimq.protocol.client import (
    ClientConnection,
    ConnectionBlocked,
    ConnectionClosedByServer,
    ConnectionUnblocked,
)
from minimq.protocol.client_channel import ClientChannel, Returned

from .errors import AuthenticationError, ChannelClosed, ClientError, ConnectionClosed, connection_error
from .message import ReturnedMessage
from .url import ConnectionParameters, parse_url

__all__ = ["BaseConnection", "BaseChannel", "BaseQueue", "Topology", "Backoff", "DEFAULT_URL"]

log = logging.getLogger("minimq.client")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"

R = TypeVar("R")


class Backoff:
    """Robust mode's delays between reconnect attempts: ``initial``, doubling up to ``limit``."""

    __slots__ = ("initial", "limit", "delay")

    def __init__(self, initial: float, limit: float) -> None:
        self.initial = initial
        self.limit = limit
        self.delay = initial

    def failed(self) -> None:
        self.delay = min(self.delay * 2, self.limit)

    def reset(self) -> None:
        self.delay = self.initial


class Topology(Generic[R]):
    """What a robust channel re-declares after a reconnect, in declaration order.

    Keys name what was declared (``("queue", id)``, ``("qbind", ...)``, ``("consumer", tag)``,
    ...); a later declaration of the same key moves it to the end, a delete forgets it.
    Values are the driver's replay callables (a coroutine function, or a plain function).
    """

    __slots__ = ("enabled", "_items")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._items: dict[tuple[Any, ...], Callable[[], R]] = {}

    def remember(self, key: tuple[Any, ...], replay: Callable[[], R]) -> None:
        if self.enabled:
            self._items.pop(key, None)
            self._items[key] = replay

    def forget(self, key: tuple[Any, ...]) -> None:
        self._items.pop(key, None)

    def forget_about(self, name: Any) -> None:
        """Forget every entry whose first field after the kind is ``name`` (a deleted queue's
        declaration and bindings)."""
        for key in [k for k in self._items if name in k[1:2]]:
            del self._items[key]

    def entries(self) -> list[tuple[tuple[Any, ...], Callable[[], R]]]:
        return list(self._items.items())


class BaseConnection:
    """State and callbacks common to both clients' connections; see their docstrings."""

    def __init__(self, url: str | ConnectionParameters = DEFAULT_URL, *, robust: bool = False,
                 reconnect_interval: float = 0.5, max_reconnect_interval: float = 30.0,
                 **options: Any) -> None:
        if isinstance(url, ConnectionParameters):
            self.params = url.with_options(**options) if options else url
        else:
            self.params = parse_url(url, **options)
        self.robust = robust
        self.reconnect_interval = reconnect_interval
        self.max_reconnect_interval = max_reconnect_interval
        self._core: ClientConnection | None = None
        self._connected = False
        self._ever_opened = False
        self._user_closed = False
        self._blocked = False
        self._close_exc: ClientError | None = None
        #: The broker's connection.start properties (product, version, capabilities, ...).
        self.server_properties: dict[str, Any] = {}
        #: Why the broker blocked publishing (connection.blocked), or None.
        self.blocked_reason: str | None = None
        self._close_callbacks: list[Callable[..., Any]] = []
        self._reconnect_callbacks: list[Callable[..., Any]] = []
        self._blocked_callbacks: list[Callable[..., Any]] = []

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.Connection {self.params} " \
               f"{'open' if self._connected else 'closed'}>"

    # -- public state -----------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """True when the connection is not open (reconnecting counts as not open)."""
        return not self._connected

    @property
    def is_blocked(self) -> bool:
        """True while the broker has blocked publishing (connection.blocked)."""
        return self._blocked

    @property
    def close_reason(self) -> ClientError | None:
        """Why the connection closed (a `ConnectionClosed`), or None while open."""
        return self._close_exc

    @property
    def capabilities(self) -> dict[str, Any]:
        """The broker's advertised capabilities table."""
        return dict(self.server_properties.get("capabilities") or {})

    @property
    def heartbeat(self) -> int:
        """Negotiated heartbeat interval in seconds (0: disabled)."""
        return self._core.heartbeat if self._core else 0

    @property
    def frame_max(self) -> int:
        """Negotiated maximum frame size."""
        return self._core.frame_max if self._core else 0

    @property
    def channel_max(self) -> int:
        """Negotiated maximum channel number."""
        return self._core.channel_max if self._core else 0

    @property
    def will_reconnect(self) -> bool:
        """Robust mode, once opened and until `close`: a lost connection comes back."""
        return self.robust and not self._user_closed and self._ever_opened

    def add_close_callback(self, callback: Callable[..., Any]) -> None:
        """Call ``callback(connection, reason)`` when the connection closes for good."""
        self._close_callbacks.append(callback)

    def add_reconnect_callback(self, callback: Callable[..., Any]) -> None:
        """Robust mode: call ``callback(connection)`` after each successful reconnect."""
        self._reconnect_callbacks.append(callback)

    def add_blocked_callback(self, callback: Callable[..., Any]) -> None:
        """Call ``callback(connection, reason)`` on connection.blocked and
        ``callback(connection, None)`` on connection.unblocked."""
        self._blocked_callbacks.append(callback)

    # -- for the drivers --------------------------------------------------------------------

    def _new_core(self) -> ClientConnection:
        """A fresh protocol core for a connection attempt. A new connection starts unblocked:
        connection.blocked may follow open-ok in the same read, before `_opened`."""
        self._blocked = False
        self.blocked_reason = None
        p = self.params
        self._core = ClientConnection(
            username=p.username, password=p.password, virtual_host=p.virtual_host,
            heartbeat=p.heartbeat, frame_max=p.frame_max, channel_max=p.channel_max,
            client_properties=p.client_properties)
        return self._core

    def _opened(self) -> None:
        """The handshake finished."""
        assert self._core is not None
        self.server_properties = self._core.server_properties
        self._connected = True
        self._ever_opened = True

    def _free_channel_number(self, taken: Any) -> int:
        """The lowest channel number neither in ``taken`` nor still closing in the core."""
        core = self._core
        assert core is not None
        limit = core.channel_max or 65535
        busy = core.channels
        for number in range(1, limit + 1):
            if number not in taken and number not in busy:
                return number
        raise ClientError(f"all {limit} channels are in use")

    def _connection_event(self, event: object) -> bool:
        """Apply a connection-level event; True when it ended the connection (the broker's
        connection.close: ``close_reason`` says why)."""
        cls = event.__class__
        if cls is ConnectionClosedByServer:
            assert isinstance(event, ConnectionClosedByServer)
            if not self._connected and event.reply_code == 403:
                exc: ClientError = AuthenticationError(event.reply_text, event.class_id,
                                                       event.method_id)
            else:
                exc = connection_error(event.reply_code, event.reply_text, event.class_id,
                                       event.method_id)
            log.warning("broker closed the connection: %s", exc)
            self._close_exc = exc
            return True
        if cls is ConnectionBlocked:
            assert isinstance(event, ConnectionBlocked)
            log.warning("broker blocked publishing: %s", event.reason)
            self._blocked = True
            self.blocked_reason = event.reason
            self._call(self._blocked_callbacks, self, event.reason)
        elif cls is ConnectionUnblocked:
            log.info("broker unblocked publishing")
            self._blocked = False
            self.blocked_reason = None
            self._call(self._blocked_callbacks, self, None)
        return False

    def _receive(self, data: bytes) -> list[Any] | None:
        """The core's events for ``data``; None when the broker broke the protocol (then
        connection.close is queued and ``close_reason`` says why: flush and drop the socket)."""
        core = self._core
        assert core is not None
        try:
            return core.receive_data(data)
        except CodecAMQPError as exc:
            self._protocol_error(exc.code, exc.reply_text)
            return None

    def _protocol_error(self, code: int, text: str) -> None:
        """The broker broke the protocol: queue connection.close with ``code``."""
        log.error("protocol error from %s: %s", self.params, text)
        self._close_exc = connection_error(code, text)
        if self._core is not None:
            self._core.close(code, text[:255])

    def _closed_for_good(self) -> None:
        callbacks, self._close_callbacks = self._close_callbacks, []
        self._call(callbacks, self, self._close_exc)

    def _reconnected(self) -> None:
        log.info("reconnected to %s", self.params)
        self._call(self._reconnect_callbacks, self)

    @staticmethod
    def _call(callbacks: list[Callable[..., Any]], *args: Any) -> None:
        for callback in list(callbacks):
            try:
                callback(*args)
            except Exception:
                log.exception("%s failed", getattr(callback, "__qualname__", callback))


class BaseChannel:
    """State common to both clients' channels: its number and core, whether it is open and
    why it closed, the generation (bumped on every (re)open), return callbacks, and what a
    robust connection replays."""

    def __init__(self, connection: BaseConnection, number: int,
                 publisher_confirms: bool = False) -> None:
        self.connection = connection
        self.number = number
        self.publisher_confirms = publisher_confirms
        self._core: ClientChannel | None = None
        self._open = False
        self._close_exc: ClientError | None = None
        self._generation = 0
        self._transactional = False
        self._on_return: list[Callable[[ReturnedMessage], Any]] = []
        #: What a robust connection re-declares on this channel after a reconnect.
        self.topology: Topology[Any] = Topology(connection.robust)
        # True while a robust reconnect replays the topology: a declaration the new broker
        # refuses closes the channel, which is then reopened, not forgotten.
        self._restoring = False

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.Channel {self.number} " \
               f"{'open' if self._open else 'closed'} of {self.connection!r}>"

    @property
    def is_closed(self) -> bool:
        """True once the channel is closed (by the client, the broker or the connection)."""
        return not self._open

    @property
    def close_reason(self) -> ClientError | None:
        """Why the channel closed: a `ChannelClosed` or `ConnectionClosed`, or None."""
        return self._close_exc

    @property
    def generation(self) -> int:
        """Bumped each time the channel is (re)opened; a message remembers the one it came
        in (`IncomingMessage.is_stale`)."""
        return self._generation

    @property
    def is_flowing(self) -> bool:
        """False while the broker has paused publishing on this channel (channel.flow)."""
        return self._core is None or self._core.active

    def add_on_return_callback(self, callback: Callable[[ReturnedMessage], Any]) -> None:
        """Call ``callback(returned_message)`` for every basic.return on this channel."""
        self._on_return.append(callback)

    def remove_on_return_callback(self, callback: Callable[[ReturnedMessage], Any]) -> None:
        self._on_return.remove(callback)

    def _check(self) -> None:
        if not self._open:
            raise self._close_exc or ChannelClosed("channel is not open", code=0)

    # Settling by delivery tag: the frame is queued at once, in both clients.

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Acknowledge by delivery tag (`IncomingMessage.ack` is the usual way)."""
        self._send(spec.BasicAck(delivery_tag, multiple))

    def basic_nack(self, delivery_tag: int, multiple: bool = False,
                   requeue: bool = True) -> None:
        """Negatively acknowledge by delivery tag."""
        self._send(spec.BasicNack(delivery_tag, multiple, requeue))

    def basic_reject(self, delivery_tag: int, requeue: bool = False) -> None:
        """Reject by delivery tag."""
        self._send(spec.BasicReject(delivery_tag, requeue))

    def _send(self, method: spec.Method) -> None:
        """Queue an asynchronous method on this channel and see that it is written."""
        raise NotImplementedError

    def _new_core(self) -> ClientChannel:
        """A fresh protocol channel for an open or a reopen (channel.open queued)."""
        core = self.connection._core
        assert core is not None
        self._generation += 1
        self._close_exc = None
        self._open = True
        channel = self._core = core.channel(self.number)
        channel.open()
        return channel

    def _start_call(self, method: spec.Method | None) -> ClientChannel:
        """Queue ``method`` on the core, or (None) open a fresh core channel; the driver
        then flushes and waits for the `Reply`."""
        if method is None:
            return self._new_core()
        self._check()
        core = self._core
        assert core is not None
        core.call(method)
        return core

    def _returned(self, event: Returned) -> ReturnedMessage:
        """Report a basic.return to the callbacks; the driver fails the matched publish."""
        method = event.method
        returned = ReturnedMessage(event.body, event.properties, method.reply_code,
                                   method.reply_text, method.exchange, method.routing_key)
        self.connection._call(self._on_return, returned)
        if event.delivery_tag is None and not self._on_return:
            log.warning("message returned by the broker: %r", returned)
        return returned

    def _keeps_consumers(self, error: ClientError) -> bool:
        """Whether a close for ``error`` is a robust connection's loss (consumers and topology
        survive to be restored) rather than the end of the channel."""
        return isinstance(error, ConnectionClosed) and self.connection.will_reconnect


class BaseQueue:
    """A queue declaration of either client: what to declare (again, in robust mode) and the
    broker's answer. ``name`` is the broker-generated name for a queue declared with an
    empty one (in robust mode it changes when such a queue is re-declared after a
    reconnect); ``message_count`` and ``consumer_count`` come from the last declare-ok."""

    def __init__(self, channel: Any, name: str = "", *, durable: bool = False,
                 exclusive: bool = False, auto_delete: bool = False, passive: bool = False,
                 arguments: dict[str, Any] | None = None) -> None:
        self.channel = channel
        self.name = name
        self._requested_name = name
        self.durable = durable
        self.exclusive = exclusive
        self.auto_delete = auto_delete
        self.passive = passive
        self.arguments = arguments
        self.message_count = 0
        self.consumer_count = 0

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.Queue {self.name!r}>"

    def _declaration(self) -> spec.QueueDeclare:
        return spec.QueueDeclare(0, self._requested_name, self.passive, self.durable,
                                 self.exclusive, self.auto_delete, False, self.arguments)

    def _declared(self, ok: spec.QueueDeclareOk) -> None:
        self.name = ok.queue
        self.message_count = ok.message_count
        self.consumer_count = ok.consumer_count
