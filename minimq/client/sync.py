"""minimq.client.sync: a blocking AMQP client for scripts and web request handlers.

No event loop and no background thread: a plain socket driven with ``select`` by whichever
thread is waiting for something. ::

    import minimq.client.sync

    with minimq.client.sync.connect("amqp://guest:guest@127.0.0.1:5672/") as connection:
        channel = connection.channel(publisher_confirms=True)
        channel.declare_queue("tasks", durable=True)
        channel.publish(b"hello", "tasks")                 # returns once the broker confirmed
        for message in channel.consume("tasks", inactivity_timeout=1.0):
            with message.process():                        # ack, or reject on exception
                print(message.body)

It drives the same sans-I/O core as the asyncio client (`minimq.protocol.client`), so replies,
confirms, returns, flow and errors behave the same; this module only owns the socket, the
waiting and the locking.

Threads: a `Connection` and its channels may be used from several threads at once. Every
call takes the connection's lock to write; one waiting thread at a time reads the socket on
behalf of all, and hands each reply to the thread waiting for it. Publishing (confirmed or
not) from many threads on one channel is safe; a channel runs one synchronous method
(declare, bind, get, ...) at a time. Iterate a `consume` generator from one thread only.

Heartbeats are serviced while some thread is inside a call. A connection left completely idle
for more than two heartbeat intervals is dropped by the broker: call
`Connection.process_data_events` now and then, or connect with ``?heartbeat=0``.

Robust mode (``connect(url, robust=True)``): when the connection drops, the next call (or a
``consume`` loop that is waiting) reconnects, with the same backoff as the asyncio client, and
re-opens every channel with its qos, confirm and tx modes, the exchanges, queues and bindings
declared through it and its consumers. Calls in progress at the moment of the loss, and
publishes awaiting a confirm, raise `ConnectionLost`; messages delivered before the loss are
redelivered by the broker and settling the old copies does nothing (`is_stale`).
"""
from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from types import TracebackType
from typing import Any, Callable, Iterator

from minimq.codec import spec
from minimq.protocol.client import ConnectionCloseCompleted, ConnectionReady
from minimq.protocol import client_channel as core_events

from .base import DEFAULT_URL, Backoff, BaseChannel, BaseConnection, BaseQueue
from .errors import (
    ChannelClosed,
    ClientError,
    ConnectionClosed,
    ConnectionLost,
    MessageNacked,
    MessageReturned,
    channel_error,
)
from .message import Body, IncomingMessage, Message, ReturnedMessage, body_and_properties
from .rpc import DIRECT_REPLY_TO, ERROR_HEADER, RPCError
from .url import ConnectionParameters

__all__ = ["connect", "Connection", "Channel", "Exchange", "Queue", "IncomingMessage", "RPC",
           "Message"]

log = logging.getLogger("minimq.client.sync")

_NOTHING: Any = object()
_RECV_SIZE = 256 * 1024


def connect(url: str | ConnectionParameters = DEFAULT_URL, *, robust: bool = False,
            **options: Any) -> Connection:
    """Open a blocking connection. Use as ``with connect(url) as connection:`` (closed on
    exit) or keep it and call ``connection.close()``. See `minimq.client.parse_url` for the
    URL format; keyword options override URL fields; ``robust=True`` reconnects (see the
    module docstring), tuned by ``reconnect_interval`` and ``max_reconnect_interval``."""
    connection = Connection(url, robust=robust, **options)
    connection.connect()
    return connection


class _Consumer:
    __slots__ = ("tag", "queue", "no_ack", "exclusive", "arguments", "buffer", "callback",
                 "cancelled")

    def __init__(self, queue: str, no_ack: bool, exclusive: bool,
                 arguments: dict[str, Any] | None,
                 callback: Callable[[IncomingMessage], None] | None = None) -> None:
        self.tag = ""
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.arguments = arguments
        self.buffer: deque[IncomingMessage] = deque()
        self.callback = callback
        self.cancelled = False


class Connection(BaseConnection):
    """A blocking AMQP connection (see the module docstring for threads and robust mode)."""

    def __init__(self, url: str | ConnectionParameters = DEFAULT_URL, *, robust: bool = False,
                 reconnect_interval: float = 0.5, max_reconnect_interval: float = 30.0,
                 **options: Any) -> None:
        super().__init__(url, robust=robust, reconnect_interval=reconnect_interval,
                         max_reconnect_interval=max_reconnect_interval, **options)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sock: socket.socket | None = None
        self._reading = False
        self._reconnecting = False
        self._channels: dict[int, Channel] = {}
        self._next_tick = 0.0
        self._backoff = Backoff(reconnect_interval, max_reconnect_interval)
        self._next_attempt = 0.0

    def __enter__(self) -> Connection:
        if self._sock is None and not self._connected:
            self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- opening and closing ---------------------------------------------------------------

    def connect(self) -> None:
        """Open the socket and do the AMQP handshake (bounded by ``connection_timeout``)."""
        with self._cond:
            self._user_closed = False
            self._close_exc = None
            self._connect_once()

    def _connect_once(self) -> None:
        """Socket, TLS and handshake (lock held); raises `ConnectionLost` and friends."""
        p = self.params
        deadline = time.monotonic() + p.connection_timeout
        try:
            sock = socket.create_connection((p.host, p.port), timeout=p.connection_timeout)
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {p.host}:{p.port}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            context = p.make_ssl_context()
            if context is not None:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                sock = context.wrap_socket(sock, server_hostname=p.server_hostname or p.host)
            sock.settimeout(None)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise ConnectionLost(f"TLS handshake with {p.host}:{p.port} failed: {exc}") from exc
        self._sock = sock
        self._close_exc = None
        core = self._new_core()
        core.start()
        self._flush()
        try:
            if not self._wait(lambda: core.state == "open", deadline - time.monotonic()):
                raise ConnectionLost(
                    f"timed out after {p.connection_timeout}s opening {p.host}:{p.port}")
        except BaseException:
            # A failed reconnect attempt keeps the channels for the next one.
            self._teardown(self._close_exc or ConnectionLost("handshake failed"),
                           final=not self.will_reconnect)
            raise
        self._opened()
        self._next_tick = time.monotonic() + core.heartbeat / 2

    def close(self, timeout: float = 10.0) -> None:
        """Close channels (waiting for their outstanding confirms), then the connection.
        Stops a robust connection reconnecting."""
        self._user_closed = True
        for channel in list(self._channels.values()):
            try:
                channel.close(timeout)
            except ClientError:
                pass
        with self._cond:
            core = self._core
            if not self._connected or core is None or self._sock is None:
                self._teardown(self._close_exc or ConnectionClosed("closed", code=200),
                               final=True)
                return
            self._close_exc = ConnectionClosed("connection closed by the client", code=200)
            core.close()
            try:
                self._flush()
                self._wait(lambda: core.state == "closed", timeout)
            except ClientError:
                pass
            self._teardown(self._close_exc, final=True)

    def _teardown(self, error: ClientError, final: bool = False) -> None:
        """Close the socket and fail every waiter (lock held). Unless ``final``, a robust
        connection keeps its channels for the next call to restore."""
        if self._close_exc is None:
            self._close_exc = error
        was_connected = self._connected
        self._connected = False
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        error = self._close_exc
        if was_connected and error.code != 200:
            log.warning("connection to %s lost: %s", self.params, error)
        keep = not final and self.will_reconnect
        if keep and not self._reconnecting:
            self._next_attempt = time.monotonic() + self._backoff.delay
        for channel in list(self._channels.values()):
            channel._mark_closed(error)
        if not keep:
            self._channels.clear()
            if was_connected or (final and self._ever_opened):
                self._closed_for_good()
        self._cond.notify_all()

    def _ensure_connected(self, deadline: float | None) -> None:
        """Robust mode: reconnect and restore the channels if the connection was lost
        (lock held). Attempts are spaced by the backoff, whichever calls make them; raises
        `ConnectionLost` if ``deadline`` comes before the connection is back."""
        if self._sock is not None or not self.will_reconnect:
            return
        while self._reconnecting:  # another thread is on it
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise self._close_exc or ConnectionLost("reconnecting")
            self._cond.wait(remaining)
        self._reconnecting = True
        try:
            while self._sock is None and not self._user_closed:
                now = time.monotonic()
                wait = self._next_attempt - now
                if wait > 0:
                    if deadline is not None and now + wait > deadline:
                        raise self._close_exc or ConnectionLost("reconnecting")
                    self._cond.wait(wait)  # other threads may go on meanwhile
                    continue
                log.info("reconnecting to %s", self.params)
                try:
                    self._connect_once()
                    for number in sorted(self._channels):
                        channel = self._channels.get(number)
                        if channel is not None:
                            channel._restore()
                except (ClientError, OSError) as exc:
                    log.warning("reconnect to %s failed: %s", self.params, exc)
                    if self._sock is not None:
                        self._teardown(ConnectionLost(f"restore failed: {exc}"))
                    self._next_attempt = time.monotonic() + self._backoff.delay
                    self._backoff.failed()
                    continue
                self._backoff.reset()
                self._reconnected()
        finally:
            self._reconnecting = False
            self._cond.notify_all()

    def channel(self, *, publisher_confirms: bool = False,
                prefetch_count: int | None = None) -> Channel:
        """Open a channel (``with connection.channel() as ch:`` closes it afterwards)."""
        with self._cond:
            self._ensure_connected(None)
            self._check()
            number = self._free_channel_number(self._channels)
            channel = Channel(self, number, publisher_confirms)
            self._channels[number] = channel
            try:
                channel._open_locked()
            except BaseException:
                self._channels.pop(number, None)
                raise
        if prefetch_count is not None:
            channel.set_qos(prefetch_count)
        return channel

    def process_data_events(self, time_limit: float = 0.0) -> None:
        """Read and dispatch whatever arrives within ``time_limit`` seconds; services
        heartbeats (and, robust, reconnects when due). Call it periodically on an otherwise
        idle connection."""
        with self._cond:
            self._wait(lambda: False, time_limit, reconnect=True)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` while keeping the connection alive (heartbeats, deliveries)."""
        self.process_data_events(seconds)

    def _forget_channel(self, channel: Channel) -> None:
        if self._channels.get(channel.number) is channel:
            del self._channels[channel.number]

    # -- I/O (all called with the lock held) -----------------------------------------------

    def _check(self) -> None:
        if not self._connected:
            raise self._close_exc or ConnectionClosed("connection is not open", code=0)

    def _flush(self) -> None:
        core = self._core
        sock = self._sock
        if core is None or not core.out:
            return
        data = core.data_to_send()
        if sock is None:
            return
        try:
            sock.sendall(data)
        except OSError as exc:
            self._teardown(ConnectionLost(f"send failed: {exc}"))
            raise self._close_exc from exc  # type: ignore[misc]

    def _wait(self, predicate: Callable[[], bool], timeout: float | None,
              reconnect: bool = False) -> bool:
        """Until ``predicate()`` holds (True) or ``timeout`` passes (False), reading the
        socket if no other thread is. Raises when the connection dies, unless ``reconnect``
        and the connection is robust: then it reconnects and goes on waiting. Lock held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if self._sock is None:
                if reconnect and self.will_reconnect:
                    try:
                        self._ensure_connected(deadline)
                    except ConnectionLost:
                        return False
                    continue
                raise self._close_exc or ConnectionClosed("connection is not open", code=0)
            now = time.monotonic()
            remaining = None if deadline is None else deadline - now
            if remaining is not None and remaining <= 0:
                return False
            core = self._core
            wait = remaining
            if core is not None and core.heartbeat:
                until_tick = max(0.0, self._next_tick - now)
                wait = until_tick if wait is None else min(wait, until_tick)
            if self._reading:
                self._cond.wait(wait)
                continue
            self._read_once(wait)
            self._service_heartbeat()
            self._cond.notify_all()

    def _read_once(self, wait: float | None) -> None:
        sock = self._sock
        assert sock is not None
        ready = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if not ready:
            self._reading = True
            self._lock.release()
            try:
                readable, _, _ = select.select([sock], [], [], wait)
                ready = bool(readable)
            except (OSError, ValueError):
                ready = True  # let recv report the error
            finally:
                self._lock.acquire()
                self._reading = False
        if not ready or self._sock is not sock:
            return
        try:
            data = sock.recv(_RECV_SIZE)
        except ssl.SSLWantReadError:
            return
        except OSError as exc:
            self._teardown(self._close_exc if self._user_closed and self._close_exc
                           else ConnectionLost(f"connection lost: {exc}"))
            return
        if not data:
            self._teardown(self._close_exc or ConnectionLost("connection closed by broker"))
            return
        self._on_data(data)

    def _service_heartbeat(self) -> None:
        core = self._core
        if core is None or not core.heartbeat or self._sock is None or not self._connected:
            return
        now = time.monotonic()
        if now < self._next_tick:
            return
        self._next_tick = now + core.heartbeat / 2
        if not core.heartbeat_tick():
            self._teardown(ConnectionLost(f"missed heartbeats ({core.heartbeat}s interval)"))
            return
        self._flush()

    def _on_data(self, data: bytes) -> None:
        events = self._receive(data)
        if events is None:
            try:
                self._flush()
            except ClientError:
                pass
            self._teardown(self._close_exc)  # type: ignore[arg-type]
            return
        channels = self._channels
        for event in events:
            if isinstance(event, core_events.ChannelEvent):
                channel = channels.get(event.channel)
                if channel is not None:
                    channel._on_event(event)
            elif event.__class__ is ConnectionReady or event.__class__ is ConnectionCloseCompleted:
                pass  # the waiters look at core.state
            elif self._connection_event(event):
                try:
                    self._flush()
                except ClientError:
                    pass
                self._teardown(self._close_exc)  # type: ignore[arg-type]
                return
        self._flush()


class Channel(BaseChannel):
    """A channel of a blocking `Connection`."""

    connection: Connection

    def __init__(self, connection: Connection, number: int,
                 publisher_confirms: bool = False) -> None:
        super().__init__(connection, number, publisher_confirms)
        self._rpc_lock = threading.Lock()
        self._reply: Any = _NOTHING
        self._closing = False
        self._consumers: dict[str, _Consumer] = {}
        self._pending_consumer: _Consumer | None = None
        self._waiting: set[int] = set()
        self._outcomes: dict[int, Any] = {}
        self._get_no_ack = False

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- lifecycle (lock held) ----------------------------------------------------------------

    def _open_locked(self) -> None:
        self._closing = False
        try:
            self._call(None, None)
            if self.publisher_confirms:
                self._call(spec.ConfirmSelect(False), None)
            if self._transactional:
                self._call(spec.TxSelect(), None)
        except BaseException:
            self._open = False
            raise

    def _restore(self) -> None:
        """After a reconnect: re-open and replay qos, declarations, bindings, consumers."""
        self._open_locked()
        self._restoring = True
        try:
            for key, replay in self.topology.entries():
                try:
                    replay()
                except ChannelClosed as exc:
                    log.warning("robust channel %s: could not restore %s: %s", self.number,
                                key, exc)
                    self.topology.forget(key)
                    self._open_locked()
        finally:
            self._restoring = False

    def _mark_closed(self, error: ClientError, release: bool = True) -> None:
        """Mark closed (lock held). ``release=False`` keeps the channel in the connection's
        table; so does a robust connection's loss (the channel is restored)."""
        keep = self._keeps_consumers(error) or self._restoring
        if release and not keep:
            self.connection._forget_channel(self)
        if not self._open:
            return
        self._open = False
        self._close_exc = error
        self._waiting.clear()
        if not keep:
            for consumer in self._consumers.values():
                consumer.cancelled = True
        self.connection._cond.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        """Wait for outstanding confirms (up to ``timeout``), then close the channel."""
        conn = self.connection
        with conn._cond:
            if not self._open or self._closing:
                return
            try:
                conn._wait(lambda: not self._waiting or not self._open, timeout)
            except ClientError:
                return
            if not self._open or self._closing:
                return
            self._closing = True
            core = self._core
            assert core is not None
            core.close()
            try:
                conn._flush()
                conn._wait(lambda: core.state == "closed" or not self._open, timeout)
            except ClientError:
                pass
            self._mark_closed(ChannelClosed("channel closed by the client", code=200))

    # -- incoming (lock held) --------------------------------------------------------------

    def _on_event(self, event: core_events.ChannelEvent) -> None:
        cls = event.__class__
        if cls is core_events.Delivered:
            assert isinstance(event, core_events.Delivered)
            method = event.method
            consumer = self._consumers.get(method.consumer_tag)
            if consumer is None:
                return
            message = IncomingMessage(self, event.body, event.properties, method.delivery_tag,
                                      method.redelivered, method.exchange, method.routing_key,
                                      method.consumer_tag, None, consumer.no_ack)
            if consumer.callback is not None:
                consumer.callback(message)
            else:
                consumer.buffer.append(message)
        elif cls is core_events.ConfirmsResolved:
            assert isinstance(event, core_events.ConfirmsResolved)
            outcome = "ack" if event.ack else "nack"
            waiting = self._waiting
            for tag in event.tags:
                if tag in waiting:
                    self._outcomes.setdefault(tag, outcome)
        elif cls is core_events.Reply:
            assert isinstance(event, core_events.Reply)
            method = event.method
            if method.__class__ is spec.BasicConsumeOk and self._pending_consumer is not None:
                # Register under the real tag now: deliveries may follow in this same read.
                consumer, self._pending_consumer = self._pending_consumer, None
                consumer.tag = method.consumer_tag
                self._consumers[consumer.tag] = consumer
            if event.body is None:
                self._reply = method
            else:
                self._reply = IncomingMessage(
                    self, event.body, event.properties or b"", method.delivery_tag,
                    method.redelivered, method.exchange, method.routing_key, None,
                    method.message_count, self._get_no_ack)
        elif cls is core_events.Returned:
            assert isinstance(event, core_events.Returned)
            self._returned(event)
            if event.delivery_tag in self._waiting:
                m = event.method
                self._outcomes[event.delivery_tag] = (m.reply_code, m.reply_text, m.exchange,
                                                      m.routing_key)
        elif cls is core_events.ChannelClosedByServer:
            assert isinstance(event, core_events.ChannelClosedByServer)
            self._mark_closed(channel_error(event.reply_code, event.reply_text,
                                            event.class_id, event.method_id))
        elif cls is core_events.ChannelCloseCompleted:
            if not self._open:
                self.connection._forget_channel(self)
        elif cls is core_events.ConsumerCancelled:
            assert isinstance(event, core_events.ConsumerCancelled)
            consumer = self._consumers.get(event.consumer_tag)
            self.topology.forget(("consumer", event.consumer_tag))
            if consumer is not None:
                consumer.cancelled = True
        # FlowChanged: publishers waiting on it are woken by the read loop's notify_all.

    # -- calls -------------------------------------------------------------------------------

    def _send(self, method: spec.Method) -> None:
        with self.connection._cond:
            self._send_locked(method)

    def _send_locked(self, method: spec.Method) -> None:
        self._check()
        assert self._core is not None
        self._core.send(method)
        self.connection._flush()

    def _call(self, method: spec.Method | None, timeout: float | None,
              consumer: _Consumer | None = None) -> Any:
        """Send ``method`` (None: open the channel) and wait for its reply (lock held)."""
        conn = self.connection
        core = self._start_call(method)
        generation = self._generation
        self._reply = _NOTHING
        self._pending_consumer = consumer
        try:
            conn._flush()
            done = conn._wait(lambda: self._reply is not _NOTHING or not self._open
                              or self._generation != generation, timeout)
        finally:
            self._pending_consumer = None
        if self._generation != generation:
            raise ConnectionLost("the connection was lost during the call")
        if self._reply is not _NOTHING:
            reply, self._reply = self._reply, _NOTHING
            return reply
        if not self._open:
            raise self._close_exc  # type: ignore[misc]
        assert not done
        # State unknown (the reply may still come): give up on this channel.
        name = method.NAME if method is not None else "channel.open"
        core.close(200, "call timed out")
        self._closing = True
        conn._flush()
        self._mark_closed(ChannelClosed(f"{name} timed out; channel closed", code=0),
                          release=False)
        raise TimeoutError(f"{name} got no reply within {timeout}s")

    def _rpc(self, method: spec.Method, timeout: float | None = None,
             consumer: _Consumer | None = None) -> Any:
        conn = self.connection
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._rpc_lock, conn._cond:
            conn._ensure_connected(deadline)
            return self._call(method, None if deadline is None
                              else max(0.0, deadline - time.monotonic()), consumer)

    def confirm_delivery(self) -> None:
        """Turn on publisher confirms: `publish` then waits for the broker's ack."""
        if not self.publisher_confirms:
            self._rpc(spec.ConfirmSelect(False))
            self.publisher_confirms = True

    def set_qos(self, prefetch_count: int = 0, prefetch_size: int = 0,
                global_: bool = False) -> None:
        """basic.qos: at most ``prefetch_count`` unacked deliveries per consumer."""
        method = spec.BasicQos(prefetch_size, prefetch_count, global_)
        self._rpc(method)
        self.topology.remember(("qos", global_), lambda: self._call(method, None))

    def flow(self, active: bool) -> bool:
        """Send channel.flow. RabbitMQ (and minimq) acknowledge ``True`` and close the
        connection with 540 NOT_IMPLEMENTED for ``False``: throttle with ``set_qos``."""
        return bool(self._rpc(spec.ChannelFlow(active)).active)

    def recover(self, requeue: bool = True) -> None:
        """Redeliver every unacknowledged message of this channel."""
        self._rpc(spec.BasicRecover(requeue))

    def declare_exchange(self, name: str, type: str = "direct", *, durable: bool = False,
                         auto_delete: bool = False, internal: bool = False,
                         passive: bool = False, arguments: dict[str, Any] | None = None,
                         timeout: float | None = None) -> Exchange:
        """Declare an exchange (``passive=True`` only checks that it exists)."""
        method = spec.ExchangeDeclare(0, name, type, passive, durable, auto_delete, internal,
                                      False, arguments)
        self._rpc(method, timeout)
        if name and not passive:
            self.topology.remember(("exchange", name), lambda: self._call(method, None))
        return Exchange(self, name, type)

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange."""
        self._rpc(spec.ExchangeDelete(0, name, if_unused, False))
        self.topology.forget(("exchange", name))

    def declare_queue(self, name: str = "", *, durable: bool = False, exclusive: bool = False,
                      auto_delete: bool = False, passive: bool = False,
                      arguments: dict[str, Any] | None = None,
                      timeout: float | None = None) -> Queue:
        """Declare a queue; an empty name asks the broker to make one up. The `Queue` has
        ``name``, ``message_count`` and ``consumer_count`` from the declare-ok."""
        queue = Queue(self, name, durable=durable, exclusive=exclusive,
                      auto_delete=auto_delete, passive=passive, arguments=arguments)
        queue.declare(timeout)
        return queue

    def delete_queue(self, name: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete a queue; returns how many messages it held."""
        count = self._rpc(spec.QueueDelete(0, name, if_unused, if_empty, False)).message_count
        self.topology.forget_about(name)
        return count

    def purge_queue(self, name: str) -> int:
        """Remove every ready message of a queue; returns how many."""
        return self._rpc(spec.QueuePurge(0, name, False)).message_count

    def bind_queue(self, queue: str, exchange: str, routing_key: str = "", *,
                   arguments: dict[str, Any] | None = None) -> None:
        """Bind ``queue`` to ``exchange``."""
        method = spec.QueueBind(0, queue, exchange, routing_key, False, arguments)
        self._rpc(method)
        self.topology.remember(("qbind", queue, exchange, routing_key, repr(arguments)),
                                lambda: self._call(method, None))

    def unbind_queue(self, queue: str, exchange: str, routing_key: str = "", *,
                     arguments: dict[str, Any] | None = None) -> None:
        """Remove a binding made with `bind_queue`."""
        self._rpc(spec.QueueUnbind(0, queue, exchange, routing_key, arguments))
        self.topology.forget(("qbind", queue, exchange, routing_key, repr(arguments)))

    def bind_exchange(self, destination: str, source: str, routing_key: str = "", *,
                      arguments: dict[str, Any] | None = None) -> None:
        """Route messages from exchange ``source`` to exchange ``destination``."""
        method = spec.ExchangeBind(0, destination, source, routing_key, False, arguments)
        self._rpc(method)
        self.topology.remember(("ebind", destination, source, routing_key, repr(arguments)),
                                lambda: self._call(method, None))

    def unbind_exchange(self, destination: str, source: str, routing_key: str = "", *,
                        arguments: dict[str, Any] | None = None) -> None:
        """Remove a binding made with `bind_exchange`."""
        self._rpc(spec.ExchangeUnbind(0, destination, source, routing_key, False, arguments))
        self.topology.forget(("ebind", destination, source, routing_key, repr(arguments)))

    # -- publishing --------------------------------------------------------------------------

    def publish(self, message: Body, routing_key: str = "", exchange: str = "", *,
                mandatory: bool = False, timeout: float | None = None) -> None:
        """Publish; with publisher confirms, return once the broker acked.

        Waits while the broker blocks the connection (connection.blocked) or pauses the
        channel (channel.flow), and in robust mode while reconnecting. Raises `MessageNacked`
        on nack, `MessageReturned` for an unroutable ``mandatory`` message (confirm mode),
        `TimeoutError` if ``timeout`` passes first.
        """
        conn = self.connection
        body, props = body_and_properties(message)
        deadline = None if timeout is None else time.monotonic() + timeout
        with conn._cond:
            try:
                conn._ensure_connected(deadline)
            except ConnectionLost:
                raise TimeoutError("the connection stayed lost") from None
            self._check()
            if conn.is_blocked or not self.is_flowing:
                if not conn._wait(lambda: (not conn.is_blocked and self.is_flowing)
                                  or not self._open,
                                  None if deadline is None else deadline - time.monotonic()):
                    raise TimeoutError("the broker kept publishing paused")
                self._check()
            core = self._core
            assert core is not None
            tag = core.publish(exchange, routing_key, body, props, mandatory)
            if not self.publisher_confirms:
                conn._flush()
                return
            self._waiting.add(tag)
            try:
                conn._flush()
                if not conn._wait(lambda: tag in self._outcomes or not self._open,
                                  None if deadline is None else deadline - time.monotonic()):
                    raise TimeoutError(f"no publisher confirm within {timeout}s")
            finally:
                self._waiting.discard(tag)
            outcome = self._outcomes.pop(tag, None)
            if outcome is None:
                self._check()
                raise ChannelClosed("channel closed before the confirm", code=0)
            if outcome == "ack":
                return
            if outcome == "nack":
                raise MessageNacked(message, "the broker nacked the message")
            code, text, ex, rk = outcome
            raise MessageReturned(message, code, text, ex, rk)

    # -- getting and consuming ---------------------------------------------------------------

    def get(self, queue: str, *, no_ack: bool = False,
            timeout: float | None = None) -> IncomingMessage | None:
        """basic.get one message, or None when the queue is empty."""
        with self._rpc_lock:
            self._get_no_ack = no_ack
        reply = self._rpc(spec.BasicGet(0, queue, no_ack), timeout)
        return reply if isinstance(reply, IncomingMessage) else None

    def _basic_consume(self, queue: str, no_ack: bool, exclusive: bool,
                       arguments: dict[str, Any] | None, consumer_tag: str = "",
                       callback: Callable[[IncomingMessage], None] | None = None) -> _Consumer:
        consumer = _Consumer(queue, no_ack, exclusive, arguments, callback)
        self._rpc(spec.BasicConsume(0, queue, consumer_tag, False, no_ack, exclusive, False,
                                    arguments), consumer=consumer)
        self.topology.remember(("consumer", consumer.tag), lambda: self._reconsume(consumer))
        return consumer

    def _reconsume(self, consumer: _Consumer) -> None:
        self._consumers[consumer.tag] = consumer
        self._call(spec.BasicConsume(0, consumer.queue, consumer.tag, False, consumer.no_ack,
                                     consumer.exclusive, False, consumer.arguments), None)

    def consume(self, queue: str, *, no_ack: bool = False, exclusive: bool = False,
                arguments: dict[str, Any] | None = None,
                inactivity_timeout: float | None = None) -> Iterator[IncomingMessage]:
        """Yield messages from ``queue`` as they arrive.

        The loop ends when ``inactivity_timeout`` seconds pass without a message, when the
        broker cancels the consumer, or when you ``break``; the consumer is then cancelled
        and messages received but not yet yielded are requeued. In robust mode the loop
        survives a reconnect (the consumer is restored).
        """
        consumer = self._basic_consume(queue, no_ack, exclusive, arguments)
        conn = self.connection
        try:
            while True:
                with conn._cond:
                    conn._wait(lambda: bool(consumer.buffer) or consumer.cancelled
                               or self._gone(), inactivity_timeout, reconnect=True)
                    if consumer.buffer:
                        message = consumer.buffer.popleft()
                    elif self._gone():
                        self._check()
                        return
                    else:
                        return  # timed out or cancelled by the broker
                yield message
        finally:
            self._cancel(consumer)

    def _gone(self) -> bool:
        """Closed, and not about to be restored by a robust reconnect."""
        return not self._open and not (self._close_exc is not None
                                       and self._keeps_consumers(self._close_exc))

    def _cancel(self, consumer: _Consumer) -> None:
        conn = self.connection
        self.topology.forget(("consumer", consumer.tag))
        if self._open and not consumer.cancelled:
            try:
                self._rpc(spec.BasicCancel(consumer.tag, False))
            except (ClientError, TimeoutError):
                pass
        with conn._cond:
            consumer.cancelled = True
            self._consumers.pop(consumer.tag, None)
            leftovers = list(consumer.buffer)
            consumer.buffer.clear()
            if leftovers and not consumer.no_ack and self._open:
                for message in leftovers:
                    if not message.is_stale:
                        try:
                            self._send_locked(spec.BasicNack(message.delivery_tag, False, True))
                        except ClientError:
                            break

    # -- transactions ------------------------------------------------------------------------

    def tx_select(self) -> None:
        """Put the channel in transaction mode."""
        self._rpc(spec.TxSelect())
        self._transactional = True

    def tx_commit(self) -> None:
        """Commit the publishes and acks made since the last commit or rollback."""
        self._rpc(spec.TxCommit())

    def tx_rollback(self) -> None:
        """Discard the publishes and acks made since the last commit or rollback."""
        self._rpc(spec.TxRollback())

    def rpc(self, *, direct_reply_to: bool = True) -> RPC:
        """An `RPC` caller on this channel."""
        return RPC(self, direct_reply_to=direct_reply_to)


class Exchange:
    """An exchange on a blocking channel (from `Channel.declare_exchange`)."""

    def __init__(self, channel: Channel, name: str, type: str = "direct") -> None:
        self.channel = channel
        self.name = name
        self.type = type

    def __repr__(self) -> str:
        return f"<sync.Exchange {self.name!r} ({self.type})>"

    def publish(self, message: Body, routing_key: str = "", *, mandatory: bool = False,
                timeout: float | None = None) -> None:
        """Publish to this exchange; see `Channel.publish`."""
        self.channel.publish(message, routing_key, self.name, mandatory=mandatory,
                             timeout=timeout)

    def bind(self, source: Exchange | str, routing_key: str = "", *,
             arguments: dict[str, Any] | None = None) -> None:
        """Route messages from exchange ``source`` to this exchange."""
        src = source.name if isinstance(source, Exchange) else source
        self.channel.bind_exchange(self.name, src, routing_key, arguments=arguments)

    def unbind(self, source: Exchange | str, routing_key: str = "", *,
               arguments: dict[str, Any] | None = None) -> None:
        """Remove a binding made with `bind`."""
        src = source.name if isinstance(source, Exchange) else source
        self.channel.unbind_exchange(self.name, src, routing_key, arguments=arguments)

    def delete(self, *, if_unused: bool = False) -> None:
        """Delete this exchange."""
        self.channel.delete_exchange(self.name, if_unused=if_unused)


class Queue(BaseQueue):
    """A queue on a blocking channel (from `Channel.declare_queue`); see `BaseQueue` for
    ``name``, ``message_count`` and ``consumer_count``."""

    channel: Channel

    @property
    def queue(self) -> str:
        """The queue's name, under the declare-ok field's name (code written when
        `declare_queue` returned the declare-ok itself keeps working)."""
        return self.name

    def declare(self, timeout: float | None = None) -> Queue:
        """(Re-)declare; updates ``name``, ``message_count`` and ``consumer_count``."""
        self._declared(self.channel._rpc(self._declaration(), timeout))
        if not self.passive:
            self.channel.topology.remember(
                ("queue", id(self)),
                lambda: self._declared(self.channel._call(self._declaration(), None)))
        return self

    def bind(self, exchange: Exchange | str, routing_key: str | None = None, *,
             arguments: dict[str, Any] | None = None) -> None:
        """Bind to ``exchange``; the routing key defaults to the queue name. Robust mode
        rebinds this queue under its name of the moment (a server-named one changes)."""
        ex = exchange.name if isinstance(exchange, Exchange) else exchange
        key = self.name if routing_key is None else routing_key
        channel = self.channel
        channel._rpc(spec.QueueBind(0, self.name, ex, key, False, arguments))
        channel.topology.remember(
            ("qbind", id(self), ex, key, repr(arguments)),
            lambda: channel._call(spec.QueueBind(0, self.name, ex, key, False, arguments), None))

    def unbind(self, exchange: Exchange | str, routing_key: str | None = None, *,
               arguments: dict[str, Any] | None = None) -> None:
        """Remove a binding made with `bind`."""
        ex = exchange.name if isinstance(exchange, Exchange) else exchange
        key = self.name if routing_key is None else routing_key
        self.channel._rpc(spec.QueueUnbind(0, self.name, ex, key, arguments))
        self.channel.topology.forget(("qbind", id(self), ex, key, repr(arguments)))

    def get(self, *, no_ack: bool = False, timeout: float | None = None,
            ) -> IncomingMessage | None:
        """basic.get one message, or None when the queue is empty."""
        return self.channel.get(self.name, no_ack=no_ack, timeout=timeout)

    def consume(self, *, no_ack: bool = False, exclusive: bool = False,
                arguments: dict[str, Any] | None = None,
                inactivity_timeout: float | None = None) -> Iterator[IncomingMessage]:
        """Yield messages; see `Channel.consume`."""
        return self.channel.consume(self.name, no_ack=no_ack, exclusive=exclusive,
                                    arguments=arguments, inactivity_timeout=inactivity_timeout)

    def purge(self) -> int:
        """Remove every ready message; returns how many."""
        return self.channel.purge_queue(self.name)

    def delete(self, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete the queue; returns how many messages it held."""
        count = self.channel.delete_queue(self.name, if_unused=if_unused, if_empty=if_empty)
        self.channel.topology.forget_about(id(self))
        return count


class RPC:
    """Blocking RPC caller: ``reply = rpc.call("queue", b"request", timeout=5)``.

    Uses direct reply-to (``amq.rabbitmq.reply-to``) by default, or an exclusive server-named
    reply queue with ``direct_reply_to=False``. Safe to call from several threads.
    """

    def __init__(self, channel: Channel, *, direct_reply_to: bool = True) -> None:
        self.channel = channel
        self._replies: dict[str, IncomingMessage] = {}
        self._waiting: set[str] = set()
        if direct_reply_to:
            self.reply_to = DIRECT_REPLY_TO
        else:
            self.reply_to = channel.declare_queue("", exclusive=True, auto_delete=True).name
        self._consumer = channel._basic_consume(self.reply_to, True, False, None,
                                                callback=self._on_reply)

    def _on_reply(self, message: IncomingMessage) -> None:
        correlation_id = message.correlation_id or ""
        if correlation_id in self._waiting:
            self._replies[correlation_id] = message

    def call(self, routing_key: str, body: Body = b"", *, exchange: str = "",
             timeout: float | None = None, headers: dict[str, Any] | None = None,
             ) -> IncomingMessage:
        """Send a request and return the reply; `TimeoutError`, `RPCError` (remote handler
        raised) or `MessageReturned` (no route) otherwise."""
        channel = self.channel
        conn = channel.connection
        correlation_id = uuid.uuid4().hex
        if isinstance(body, Message):
            message = Message(body.body, properties=body.properties)
        else:
            message = Message(body, headers=headers)
        props = message.properties
        props.correlation_id = correlation_id
        props.reply_to = self.reply_to
        if timeout is not None and props.expiration is None:
            props.expiration = str(max(1, int(timeout * 1000)))
        returned: list[ReturnedMessage] = []

        def on_return(msg: ReturnedMessage) -> None:
            if msg.correlation_id == correlation_id:
                returned.append(msg)

        with conn._cond:
            self._waiting.add(correlation_id)
            channel.add_on_return_callback(on_return)
        try:
            channel.publish(message, routing_key, exchange, mandatory=True, timeout=timeout)
            with conn._cond:
                ok = conn._wait(lambda: correlation_id in self._replies or bool(returned)
                                or channel.is_closed, timeout)
                if returned:
                    r = returned[0]
                    raise MessageReturned(r, r.reply_code, r.reply_text, r.exchange,
                                          r.routing_key)
                if correlation_id in self._replies:
                    reply = self._replies.pop(correlation_id)
                    error = (reply.properties.headers or {}).get(ERROR_HEADER)
                    if error is not None:
                        raise RPCError(error.decode() if isinstance(error, bytes) else str(error),
                                       reply)  # type: ignore[arg-type]
                    return reply
                channel._check()
                assert not ok
                raise TimeoutError(f"no RPC reply within {timeout}s")
        finally:
            with conn._cond:
                self._waiting.discard(correlation_id)
                self._replies.pop(correlation_id, None)
                try:
                    channel.remove_on_return_callback(on_return)
                except ValueError:
                    pass
