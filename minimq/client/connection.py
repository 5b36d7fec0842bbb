"""The asyncio connection: an `asyncio.Protocol` driving the sans-I/O `ClientConnection`.

Writes are batched: frames queued during one pass of the event loop go out in one
``transport.write``. Deliveries are dispatched straight from ``data_received``; no task or
future is created per message except for publisher-confirm waits.
"""
from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any, Coroutine, Generator, Generic, TypeVar

from minimq.protocol.client import ConnectionCloseCompleted, ConnectionReady
from minimq.protocol.client_channel import ChannelEvent, Delivered

from .base import DEFAULT_URL, Backoff, BaseConnection
from .channel import Channel
from .errors import ClientError, ConnectionClosed, ConnectionLost
from .url import ConnectionParameters

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


class Connection(BaseConnection):
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

    def __init__(self, url: str | ConnectionParameters = DEFAULT_URL, *, robust: bool = False,
                 reconnect_interval: float = 0.5, max_reconnect_interval: float = 30.0,
                 **options: Any) -> None:
        super().__init__(url, robust=robust, reconnect_interval=reconnect_interval,
                         max_reconnect_interval=max_reconnect_interval, **options)
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._transport: asyncio.Transport | None = None
        self._channels: dict[int, Channel] = {}
        self._restoring = False
        self._write_paused = False
        self._can_publish = False
        self._flush_scheduled = False
        self._pending_bytes = 0
        self._hb_handle: asyncio.TimerHandle | None = None
        self._handshake: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._state_event: asyncio.Event | None = None
        self._reconnect_task: asyncio.Task[None] | None = None

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
        core = self._new_core()
        self._handshake = loop.create_future()
        self._lost = loop.create_future()
        self._close_exc = None
        transport: asyncio.BaseTransport | None = None
        try:
            async with asyncio.timeout(p.connection_timeout):
                transport, _ = await loop.create_connection(
                    lambda: _Protocol(self), p.host, p.port, ssl=p.make_ssl_context(),
                    server_hostname=(p.server_hostname or p.host) if p.ssl else None)
                await self._handshake
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
        self._opened()
        if core.heartbeat:
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
            if self.will_reconnect:
                await self.wait_publishable()
            else:
                raise self._close_exc or ConnectionClosed("connection is not open", code=0)
        number = self._free_channel_number(self._channels)
        channel = Channel(self, number, publisher_confirms)
        self._channels[number] = channel
        try:
            await channel.open()
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
            channel.connection_closed(self._close_exc or ConnectionClosed("closed", code=0))
        self._channels.clear()
        self._closed_for_good()

    def forget_channel(self, channel: Channel) -> None:
        """A channel is closed for good: its number may be handed out again."""
        if self._channels.get(channel.number) is channel:
            del self._channels[channel.number]

    # -- transport callbacks ------------------------------------------------------------

    def _on_connection_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        core = self._core
        assert core is not None
        core.start()
        transport.write(core.data_to_send())

    def _on_data(self, data: bytes) -> None:
        events = self._receive(data)
        if events is None:
            self._flush()
            if self._transport is not None:
                self._transport.close()
            return
        channels = self._channels
        for event in events:
            cls = event.__class__
            if cls is Delivered:
                channel = channels.get(event.channel)  # type: ignore[attr-defined]
                if channel is not None:
                    channel.deliver(event)  # type: ignore[arg-type]
            elif isinstance(event, ChannelEvent):
                channel = channels.get(event.channel)
                if channel is not None:
                    channel.handle_event(event)
            elif cls is ConnectionReady:
                if self._handshake is not None and not self._handshake.done():
                    self._handshake.set_result(None)
            elif cls is ConnectionCloseCompleted:
                if self._transport is not None:
                    self._transport.close()
            elif self._connection_event(event):
                self._flush()
                if self._transport is not None:
                    self._transport.close()
            else:
                self._update_state()
        core = self._core
        if core is not None and core.out:
            self._flush()

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
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(error)
            self._handshake.exception()  # mark retrieved
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self._update_state()
        for channel in list(self._channels.values()):
            channel.connection_closed(error)
        if not was_connected:
            return
        if self.will_reconnect:
            if self._reconnect_task is None or self._reconnect_task.done():
                self._reconnect_task = self._loop.create_task(self._reconnect())
        elif not self._user_closed:
            self._finish_closed()

    def _set_write_paused(self, paused: bool) -> None:
        self._write_paused = paused
        self._update_state()

    # -- state and waiting --------------------------------------------------------------

    @property
    def can_publish(self) -> bool:
        """Open, not restoring after a reconnect, not blocked, and the socket takes data."""
        return self._can_publish

    def _update_state(self) -> None:
        can = (self._connected and not self._restoring and not self._blocked
               and not self._write_paused)
        self._can_publish = can
        event = self._state_event
        if event is not None:
            event.set()
            self._state_event = asyncio.Event()

    async def wait_publishable(self) -> None:
        """Wait until `can_publish`; raise if the connection is closed for good."""
        while not self._can_publish:
            if not self._connected and not self.will_reconnect and not self._restoring:
                raise self._close_exc or ConnectionClosed("connection is not open", code=0)
            event = self._state_event
            assert event is not None
            await event.wait()

    async def state_changed(self) -> None:
        """Wait for the next change of connection state (open, blocked, flow, closed)."""
        event = self._state_event
        assert event is not None
        await event.wait()

    def wake(self) -> None:
        """Wake everything waiting in `state_changed` (a channel's flow state changed)."""
        self._update_state()

    # -- writing ------------------------------------------------------------------------

    def flush_soon(self, size: int = 0) -> None:
        """Frames were queued in the core: write them at the end of this loop iteration, or
        now once ``size`` bytes of content are waiting (publish bursts)."""
        if size:
            self._pending_bytes += size
            if self._pending_bytes > _FLUSH_NOW_BYTES:
                self._flush()
                return
        if not self._flush_scheduled:
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

    # -- heartbeats ---------------------------------------------------------------------

    def _heartbeat_tick(self) -> None:
        core = self._core
        if core is None or not self._connected or self._transport is None:
            return
        if not core.heartbeat_tick():
            self._close_exc = ConnectionLost(
                f"missed heartbeats from the broker ({core.heartbeat}s interval)")
            self._transport.abort()
            return
        self._flush()
        self._hb_handle = self._loop.call_later(core.heartbeat / 2, self._heartbeat_tick)

    # -- robust mode ----------------------------------------------------------------------

    async def _reconnect(self) -> None:
        backoff = Backoff(self.reconnect_interval, self.max_reconnect_interval)
        while not self._user_closed:
            self._restoring = True
            try:
                await asyncio.sleep(backoff.delay)
                log.info("reconnecting to %s", self.params)
                await self._connect_once()
                self._restoring = True
                self._update_state()
                for number in sorted(self._channels):
                    channel = self._channels.get(number)
                    if channel is not None:
                        await channel.restore()
            except (ClientError, OSError) as exc:
                log.warning("reconnect to %s failed: %s", self.params, exc)
                backoff.failed()
                if self._transport is not None:
                    self._transport.abort()
                continue
            finally:
                self._restoring = False
                self._update_state()
            if not self._connected:
                continue
            self._reconnected()
            return


def connect(url: str | ConnectionParameters = DEFAULT_URL, *,
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


def connect_robust(url: str | ConnectionParameters = DEFAULT_URL,
                   **options: Any) -> _AwaitableContext[Connection]:
    """`connect` with ``robust=True``."""
    return connect(url, robust=True, **options)

