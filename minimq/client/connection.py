"""The asyncio connection: an `asyncio.Protocol` driving the sans-I/O `ClientConnection`.

Writes are batched: frames queued during one pass of the event loop go out in one
``transport.write``. Deliveries are dispatched straight from ``data_received``; no task or
future is created per message except for publisher-confirm waits.
"""
from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any, Callable, Coroutine, Generator, Generic, TypeVar

from minimq.codec import spec
from minimq.codec.errors import AMQPError as CodecAMQPError
from minimq.codec.properties import BasicProperties
from minimq.protocol.client import (
    ClientConnection,
    ConnectionBlocked,
    ConnectionCloseCompleted,
    ConnectionClosedByServer,
    ConnectionReady,
    ConnectionUnblocked,
)
from minimq.protocol.events import ContentReceived, MethodReceived

from .channel import Channel
from .errors import (
    AuthenticationError,
    ClientError,
    ConnectionClosed,
    ConnectionLost,
    connection_error,
)
from .url import ConnectionParameters, parse_url

__all__ = ["Connection", "connect", "connect_robust"]

log = logging.getLogger("minimq.client")

T = TypeVar("T")

_FLUSH_NOW_BYTES = 256 * 1024


class _AwaitableContext(Generic[T]):
    """Both ``await thing`` and ``async with thing as value`` (closed on exit)."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._value: T | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()

    async def __aenter__(self) -> T:
        self._value = await self._coro
        return self._value

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._value is not None:
            await self._value.close()  # type: ignore[attr-defined]


class _Protocol(asyncio.Protocol):
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn._on_connection_made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.conn._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._on_connection_lost(exc)

    def pause_writing(self) -> None:
        self.conn._set_write_paused(True)

    def resume_writing(self) -> None:
        self.conn._set_write_paused(False)


class Connection:
    """An AMQP connection; make one with `connect` (``async with connect(url) as conn:``).

    With ``robust=True``, a lost connection is re-established in the background with
    exponential backoff (``reconnect_interval`` doubling up to ``max_reconnect_interval``);
    each channel is re-opened with its qos, confirm mode, the exchanges, queues and bindings
    declared through it, and its consumers. Publishers wait while it reconnects. Messages that
    were delivered but not acked before the loss are redelivered by the broker; settling
    their old copies is silently ignored. Calls in progress when the connection drops, and
    publishes awaiting a confirm, raise `ConnectionLost` (a confirmed publish may then have
    reached the broker or not). A channel the broker closes with an error (e.g. 404) stays
    closed: that is the application's mistake, not the network's.
    """

    def __init__(self, url: str | ConnectionParameters = "amqp://guest:guest@127.0.0.1:5672/",
                 *, robust: bool = False, reconnect_interval: float = 0.5,
                 max_reconnect_interval: float = 30.0, **options: Any) -> None:
        if isinstance(url, ConnectionParameters):
            self.params = url.with_options(**options) if options else url
        else:
            self.params = parse_url(url, **options)
        self.robust = robust
        self.reconnect_interval = reconnect_interval
        self.max_reconnect_interval = max_reconnect_interval
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._core: ClientConnection | None = None
        self._transport: asyncio.Transport | None = None
        self._channels: dict[int, Channel] = {}
        self._connected = False
        self._restoring = False
        self._blocked = False
        self._write_paused = False
        self._can_publish = False
        self._user_closed = False
        self._close_exc: ClientError | None = None
        self._flush_scheduled = False
        self._pending_bytes = 0
        self._hb_handle: asyncio.TimerHandle | None = None
        self._rx_seen = False
        self._tx_seen = False
        self._missed = 0
        self._opened: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._state_event: asyncio.Event | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._ever_opened = False
        #: The broker's connection.start properties (product, version, capabilities, ...).
        self.server_properties: dict[str, Any] = {}
        #: Why the broker blocked publishing (connection.blocked), or None.
        self.blocked_reason: str | None = None
        self._close_callbacks: list[Callable[[Connection, ClientError | None], Any]] = []
        self._reconnect_callbacks: list[Callable[[Connection], Any]] = []
        self._blocked_callbacks: list[Callable[[Connection, str | None], Any]] = []

    def __repr__(self) -> str:
        return f"<Connection {self.params} {'open' if self._connected else 'closed'}>"

    # -- public state -------------------------------------------------------------------

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

    def add_close_callback(self, callback: Callable[[Connection, ClientError | None], Any]) -> None:
        """Call ``callback(connection, reason)`` when the connection closes for good."""
        self._close_callbacks.append(callback)

    def add_reconnect_callback(self, callback: Callable[[Connection], Any]) -> None:
        """Robust mode: call ``callback(connection)`` after each successful reconnect."""
        self._reconnect_callbacks.append(callback)

    def add_blocked_callback(self, callback: Callable[[Connection, str | None], Any]) -> None:
        """Call ``callback(connection, reason)`` on connection.blocked and
        ``callback(connection, None)`` on connection.unblocked."""
        self._blocked_callbacks.append(callback)

    # -- opening ------------------------------------------------------------------------

    async def connect(self) -> Connection:
        """Open the connection (TCP or TLS, then the AMQP handshake)."""
        self._loop = asyncio.get_running_loop()
        self._state_event = asyncio.Event()
        self._user_closed = False
        self._close_exc = None
        await self._connect_once()
        return self

    async def _connect_once(self) -> None:
        p = self.params
        loop = self._loop
        self._core = ClientConnection(
            username=p.username, password=p.password, virtual_host=p.virtual_host,
            heartbeat=p.heartbeat, frame_max=p.frame_max, channel_max=p.channel_max,
            client_properties=p.client_properties)
        self._opened = loop.create_future()
        self._lost = loop.create_future()
        self._close_exc = None
        transport: asyncio.BaseTransport | None = None
        try:
            async with asyncio.timeout(p.connection_timeout):
                transport, _ = await loop.create_connection(
                    lambda: _Protocol(self), p.host, p.port, ssl=p.make_ssl_context(),
                    server_hostname=(p.server_hostname or p.host) if p.ssl else None)
                await self._opened
        except TimeoutError:
            if transport is not None:
                transport.abort()
            raise ConnectionLost(
                f"timed out after {p.connection_timeout}s connecting to {p.host}:{p.port}"
            ) from None
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {p.host}:{p.port}: {exc}") from exc
        except BaseException:
            if transport is not None:
                transport.abort()
            raise
        self.server_properties = self._core.server_properties
        self._connected = True
        self._ever_opened = True
        self._blocked = False
        self.blocked_reason = None
        core = self._core
        if core.heartbeat:
            self._missed = 0
            self._hb_handle = loop.call_later(core.heartbeat / 2, self._heartbeat_tick)
        self._update_state()
        log.debug("connected to %s (heartbeat %s, frame_max %s)", p, core.heartbeat,
                  core.frame_max)

    async def __aenter__(self) -> Connection:
        if self._loop is None:
            await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def channel(self, *, publisher_confirms: bool = False,
                prefetch_count: int | None = None) -> _AwaitableContext[Channel]:
        """Open a channel: ``ch = await conn.channel()`` or ``async with conn.channel() as ch``.

        ``publisher_confirms=True`` makes every publish wait for the broker's confirm;
        ``prefetch_count`` sets basic.qos on it.
        """
        return _AwaitableContext(self._open_channel(publisher_confirms, prefetch_count))

    async def _open_channel(self, publisher_confirms: bool,
                            prefetch_count: int | None) -> Channel:
        if not self._connected:
            if self._will_reconnect():
                await self._wait_ready()
            else:
                raise self._close_exc or ConnectionClosed("connection is not open", code=0)
        core = self._core
        assert core is not None
        limit = core.channel_max or 65535
        number = next((n for n in range(1, limit + 1) if n not in self._channels), None)
        if number is None:
            raise ClientError(f"all {limit} channels are in use")
        channel = Channel(self, number, publisher_confirms)
        self._channels[number] = channel
        try:
            await channel._open_channel()
            if prefetch_count is not None:
                await channel.set_qos(prefetch_count)
        except BaseException:
            self._channels.pop(number, None)
            raise
        return channel

    # -- closing ------------------------------------------------------------------------

    async def close(self, timeout: float = 10.0) -> None:
        """Close cleanly: channels first (their in-flight publisher confirms are awaited, up
        to ``timeout``), then the connection. Stops a robust connection reconnecting."""
        if self._user_closed:
            if self._lost is not None and not self._lost.done():
                await asyncio.wait([self._lost], timeout=timeout)
            return
        self._user_closed = True
        task = self._reconnect_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if self._connected and self._transport is not None:
            channels = [ch for ch in self._channels.values() if not ch.is_closed]
            if channels:
                await asyncio.gather(*(ch.close(timeout) for ch in channels),
                                     return_exceptions=True)
            core = self._core
            if self._connected and core is not None and self._transport is not None:
                self._close_exc = ConnectionClosed("connection closed by the client", code=200)
                core.close()
                self._flush()
                assert self._lost is not None
                done, _ = await asyncio.wait([self._lost], timeout=timeout)
                if not done and self._transport is not None:
                    self._transport.abort()
                    await asyncio.wait([self._lost], timeout=timeout)
        if self._close_exc is None:
            self._close_exc = ConnectionClosed("connection closed by the client", code=200)
        self._finish_closed()

    def _finish_closed(self) -> None:
        self._connected = False
        self._update_state()
        for channel in list(self._channels.values()):
            channel._closed(self._close_exc or ConnectionClosed("closed", code=0))
        self._channels.clear()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                callback(self, self._close_exc)
            except Exception:
                log.exception("close callback failed")

    def _will_reconnect(self) -> bool:
        return self.robust and not self._user_closed and self._ever_opened

    # -- transport callbacks ------------------------------------------------------------

    def _on_connection_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        core = self._core
        assert core is not None
        core.start()
        transport.write(core.data_to_send())

    def _on_data(self, data: bytes) -> None:
        self._rx_seen = True
        core = self._core
        assert core is not None
        try:
            events = core.receive_data(data)
        except CodecAMQPError as exc:
            self._protocol_failure(exc.reply_text, exc.code)
            return
        channels = self._channels
        for event in events:
            cls = event.__class__
            if cls is ContentReceived:
                assert isinstance(event, ContentReceived)
                channel = channels.get(event.channel)
                if channel is not None:
                    channel._on_content(event.method, event.header[12:], event.body)
            elif cls is MethodReceived:
                assert isinstance(event, MethodReceived)
                channel = channels.get(event.channel)
                if channel is not None:
                    channel._on_method(event.method)
            else:
                self._on_connection_event(event)
        if core.out:
            self._flush()

    def _on_connection_event(self, event: object) -> None:
        cls = event.__class__
        if cls is ConnectionReady:
            if self._opened is not None and not self._opened.done():
                self._opened.set_result(None)
        elif cls is ConnectionClosedByServer:
            assert isinstance(event, ConnectionClosedByServer)
            if not self._connected and event.reply_code == 403:
                exc: ClientError = AuthenticationError(event.reply_text, event.class_id,
                                                       event.method_id)
            else:
                exc = connection_error(event.reply_code, event.reply_text, event.class_id,
                                       event.method_id)
            log.warning("broker closed the connection: %s", exc)
            self._close_exc = exc
            self._flush()
            if self._transport is not None:
                self._transport.close()
        elif cls is ConnectionCloseCompleted:
            if self._transport is not None:
                self._transport.close()
        elif cls is ConnectionBlocked:
            assert isinstance(event, ConnectionBlocked)
            log.warning("broker blocked publishing: %s", event.reason)
            self._blocked = True
            self.blocked_reason = event.reason
            self._update_state()
            self._call_blocked(event.reason)
        elif cls is ConnectionUnblocked:
            log.info("broker unblocked publishing")
            self._blocked = False
            self.blocked_reason = None
            self._update_state()
            self._call_blocked(None)

    def _call_blocked(self, reason: str | None) -> None:
        for callback in self._blocked_callbacks:
            try:
                callback(self, reason)
            except Exception:
                log.exception("blocked callback failed")

    def _on_connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._hb_handle is not None:
            self._hb_handle.cancel()
            self._hb_handle = None
        was_connected = self._connected
        self._connected = False
        if self._close_exc is None:
            reason = f"connection lost: {exc}" if exc else "connection closed by the broker"
            self._close_exc = ConnectionLost(reason)
        error = self._close_exc
        if was_connected and error.code != 200:
            log.log(logging.DEBUG if self._user_closed else logging.WARNING,
                    "connection to %s lost: %s", self.params, error)
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(error)
            self._opened.exception()  # mark retrieved
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self._update_state()
        for channel in list(self._channels.values()):
            channel._closed(error)
        if not was_connected:
            return
        if self._will_reconnect():
            if self._reconnect_task is None or self._reconnect_task.done():
                self._reconnect_task = self._loop.create_task(self._reconnect())
        elif not self._user_closed:
            self._finish_closed()

    def _set_write_paused(self, paused: bool) -> None:
        self._write_paused = paused
        self._update_state()

    # -- state and waiting --------------------------------------------------------------

    def _update_state(self) -> None:
        can = (self._connected and not self._restoring and not self._blocked
               and not self._write_paused)
        self._can_publish = can
        event = self._state_event
        if event is not None:
            event.set()
            self._state_event = asyncio.Event()

    async def _wait_ready(self) -> None:
        """Wait until publishing is possible; raise if the connection is closed for good."""
        while not self._can_publish:
            if not self._connected and not self._will_reconnect() and not self._restoring:
                raise self._close_exc or ConnectionClosed("connection is not open", code=0)
            event = self._state_event
            assert event is not None
            await event.wait()

    # -- writing ------------------------------------------------------------------------

    def _send_method(self, channel: int, method: spec.Method) -> None:
        core = self._core
        assert core is not None
        core.send_method(channel, method)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _send_publish(self, channel: int, exchange: str, routing_key: str, body: bytes,
                      props: BasicProperties | None, mandatory: bool) -> None:
        core = self._core
        assert core is not None
        core.send_publish(channel, exchange, routing_key, body, props, mandatory)
        self._pending_bytes += len(body) + 64
        if self._pending_bytes > _FLUSH_NOW_BYTES:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._pending_bytes = 0
        core = self._core
        if core is None or not core.out:
            return
        data = core.data_to_send()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            self._tx_seen = True

    def _core_channel_closed(self, number: int) -> None:
        if self._core is not None:
            self._core.channel_closed(number)

    def _forget_channel(self, channel: Channel) -> None:
        if self._channels.get(channel.number) is channel:
            del self._channels[channel.number]

    def _protocol_failure(self, text: str, code: int) -> None:
        """The broker broke the protocol: close the connection with ``code``."""
        log.error("protocol error from %s: %s", self.params, text)
        self._close_exc = connection_error(code, text)
        if self._core is not None:
            self._core.close(code, text[:255])
            self._flush()
        if self._transport is not None:
            self._transport.close()

    # -- heartbeats ---------------------------------------------------------------------

    def _heartbeat_tick(self) -> None:
        core = self._core
        if core is None or not self._connected or self._transport is None:
            return
        if self._rx_seen:
            self._rx_seen = False
            self._missed = 0
        else:
            self._missed += 1
            if self._missed >= 4:  # two heartbeat intervals of silence
                self._close_exc = ConnectionLost(
                    f"missed heartbeats from the broker ({core.heartbeat}s interval)")
                self._transport.abort()
                return
        if not self._tx_seen:
            core.send_heartbeat()
            self._flush()
        self._tx_seen = False
        self._hb_handle = self._loop.call_later(core.heartbeat / 2, self._heartbeat_tick)

    # -- robust mode ----------------------------------------------------------------------

    async def _reconnect(self) -> None:
        delay = self.reconnect_interval
        while not self._user_closed:
            self._restoring = True
            try:
                await asyncio.sleep(delay)  # backoff between attempts
                log.info("reconnecting to %s", self.params)
                await self._connect_once()
                self._restoring = True
                self._update_state()
                for number in sorted(self._channels):
                    channel = self._channels.get(number)
                    if channel is not None:
                        await channel._restore()
            except (ClientError, OSError) as exc:
                log.warning("reconnect to %s failed: %s", self.params, exc)
                delay = min(delay * 2, self.max_reconnect_interval)
                if self._transport is not None:
                    self._transport.abort()
                continue
            finally:
                self._restoring = False
                self._update_state()
            if not self._connected:
                continue
            log.info("reconnected to %s", self.params)
            for callback in self._reconnect_callbacks:
                try:
                    callback(self)
                except Exception:
                    log.exception("reconnect callback failed")
            return


def connect(url: str | ConnectionParameters = "amqp://guest:guest@127.0.0.1:5672/", *,
            robust: bool = False, **options: Any) -> _AwaitableContext[Connection]:
    """Connect to a broker: ``async with connect(url) as connection:`` or
    ``connection = await connect(url)`` (then ``await connection.close()``).

    ``url`` is ``amqp://user:pass@host:port/vhost?heartbeat=30&frame_max=131072`` (see
    `parse_url`); ``amqps://`` uses TLS. ``robust=True`` reconnects automatically (see
    `Connection`). Other keyword options override URL fields (e.g. ``ssl_context=...``,
    ``heartbeat=5``); ``reconnect_interval`` and ``max_reconnect_interval`` tune robust mode.
    """
    conn_kwargs = {k: options.pop(k) for k in ("reconnect_interval", "max_reconnect_interval")
                   if k in options}
    connection = Connection(url, robust=robust, **conn_kwargs, **options)
    return _AwaitableContext(connection.connect())


def connect_robust(url: str | ConnectionParameters = "amqp://guest:guest@127.0.0.1:5672/",
                   **options: Any) -> _AwaitableContext[Connection]:
    """`connect` with ``robust=True``."""
    return connect(url, robust=True, **options)

