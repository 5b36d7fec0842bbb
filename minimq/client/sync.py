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

Threads: a `Connection` and its channels may be used from several threads at once. Every
call takes the connection's lock to write; one waiting thread at a time reads the socket on
behalf of all, and hands each reply to the thread waiting for it. Publishing (confirmed or
not) from many threads on one channel is safe; a channel runs one synchronous method
(declare, bind, get, ...) at a time. Iterate a `consume` generator from one thread only.

Heartbeats are serviced while some thread is inside a call. A connection left completely idle
for more than two heartbeat intervals is dropped by the broker: call
`Connection.process_data_events` now and then, or connect with ``?heartbeat=0``.
"""
from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
import uuid
from collections import OrderedDict, deque
from types import TracebackType
from typing import Any, Callable, Iterator, Union

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

from .errors import (
    AuthenticationError,
    ChannelClosed,
    ClientError,
    ConnectionClosed,
    ConnectionLost,
    MessageNacked,
    MessageReturned,
    channel_error,
    connection_error,
)
from .message import Message, ReturnedMessage, _ReceivedBase
from .rpc import DIRECT_REPLY_TO, ERROR_HEADER, RPCError
from .url import ConnectionParameters, parse_url

__all__ = ["connect", "Connection", "Channel", "IncomingMessage", "RPC", "Message"]

log = logging.getLogger("minimq.client.sync")

Body = Union[Message, bytes, bytearray, memoryview, str]
_NOTHING: Any = object()
_RECV_SIZE = 256 * 1024


def _as_message(message: Body) -> tuple[bytes, BasicProperties | None]:
    if isinstance(message, Message):
        return message.body, message.properties
    if isinstance(message, bytes):
        return message, None
    if isinstance(message, str):
        return message.encode("utf-8"), None
    return bytes(message), None


def connect(url: str | ConnectionParameters = "amqp://guest:guest@127.0.0.1:5672/",
            **options: Any) -> Connection:
    """Open a blocking connection. Use as ``with connect(url) as connection:`` (closed on
    exit) or keep it and call ``connection.close()``. See `minimq.client.parse_url` for the
    URL format; keyword options override URL fields."""
    connection = Connection(url, **options)
    connection.connect()
    return connection


class IncomingMessage(_ReceivedBase):
    """A delivered or fetched message of the blocking client; settle it with `ack`, `nack`,
    `reject` or ``with message.process():``. Settling is thread-safe."""

    __slots__ = ("channel", "delivery_tag", "redelivered", "consumer_tag", "message_count",
                 "no_ack", "settled")

    def __init__(self, channel: Channel, body: bytes, raw_properties: bytes, delivery_tag: int,
                 redelivered: bool, exchange: str, routing_key: str,
                 consumer_tag: str | None, message_count: int | None, no_ack: bool) -> None:
        self.channel = channel
        self.body = body
        self._raw_properties = raw_properties
        self._properties: BasicProperties | None = None
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.consumer_tag = consumer_tag
        self.message_count = message_count
        self.no_ack = no_ack
        self.settled = no_ack

    def _settle(self) -> None:
        if self.settled:
            raise RuntimeError(f"message {self.delivery_tag} was already settled (or no_ack)")
        self.settled = True

    def ack(self, multiple: bool = False) -> None:
        """Acknowledge (with ``multiple``: and every earlier unsettled message)."""
        self._settle()
        self.channel._send(spec.BasicAck(self.delivery_tag, multiple))

    def nack(self, requeue: bool = True, multiple: bool = False) -> None:
        """Negatively acknowledge; requeued by default."""
        self._settle()
        self.channel._send(spec.BasicNack(self.delivery_tag, multiple, requeue))

    def reject(self, requeue: bool = False) -> None:
        """Reject; dropped (or dead-lettered) unless ``requeue``."""
        self._settle()
        self.channel._send(spec.BasicReject(self.delivery_tag, requeue))

    def process(self, requeue: bool = False) -> _Process:
        """``with message.process():`` acks on success, rejects (requeue optional) on error."""
        return _Process(self, requeue)

    def __repr__(self) -> str:
        return (f"IncomingMessage(tag={self.delivery_tag}, rk={self.routing_key!r}, "
                f"body={self.body[:64]!r})")


class _Process:
    def __init__(self, message: IncomingMessage, requeue: bool) -> None:
        self.message = message
        self.requeue = requeue

    def __enter__(self) -> IncomingMessage:
        return self.message

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        message = self.message
        if message.settled or message.channel.is_closed:
            return
        if exc_type is None:
            message.ack()
        else:
            message.reject(requeue=self.requeue)


class _Consumer:
    __slots__ = ("tag", "no_ack", "buffer", "callback", "cancelled")

    def __init__(self, tag: str, no_ack: bool,
                 callback: Callable[[IncomingMessage], None] | None = None) -> None:
        self.tag = tag
        self.no_ack = no_ack
        self.buffer: deque[IncomingMessage] = deque()
        self.callback = callback
        self.cancelled = False


class Connection:
    """A blocking AMQP connection (see the module docstring for the threading rules)."""

    def __init__(self, url: str | ConnectionParameters = "amqp://guest:guest@127.0.0.1:5672/",
                 **options: Any) -> None:
        if isinstance(url, ConnectionParameters):
            self.params = url.with_options(**options) if options else url
        else:
            self.params = parse_url(url, **options)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sock: socket.socket | None = None
        self._core: ClientConnection | None = None
        self._reading = False
        self._open = False
        self._opened = False
        self._close_exc: ClientError | None = None
        self._closing = False
        self._blocked = False
        self.blocked_reason: str | None = None
        self._channels: dict[int, Channel] = {}
        self._last_send = 0.0
        self._last_recv = 0.0
        #: The broker's connection.start properties.
        self.server_properties: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<sync.Connection {self.params} {'open' if self._open else 'closed'}>"

    def __enter__(self) -> Connection:
        if self._sock is None and not self._open:
            self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def is_closed(self) -> bool:
        return not self._open

    @property
    def is_blocked(self) -> bool:
        """True while the broker blocks publishing (connection.blocked)."""
        return self._blocked

    @property
    def close_reason(self) -> ClientError | None:
        return self._close_exc

    @property
    def capabilities(self) -> dict[str, Any]:
        return dict(self.server_properties.get("capabilities") or {})

    @property
    def heartbeat(self) -> int:
        return self._core.heartbeat if self._core else 0

    # -- opening and closing ---------------------------------------------------------------

    def connect(self) -> None:
        """Open the socket and do the AMQP handshake (bounded by ``connection_timeout``)."""
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
        core = self._core = ClientConnection(
            username=p.username, password=p.password, virtual_host=p.virtual_host,
            heartbeat=p.heartbeat, frame_max=p.frame_max, channel_max=p.channel_max,
            client_properties=p.client_properties)
        with self._cond:
            core.start()
            self._last_recv = time.monotonic()
            self._flush()
            try:
                if not self._wait(lambda: self._opened, deadline - time.monotonic()):
                    raise ConnectionLost(
                        f"timed out after {p.connection_timeout}s opening {p.host}:{p.port}")
            except BaseException:
                self._teardown(self._close_exc or ConnectionLost("handshake failed"))
                raise
            self._open = True
            self.server_properties = core.server_properties

    def close(self, timeout: float = 10.0) -> None:
        """Close channels (waiting for their outstanding confirms), then the connection."""
        for channel in list(self._channels.values()):
            try:
                channel.close(timeout)
            except ClientError:
                pass
        with self._cond:
            if not self._open or self._core is None:
                self._teardown(self._close_exc or ConnectionClosed("closed", code=200))
                return
            self._closing = True
            self._close_exc = ConnectionClosed("connection closed by the client", code=200)
            self._core.close()
            try:
                self._flush()
                self._wait(lambda: self._core is None or self._core.state == "closed", timeout)
            except ClientError:
                pass
            self._teardown(self._close_exc)

    def _teardown(self, error: ClientError) -> None:
        """Close the socket and fail every waiter (lock held)."""
        if self._close_exc is None:
            self._close_exc = error
        self._open = False
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        for channel in list(self._channels.values()):
            channel._closed(self._close_exc)
        self._channels.clear()
        self._cond.notify_all()

    def channel(self, *, publisher_confirms: bool = False,
                prefetch_count: int | None = None) -> Channel:
        """Open a channel (``with connection.channel() as ch:`` closes it afterwards)."""
        with self._cond:
            self._check()
            core = self._core
            assert core is not None
            limit = core.channel_max or 65535
            number = next((n for n in range(1, limit + 1) if n not in self._channels), None)
            if number is None:
                raise ClientError(f"all {limit} channels are in use")
            channel = Channel(self, number)
            self._channels[number] = channel
        try:
            channel._rpc(spec.ChannelOpen())
            if publisher_confirms:
                channel.confirm_delivery()
            if prefetch_count is not None:
                channel.set_qos(prefetch_count)
        except BaseException:
            with self._cond:
                self._channels.pop(number, None)
            raise
        return channel

    def process_data_events(self, time_limit: float = 0.0) -> None:
        """Read and dispatch whatever arrives within ``time_limit`` seconds; services
        heartbeats. Call it periodically on an otherwise idle connection."""
        with self._cond:
            self._wait(lambda: False, time_limit)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` while keeping the connection alive (heartbeats, deliveries)."""
        self.process_data_events(seconds)

    # -- I/O (all called with the lock held) -----------------------------------------------

    def _check(self) -> None:
        if not self._open:
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
        self._last_send = time.monotonic()

    def _wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Until ``predicate()`` holds (True) or ``timeout`` passes (False), reading the
        socket if no other thread is. Raises when the connection dies. Lock held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if self._sock is None:
                raise self._close_exc or ConnectionClosed("connection is not open", code=0)
            now = time.monotonic()
            remaining = None if deadline is None else deadline - now
            if remaining is not None and remaining <= 0:
                return False
            hb = self._core.heartbeat if self._core is not None else 0
            wait = remaining
            if hb:
                wait = hb / 2 if wait is None else min(wait, hb / 2)
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
            self._teardown(self._close_exc if self._closing and self._close_exc
                           else ConnectionLost(f"connection lost: {exc}"))
            return
        if not data:
            if self._closing and self._close_exc is not None:
                self._teardown(self._close_exc)
            else:
                self._teardown(self._close_exc or ConnectionLost("connection closed by broker"))
            return
        self._last_recv = time.monotonic()
        self._on_data(data)

    def _service_heartbeat(self) -> None:
        core = self._core
        if core is None or not core.heartbeat or self._sock is None or not self._open:
            return
        now = time.monotonic()
        if now - self._last_recv > 2 * core.heartbeat:
            self._teardown(ConnectionLost(f"missed heartbeats ({core.heartbeat}s interval)"))
            return
        if now - self._last_send >= core.heartbeat / 2:
            core.send_heartbeat()
            self._flush()

    def _on_data(self, data: bytes) -> None:
        core = self._core
        assert core is not None
        try:
            events = core.receive_data(data)
        except CodecAMQPError as exc:
            log.error("protocol error from %s: %s", self.params, exc)
            core.close(exc.code, exc.reply_text[:255])
            try:
                self._flush()
            except ClientError:
                pass
            self._teardown(connection_error(exc.code, exc.reply_text))
            return
        for event in events:
            cls = event.__class__
            if cls is ContentReceived or cls is MethodReceived:
                channel = self._channels.get(event.channel)  # type: ignore[attr-defined]
                if channel is None:
                    continue
                if cls is ContentReceived:
                    channel._on_content(event.method, event.header[12:],  # type: ignore
                                        event.body)  # type: ignore[attr-defined]
                else:
                    channel._on_method(event.method)  # type: ignore[attr-defined]
            elif cls is ConnectionReady:
                self._opened = True
            elif cls is ConnectionClosedByServer:
                assert isinstance(event, ConnectionClosedByServer)
                if not self._opened and event.reply_code == 403:
                    err: ClientError = AuthenticationError(event.reply_text)
                else:
                    err = connection_error(event.reply_code, event.reply_text, event.class_id,
                                           event.method_id)
                log.warning("broker closed the connection: %s", err)
                self._close_exc = err
                try:
                    self._flush()
                except ClientError:
                    pass
                self._teardown(err)
                return
            elif cls is ConnectionCloseCompleted:
                pass
            elif cls is ConnectionBlocked:
                assert isinstance(event, ConnectionBlocked)
                log.warning("broker blocked publishing: %s", event.reason)
                self._blocked = True
                self.blocked_reason = event.reason
            elif cls is ConnectionUnblocked:
                self._blocked = False
                self.blocked_reason = None
        if core.out:
            self._flush()


class Channel:
    """A channel of a blocking `Connection`."""

    def __init__(self, connection: Connection, number: int) -> None:
        self.connection = connection
        self.number = number
        self.publisher_confirms = False
        self._rpc_lock = threading.Lock()
        self._expect: tuple[type[spec.Method], ...] = ()
        self._reply: Any = _NOTHING
        self._open = True
        self._close_exc: ClientError | None = None
        self._consumers: dict[str, _Consumer] = {}
        self._seq = 0
        self._pending: OrderedDict[int, None] = OrderedDict()
        self._outcomes: dict[int, str | tuple[int, str, str, str]] = {}
        self._by_message_id: dict[str, int] = {}
        self._get_no_ack = False
        self._on_return: list[Callable[[ReturnedMessage], None]] = []

    def __repr__(self) -> str:
        return f"<sync.Channel {self.number} {'open' if self._open else 'closed'}>"

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def is_closed(self) -> bool:
        return not self._open

    @property
    def close_reason(self) -> ClientError | None:
        return self._close_exc

    def _check(self) -> None:
        if not self._open:
            raise self._close_exc or ChannelClosed("channel is not open", code=0)

    def _closed(self, error: ClientError, release: bool = True) -> None:
        """Mark closed (lock held). ``release=False`` keeps the channel number reserved until
        the broker's close-ok for a channel.close we sent arrives."""
        conn = self.connection
        if release and conn._channels.get(self.number) is self:
            del conn._channels[self.number]
        if not self._open:
            return
        self._open = False
        self._close_exc = error
        for consumer in self._consumers.values():
            consumer.cancelled = True
        if conn._core is not None:
            conn._core.channel_closed(self.number)
        conn._cond.notify_all()

    # -- incoming (lock held) --------------------------------------------------------------

    def _on_method(self, method: spec.Method) -> None:
        cls = method.__class__
        if not self._open:
            # Abandoned after a timeout: wait for the close-ok, then free the number.
            if cls is spec.ChannelCloseOk or cls is spec.ChannelClose:
                self._closed(self._close_exc or ChannelClosed("closed", code=0))
            return
        if cls is spec.BasicAck or cls is spec.BasicNack:
            outcome = "ack" if cls is spec.BasicAck else "nack"
            if method.multiple:
                while self._pending:
                    tag = next(iter(self._pending))
                    if tag > method.delivery_tag:
                        break
                    self._pending.popitem(last=False)
                    self._outcomes.setdefault(tag, outcome)
            elif self._pending.pop(method.delivery_tag, _NOTHING) is not _NOTHING:
                self._outcomes.setdefault(method.delivery_tag, outcome)
            return
        if cls is spec.ChannelClose:
            self._closed(channel_error(method.reply_code, method.reply_text, method.class_id,
                                       method.method_id))
            return
        if cls is spec.BasicCancel:
            consumer = self._consumers.get(method.consumer_tag)
            if consumer is not None:
                consumer.cancelled = True
            if not method.no_wait:
                self.connection._core.send_method(  # type: ignore[union-attr]
                    self.number, spec.BasicCancelOk(method.consumer_tag))
            return
        if cls is spec.ChannelFlow:
            self.connection._core.send_method(  # type: ignore[union-attr]
                self.number, spec.ChannelFlowOk(method.active))
            return
        if cls is spec.BasicConsumeOk and "" in self._consumers:
            # Register under the real tag now: deliveries may follow in this same read.
            consumer = self._consumers.pop("")
            consumer.tag = method.consumer_tag
            self._consumers[consumer.tag] = consumer
        if cls in self._expect and self._reply is _NOTHING:
            self._reply = method
            return
        log.debug("ignoring unexpected %s on channel %s", method.NAME, self.number)

    def _on_content(self, method: spec.Method, properties: bytes, body: bytes) -> None:
        cls = method.__class__
        if cls is spec.BasicDeliver:
            consumer = self._consumers.get(method.consumer_tag)
            if consumer is None:
                return
            message = IncomingMessage(self, body, properties, method.delivery_tag,
                                      method.redelivered, method.exchange, method.routing_key,
                                      method.consumer_tag, None, consumer.no_ack)
            if consumer.callback is not None:
                consumer.callback(message)
            else:
                consumer.buffer.append(message)
        elif cls is spec.BasicGetOk:
            if spec.BasicGetOk in self._expect and self._reply is _NOTHING:
                self._reply = IncomingMessage(self, body, properties, method.delivery_tag,
                                              method.redelivered, method.exchange,
                                              method.routing_key, None, method.message_count,
                                              self._get_no_ack)
        elif cls is spec.BasicReturn:
            returned = ReturnedMessage(body, properties, method.reply_code, method.reply_text,
                                       method.exchange, method.routing_key)
            tag = self._by_message_id.pop(returned.message_id or "", None)
            if tag is not None:
                self._outcomes[tag] = (method.reply_code, method.reply_text, method.exchange,
                                       method.routing_key)
            for callback in self._on_return:
                try:
                    callback(returned)
                except Exception:
                    log.exception("on_return callback failed")
            if tag is None and not self._on_return:
                log.warning("message returned by the broker: %r", returned)

    # -- calls -------------------------------------------------------------------------------

    def _send(self, method: spec.Method) -> None:
        conn = self.connection
        with conn._cond:
            self._check()
            conn._core.send_method(self.number, method)  # type: ignore[union-attr]
            conn._flush()

    def _rpc(self, method: spec.Method, timeout: float | None = None) -> Any:
        conn = self.connection
        with self._rpc_lock, conn._cond:
            self._check()
            self._expect = method.RESPONSES
            self._reply = _NOTHING
            conn._core.send_method(self.number, method)  # type: ignore[union-attr]
            conn._flush()
            try:
                done = conn._wait(lambda: self._reply is not _NOTHING or not self._open, timeout)
            except ConnectionClosed:
                self._closed(conn._close_exc or ConnectionLost("connection lost"))
                raise
            if self._reply is not _NOTHING:
                reply, self._reply = self._reply, _NOTHING
                self._expect = ()
                return reply
            if not self._open:
                raise self._close_exc  # type: ignore[misc]
            assert not done
            # State unknown (the reply may still come): give up on this channel.
            conn._core.send_method(  # type: ignore[union-attr]
                self.number, spec.ChannelClose(200, "call timed out", 0, 0))
            conn._flush()
            self._closed(ChannelClosed(f"{method.NAME} timed out; channel closed", code=0),
                         release=False)
            raise TimeoutError(f"{method.NAME} got no reply within {timeout}s")

    def close(self, timeout: float = 10.0) -> None:
        """Wait for outstanding confirms (up to ``timeout``), then close the channel."""
        conn = self.connection
        with conn._cond:
            if not self._open:
                return
            try:
                conn._wait(lambda: not self._pending or not self._open, timeout)
            except ClientError:
                return
        if not self._open:
            return
        try:
            self._rpc(spec.ChannelClose(200, "Normal shutdown", 0, 0), timeout)
        except (ClientError, TimeoutError):
            pass
        with conn._cond:
            self._closed(ChannelClosed("channel closed by the client", code=200))

    def confirm_delivery(self) -> None:
        """Turn on publisher confirms: `publish` then waits for the broker's ack."""
        if not self.publisher_confirms:
            self._rpc(spec.ConfirmSelect(False))
            self.publisher_confirms = True

    def set_qos(self, prefetch_count: int = 0, prefetch_size: int = 0,
                global_: bool = False) -> None:
        """basic.qos: at most ``prefetch_count`` unacked deliveries per consumer."""
        self._rpc(spec.BasicQos(prefetch_size, prefetch_count, global_))

    def declare_exchange(self, name: str, type: str = "direct", *, durable: bool = False,
                         auto_delete: bool = False, internal: bool = False,
                         passive: bool = False, arguments: dict[str, Any] | None = None) -> None:
        """Declare an exchange."""
        self._rpc(spec.ExchangeDeclare(0, name, type, passive, durable, auto_delete, internal,
                                       False, arguments))

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        self._rpc(spec.ExchangeDelete(0, name, if_unused, False))

    def declare_queue(self, name: str = "", *, durable: bool = False, exclusive: bool = False,
                      auto_delete: bool = False, passive: bool = False,
                      arguments: dict[str, Any] | None = None) -> spec.QueueDeclareOk:
        """Declare a queue; returns the declare-ok (``.queue``, ``.message_count``,
        ``.consumer_count``)."""
        return self._rpc(spec.QueueDeclare(0, name, passive, durable, exclusive, auto_delete,
                                           False, arguments))

    def delete_queue(self, name: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete a queue; returns how many messages it held."""
        return self._rpc(spec.QueueDelete(0, name, if_unused, if_empty, False)).message_count

    def purge_queue(self, name: str) -> int:
        return self._rpc(spec.QueuePurge(0, name, False)).message_count

    def bind_queue(self, queue: str, exchange: str, routing_key: str = "", *,
                   arguments: dict[str, Any] | None = None) -> None:
        self._rpc(spec.QueueBind(0, queue, exchange, routing_key, False, arguments))

    def unbind_queue(self, queue: str, exchange: str, routing_key: str = "", *,
                     arguments: dict[str, Any] | None = None) -> None:
        self._rpc(spec.QueueUnbind(0, queue, exchange, routing_key, arguments))

    def bind_exchange(self, destination: str, source: str, routing_key: str = "", *,
                      arguments: dict[str, Any] | None = None) -> None:
        self._rpc(spec.ExchangeBind(0, destination, source, routing_key, False, arguments))

    def add_on_return_callback(self, callback: Callable[[ReturnedMessage], None]) -> None:
        """``callback(returned)`` for each basic.return (called by the reading thread)."""
        self._on_return.append(callback)

    def publish(self, message: Body, routing_key: str = "", exchange: str = "", *,
                mandatory: bool = False, timeout: float | None = None) -> None:
        """Publish; with publisher confirms, return once the broker acked.

        Raises `MessageNacked` on nack, `MessageReturned` for an unroutable ``mandatory``
        message (confirm mode), `TimeoutError` if ``timeout`` passes first (while blocked by
        connection.blocked, or waiting for the confirm).
        """
        conn = self.connection
        body, props = _as_message(message)
        deadline = None if timeout is None else time.monotonic() + timeout
        with conn._cond:
            self._check()
            if conn._blocked:
                if not conn._wait(lambda: not conn._blocked or not self._open,
                                  None if deadline is None else deadline - time.monotonic()):
                    raise TimeoutError("the broker kept the connection blocked")
                self._check()
            core = conn._core
            assert core is not None
            if not self.publisher_confirms:
                core.send_publish(self.number, exchange, routing_key, body, props, mandatory)
                conn._flush()
                return
            self._seq += 1
            tag = self._seq
            if mandatory:
                if props is None:
                    props = BasicProperties()
                if not props.message_id:
                    props.message_id = uuid.uuid4().hex
                self._by_message_id[props.message_id] = tag
            self._pending[tag] = None
            core.send_publish(self.number, exchange, routing_key, body, props, mandatory)
            conn._flush()
            try:
                if not conn._wait(lambda: tag in self._outcomes or not self._open,
                                  None if deadline is None else deadline - time.monotonic()):
                    raise TimeoutError(f"no publisher confirm within {timeout}s")
            finally:
                if props is not None and props.message_id:
                    self._by_message_id.pop(props.message_id, None)
            outcome = self._outcomes.pop(tag, None)
            if outcome is None:
                self._check()
                raise ChannelClosed("channel closed before the confirm", code=0)
            if outcome == "ack":
                return
            if outcome == "nack":
                raise MessageNacked(message, "the broker nacked the message")
            code, text, ex, rk = outcome  # type: ignore[misc]
            # The ack for a returned message follows; do not leave it dangling.
            raise MessageReturned(message, code, text, ex, rk)

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
        conn = self.connection
        with self._rpc_lock, conn._cond:
            self._check()
            self._expect = (spec.BasicConsumeOk,)
            self._reply = _NOTHING
            conn._core.send_method(self.number, spec.BasicConsume(  # type: ignore[union-attr]
                0, queue, consumer_tag, False, no_ack, exclusive, False, arguments))
            conn._flush()
            # Register the consumer as soon as consume-ok is read, before later frames of
            # the same read (its first deliveries) are dispatched.
            pending = _Consumer("", no_ack, callback)
            self._consumers[""] = pending
            try:
                conn._wait(lambda: self._reply is not _NOTHING or not self._open, None)
            finally:
                self._consumers.pop("", None)
            if self._reply is _NOTHING:
                raise self._close_exc or ChannelClosed("channel closed", code=0)
            self._reply = _NOTHING
            return pending

    def consume(self, queue: str, *, no_ack: bool = False, exclusive: bool = False,
                arguments: dict[str, Any] | None = None,
                inactivity_timeout: float | None = None) -> Iterator[IncomingMessage]:
        """Yield messages from ``queue`` as they arrive.

        The loop ends when ``inactivity_timeout`` seconds pass without a message, when the
        broker cancels the consumer, or when you ``break``; the consumer is then cancelled
        and messages received but not yet yielded are requeued.
        """
        consumer = self._basic_consume(queue, no_ack, exclusive, arguments)
        conn = self.connection
        try:
            while True:
                with conn._cond:
                    conn._wait(
                        lambda: bool(consumer.buffer) or consumer.cancelled or not self._open,
                        inactivity_timeout)
                    if consumer.buffer:
                        message = consumer.buffer.popleft()
                    elif not self._open:
                        self._check()
                        return
                    else:
                        return  # timed out or cancelled by the broker
                yield message
        finally:
            self._cancel(consumer)

    def _cancel(self, consumer: _Consumer) -> None:
        conn = self.connection
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
                core = conn._core
                assert core is not None
                for message in leftovers:
                    core.send_method(self.number, spec.BasicNack(message.delivery_tag, False,
                                                                 True))
                try:
                    conn._flush()
                except ClientError:
                    pass

    def tx_select(self) -> None:
        self._rpc(spec.TxSelect())

    def tx_commit(self) -> None:
        self._rpc(spec.TxCommit())

    def tx_rollback(self) -> None:
        self._rpc(spec.TxRollback())

    def rpc(self, *, direct_reply_to: bool = True) -> RPC:
        """An `RPC` caller on this channel."""
        return RPC(self, direct_reply_to=direct_reply_to)


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
            self.reply_to = channel.declare_queue("", exclusive=True, auto_delete=True).queue
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
            channel._on_return.append(on_return)
        try:
            channel.publish(message, routing_key, exchange, mandatory=True, timeout=timeout)
            with conn._cond:
                ok = conn._wait(lambda: correlation_id in self._replies or bool(returned)
                                or not channel._open, timeout)
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
                if on_return in channel._on_return:
                    channel._on_return.remove(on_return)
