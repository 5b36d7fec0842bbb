"""A channel as the broker sees it: its state and the handlers of every channel method.

As RabbitMQ's rabbit_channel, the channel owns its work: the session (the connection) only
hands it the methods that arrive on it (`HANDLERS` maps each method's index to the handler).
The handlers live in modules by kind, mixed into `Channel`: `declare` (exchange.*, queue.*),
`basic` (consume, get, ack, recover, flow), `publish` (basic.publish, confirms, tx), with the
access checks they share in `permissions`. This module holds the state and the delivery
bookkeeping: consumers, unacked deliveries, prefetch, requeueing on close.

Prefetch accounting follows RabbitMQ: basic.qos with global=false sets the limit each consumer
created afterwards gets on its own; global=true sets one limit shared by all consumers of the
channel. basic.get ignores both.
"""
from __future__ import annotations

import itertools
import logging
import struct
from collections import deque
from typing import TYPE_CHECKING, Any

from minimq.broker.basic import BasicHandlers
from minimq.broker.declare import DeclareHandlers
from minimq.broker.message import Message
from minimq.broker.permissions import PermissionChecks
from minimq.broker.publish import PublishHandlers
from minimq.broker.queue import Consumer, Queue, requeue_grouped
from minimq.broker.teardown import guarded
from minimq.codec import spec
from minimq.codec.constants import FRAME_METHOD
from minimq.codec.errors import PreconditionFailed
from minimq.codec.frames import FRAME_END_BYTE as _END
from minimq.codec.frames import FRAME_HEADER as _FRAME

if TYPE_CHECKING:
    from minimq.broker.session import Session

log = logging.getLogger("minimq.teardown")

_QB = struct.Struct(">QB")
_I = struct.Struct(">I")
_DELIVER = spec.BasicDeliver.INDEX.to_bytes(4, "big")  # class 60, method 60
_GET_OK = spec.BasicGetOk.INDEX.to_bytes(4, "big")  # class 60, method 71

# A message's position for requeueing: numbered at its first delivery, in delivery order
# (which is queue order), so messages waiting in a queue carry no number of their own.
next_position = itertools.count(1).__next__

# The message counters every channel keeps (attribute `stat_<name>`), named as RabbitMQ's
# message_stats fields.
STAT_FIELDS = (
    "publish", "confirm", "return_unroutable", "drop_unroutable", "deliver", "deliver_no_ack",
    "get", "get_no_ack", "get_empty", "ack", "redeliver",
)

# An unacked delivery: (message, queue it came from, consumer or None for basic.get)
Unacked = tuple


class Channel(DeclareHandlers, BasicHandlers, PublishHandlers, PermissionChecks):
    def __init__(self, number: int, session: "Session") -> None:
        self.number = number
        self.session = session
        # Bound once for the handlers (the connection is open: its vhost is known).
        self.vhost = session.vhost
        self.services = services = session.services
        self.route_cache = services.route_cache
        self.write_ok = session.write_ok
        self.consumers: dict[str, Consumer] = {}
        self.unacked: dict[int, Unacked] = {}
        self.next_tag = 1
        self.prefetch = 0  # given to consumers created from now on
        self.global_limit = 0
        self.unacked_total = 0  # consumer deliveries awaiting ack (for the global limit)
        self.unacked_bytes = 0  # body bytes of `unacked` (and of acks held by a transaction)
        self.flow_active = True
        self.active = session.writable
        self.confirm = False
        self.publish_seq = 0
        self.confirm_upto = 0  # highest publish seq confirmed but not yet acked to the client
        self.confirmed_sent = 0
        # Confirms waiting for the durable store: (publish seq, store position, ack?)
        self.confirm_queue: deque[tuple[int, int, bool]] = deque()
        self.tx: list | None = None  # pending publishes in tx mode
        self.tx_acks: list | None = None  # pending (entries, requeue|None) in tx mode
        self.last_queue: str | None = None
        self.closed = False
        # Direct reply-to: the no-ack consumer of amq.rabbitmq.reply-to on this channel and
        # the name replies are addressed to.
        self.reply_consumer: Consumer | None = None
        self.reply_name: str | None = None
        # While a queue.delete on this channel runs: its own consumers' basic.cancel, which
        # RabbitMQ sends after queue.delete-ok.
        self.held_cancels: list[str] | None = None
        # Message counters for the management API (see STAT_FIELDS); folded into the
        # broker's totals when the channel closes.
        self.stat_publish = 0
        self.stat_confirm = 0
        self.stat_return_unroutable = 0
        self.stat_drop_unroutable = 0
        self.stat_deliver = 0
        self.stat_deliver_no_ack = 0
        self.stat_get = 0
        self.stat_get_no_ack = 0
        self.stat_get_empty = 0
        self.stat_ack = 0
        self.stat_redeliver = 0

    def send(self, method: Any) -> None:
        """Queue one method frame on this channel."""
        self.session.send(self.number, method)

    def drop_reply_consumer(self) -> None:
        self.services.replies.forget(self)

    # ------------------------------------------------------------ delivery

    def deliver(self, consumer: Consumer, msg: Message) -> None:
        """Write basic.deliver + content for `msg` and track it until acked."""
        tag = self.next_tag
        self.next_tag = tag + 1
        if not msg.seq:
            msg.seq = next_position()
            if msg.store_id:
                self._first_delivery(consumer.queue, msg)
        queue = consumer.queue
        if not consumer.no_ack:
            self.unacked[tag] = (msg, queue, consumer)
            self.unacked_bytes += len(msg.body)
            consumer.unacked += 1
            self.unacked_total += 1
            self.stat_deliver += 1
            queue.stat_deliver += 1
        else:
            self.stat_deliver_no_ack += 1
            if queue is not None:
                queue.stat_deliver_no_ack += 1
                if msg.store_id:
                    queue.release(msg)
        if msg.redelivered:
            self.stat_redeliver += 1
            if queue is not None:
                queue.stat_redeliver += 1
        ctag = consumer.tag_bytes
        route = msg.route
        session = self.session
        ch = self.number
        session.out.extend(
            (
                _FRAME.pack(FRAME_METHOD, ch, 13 + len(ctag) + len(route)),
                _DELIVER,
                ctag,
                _QB.pack(tag, msg.redelivered),
                route,
                _END,
            )
        )
        session.write_content(ch, msg.header, msg.body)
        if not session.wake_pending:
            session.wake()

    def deliver_get(self, queue: Queue, msg: Message, no_ack: bool) -> None:
        tag = self.next_tag
        self.next_tag = tag + 1
        if not msg.seq:
            msg.seq = next_position()
            if msg.store_id:
                self._first_delivery(queue, msg)
        if not no_ack:
            self.unacked[tag] = (msg, queue, None)
            self.unacked_bytes += len(msg.body)
            self.stat_get += 1
            queue.stat_get += 1
        else:
            self.stat_get_no_ack += 1
            queue.stat_get_no_ack += 1
            if msg.store_id:
                queue.release(msg)
        if msg.redelivered:
            self.stat_redeliver += 1
            queue.stat_redeliver += 1
        route = msg.route
        session = self.session
        ch = self.number
        session.out.extend(
            (
                _FRAME.pack(FRAME_METHOD, ch, 17 + len(route)),
                _GET_OK,
                _QB.pack(tag, msg.redelivered),
                route,
                _I.pack(len(queue.ready)),
                _END,
            )
        )
        session.write_content(ch, msg.header, msg.body)

    def _first_delivery(self, queue: Queue | None, msg: Message) -> None:
        # Logged so that a restart marks it redelivered (not synced on its own).
        if queue is not None and queue.persist:
            self.services.store.message_delivered(queue.vhost.name, queue.name, msg.store_id)

    def set_active(self) -> None:
        """Recompute whether deliveries may flow (client flow and socket backpressure)."""
        was = self.active
        self.active = self.flow_active and self.session.writable
        if self.active and not was:
            self.kick()

    def kick(self) -> None:
        """Let the queues this channel consumes from deliver again (to its consumers too)."""
        queues: set[Queue] = set()
        for c in self.consumers.values():
            q = c.queue
            if q is not None:
                q.unpark(c)
                queues.add(q)
        for q in queues:
            q.dispatch()

    # ---------------------------------------------------------------- acks

    def take_unacked(self, tag: int, multiple: bool) -> list[tuple[int, Unacked]]:
        """Remove and return the deliveries an ack/nack names, as RabbitMQ matches them.

        The tag itself must be outstanding (406 otherwise), even with multiple; tag 0 with
        multiple means everything outstanding.
        """
        unacked = self.unacked
        if multiple:
            if tag == 0:
                taken = list(unacked.items())
                unacked.clear()
                return taken
            if tag not in unacked:
                raise PreconditionFailed(f"unknown delivery tag {tag}")
            keys = []
            for k in unacked:
                if k > tag:
                    break
                keys.append(k)
            return [(k, unacked.pop(k)) for k in keys]
        entry = unacked.pop(tag, None)
        if entry is None:
            raise PreconditionFailed(f"unknown delivery tag {tag}")
        return [(tag, entry)]

    def settle(self, taken: list[tuple[int, Unacked]], requeue: bool | None) -> None:
        """Finish deliveries: requeue=None acks, True requeues, False drops."""
        if requeue:
            self._requeue(taken)
            return
        freed_consumers: dict[Consumer, None] = {}
        freed = 0
        for _tag, (msg, queue, consumer) in taken:
            freed += len(msg.body)
            if consumer is not None:
                consumer.unacked -= 1
                self.unacked_total -= 1
                freed_consumers[consumer] = None
        self.unacked_bytes -= freed
        queues: set[Queue] = set()
        for consumer in freed_consumers:
            q = consumer.queue
            q.unpark(consumer)
            queues.add(q)
        if requeue:
            requeue_grouped((msg, queue) for _tag, (msg, queue, _c) in taken)
        else:
            if requeue is None:
                self.stat_ack += len(taken)
            for _tag, (msg, queue, _c) in taken:
                if requeue is None:
                    queue.stat_ack += 1
                if msg.store_id:
                    queue.release(msg)
                if requeue is False and queue.args.dlx is not None and not queue.deleted:
                    queue.vhost.dead_letter(queue, msg, "rejected")
        if queues and self.global_limit:
            # The channel-wide limit came free: any of its consumers may take more.
            for c in self.consumers.values():
                if c.queue is not None:
                    c.queue.unpark(c)
                    queues.add(c.queue)
        # Capacity came free: let the queues deliver again.
        for q in queues:
            if q.consumers:
                q.dispatch()

    def _requeue(self, taken: list[tuple[int, Unacked]]) -> None:
        """Give deliveries back (nack or reject with requeue, basic.recover), as RabbitMQ's
        channel does: one requeue per (queue, consumer), in that order (queue name, then a
        queue's basic.get deliveries before its consumers', then consumer tag). Each queue
        hands out what came back before the next group goes back, and a consumer's prefetch
        credit returns with its own group; the channel-wide limit frees after all groups.
        (Which consumer gets a message back depends on it.)"""
        groups: dict[tuple[Queue, Consumer | None], list[Message]] = {}
        freed_bytes = 0
        for _tag, (msg, queue, consumer) in taken:
            freed_bytes += len(msg.body)
            msgs = groups.get((queue, consumer))
            if msgs is None:
                groups[(queue, consumer)] = [msg]
            else:
                msgs.append(msg)
        self.unacked_bytes -= freed_bytes
        freed = 0
        for (queue, consumer), msgs in sorted(groups.items(), key=_group_order):
            if consumer is not None:
                consumer.unacked -= len(msgs)
                freed += len(msgs)
                queue.unpark(consumer)
            guarded(f"requeueing {len(msgs)} message(s) to queue {queue.name!r}", queue.requeue, msgs)
        self.unacked_total -= freed
        if freed and self.global_limit:
            self.kick()  # the channel-wide limit came free

    def ack(self, tag: int, multiple: bool, requeue: bool | None) -> None:
        taken = self.take_unacked(tag, multiple)
        if self.tx_acks is not None:
            self.tx_acks.append((taken, requeue))
            return
        self.settle(taken, requeue)

    def recover(self) -> None:
        taken = list(self.unacked.items())
        self.unacked.clear()
        self.settle(taken, True)

    # ------------------------------------------------------------ consumers

    def remove_consumer(self, consumer: Consumer) -> None:
        self.consumers.pop(consumer.tag, None)
        queue = consumer.queue
        if queue is None:  # the direct reply-to pseudo-consumer
            self.drop_reply_consumer()
            return
        queue.remove_consumer(consumer)
        if queue.auto_delete and not queue.consumers and not queue.deleted:
            queue.vhost.delete_queue(queue)

    # -------------------------------------------------------------- closing

    def release(self) -> None:
        """The channel is gone: cancel its consumers and requeue what it held, in order.

        Every step runs even if another fails (each is guarded and logged): a consumer that
        cannot be removed cleanly must not keep the unacked messages from coming back.
        """
        if self.closed:
            return
        self.closed = True
        self.active = False
        guarded("folding the channel's message counters", self._retire_stats)
        # Its consumers can take nothing from now on (the channel is inactive); they are
        # cancelled below, in slices if there are many, after what they held is requeued.
        consumers = list(self.consumers.values())
        self.consumers.clear()
        guarded("dropping the direct reply-to consumer", self.drop_reply_consumer)
        entries: list[Any] = []
        if self.tx_acks:
            for taken, _requeue in self.tx_acks:
                entries.extend(taken)
        self.tx_acks = None
        self.tx = None
        entries.extend(self.unacked.items())
        self.unacked.clear()
        self.unacked_total = 0
        self.unacked_bytes = 0
        entries.sort(key=_first)
        requeue_grouped((msg, queue) for _tag, (msg, queue, _c) in entries)
        # A connection with 400k consumers is seconds of cancelling: done in slices between
        # turns of the event loop, so everyone else is served meanwhile. Until its turn comes
        # a consumer still counts in its queue's consumer_count, as in RabbitMQ while a
        # closed channel's process is going away.
        self.services.teardown.add(f"cancelling the consumers of channel {self.number} of "
                            f"connection {self.session.peer}", self._cancel_consumer, consumers)

    def _cancel_consumer(self, consumer: Consumer) -> None:
        try:
            self.remove_consumer(consumer)
        except Exception:
            log.error("cancelling consumer %r failed; the rest of the clean-up goes on",
                      consumer.tag, exc_info=True)
            self._forget_consumer(consumer)

    def _retire_stats(self) -> None:
        totals = self.services.retired_stats
        for name in STAT_FIELDS:
            totals[name] += getattr(self, "stat_" + name)

    def _forget_consumer(self, consumer: Consumer) -> None:
        """After a failed cancel: make sure the queue no longer delivers to this consumer."""
        self.consumers.pop(consumer.tag, None)
        queue = consumer.queue
        if queue is None:
            return
        queue.withdraw(consumer)
        if consumer in queue.consumers:
            queue.consumers.remove(consumer)
        if queue.exclusive_consumer is consumer:
            queue.exclusive_consumer = None


def _first(item: tuple) -> Any:
    return item[0]


def _group_order(item: tuple) -> tuple:
    (queue, consumer), _msgs = item
    return (queue.name, consumer is not None, consumer.tag if consumer is not None else "")


# Method index -> the Channel handler for it (called as handler(channel, method)).
HANDLERS = {
    spec.BasicAck.INDEX: Channel.basic_ack,
    spec.BasicNack.INDEX: Channel.basic_nack,
    spec.BasicReject.INDEX: Channel.basic_reject,
    spec.BasicQos.INDEX: Channel.basic_qos,
    spec.BasicConsume.INDEX: Channel.basic_consume,
    spec.BasicCancel.INDEX: Channel.basic_cancel,
    spec.BasicGet.INDEX: Channel.basic_get,
    spec.BasicRecover.INDEX: Channel.basic_recover,
    spec.BasicRecoverAsync.INDEX: Channel.basic_recover_async,
    spec.ExchangeDeclare.INDEX: Channel.exchange_declare,
    spec.ExchangeDelete.INDEX: Channel.exchange_delete,
    spec.ExchangeBind.INDEX: Channel.exchange_bind,
    spec.ExchangeUnbind.INDEX: Channel.exchange_unbind,
    spec.QueueDeclare.INDEX: Channel.queue_declare,
    spec.QueueBind.INDEX: Channel.queue_bind,
    spec.QueueUnbind.INDEX: Channel.queue_unbind,
    spec.QueuePurge.INDEX: Channel.queue_purge,
    spec.QueueDelete.INDEX: Channel.queue_delete,
    spec.ChannelFlow.INDEX: Channel.channel_flow,
    spec.ChannelFlowOk.INDEX: Channel.ignore_method,
    spec.BasicCancelOk.INDEX: Channel.ignore_method,  # some clients answer a server cancel
    spec.ConfirmSelect.INDEX: Channel.confirm_select,
    spec.TxSelect.INDEX: Channel.tx_select,
    spec.TxCommit.INDEX: Channel.tx_commit,
    spec.TxRollback.INDEX: Channel.tx_rollback,
}
