"""The channel's exchange.* and queue.* handlers: declare, delete, bind, unbind, purge.

Each checks permissions in RabbitMQ's order before it looks anything up, so that a user
without access learns nothing (403 comes before 404), then acts on the channel's vhost.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from minimq.broker.exchange_types import ALL_EXCHANGE_TYPES
from minimq.broker.reply_to import DirectReplyTo
from minimq.broker.vhost import generated_name
from minimq.codec import spec
from minimq.codec.errors import AccessRefused, NotFound, PreconditionFailed

if TYPE_CHECKING:
    from minimq.broker.exchange import Exchange
    from minimq.broker.queue import Queue


class DeclareHandlers:
    """Mixed into `Channel`: topology methods (exchange.*, queue.*)."""

    def exchange_declare(self, m: spec.ExchangeDeclare) -> None:
        name = m.exchange
        if not m.passive and name and m.type in ALL_EXCHANGE_TYPES:
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
            self.send(spec.ExchangeDeclareOk())

    def exchange_delete(self, m: spec.ExchangeDelete) -> None:
        if m.exchange and not m.exchange.startswith("amq."):
            self._allow("configure", "exchange", m.exchange)
        self.vhost.delete_exchange(m.exchange, m.if_unused)
        if not m.no_wait:
            self.send(spec.ExchangeDeleteOk())

    def exchange_bind(self, m: spec.ExchangeBind) -> None:
        self._allow_binding(m.destination, "exchange", m.source, m.routing_key)
        vhost = self.vhost
        source = vhost.get_exchange(m.source)  # RabbitMQ names a missing source first
        dest = vhost.get_exchange(m.destination)
        vhost.bind(source, dest, m.routing_key, m.arguments)
        if not m.no_wait:
            self.send(spec.ExchangeBindOk())

    def exchange_unbind(self, m: spec.ExchangeUnbind) -> None:
        self._allow_binding(m.destination, "exchange", m.source, m.routing_key)
        vhost = self.vhost
        source = vhost.exchanges.get(m.source)
        dest = vhost.exchanges.get(m.destination)
        # RabbitMQ: unbinding from or to a missing exchange succeeds (nothing to remove).
        if source is not None and dest is not None:
            vhost.unbind(source, dest, m.routing_key, m.arguments)
        if not m.no_wait:
            self.send(spec.ExchangeUnbindOk())

    def _allow_binding(self, dest: str, kind: str, source: str, routing_key: str) -> None:
        """Bind/unbind as RabbitMQ's binding_action: write on the destination, the default
        exchange refused, read on the source, then topic read on the binding key."""
        self._allow("write", kind, dest)
        if source == "" or (kind == "exchange" and dest == ""):
            raise AccessRefused("operation not permitted on the default exchange")
        self._allow("read", "exchange", source)
        self._allow_topic_read(self.vhost.exchanges.get(source), routing_key)

    def queue_named(self, name: str, permission: str | None = None) -> Queue:
        """A queue by name; the empty name means the channel's last declared queue.

        With `permission`, the user must have it on the queue (checked before the lookup,
        as RabbitMQ does: no permission means 403 even for a queue that does not exist)."""
        if name == "":
            if self.last_queue is None:
                raise NotFound("no previously declared queue")
            name = self.last_queue
        if permission is not None:
            self._allow(permission, "queue", name)
        return self.vhost.get_queue(name, self.session)

    def queue_declare(self, m: spec.QueueDeclare) -> None:
        if DirectReplyTo.names_pseudo_queue(m.queue, m.passive):
            self.services.replies.declare(m.queue, self.vhost.name)
            if not m.no_wait:
                self.send(spec.QueueDeclareOk(m.queue, 0, 1))
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
            name, self.session, passive=m.passive, durable=m.durable, exclusive=m.exclusive,
            auto_delete=m.auto_delete, arguments=m.arguments, server_named=server_named,
        )
        if created and q.exclusive:
            self.session.exclusive_queues.append(q)
        self.last_queue = q.name
        if not m.no_wait:
            self.send(spec.QueueDeclareOk(q.name, len(q.ready), len(q.consumers)))

    def _new_queue_checks(self, name: str, arguments: dict | None) -> None:
        """A queue about to be created: the vhost's max-queues, and with a dead-letter
        exchange, read on the queue and write on that exchange (RabbitMQ's order)."""
        access = self.services.access
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

    def _binding_ends(self, queue: str, exchange: str, routing_key: str) -> tuple[Exchange, Queue]:
        """Resolve a queue binding's ends in RabbitMQ's order of checks."""
        if queue == "":
            if self.last_queue is None:
                raise NotFound("no previously declared queue")
            queue = self.last_queue
        self._allow_binding(queue, "queue", exchange, routing_key)
        ex = self.vhost.get_exchange(exchange)
        return ex, self.vhost.get_queue(queue, self.session)

    def queue_bind(self, m: spec.QueueBind) -> None:
        ex, q = self._binding_ends(m.queue, m.exchange, m.routing_key)
        key = m.routing_key
        if m.queue == "" and key == "":
            key = q.name
        self.vhost.bind(ex, q, key, m.arguments)
        if not m.no_wait:
            self.send(spec.QueueBindOk())

    def queue_unbind(self, m: spec.QueueUnbind) -> None:
        name = m.queue
        if name == "":
            if self.last_queue is None:
                raise NotFound("no previously declared queue")
            name = self.last_queue
        self._allow_binding(name, "queue", m.exchange, m.routing_key)
        vhost = self.vhost
        ex = vhost.exchanges.get(m.exchange)
        q = vhost.queues.get(name)
        # RabbitMQ: unbinding a missing queue, exchange or binding succeeds; only a binding
        # that exists checks the queue's exclusivity.
        if ex is not None and q is not None and ex.kind.has_binding(q, m.routing_key, m.arguments or {}):
            vhost.get_queue(name, self.session)
            vhost.unbind(ex, q, m.routing_key, m.arguments)
        self.send(spec.QueueUnbindOk())

    def queue_purge(self, m: spec.QueuePurge) -> None:
        q = self.queue_named(m.queue, "read")
        count = q.purge()
        if not m.no_wait:
            self.send(spec.QueuePurgeOk(count))

    def queue_delete(self, m: spec.QueueDelete) -> None:
        name = m.queue
        if name == "":
            if self.last_queue is None:
                raise NotFound("no previously declared queue")
            name = self.last_queue
        self._allow("configure", "queue", name)
        q = self.vhost.queues.get(name)
        if q is None:
            # RabbitMQ: deleting an absent queue succeeds with a count of 0.
            if not m.no_wait:
                self.send(spec.QueueDeleteOk(0))
            return
        q = self.vhost.get_queue(name, self.session)
        where = f"queue '{q.name}' in vhost '{self.vhost.name}'"
        # RabbitMQ's queue checks emptiness first: both flags on a queue that is in use
        # and not empty is 'not empty'.
        if m.if_empty and q.ready:
            raise PreconditionFailed(f"{where} not empty")
        if m.if_unused and q.consumers:
            raise PreconditionFailed(f"{where} in use")
        # The consumers of this channel hear basic.cancel after queue.delete-ok (RabbitMQ's
        # order); other channels' cancels go out at once.
        self.held_cancels = []
        try:
            count = self.vhost.delete_queue(q)
        finally:
            held, self.held_cancels = self.held_cancels, None
        if not m.no_wait:
            self.send(spec.QueueDeleteOk(count))
        for tag in held:
            self.send(spec.BasicCancel(tag, True))
