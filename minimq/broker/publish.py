"""basic.publish as a channel handles it: checks, routing, publisher confirms, transactions.

The hot path: `publish` runs once per message. What it needs per message is bound on the
channel when it is created (the vhost, the broker's route cache, the connection's write_ok
set), the exchange's routing key and route bytes are cached, and properties are decoded only
when a flag the broker acts on (user-id, expiration, reply-to) is set.
"""
from __future__ import annotations

import copy
import sys
from typing import TYPE_CHECKING

from minimq.broker.arguments import parse_expiration
from minimq.broker.message import Message
from minimq.broker.permissions import ACL_CACHE_MAX
from minimq.broker.reply_to import REPLY_TO, REPLY_TO_PREFIX
from minimq.codec import spec
from minimq.codec.errors import AccessRefused, AMQPNotImplemented, NotFound, PreconditionFailed
from minimq.codec.properties import (
    CONTENT_HEADER_SIZE,
    EXPIRATION_FLAG,
    PROPERTIES_OFFSET,
    REPLY_TO_FLAG,
    USER_ID_FLAG,
)

if TYPE_CHECKING:
    from minimq.broker.exchange import Exchange

_SPECIAL_FLAGS = USER_ID_FLAG | EXPIRATION_FLAG | REPLY_TO_FLAG
_ROUTE_ENTRY_COST = 320  # the key tuple, the cached tuple, the route bytes' header, dict slot


class PublishHandlers:
    """Mixed into `Channel`: basic.publish, confirm.select and tx.*."""

    def publish(self, m: spec.BasicPublish, header: bytes, body: bytes) -> None:
        session = self.session
        session.published = True
        self.stat_publish += 1
        if self.confirm:
            # Counted first: if anything below fails, this publish is still nacked.
            self.publish_seq += 1
        vhost = self.vhost
        key = (m.exchange, m.routing_key)
        cached = self.route_cache.get(key)
        if cached is None:
            ex_name, rk = sys.intern(m.exchange), sys.intern(m.routing_key)
            eb = ex_name.encode("utf-8", "surrogateescape")
            rb = rk.encode("utf-8", "surrogateescape")
            cached = (ex_name, rk, bytes((len(eb),)) + eb + bytes((len(rb),)) + rb)
            self.route_cache.put(key, cached, 2 * (len(eb) + len(rb)) + _ROUTE_ENTRY_COST)
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
        if header == session.last_header:
            header = session.last_header
        else:
            session.last_header = header
        msg = Message(cached[0], cached[1], cached[2], header, body)
        # Message.flags without its call: a received header is never shorter than 14 bytes.
        flags = (
            (header[PROPERTIES_OFFSET] << 8) | header[PROPERTIES_OFFSET + 1]
            if len(header) >= CONTENT_HEADER_SIZE else 0
        )
        if flags & _SPECIAL_FLAGS:
            msg = self._check_properties(msg, flags)
        if self.tx is not None:
            self.tx.append((ex, msg, m.mandatory))
            return
        refused, pos = self._route(ex, msg, m.mandatory)
        if self.confirm:
            self._confirm(not refused, pos)

    def _check_publish(self, exchange: str, routing_key: str) -> None:
        """basic.publish's checks: write on the exchange, then (topic exchanges) on the key.

        Remembered per exchange in `write_ok`, or, when the user has topic permissions on
        that exchange, per (exchange, routing key) in `topic_ok`.
        """
        self._allow("write", "exchange", exchange)
        access = self.services.access
        vname = self.vhost.name
        if access.topic_restricted(self.session.user, vname, exchange):
            key = (exchange, routing_key)
            if key in self.session.topic_ok:
                return
            ex = self.vhost.exchanges.get(exchange)
            if ex is not None and not ex.internal and ex.type_name == "topic":
                access.check_topic(self.session.user, vname, exchange, "write", routing_key)
                if len(self.session.topic_ok) >= ACL_CACHE_MAX:
                    self.session.topic_ok.clear()
                self.session.topic_ok.add(key)
            return
        if len(self.write_ok) >= ACL_CACHE_MAX:
            self.write_ok.clear()
        self.write_ok.add(exchange)

    def _check_properties(self, msg: Message, flags: int) -> Message:
        """Properties the broker acts on at publish: user-id, expiration, reply-to."""
        props = msg.properties
        if flags & USER_ID_FLAG and props.user_id != self.session.user:
            raise PreconditionFailed(
                f"user_id property set to '{props.user_id}' but authenticated user was '{self.session.user}'"
            )
        if flags & EXPIRATION_FLAG:
            ms = parse_expiration(props.expiration)
            msg.expires = self.services.clock() + ms / 1000.0
        if flags & REPLY_TO_FLAG and props.reply_to == REPLY_TO:
            # Direct reply-to: replies must reach this channel's reply consumer.
            new_props = copy.copy(props)
            new_props.reply_to = self.services.replies.address(self)
            expires = msg.expires
            msg = msg.rebuilt(new_props)
            msg.expires = expires
        return msg

    def _route(self, ex: Exchange, msg: Message, mandatory: bool) -> tuple[bool, int]:
        """Route a published message; returns (refused by a full queue, store position)."""
        if ex.delayed:
            self.vhost.publish_delayed(ex, msg)
            return False, 0
        pos = 0
        if ex.is_default and msg.routing_key.startswith(REPLY_TO_PREFIX):
            if self.services.replies.deliver(msg.routing_key, msg):
                return False, 0
            routed, refused = False, False
        else:
            routed, refused, pos = self.vhost.publish(ex, msg)
        if not routed:
            if mandatory:
                self.stat_return_unroutable += 1
                self.send(spec.BasicReturn(312, "NO_ROUTE", msg.exchange, msg.routing_key))
                self.session.write_content(self.number, msg.header, msg.body)
            else:
                self.stat_drop_unroutable += 1
        return refused, pos

    def _confirm(self, ok: bool, pos: int) -> None:
        """Confirm the channel's latest publish now, or once the store has synced `pos`.

        Confirms leave in publish order: one waiting for the disk holds back the ones after
        it (they are all acked together by one basic.ack with multiple set).
        """
        seq = self.publish_seq
        if self.confirm_queue or (pos and pos > self.services.store.synced):
            self.confirm_queue.append((seq, pos, ok))
            self.services.sync_waits.channels.add(self)
            return
        if ok:
            self.confirm_upto = seq
            self.session.confirming.add(self)
        else:
            self.send_nack(seq)

    def release_confirms(self, synced: int) -> bool:
        """Send the confirms whose messages are now on disk; True when none is left."""
        queue = self.confirm_queue
        while queue and queue[0][1] <= synced:
            seq, _pos, ok = queue.popleft()
            if ok:
                self.confirm_upto = seq
            else:
                self.send_nack(seq)
        if self.confirm_upto > self.confirmed_sent:
            self.session.confirming.add(self)
            self.session.flush_confirms()
            self.session.wake()
        return not queue

    def send_nack(self, seq: int) -> None:
        """A queue refused message `seq` (x-overflow reject-publish): nack it, in order.

        In RabbitMQ's form: requeue set (its basic.nack default; publishers ignore it), and
        multiple set unless acks go out just before it in the same batch (everything below
        `seq` is confirmed by then, so multiple names `seq` alone either way)."""
        batched = self.confirm_upto > self.confirmed_sent
        if batched:
            self.send(spec.BasicAck(self.confirm_upto, self.confirm_upto - self.confirmed_sent > 1))
        self.confirm_upto = self.confirmed_sent = seq
        self.send(spec.BasicNack(seq, not batched, True))
        self.session.wake()

    def nack_unconfirmed(self) -> None:
        upto = self.publish_seq
        if self.confirm_upto > self.confirmed_sent:
            self.send(spec.BasicAck(self.confirm_upto, self.confirm_upto - self.confirmed_sent > 1))
            self.confirmed_sent = self.confirm_upto
        if upto > self.confirmed_sent:
            self.send(spec.BasicNack(upto, upto - self.confirmed_sent > 1, False))
            self.confirm_upto = self.confirmed_sent = upto
        self.confirm_queue.clear()
        self.session.confirming.discard(self)
        self.services.sync_waits.channels.discard(self)

    def confirm_select(self, m: spec.ConfirmSelect) -> None:
        if self.tx is not None:
            raise PreconditionFailed("cannot switch from tx to confirm mode")
        self.confirm = True
        if not m.nowait:
            self.send(spec.ConfirmSelectOk())

    def tx_select(self, m) -> None:
        if self.confirm:
            raise PreconditionFailed("cannot switch from confirm to tx mode")
        if self.tx is None:
            self.tx = []
            self.tx_acks = []
        self.send(spec.TxSelectOk())

    def tx_commit(self, m) -> None:
        if self.tx is None:
            raise PreconditionFailed("channel is not transactional")
        publishes, acks = self.tx, self.tx_acks or []
        self.tx, self.tx_acks = [], []
        for taken, requeue in acks:
            self.settle(taken, requeue)
        last = 0
        for ex, msg, mandatory in publishes:
            if ex.deleted:
                continue
            last = max(last, self._route(ex, msg, mandatory)[1])
        if last and last > self.services.store.synced:
            # Persistent messages: commit-ok only once they are on disk.
            number = self.number

            def committed() -> None:
                if not self.closed and not self.session.closed:
                    self.session.send(number, spec.TxCommitOk())
                    self.session.wake()

            self.services.sync_waits.after(last, committed)
            return
        self.send(spec.TxCommitOk())

    def tx_rollback(self, m) -> None:
        if self.tx is None:
            raise PreconditionFailed("channel is not transactional")
        acks = self.tx_acks or []
        self.tx, self.tx_acks = [], []
        if acks:
            # Acks in a rolled-back transaction never happened: the deliveries are
            # outstanding again, in tag order.
            restored = dict(self.unacked)
            for taken, _requeue in acks:
                restored.update(taken)
            self.unacked = dict(sorted(restored.items()))
        self.send(spec.TxRollbackOk())
