"""The broker core: users, virtual hosts and the sessions attached to them.

Pure and synchronous: the transport creates a Session per accepted socket and feeds it bytes;
nothing here touches sockets, asyncio or the clock. Time, where a feature needs it, comes from
the `clock` callable the broker is given.
"""
from __future__ import annotations

import platform
import heapq
import logging
from typing import Any, Callable, Iterator

import minimq
from minimq.broker.arguments import parse_expiration
from minimq.broker.message import EXPIRATION_FLAG
from minimq.broker.queue import Queue
from minimq.broker.session import Session
from minimq.broker.timers import Timers
from minimq.broker.vhost import VirtualHost
from minimq.protocol.connection import ServerConnection

CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}


def server_properties() -> dict:
    return {
        "product": "minimq",
        "version": minimq.__version__,
        "platform": f"Python {platform.python_version()}",
        "copyright": "minimq contributors",
        "information": "An embeddable AMQP 0-9-1 broker; see README.md",
        "cluster_name": "minimq",
        "capabilities": dict(CAPABILITIES),
    }


log = logging.getLogger("minimq.broker")


class Broker:
    """All broker state. One per server (or per embedded test broker)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        users: dict[str, str] | None = None,
        vhosts: tuple[str, ...] = ("/",),
        frame_max: int = 131072,
        channel_max: int = 2047,
        heartbeat: int = 60,
        store: Any = None,
    ) -> None:
        self.clock = clock if clock is not None else _no_clock
        self.users = dict(users) if users is not None else {"guest": "guest"}
        self.vhosts: dict[str, VirtualHost] = {}
        self.sessions: set[Session] = set()
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = heartbeat
        self.server_properties = server_properties()
        # Deadlines of the core (TTL, expiry, ...), in the time of `clock`. The server (or a
        # test's virtual clock) waits for `timers.next_deadline()` and calls `tick()`.
        self.timers = Timers()
        # Direct reply-to: token -> the channel consuming from amq.rabbitmq.reply-to.
        self.reply_channels: dict = {}
        # Durability (minimq.store.DurableStore or None). Channels whose publisher confirms
        # wait for the store to sync, and callbacks waiting for a store position.
        self.store = store
        self.awaiting_sync: set = set()
        self._after_sync: list[tuple[int, int, Callable[[], None]]] = []
        self._after_seq = 0
        if store is not None:
            store.live_messages = self._live_messages
        for name in vhosts:
            self.add_vhost(name)

    def now(self) -> float:
        return self.clock()

    def tick(self, now: float | None = None) -> int:
        """Run the core's due timers; the driver calls this at each deadline."""
        return self.timers.run_due(self.clock() if now is None else now)

    # ------------------------------------------------------------- durability

    def after_sync(self, position: int, callback: Callable[[], None]) -> None:
        """Run `callback` once the store has synced everything up to `position`."""
        self._after_seq += 1
        heapq.heappush(self._after_sync, (position, self._after_seq, callback))

    def synced(self, position: int) -> None:
        """The store reports everything up to `position` durable: release confirms."""
        store = self.store
        if store is None:
            return
        if position > store.synced:
            store.synced = position
        for ch in list(self.awaiting_sync):
            if ch.closed:
                self.awaiting_sync.discard(ch)
            elif ch.session.release_confirms(ch, store.synced):
                self.awaiting_sync.discard(ch)
        waiting = self._after_sync
        while waiting and waiting[0][0] <= store.synced:
            _, _, callback = heapq.heappop(waiting)
            callback()

    def restore(self, recovered: Any) -> None:
        """Rebuild durable exchanges, queues, bindings and messages read back by the store.

        The store already holds all of it, so nothing is logged again while restoring.
        """
        store, self.store = self.store, None
        try:
            self._restore(recovered)
        finally:
            self.store = store
        if store is not None:
            for vhost in self.vhosts.values():
                for q in vhost.queues.values():
                    if q.durable and not q.exclusive:
                        q.persist = True

    def _restore(self, recovered: Any) -> None:
        from minimq.broker.message import Message, make_route

        for vhost_name, name, type_name, durable, auto_delete, internal, args in recovered.exchanges:
            vhost = self.add_vhost(vhost_name)
            if name in vhost.exchanges:
                continue
            try:
                vhost.declare_exchange(
                    name, type_name, durable=durable, auto_delete=auto_delete, internal=internal,
                    arguments=args,
                )
            except Exception as exc:  # a record this version cannot honour: say so, go on
                log.error("cannot restore exchange %r in vhost %r: %s", name, vhost_name, exc)
        for rq in recovered.queues:
            vhost = self.add_vhost(rq.vhost)
            try:
                q, _ = vhost.declare_queue(
                    rq.name, None, durable=True, auto_delete=rq.auto_delete, arguments=rq.arguments
                )
            except Exception as exc:
                log.error("cannot restore queue %r in vhost %r: %s", rq.name, rq.vhost, exc)
                continue
            now = self.clock()
            ttl = q.args.message_ttl
            max_priority = q.args.max_priority
            routes: dict[tuple[str, str], bytes] = {}
            for ref, exchange, rk, header, body, delivered in rq.messages:
                route = routes.get((exchange, rk))
                if route is None:
                    route = routes[(exchange, rk)] = make_route(exchange, rk)
                msg = Message(exchange, rk, route, header, body)
                msg.store_id = ref
                msg.redelivered = delivered
                # TTLs count again from the restart: enqueue times are not stored.
                if msg.flags & EXPIRATION_FLAG:
                    try:
                        msg.expires = now + parse_expiration(msg.properties.expiration) / 1000.0
                    except Exception:
                        msg.expires = None
                if ttl is not None:
                    at = now + ttl / 1000.0
                    if msg.expires is None or at < msg.expires:
                        msg.expires = at
                if max_priority is not None:
                    msg.priority = min(msg.priority_value(), max_priority)
                if msg.expires is not None:
                    q.special = True
                q.ready.append(msg)
                q.ready_bytes += len(body)
            if q.ready:
                q._arm_expiry()
        for vhost_name, src, dest, is_x, key, args in recovered.bindings:
            vhost = self.vhosts.get(vhost_name)
            if vhost is None:
                continue
            source = vhost.exchanges.get(src)
            target = vhost.exchanges.get(dest) if is_x else vhost.queues.get(dest)
            if source is None or target is None:
                continue
            try:
                vhost.bind(source, target, key, args)
            except Exception as exc:
                log.error("cannot restore binding %r -> %r: %s", src, dest, exc)

    def _live_messages(self, wanted: Callable[[int], bool]) -> Iterator[tuple[str, str, Any]]:
        """(vhost, queue, message) for every live persistent copy whose store reference
        `wanted` accepts (the store's compaction copies these forward)."""
        for vhost in self.vhosts.values():
            for q in vhost.queues.values():
                if q.persist:
                    for msg in q.ready:
                        if msg.store_id and wanted(msg.store_id):
                            yield vhost.name, q.name, msg
        for session in self.sessions:
            for ch in session.channels.values():
                held = list(ch.unacked.values())
                for taken, _requeue in ch.tx_acks or ():
                    held.extend(entry for _tag, entry in taken)
                for msg, q, _c in held:
                    if q.persist and not q.deleted and msg.store_id and wanted(msg.store_id):
                        yield q.vhost.name, q.name, msg

    def add_vhost(self, name: str) -> VirtualHost:
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = VirtualHost(name, self)
            vhost.on_queue_deleted = _cancel_consumers
            self.vhosts[name] = vhost
        return vhost

    def delete_vhost(self, name: str) -> None:
        vhost = self.vhosts.pop(name, None)
        if vhost is not None:
            for q in list(vhost.queues.values()):
                vhost.delete_queue(q)

    def check_credentials(self, user: str, password: str) -> bool:
        return user in self.users and self.users[user] == password

    def vhost_allowed(self, user: str, vhost: str) -> bool:
        return vhost in self.vhosts

    def new_session(self, peer: str = "") -> Session:
        """A session for a freshly accepted connection (before the protocol header)."""
        conn = ServerConnection(
            check_credentials=self.check_credentials,
            vhost_allowed=self.vhost_allowed,
            server_properties=self.server_properties,
            frame_max=self.frame_max,
            channel_max=self.channel_max,
            heartbeat=self.heartbeat,
        )
        return Session(self, conn, peer)


def _cancel_consumers(queue: Queue) -> None:
    for consumer in list(queue.consumers):
        queue.remove_consumer(consumer)
        consumer.channel.session.server_cancel(consumer)


def _no_clock() -> float:
    raise RuntimeError("this broker was given no clock")
