"""One client connection as the broker core sees it: protocol events in, frames out.

`feed(data)` runs the sans-I/O protocol over the bytes, applies each event to the broker's
state and leaves everything to send in `out` (shared with the protocol object). Deliveries to
consumers of *other* connections land in their `out` lists; `wake` tells the transport that a
session it is not currently serving has something to write.

Errors: an AMQPError raised while handling a method closes the channel (soft) or the
connection (hard), with RabbitMQ's reply code and text, and with the class/method id of the
method that caused it.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from minimq.broker.channel import HANDLERS, Channel
from minimq.broker.queue import Queue
from minimq.broker.teardown import guarded
from minimq.codec import spec
from minimq.codec.constants import FRAME_BODY
from minimq.codec.constants import FRAME_HEADER as FRAME_CONTENT_HEADER
from minimq.codec.errors import AMQPError, CommandInvalid, InternalError
from minimq.codec.frames import FRAME_END_BYTE as _END
from minimq.codec.frames import FRAME_HEADER as _FRAME
from minimq.protocol.connection import NEED_DATA, ServerConnection
from minimq.protocol.events import (
    ChannelClosed,
    ChannelOpened,
    ConnectionClosed,
    ConnectionOpened,
    ContentReceived,
    MethodReceived,
)
from minimq.protocol.states import ConnState

if TYPE_CHECKING:
    from minimq.broker.broker import Broker

log = logging.getLogger("minimq.session")

_CONTENT_OVERHEAD = 48  # frame headers and ends around one message's content, roughly
FEED_SLICE = 2048
"""Events handled per feed() call: one connection's input never holds the loop for long."""


class Session:
    """Broker-side state of one connection."""

    def __init__(self, broker: "Broker", conn: ServerConnection, peer: str = "") -> None:
        self.broker = broker  # the registry: vhosts, sessions, limits
        self.services = broker.services  # clock, store, confirms, access, caches
        self.conn = conn
        self.out = conn.out
        self.peer = peer
        self.vhost = None
        self.user = ""
        self.channels: dict[int, Channel] = {}
        # Credit: deliveries flow while the socket takes them (`transport_writable`) and
        # while less than `output_high_water` bytes wait in `out`. Content written to `out`
        # is counted in `out_bytes`; the transport resets it when it takes `out`.
        self.writable = True
        self.transport_writable = True
        self.out_bytes = 0
        self.output_high_water = 1024 * 1024
        self.cancel_notify = False
        self.closed = False
        self.exclusive_queues: list[Queue] = []
        self.confirming: set[Channel] = set()
        # Set by the transport: called when another session's activity left output here.
        self.on_wake: Callable[["Session"], None] | None = None
        self.wake_pending = False
        self.published = False  # a basic.publish arrived (the transport resets it per read)
        # Set by the transport while a resource alarm is on: the first complete publish read
        # then waits in `_held`, and so does everything after it, until the alarm clears.
        self.hold_publishes = False
        self._held: ContentReceived | None = None
        # Access control answers already given on this connection: (permission, kind, name)
        # allowed, exchanges it may publish to, and (exchange, routing key) pairs allowed by
        # topic permissions. The broker clears them whenever users or permissions change.
        self.acl_cache: set[tuple[str, str, str]] = set()
        self.write_ok: set[str] = set()
        self.topic_ok: set[tuple[str, str]] = set()
        self.client_name = ""
        # The content header of the last publish on this connection: publishers mostly
        # repeat the same properties, and such messages share one header bytes object.
        self.last_header = b""

    # ------------------------------------------------------------- driving

    def feed(self, data: bytes = b"", deadline: float | None = None) -> bool:
        """Process bytes from the peer; output accumulates in `out`.

        Handles at most FEED_SLICE events, and stops early once the connection is not writable
        (`output_high_water` bytes wait in `out`, or the socket's buffer is full: a client that sends basic.get or mandatory publishes but does not read its
        socket must not make replies pile up). True when input is left over: the transport
        stops reading and calls feed() again (without data) when the output has drained or,
        for a used-up slice, on the next loop iteration. With a `deadline` (broker clock time)
        the slice also ends once it has passed, checked every 4 events.
        """
        conn = self.conn
        if data:
            conn.receive_data(data)
        if self._held is not None:
            if self.hold_publishes:
                self.published = True  # still waiting: the transport keeps it blocked
                return True
            self._release_held()
        handlers = HANDLERS
        channels = self.channels
        budget = FEED_SLICE
        more = False
        while True:
            if not self.writable or budget <= 0:
                more = conn.has_pending()
                break
            budget -= 1
            if deadline is not None and not budget & 3 and self.services.clock() >= deadline:
                budget = 0
            ev = conn.next_event()
            if ev is NEED_DATA:
                break
            cls = ev.__class__
            if cls is ContentReceived:
                if self.hold_publishes:
                    # As RabbitMQ's reader: a publish read during an alarm stops the reading.
                    self._held = ev
                    self.published = True
                    more = True
                    break
                ch = channels.get(ev.channel)
                if ch is not None:
                    try:
                        ch.publish(ev.method, ev.header, ev.body)
                    except AMQPError as exc:
                        self._fail(ev.channel, ev.method, exc)
            elif cls is MethodReceived:
                ch = channels.get(ev.channel)
                if ch is None:
                    continue
                method = ev.method
                handler = handlers.get(method.INDEX)
                try:
                    if handler is None:
                        raise CommandInvalid("unimplemented method")
                    handler(ch, method)
                except AMQPError as exc:
                    self._fail(ev.channel, method, exc)
            elif cls is ChannelOpened:
                channels[ev.channel] = Channel(ev.channel, self)
            elif cls is ChannelClosed:
                ch = channels.pop(ev.channel, None)
                if ch is not None:
                    self._release_channel(ch)
            elif cls is ConnectionOpened:
                self._opened(ev)
            elif cls is ConnectionClosed:
                if self.vhost is not None and not self.closed:
                    if ev.error is not None:
                        log.info("closing AMQP connection %s: %s", self.describe(), ev.error.reply_text)
                    else:
                        log.info("closing AMQP connection %s: client closed the connection", self.describe())
                self.release()
        if self.confirming:
            self.flush_confirms()
        return more

    def holding(self) -> bool:
        """Whether a publish read during an alarm waits (with everything after it)."""
        return self._held is not None

    def _release_held(self) -> None:
        ev, self._held = self._held, None
        ch = self.channels.get(ev.channel)
        if ch is not None:
            try:
                ch.publish(ev.method, ev.header, ev.body)
            except AMQPError as exc:
                self._fail(ev.channel, ev.method, exc)

    def _fail(self, channel: int, method, exc: AMQPError) -> None:
        if not exc.class_id and method is not None:
            exc.class_id = method.CLASS_ID
            exc.method_id = method.METHOD_ID
        if exc.HARD:
            log.info("closing AMQP connection %s: %s", self.describe(), exc.reply_text)
            # As RabbitMQ: the channel whose method failed ends first, while the others
            # still run, so what it held goes back to its queues and may go at once to a
            # consumer on another channel of this connection (delivered before the
            # connection.close: to a no-ack consumer, that delivery is final).
            ch = self.channels.pop(channel, None)
            try:
                if ch is not None:
                    self._release_channel(ch)
                self.conn.close(exc)
            finally:
                self.release()
            return
        log.debug("channel %d error on %s: %s", channel, self.peer, exc.reply_text)
        self.close_channel(channel, exc)

    def close_channel(self, number: int, error: AMQPError) -> None:
        """Close one channel from the broker side (channel.close with `error`).

        What it held is released first (consumers cancelled, unacked requeued); the
        channel.close goes out even if part of that failed.
        """
        ch = self.channels.pop(number, None)
        try:
            if ch is not None:
                self._release_channel(ch)
        finally:
            self.conn.close_channel(number, error)

    def _release_channel(self, ch: Channel) -> None:
        guarded(f"releasing channel {ch.number} of connection {self.peer}", ch.release)
        self.confirming.discard(ch)
        self.services.sync_waits.channels.discard(ch)

    def fail_internal(self, exc: BaseException) -> None:
        """A bug while handling this connection's input: close it with 541 INTERNAL_ERROR.

        A publisher in confirm mode first gets basic.ack for what was already confirmed
        and basic.nack for every publish not yet confirmed (the one that failed included),
        then connection.close: no publish is left unanswered, so none is lost silently.
        """
        open_ = self.conn.state is ConnState.OPEN
        for ch in list(self.channels.values()):
            if open_ and ch.confirm and not ch.closed:
                guarded(f"nacking the unconfirmed publishes of channel {ch.number}", ch.nack_unconfirmed)
        try:
            self.conn.close(InternalError(f"internal error: {type(exc).__name__}"))
        finally:
            self.release()

    def _opened(self, ev: ConnectionOpened) -> None:
        self.user = ev.user
        self.vhost = self.broker.vhosts[ev.vhost]
        props = ev.client_properties
        caps = props.get("capabilities") or {}
        self.cancel_notify = bool(caps.get("consumer_cancel_notify"))
        name = props.get("connection_name")
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        self.client_name = name[:255] if isinstance(name, str) else ""
        self.broker.sessions.add(self)
        self.conn.before_channel_open = self._channel_opening
        log.info(
            "accepted AMQP connection %s: user '%s' authenticated and granted access to vhost '%s'",
            self.describe(with_user=False), self.user, self.vhost.name,
        )

    def describe(self, with_user: bool = True) -> str:
        """How logs name this connection: peer, client-provided name, vhost and user."""
        text = self.peer or "(in-process)"
        if self.client_name:
            text += f" ({self.client_name!r})"
        if with_user and self.vhost is not None:
            text += f" (vhost '{self.vhost.name}', user '{self.user}')"
        return text

    def _channel_opening(self, channel: int) -> None:
        self.broker.channel_opening(self)

    def release(self) -> None:
        """The connection is gone: release every channel, drop exclusive queues.

        Every step runs even if another fails (each is guarded and logged with its
        traceback): above all, the exclusive queues of a dead connection must go, or they
        would lock everyone else out (405 RESOURCE_LOCKED), and the session must leave the
        broker.
        """
        if self.closed:
            return
        self.closed = True
        self._held = None  # read during an alarm, never routed: nothing was confirmed
        try:
            channels = list(self.channels.values())
            # Stop deliveries to every channel first: a requeue from one channel must not
            # hand messages to a consumer on another channel of this dying connection.
            for ch in channels:
                ch.active = False
            for ch in channels:
                self._release_channel(ch)
            self.channels.clear()
            self.confirming.clear()
            for q in self.exclusive_queues:
                if not q.deleted:
                    guarded(f"deleting exclusive queue {q.name!r}", q.vhost.delete_queue, q)
        finally:
            self.exclusive_queues.clear()
            self.broker.sessions.discard(self)

    def force_close(self, error: AMQPError) -> None:
        """Close this connection from the broker's side (connection.close with `error`)."""
        if self.closed:
            return
        log.info("closing AMQP connection %s: %s", self.describe(), error.reply_text)
        try:
            if self.conn.state is ConnState.OPEN:
                self.conn.close(error)
        finally:
            self.release()
            self.wake()

    def connection_lost(self) -> None:
        """The socket went away without a close handshake."""
        if not self.closed and self.vhost is not None:
            log.warning("closing AMQP connection %s: client unexpectedly closed TCP connection", self.describe())
        self.conn.state = ConnState.CLOSED
        self.release()

    # --------------------------------------------------------------- output

    def send(self, channel: int, method) -> None:
        self.conn.send_method(channel, method)

    def write_content(self, channel: int, header: bytes, body: bytes) -> None:
        """Header and body frames, split by the negotiated frame_max."""
        out = self.out
        size = len(body)
        hlen = len(header)
        pending = self.out_bytes + size + hlen + _CONTENT_OVERHEAD
        self.out_bytes = pending
        if pending >= self.output_high_water and self.writable:
            self._update_writable()
        out.append(_FRAME.pack(FRAME_CONTENT_HEADER, channel, hlen))
        out.append(header)
        if not size:
            out.append(_END)
            return
        limit = self.conn.frame_max - 8
        if size <= limit:
            out.append(_END + _FRAME.pack(FRAME_BODY, channel, size))
            out.append(body)
            out.append(_END)
            return
        out.append(_END)
        view = memoryview(body)
        for start in range(0, size, limit):
            chunk = view[start : start + limit]
            out.append(_FRAME.pack(FRAME_BODY, channel, len(chunk)))
            out.append(chunk)
            out.append(_END)

    def wake(self) -> None:
        """Ask the transport to flush this session soon (output came from elsewhere)."""
        if not self.wake_pending:
            self.wake_pending = True
            if self.on_wake is not None:
                self.on_wake(self)

    def flush_confirms(self) -> None:
        """Send publisher acks for this batch: one basic.ack(multiple) per channel."""
        order = self.services.confirm_order
        for ch in self.confirming:
            upto = ch.confirm_upto
            if upto > ch.confirmed_sent and not ch.closed:
                first = ch.confirmed_sent + 1
                ch.stat_confirm += upto - ch.confirmed_sent
                ch.confirmed_sent = upto
                if order is not None and upto > first:
                    for tag, multiple in order(first, upto):
                        self.send(ch.number, spec.BasicAck(tag, multiple))
                else:
                    self.send(ch.number, spec.BasicAck(upto, upto > first))
        self.confirming.clear()

    def set_writable(self, writable: bool) -> None:
        """Transport backpressure (the socket's buffer is full, or drained again)."""
        self.transport_writable = writable
        self._update_writable()

    def output_taken(self) -> None:
        """The transport took everything in `out`: that output no longer counts here."""
        self.out_bytes = 0
        if not self.writable:
            self._update_writable()

    def _update_writable(self) -> None:
        """Stop or resume deliveries to every channel (no-ack consumers included)."""
        writable = self.transport_writable and self.out_bytes < self.output_high_water
        if writable == self.writable:
            return
        self.writable = writable
        for ch in list(self.channels.values()):
            ch.set_active()
