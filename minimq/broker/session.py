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
import struct
import sys
from typing import TYPE_CHECKING, Callable

import copy

from minimq.broker.arguments import parse_expiration, type_name
from minimq.broker.channel import Channel
from minimq.broker.exchange import Exchange
from minimq.broker.message import EXPIRATION_FLAG, HEADERS_FLAG, REPLY_TO_FLAG, Message
from minimq.broker.queue import Consumer, Queue
from minimq.broker.exchange_types import EXCHANGE_TYPES
from minimq.broker.teardown import guarded
from minimq.broker.vhost import DELAYED_TYPE, generated_name

from minimq.codec import spec
from minimq.codec.errors import (
    AccessRefused,
    AMQPError,
    AMQPNotImplemented,
    CommandInvalid,
    InternalError,
    NotAllowed,
    NotFound,
    PreconditionFailed,
)
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

_FRAME = struct.Struct(">BHI")
_USER_ID_FLAG = 1 << 4
_SPECIAL_FLAGS = _USER_ID_FLAG | EXPIRATION_FLAG | REPLY_TO_FLAG
_END = b"\xce"
# Access-control answers remembered per connection, per cache. Kept small: the caches are not
# counted by the memory alarm, and a client can fill them with distinct names (up to 255
# bytes each) on every connection it opens; a miss only costs one regex search.
_ACL_CACHE_MAX = 256
_ROUTE_ENTRY_COST = 320  # the key tuple, the cached tuple, the route bytes' header, dict slot
_CONTENT_OVERHEAD = 48  # frame headers and ends around one message's content, roughly
FEED_SLICE = 2048
"""Events handled per feed() call: one connection's input never holds the loop for long."""
REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_TO_PREFIX = REPLY_TO + "."


class Session:
    """Broker-side state of one connection."""

    def __init__(self, broker: "Broker", conn: ServerConnection, peer: str = "") -> None:
        self.broker = broker
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
        # (exchange, routing key) -> (interned names, basic.deliver's route tail), shared by
        # every connection and bounded in bytes (the broker's).
        self._route_cache = broker.route_cache
        # Access control answers already given on this connection: (permission, kind, name)
        # allowed, exchanges it may publish to, and (exchange, routing key) pairs allowed by
        # topic permissions. The broker clears them whenever users or permissions change.
        self.acl_cache: set[tuple[str, str, str]] = set()
        self.write_ok: set[str] = set()
        self.topic_ok: set[tuple[str, str]] = set()
        self.client_name = ""
        self._last_header = b""
        # While a queue.delete runs: the deleting channel, whose own consumers' basic.cancel
        # RabbitMQ sends after queue.delete-ok (other channels' cancels go out at once).
        self._deleting_on: Channel | None = None
        self._held_cancels: list[str] = []
        self._handlers = {
            spec.BasicAck.INDEX: self._basic_ack,
            spec.BasicNack.INDEX: self._basic_nack,
            spec.BasicReject.INDEX: self._basic_reject,
            spec.BasicQos.INDEX: self._basic_qos,
            spec.BasicConsume.INDEX: self._basic_consume,
            spec.BasicCancel.INDEX: self._basic_cancel,
            spec.BasicGet.INDEX: self._basic_get,
            spec.BasicRecover.INDEX: self._basic_recover,
            spec.BasicRecoverAsync.INDEX: self._basic_recover_async,
            spec.ExchangeDeclare.INDEX: self._exchange_declare,
            spec.ExchangeDelete.INDEX: self._exchange_delete,
            spec.ExchangeBind.INDEX: self._exchange_bind,
            spec.ExchangeUnbind.INDEX: self._exchange_unbind,
            spec.QueueDeclare.INDEX: self._queue_declare,
            spec.QueueBind.INDEX: self._queue_bind,
            spec.QueueUnbind.INDEX: self._queue_unbind,
            spec.QueuePurge.INDEX: self._queue_purge,
            spec.QueueDelete.INDEX: self._queue_delete,
            spec.ChannelFlow.INDEX: self._channel_flow,
            spec.ChannelFlowOk.INDEX: self._ignore,
            spec.BasicCancelOk.INDEX: self._ignore,  # some clients answer a server cancel
            spec.ConfirmSelect.INDEX: self._confirm_select,
            spec.TxSelect.INDEX: self._tx_select,
            spec.TxCommit.INDEX: self._tx_commit,
            spec.TxRollback.INDEX: self._tx_rollback,
        }

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
        handlers = self._handlers
        channels = self.channels
        budget = FEED_SLICE
        more = False
        while True:
            if not self.writable or budget <= 0:
                more = conn.has_pending()
                break
            budget -= 1
            if deadline is not None and not budget & 3 and self.broker.clock() >= deadline:
                budget = 0
            ev = conn.next_event()
            if ev is NEED_DATA:
                break
            cls = ev.__class__
            if cls is ContentReceived:
                ch = channels.get(ev.channel)
                if ch is not None:
                    try:
                        self._publish(ch, ev.method, ev.header, ev.body)
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

    def _fail(self, channel: int, method, exc: AMQPError) -> None:
        if not exc.class_id and method is not None:
            exc.class_id = method.CLASS_ID
            exc.method_id = method.METHOD_ID
        if exc.HARD:
            log.info("closing AMQP connection %s: %s", self.describe(), exc.reply_text)
            try:
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
        self.broker.awaiting_sync.discard(ch)

    def fail_internal(self, exc: BaseException) -> None:
        """A bug while handling this connection's input: close it with 541 INTERNAL_ERROR.

        A publisher in confirm mode first gets basic.ack for what was already confirmed
        and basic.nack for every publish not yet confirmed (the one that failed included),
        then connection.close: no publish is left unanswered, so none is lost silently.
        """
        open_ = self.conn.state is ConnState.OPEN
        for ch in list(self.channels.values()):
            if open_ and ch.confirm and not ch.closed:
                guarded(f"nacking the unconfirmed publishes of channel {ch.number}", self._nack_unconfirmed, ch)
        try:
            self.conn.close(InternalError(f"internal error: {type(exc).__name__}"))
        finally:
            self.release()

    def _nack_unconfirmed(self, ch: Channel) -> None:
        upto = ch.publish_seq
        if ch.confirm_upto > ch.confirmed_sent:
            self.send(ch.number, spec.BasicAck(ch.confirm_upto, ch.confirm_upto - ch.confirmed_sent > 1))
            ch.confirmed_sent = ch.confirm_upto
        if upto > ch.confirmed_sent:
            self.send(ch.number, spec.BasicNack(upto, upto - ch.confirmed_sent > 1, False))
            ch.confirm_upto = ch.confirmed_sent = upto
        ch.confirm_queue.clear()
        self.confirming.discard(ch)
        self.broker.awaiting_sync.discard(ch)

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
        out.append(_FRAME.pack(2, channel, hlen))
        out.append(header)
        if not size:
            out.append(_END)
            return
        limit = self.conn.frame_max - 8
        if size <= limit:
            out.append(_END + _FRAME.pack(3, channel, size))
            out.append(body)
            out.append(_END)
            return
        out.append(_END)
        view = memoryview(body)
        for start in range(0, size, limit):
            chunk = view[start : start + limit]
            out.append(_FRAME.pack(3, channel, len(chunk)))
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
        order = self.broker.confirm_order
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

    # -------------------------------------------------------------- publish

    def _publish(self, ch: Channel, m: spec.BasicPublish, header: bytes, body: bytes) -> None:
        self.published = True
        ch.stat_publish += 1
        if ch.confirm:
            # Counted first: if anything below fails, this publish is still nacked.
            ch.publish_seq += 1
        vhost = self.vhost
        key = (m.exchange, m.routing_key)
        cached = self._route_cache.get(key)
        if cached is None:
            ex_name, rk = sys.intern(m.exchange), sys.intern(m.routing_key)
            eb = ex_name.encode("utf-8", "surrogateescape")
            rb = rk.encode("utf-8", "surrogateescape")
            cached = (ex_name, rk, bytes((len(eb),)) + eb + bytes((len(rb),)) + rb)
            self._route_cache.put(key, cached, 2 * (len(eb) + len(rb)) + _ROUTE_ENTRY_COST)
        if cached[0] not in self.write_ok:
            self._check_publish(cached[0], cached[1])
        ex = vhost.exchanges.get(cached[0])
        if ex is None:
            raise NotFound(f"no exchange '{m.exchange}' in vhost '{vhost.name}'")
        if ex.internal:
            raise AccessRefused(f"cannot publish to internal exchange '{ex.name}' in vhost '{vhost.name}'")
        if m.immediate:
            raise AMQPNotImplemented("immediate=true")
        # Publishers mostly repeat the same properties: share one header bytes object
        # between such messages (a queue of a million messages holds one copy).
        if header == self._last_header:
            header = self._last_header
        else:
            self._last_header = header
        msg = Message(cached[0], cached[1], cached[2], header, body)
        flags = msg.flags
        if flags & _SPECIAL_FLAGS:
            msg = self._check_properties(ch, msg, flags)
        if ch.tx is not None:
            ch.tx.append((ex, msg, m.mandatory))
            return
        refused, pos = self._route(ch, ex, msg, m.mandatory)
        if ch.confirm:
            self._confirm(ch, not refused, pos)

    def _check_publish(self, exchange: str, routing_key: str) -> None:
        """basic.publish's checks: write on the exchange, then (topic exchanges) on the key.

        Remembered per exchange in `write_ok`, or, when the user has topic permissions on
        that exchange, per (exchange, routing key) in `topic_ok`.
        """
        self._allow("write", "exchange", exchange)
        access = self.broker.access
        vname = self.vhost.name
        if access.topic_restricted(self.user, vname, exchange):
            key = (exchange, routing_key)
            if key in self.topic_ok:
                return
            ex = self.vhost.exchanges.get(exchange)
            if ex is not None and not ex.internal and ex.type_name == "topic":
                access.check_topic(self.user, vname, exchange, "write", routing_key)
                if len(self.topic_ok) >= _ACL_CACHE_MAX:
                    self.topic_ok.clear()
                self.topic_ok.add(key)
            return
        if len(self.write_ok) >= _ACL_CACHE_MAX:
            self.write_ok.clear()
        self.write_ok.add(exchange)

    def _allow(self, permission: str, kind: str, name: str) -> None:
        """Raise RabbitMQ's 403 unless this connection's user may do `permission` on it."""
        key = (permission, kind, name)
        cache = self.acl_cache
        if key in cache:
            return
        self.broker.access.check(self.user, self.vhost.name, permission, kind, name)
        if len(cache) >= _ACL_CACHE_MAX:
            cache.clear()
        cache.add(key)

    def _allow_topic_read(self, ex: Exchange | None, routing_key: str) -> None:
        """Binding to a topic exchange: read permission on the binding key (topic permissions)."""
        if ex is None or ex.type_name != "topic":
            return
        access = self.broker.access
        if access.topic_restricted(self.user, self.vhost.name, ex.name):
            access.check_topic(self.user, self.vhost.name, ex.name, "read", routing_key)

    def _confirm(self, ch: Channel, ok: bool, pos: int) -> None:
        """Confirm the channel's latest publish now, or once the store has synced `pos`.

        Confirms leave in publish order: one waiting for the disk holds back the ones after
        it (they are all acked together by one basic.ack with multiple set).
        """
        seq = ch.publish_seq
        if ch.confirm_queue or (pos and pos > self.broker.store.synced):
            ch.confirm_queue.append((seq, pos, ok))
            self.broker.awaiting_sync.add(ch)
            return
        if ok:
            ch.confirm_upto = seq
            self.confirming.add(ch)
        else:
            self.send_nack(ch, seq)

    def release_confirms(self, ch: Channel, synced: int) -> bool:
        """Send the confirms whose messages are now on disk; True when none is left."""
        queue = ch.confirm_queue
        while queue and queue[0][1] <= synced:
            seq, _pos, ok = queue.popleft()
            if ok:
                ch.confirm_upto = seq
            else:
                self.send_nack(ch, seq)
        if ch.confirm_upto > ch.confirmed_sent:
            self.confirming.add(ch)
            self.flush_confirms()
            self.wake()
        return not queue

    def _check_properties(self, ch: Channel, msg: Message, flags: int) -> Message:
        """Properties the broker acts on at publish: user-id, expiration, reply-to."""
        props = msg.properties
        if flags & _USER_ID_FLAG and props.user_id != self.user:
            raise PreconditionFailed(
                f"user_id property set to '{props.user_id}' but authenticated user was '{self.user}'"
            )
        if flags & EXPIRATION_FLAG:
            ms = parse_expiration(props.expiration)
            msg.expires = self.broker.clock() + ms / 1000.0
        if flags & REPLY_TO_FLAG and props.reply_to == REPLY_TO:
            # Direct reply-to: replies must reach this channel's reply consumer.
            if ch.reply_consumer is None:
                raise PreconditionFailed("fast reply consumer does not exist")
            new_props = copy.copy(props)
            new_props.reply_to = ch.reply_name
            expires = msg.expires
            msg = msg.rebuilt(new_props)
            msg.expires = expires
        return msg

    def send_nack(self, ch: Channel, seq: int) -> None:
        """A queue refused message `seq` (x-overflow reject-publish): nack it, in order."""
        if ch.confirm_upto > ch.confirmed_sent:
            self.send(ch.number, spec.BasicAck(ch.confirm_upto, ch.confirm_upto - ch.confirmed_sent > 1))
        ch.confirm_upto = ch.confirmed_sent = seq
        self.send(ch.number, spec.BasicNack(seq, False, False))
        self.wake()

    def _route(self, ch: Channel, ex: Exchange, msg: Message, mandatory: bool) -> tuple[bool, int]:
        """Route a published message; returns (refused by a full queue, store position)."""
        if ex.delayed:
            self._publish_delayed(ex, msg)
            return False, 0
        pos = 0
        if ex.is_default and msg.routing_key.startswith(REPLY_TO_PREFIX):
            target = self.broker.reply_channels.get(msg.routing_key)
            if target is not None and target.reply_consumer is not None:
                target.deliver(target.reply_consumer, msg)
                return False, 0
            routed, refused = False, False
        else:
            routed, refused, pos = self.vhost.publish(ex, msg)
        if not routed:
            if mandatory:
                ch.stat_return_unroutable += 1
                self.send(ch.number, spec.BasicReturn(312, "NO_ROUTE", msg.exchange, msg.routing_key))
                self.write_content(ch.number, msg.header, msg.body)
            else:
                ch.stat_drop_unroutable += 1
        return refused, pos

    def _publish_delayed(self, ex: Exchange, msg: Message) -> None:
        """x-delayed-message: hold the message for its x-delay (ms), then route it."""
        delay = (msg.headers or {}).get("x-delay") if msg.flags & HEADERS_FLAG else None
        vhost = self.vhost
        if not isinstance(delay, int) or isinstance(delay, bool) or delay <= 0:
            vhost.publish(ex, msg)
            return

        def release() -> None:
            if not ex.deleted:
                vhost.publish(ex, msg)

        self.broker.timers.call_at(self.broker.clock() + delay / 1000.0, release)

    # ------------------------------------------------------------ exchanges

    def _exchange_declare(self, ch: Channel, m: spec.ExchangeDeclare) -> None:
        name = m.exchange
        if not m.passive and name and (m.type in EXCHANGE_TYPES or m.type == DELAYED_TYPE):
            # RabbitMQ's order: type, default exchange, configure; a new exchange with an
            # alternate exchange also needs read on itself and write on the AE.
            self._allow("configure", "exchange", name)
            alternate = (m.arguments or {}).get("alternate-exchange")
            if isinstance(alternate, bytes):
                alternate = alternate.decode("utf-8", "surrogateescape")
            if isinstance(alternate, str) and name not in self.vhost.exchanges:
                self._allow("read", "exchange", name)
                self._allow("write", "exchange", alternate)
        self.vhost.declare_exchange(
            m.exchange, m.type, passive=m.passive, durable=m.durable, auto_delete=m.auto_delete,
            internal=m.internal, arguments=m.arguments,
        )
        if not m.no_wait:
            self.send(ch.number, spec.ExchangeDeclareOk())

    def _exchange_delete(self, ch: Channel, m: spec.ExchangeDelete) -> None:
        if m.exchange and not m.exchange.startswith("amq."):
            self._allow("configure", "exchange", m.exchange)
        self.vhost.delete_exchange(m.exchange, m.if_unused)
        if not m.no_wait:
            self.send(ch.number, spec.ExchangeDeleteOk())

    def _exchange_bind(self, ch: Channel, m: spec.ExchangeBind) -> None:
        self._allow_binding(m.destination, "exchange", m.source, m.routing_key)
        vhost = self.vhost
        source = vhost.get_exchange(m.source)  # RabbitMQ names a missing source first
        dest = vhost.get_exchange(m.destination)
        vhost.bind(source, dest, m.routing_key, m.arguments)
        if not m.no_wait:
            self.send(ch.number, spec.ExchangeBindOk())

    def _exchange_unbind(self, ch: Channel, m: spec.ExchangeUnbind) -> None:
        self._allow_binding(m.destination, "exchange", m.source, m.routing_key)
        vhost = self.vhost
        source = vhost.exchanges.get(m.source)
        dest = vhost.exchanges.get(m.destination)
        # RabbitMQ: unbinding from or to a missing exchange succeeds (nothing to remove).
        if source is not None and dest is not None:
            vhost.unbind(source, dest, m.routing_key, m.arguments)
        if not m.no_wait:
            self.send(ch.number, spec.ExchangeUnbindOk())

    def _allow_binding(self, dest: str, kind: str, source: str, routing_key: str) -> None:
        """Bind/unbind as RabbitMQ's binding_action: write on the destination, the default
        exchange refused, read on the source, then topic read on the binding key."""
        self._allow("write", kind, dest)
        if source == "" or (kind == "exchange" and dest == ""):
            raise AccessRefused("operation not permitted on the default exchange")
        self._allow("read", "exchange", source)
        self._allow_topic_read(self.vhost.exchanges.get(source), routing_key)

    # --------------------------------------------------------------- queues

    def _queue_named(self, ch: Channel, name: str, permission: str | None = None) -> Queue:
        """A queue by name; the empty name means the channel's last declared queue.

        With `permission`, the user must have it on the queue (checked before the lookup,
        as RabbitMQ does: no permission means 403 even for a queue that does not exist)."""
        if name == "":
            if ch.last_queue is None:
                raise NotFound("no previously declared queue")
            name = ch.last_queue
        if permission is not None:
            self._allow(permission, "queue", name)
        return self.vhost.get_queue(name, self)

    def _queue_declare(self, ch: Channel, m: spec.QueueDeclare) -> None:
        if m.queue == REPLY_TO or (m.passive and m.queue.startswith(REPLY_TO_PREFIX)):
            # Direct reply-to's pseudo-queues exist while their reply consumer does.
            if m.queue != REPLY_TO and m.queue not in self.broker.reply_channels:
                raise NotFound(f"no queue '{m.queue}' in vhost '{self.vhost.name}'")
            if not m.no_wait:
                self.send(ch.number, spec.QueueDeclareOk(m.queue, 0, 1))
            return
        name, server_named = m.queue, False
        vhost = self.vhost
        if not m.passive:
            if name == "":
                name, server_named = generated_name("amq.gen-"), True
            elif name.startswith("amq."):
                raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
            self._allow("configure", "queue", name)
            if name not in vhost.queues:
                self._new_queue_checks(name, m.arguments)
        q, created = vhost.declare_queue(
            name, self, passive=m.passive, durable=m.durable, exclusive=m.exclusive,
            auto_delete=m.auto_delete, arguments=m.arguments, server_named=server_named,
        )
        if created and q.exclusive:
            self.exclusive_queues.append(q)
        ch.last_queue = q.name
        if not m.no_wait:
            self.send(ch.number, spec.QueueDeclareOk(q.name, len(q.ready), len(q.consumers)))

    def _new_queue_checks(self, name: str, arguments: dict | None) -> None:
        """A queue about to be created: the vhost's max-queues, and with a dead-letter
        exchange, read on the queue and write on that exchange (RabbitMQ's order)."""
        access = self.broker.access
        vname = self.vhost.name
        if access.vhost_limits:
            limit = access.vhost_limit(vname, "max-queues")
            if limit is not None and len(self.vhost.queues) >= limit:
                raise PreconditionFailed(f"cannot declare queue '{name}': queue limit in vhost '{vname}' ({limit}) is reached")
        dlx = (arguments or {}).get("x-dead-letter-exchange")
        if isinstance(dlx, bytes):
            dlx = dlx.decode("utf-8", "surrogateescape")
        if isinstance(dlx, str):
            self._allow("read", "queue", name)
            self._allow("write", "exchange", dlx)

    def _binding_ends(self, ch: Channel, queue: str, exchange: str, routing_key: str) -> tuple[Exchange, Queue]:
        """Resolve a queue binding's ends in RabbitMQ's order of checks."""
        if queue == "":
            if ch.last_queue is None:
                raise NotFound("no previously declared queue")
            queue = ch.last_queue
        self._allow_binding(queue, "queue", exchange, routing_key)
        ex = self.vhost.get_exchange(exchange)
        return ex, self.vhost.get_queue(queue, self)

    def _queue_bind(self, ch: Channel, m: spec.QueueBind) -> None:
        ex, q = self._binding_ends(ch, m.queue, m.exchange, m.routing_key)
        key = m.routing_key
        if m.queue == "" and key == "":
            key = q.name
        self.vhost.bind(ex, q, key, m.arguments)
        if not m.no_wait:
            self.send(ch.number, spec.QueueBindOk())

    def _queue_unbind(self, ch: Channel, m: spec.QueueUnbind) -> None:
        name = m.queue
        if name == "":
            if ch.last_queue is None:
                raise NotFound("no previously declared queue")
            name = ch.last_queue
        self._allow_binding(name, "queue", m.exchange, m.routing_key)
        vhost = self.vhost
        ex = vhost.exchanges.get(m.exchange)
        q = vhost.queues.get(name)
        # RabbitMQ: unbinding a missing queue, exchange or binding succeeds; only a binding
        # that exists checks the queue's exclusivity.
        if ex is not None and q is not None and ex.kind.has_binding(q, m.routing_key, m.arguments or {}):
            vhost.get_queue(name, self)
            vhost.unbind(ex, q, m.routing_key, m.arguments)
        self.send(ch.number, spec.QueueUnbindOk())

    def _queue_purge(self, ch: Channel, m: spec.QueuePurge) -> None:
        q = self._queue_named(ch, m.queue, "read")
        count = q.purge()
        if not m.no_wait:
            self.send(ch.number, spec.QueuePurgeOk(count))

    def _queue_delete(self, ch: Channel, m: spec.QueueDelete) -> None:
        name = m.queue
        if name == "":
            if ch.last_queue is None:
                raise NotFound("no previously declared queue")
            name = ch.last_queue
        self._allow("configure", "queue", name)
        q = self.vhost.queues.get(name)
        if q is None:
            # RabbitMQ: deleting an absent queue succeeds with a count of 0.
            if not m.no_wait:
                self.send(ch.number, spec.QueueDeleteOk(0))
            return
        q = self.vhost.get_queue(name, self)
        where = f"queue '{q.name}' in vhost '{self.vhost.name}'"
        if m.if_unused and q.consumers:
            raise PreconditionFailed(f"{where} in use")
        if m.if_empty and q.ready:
            raise PreconditionFailed(f"{where} not empty")
        self._deleting_on = ch
        try:
            count = self.vhost.delete_queue(q)
        finally:
            self._deleting_on = None
        if not m.no_wait:
            self.send(ch.number, spec.QueueDeleteOk(count))
        held, self._held_cancels = self._held_cancels, []
        for tag in held:
            self.send(ch.number, spec.BasicCancel(tag, True))

    # ---------------------------------------------------------------- basic

    def _basic_qos(self, ch: Channel, m: spec.BasicQos) -> None:
        if m.prefetch_size:
            raise AMQPNotImplemented(f"prefetch_size!=0 ({m.prefetch_size})")
        if m.global_:
            ch.global_limit = m.prefetch_count
            self.send(ch.number, spec.BasicQosOk())
            ch.kick()
        else:
            ch.prefetch = m.prefetch_count
            self.send(ch.number, spec.BasicQosOk())

    def _basic_consume(self, ch: Channel, m: spec.BasicConsume) -> None:
        if m.queue == "" and ch.last_queue is None:
            raise NotFound("no previously declared queue")
        if m.consumer_tag and m.consumer_tag in ch.consumers:
            # RabbitMQ checks the tag before it looks the queue up.
            raise NotAllowed(f"attempt to reuse consumer tag '{m.consumer_tag}'")
        if m.queue == REPLY_TO:
            self._consume_reply_to(ch, m)
            return
        q = self._queue_named(ch, m.queue, "read")
        vname = self.vhost.name
        args = m.arguments or {}
        priority = args.get("x-priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise PreconditionFailed(
                f"invalid arg 'x-priority' for queue '{q.name}' in vhost '{vname}': "
                f'"expected integer, got {type_name(priority)}"'
            )
        if q.exclusive_consumer is not None or (m.exclusive and q.consumers):
            raise AccessRefused(f"queue '{q.name}' in vhost '{vname}' in exclusive use")
        tag = m.consumer_tag or generated_name("amq.ctag-")
        if tag in ch.consumers:
            raise NotAllowed(f"attempt to reuse consumer tag '{tag}'")
        consumer = Consumer(tag, ch, q, m.no_ack, m.exclusive, ch.prefetch, args, int(priority))
        ch.consumers[tag] = consumer
        if not m.no_wait:
            self.send(ch.number, spec.BasicConsumeOk(tag))
        if q.args.expires is not None:
            q.last_used = self.broker.clock()
        q.add_consumer(consumer)

    def _consume_reply_to(self, ch: Channel, m: spec.BasicConsume) -> None:
        """Direct reply-to: a no-ack pseudo-consumer; replies go straight to this channel."""
        if not m.no_ack:
            raise PreconditionFailed("reply consumer cannot acknowledge")
        if ch.reply_consumer is not None:
            raise PreconditionFailed("reply consumer already set")
        tag = m.consumer_tag or generated_name("amq.ctag-")
        if tag in ch.consumers:
            raise NotAllowed(f"attempt to reuse consumer tag '{tag}'")
        consumer = Consumer(tag, ch, None, True, False, 0, {})  # type: ignore[arg-type]
        ch.consumers[tag] = consumer
        ch.reply_consumer = consumer
        ch.reply_name = generated_name(REPLY_TO_PREFIX)
        self.broker.reply_channels[ch.reply_name] = ch
        if not m.no_wait:
            self.send(ch.number, spec.BasicConsumeOk(tag))

    def _basic_cancel(self, ch: Channel, m: spec.BasicCancel) -> None:
        consumer = ch.consumers.get(m.consumer_tag)
        if not m.no_wait:
            self.send(ch.number, spec.BasicCancelOk(m.consumer_tag))
        if consumer is not None:
            ch.remove_consumer(consumer)

    def server_cancel(self, consumer: Consumer) -> None:
        """The consumer's queue is gone: tell the client if it understands basic.cancel."""
        ch = consumer.channel
        ch.consumers.pop(consumer.tag, None)
        if self.cancel_notify and not ch.closed and not self.closed:
            if ch is self._deleting_on:
                self._held_cancels.append(consumer.tag)  # sent after queue.delete-ok
                return
            self.send(ch.number, spec.BasicCancel(consumer.tag, True))
            self.wake()

    def _basic_get(self, ch: Channel, m: spec.BasicGet) -> None:
        q = self._queue_named(ch, m.queue, "read")
        msg = q.get()
        if msg is None:
            ch.stat_get_empty += 1
            self.send(ch.number, spec.BasicGetEmpty())
        else:
            ch.deliver_get(q, msg, m.no_ack)

    def _basic_ack(self, ch: Channel, m: spec.BasicAck) -> None:
        ch.ack(m.delivery_tag, m.multiple, None)

    def _basic_nack(self, ch: Channel, m: spec.BasicNack) -> None:
        ch.ack(m.delivery_tag, m.multiple, m.requeue)

    def _basic_reject(self, ch: Channel, m: spec.BasicReject) -> None:
        ch.ack(m.delivery_tag, False, m.requeue)

    def _basic_recover_async(self, ch: Channel, m) -> None:
        if not m.requeue:
            raise AMQPNotImplemented("requeue=false")
        ch.recover()

    def _basic_recover(self, ch: Channel, m: spec.BasicRecover) -> None:
        # As RabbitMQ: recover-ok first, then the redeliveries it causes.
        if not m.requeue:
            raise AMQPNotImplemented("requeue=false")
        self.send(ch.number, spec.BasicRecoverOk())
        ch.recover()

    # -------------------------------------------------- channel, confirm, tx

    def _channel_flow(self, ch: Channel, m: spec.ChannelFlow) -> None:
        # As RabbitMQ: a client may not pause deliveries with flow (consumers use basic.qos).
        if not m.active:
            raise AMQPNotImplemented("active=false")
        self.send(ch.number, spec.ChannelFlowOk(True))

    def _ignore(self, ch: Channel, m) -> None:
        return None

    def _confirm_select(self, ch: Channel, m: spec.ConfirmSelect) -> None:
        if ch.tx is not None:
            raise PreconditionFailed("cannot switch from tx to confirm mode")
        ch.confirm = True
        if not m.nowait:
            self.send(ch.number, spec.ConfirmSelectOk())

    def _tx_select(self, ch: Channel, m) -> None:
        if ch.confirm:
            raise PreconditionFailed("cannot switch from confirm to tx mode")
        if ch.tx is None:
            ch.tx = []
            ch.tx_acks = []
        self.send(ch.number, spec.TxSelectOk())

    def _tx_commit(self, ch: Channel, m) -> None:
        if ch.tx is None:
            raise PreconditionFailed("channel is not transactional")
        publishes, acks = ch.tx, ch.tx_acks or []
        ch.tx, ch.tx_acks = [], []
        for taken, requeue in acks:
            ch.settle(taken, requeue)
        last = 0
        for ex, msg, mandatory in publishes:
            if ex.deleted:
                continue
            last = max(last, self._route(ch, ex, msg, mandatory)[1])
        if last and last > self.broker.store.synced:
            # Persistent messages: commit-ok only once they are on disk.
            number = ch.number

            def committed() -> None:
                if not ch.closed and not self.closed:
                    self.send(number, spec.TxCommitOk())
                    self.wake()

            self.broker.after_sync(last, committed)
            return
        self.send(ch.number, spec.TxCommitOk())

    def _tx_rollback(self, ch: Channel, m) -> None:
        if ch.tx is None:
            raise PreconditionFailed("channel is not transactional")
        acks = ch.tx_acks or []
        ch.tx, ch.tx_acks = [], []
        if acks:
            # Acks in a rolled-back transaction never happened: the deliveries are
            # outstanding again, in tag order.
            restored = dict(ch.unacked)
            for taken, _requeue in acks:
                restored.update(taken)
            ch.unacked = dict(sorted(restored.items()))
        self.send(ch.number, spec.TxRollbackOk())
