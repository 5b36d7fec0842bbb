"""The channel's basic.* handlers (but basic.publish), channel.flow, and server cancels.

Consumers are registered here and acks, nacks, rejects and recovers are handed to the
channel's delivery bookkeeping (`Channel.ack`, `Channel.recover`).
"""
from __future__ import annotations

from minimq.broker.arguments import type_name
from minimq.broker.queue import Consumer
from minimq.broker.reply_to import REPLY_TO, REPLY_TO_PREFIX
from minimq.broker.vhost import generated_name
from minimq.codec import spec
from minimq.codec.errors import AccessRefused, AMQPNotImplemented, NotAllowed, NotFound, PreconditionFailed


class BasicHandlers:
    """Mixed into `Channel`: consuming, getting, acknowledging, recovering."""

    def basic_qos(self, m: spec.BasicQos) -> None:
        if m.prefetch_size:
            raise AMQPNotImplemented(f"prefetch_size!=0 ({m.prefetch_size})")
        if m.global_:
            self.global_limit = m.prefetch_count
            self.send(spec.BasicQosOk())
            self.kick()
        else:
            self.prefetch = m.prefetch_count
            self.send(spec.BasicQosOk())

    def basic_consume(self, m: spec.BasicConsume) -> None:
        if m.queue == "" and self.last_queue is None:
            raise NotFound("no previously declared queue")
        if m.consumer_tag and m.consumer_tag in self.consumers:
            # RabbitMQ checks the tag before it looks the queue up.
            raise NotAllowed(f"attempt to reuse consumer tag '{m.consumer_tag}'")
        if m.queue == REPLY_TO:
            self._consume_reply_to(m)
            return
        q = self.queue_named(m.queue, "read")
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
        if tag in self.consumers:
            raise NotAllowed(f"attempt to reuse consumer tag '{tag}'")
        consumer = Consumer(tag, self, q, m.no_ack, m.exclusive, self.prefetch, args, int(priority))
        self.consumers[tag] = consumer
        if not m.no_wait:
            self.send(spec.BasicConsumeOk(tag))
        if q.args.expires is not None:
            q.last_used = self.services.clock()
        q.add_consumer(consumer)

    def _consume_reply_to(self, m: spec.BasicConsume) -> None:
        """Direct reply-to: a no-ack pseudo-consumer; replies go straight to this channel."""
        tag = m.consumer_tag or generated_name("amq.ctag-")
        consumer = self.services.replies.consume(self, tag, m.no_ack, generated_name(REPLY_TO_PREFIX))
        self.consumers[tag] = consumer
        if not m.no_wait:
            self.send(spec.BasicConsumeOk(tag))

    def basic_cancel(self, m: spec.BasicCancel) -> None:
        consumer = self.consumers.get(m.consumer_tag)
        if not m.no_wait:
            self.send(spec.BasicCancelOk(m.consumer_tag))
        if consumer is not None:
            self.remove_consumer(consumer)

    def server_cancel(self, consumer: Consumer) -> None:
        """The consumer's queue is gone: tell the client if it understands basic.cancel."""
        self.consumers.pop(consumer.tag, None)
        session = self.session
        if session.cancel_notify and not self.closed and not session.closed:
            if self.held_cancels is not None:
                self.held_cancels.append(consumer.tag)  # sent after queue.delete-ok
                return
            self.send(spec.BasicCancel(consumer.tag, True))
            session.wake()

    def basic_get(self, m: spec.BasicGet) -> None:
        q = self.queue_named(m.queue, "read")
        msg = q.get()
        if msg is None:
            self.stat_get_empty += 1
            self.send(spec.BasicGetEmpty())
        else:
            self.deliver_get(q, msg, m.no_ack)

    def basic_ack(self, m: spec.BasicAck) -> None:
        self.ack(m.delivery_tag, m.multiple, None)

    def basic_nack(self, m: spec.BasicNack) -> None:
        self.ack(m.delivery_tag, m.multiple, m.requeue)

    def basic_reject(self, m: spec.BasicReject) -> None:
        self.ack(m.delivery_tag, False, m.requeue)

    def basic_recover_async(self, m) -> None:
        if not m.requeue:
            raise AMQPNotImplemented("requeue=false")
        self.recover()

    def basic_recover(self, m: spec.BasicRecover) -> None:
        # As RabbitMQ: recover-ok first, then the redeliveries it causes.
        if not m.requeue:
            raise AMQPNotImplemented("requeue=false")
        self.send(spec.BasicRecoverOk())
        self.recover()

    def channel_flow(self, m: spec.ChannelFlow) -> None:
        # As RabbitMQ: a client may not pause deliveries with flow (consumers use basic.qos).
        if not m.active:
            raise AMQPNotImplemented("active=false")
        self.send(spec.ChannelFlowOk(True))

    def ignore_method(self, m) -> None:
        return None
