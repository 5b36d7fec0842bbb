"""The broker core: users, virtual hosts and the sessions attached to them.

Pure and synchronous: the transport creates a Session per accepted socket and feeds it bytes;
nothing here touches sockets, asyncio or the clock. Time, where a feature needs it, comes from
the `clock` callable the broker is given.
"""
from __future__ import annotations

import ipaddress
import logging
import platform
from typing import Any, Callable, Iterable, Iterator

import minimq
from minimq.broker.access import FULL, AccessControl, User
from minimq.broker.arguments import parse_expiration
from minimq.broker.channel import STAT_FIELDS
from minimq.broker.exchange_types import TopicExchangeType
from minimq.broker.policies import Policies
from minimq.broker.queue import Queue
from minimq.broker.services import Services
from minimq.broker.session import Session
from minimq.broker.timers import Timers
from minimq.broker.vhost import VirtualHost
from minimq.codec.errors import ConnectionForced, NotAllowed
from minimq.codec.properties import EXPIRATION_FLAG
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

# What a message costs besides its body (the Message object, its slot in a queue or in a
# channel's unacked map): an estimate, so that many small messages count too.
READY_OVERHEAD = 200
UNACKED_OVERHEAD = 320


class Broker:
    """All broker state. One per server (or per embedded test broker).

    Access control lives in `access` (users, permissions, limits). Without one, a broker
    starts as a fresh RabbitMQ node does: guest/guest, administrator, full rights on '/'.
    `users` (name -> clear-text password) is the older, open way kept for embedding and
    tests: each of those users gets full permissions on every vhost of the broker, also on
    vhosts added later (as `open_users` do with a given `access`).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        users: dict[str, str] | None = None,
        vhosts: Iterable[str] = ("/",),
        frame_max: int = 131072,
        channel_max: int = 2047,
        heartbeat: int = 60,
        store: Any = None,
        access: AccessControl | None = None,
        loopback_users: Iterable[str] = ("guest",),
        open_users: Iterable[str] = (),
        max_message_size: int = 128 * 1024 * 1024,
    ) -> None:
        # The services every vhost, queue, session and channel of this broker is given.
        self.services = services = Services(clock=clock, stat_fields=STAT_FIELDS)
        vhosts = tuple(vhosts)
        # Users that get full permissions on every vhost this broker adds (see above).
        self.open_users: tuple[str, ...] = tuple(open_users)
        if access is None:
            if users is None:
                access = AccessControl.default()
            else:
                access = AccessControl()
                for name, password in users.items():
                    access.add_user(name, password, tags=("administrator",) if name == "guest" else ())
                self.open_users = tuple(users)
        services.access = access
        access.on_invalidate = self._access_changed
        access.on_user_deleted = self._user_deleted
        # Users refused unless they connect through a loopback address (RabbitMQ's
        # loopback_users); empty lets everyone in from anywhere.
        self.loopback_users = frozenset(loopback_users)
        self.vhosts: dict[str, VirtualHost] = {}
        # Definitions minimq keeps without acting on them, so that an import exports again.
        self.vhost_metadata: dict[str, dict] = {}
        self.parameters: list[dict] = []
        self.global_parameters: list[dict] = []
        # Policies and operator policies (minimq.broker.policies); a change is saved with
        # the access-control definitions (whoever keeps those set access.on_change).
        self.policies = Policies(self)
        self.policies.on_change = self._policies_changed
        services.policies = self.policies
        self.sessions: set[Session] = set()
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = heartbeat
        self.max_message_size = max_message_size  # RabbitMQ 3.10's default: 128 MiB
        self.server_properties = server_properties()
        services.store = store
        # Message counters of channels that have closed (live ones keep their own), so the
        # totals of the management API and /metrics never go backwards.
        self.retired_stats = services.retired_stats
        if store is not None:
            store.live_messages = self._live_messages
        for name in vhosts:
            self.add_vhost(name)

    # The services, as the broker's own attributes (the server, the management API and
    # minimq.testing read and set them here).

    @property
    def clock(self) -> Callable[[], float]:
        """Time in seconds, as the core sees it (given at construction)."""
        return self.services.clock

    @property
    def timers(self) -> Timers:
        """Deadlines of the core (TTL, expiry, ...), in the time of `clock`. The server (or
        a test's virtual clock) waits for `timers.next_deadline()` and calls `tick()`."""
        return self.services.timers

    @property
    def access(self) -> AccessControl:
        return self.services.access

    @property
    def store(self) -> Any:
        """Durability (minimq.store.DurableStore or None)."""
        return self.services.store

    @store.setter
    def store(self, store: Any) -> None:
        self.services.store = store

    @property
    def route_cache(self):
        """Publishes' (exchange, routing key) -> deliver route bytes, for every connection."""
        return self.services.route_cache

    @property
    def confirm_order(self) -> Callable[[int, int], list[tuple[int, bool]]] | None:
        """How a run of confirms (first..last publish seq, all now confirmed) goes out: None
        sends one basic.ack(last, multiple). A function returning [(tag, multiple), ...]
        may spell it differently, as RabbitMQ does when unroutable or transient messages
        are confirmed before persistent ones published earlier (minimq.testing's
        confirm-reordering fault). The last entry must be (last, True) or cover `last`."""
        return self.services.confirm_order

    @confirm_order.setter
    def confirm_order(self, order: Callable[[int, int], list[tuple[int, bool]]] | None) -> None:
        self.services.confirm_order = order

    def held_memory(self) -> dict[str, int]:
        """Bytes the core holds, by kind: what the memory alarm counts (with the output).

        Messages ready in queues and delivered but unacked (bodies plus an estimate per
        message), content still being received, and the caches. Costs one pass over queues
        and channels, so the server calls it a few times a second, not per message.
        """
        ready = unacked = receiving = caches = 0
        for vhost in self.vhosts.values():
            for q in vhost.queues.values():
                ready += q.ready_bytes + len(q.ready) * READY_OVERHEAD
        for session in self.sessions:
            for ch in session.channels.values():
                unacked += ch.unacked_bytes + len(ch.unacked) * UNACKED_OVERHEAD
            conn = session.conn
            receiving += conn.content_in_progress()
            caches += conn.cache_bytes
        caches += self.route_cache.bytes + TopicExchangeType.cache_bytes()
        return {"ready": ready, "unacked": unacked, "receiving": receiving, "caches": caches}

    def tick(self, now: float | None = None) -> int:
        """Run the core's due timers; the driver calls this at each deadline."""
        return self.timers.run_due(self.clock() if now is None else now)

    # ------------------------------------------------------------- durability

    def after_sync(self, position: int, callback: Callable[[], None]) -> None:
        """Run `callback` once the store has synced everything up to `position`."""
        self.services.sync_waits.after(position, callback)

    def synced(self, position: int) -> None:
        """The store reports everything up to `position` durable: release confirms."""
        store = self.store
        if store is None:
            return
        if position > store.synced:
            store.synced = position
        self.services.sync_waits.synced(store.synced)

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
                q.arm_expiry()
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

    def message_totals(self) -> dict[str, int]:
        """Every message counter summed over the broker's lifetime (closed channels too)."""
        totals = dict(self.retired_stats)
        for session in self.sessions:
            for ch in session.channels.values():
                for name in STAT_FIELDS:
                    totals[name] += getattr(ch, "stat_" + name)
        return totals

    def add_vhost(self, name: str) -> VirtualHost:
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = VirtualHost(name, self.services)
            vhost.on_queue_deleted = _cancel_consumers
            self.vhosts[name] = vhost
            access = self.access
            for user in self.open_users:
                if user in access.users and (name, user) not in access.permissions:
                    access.permissions[(name, user)] = FULL
            access.changed()
        return vhost

    def delete_vhost(self, name: str) -> None:
        """Delete a vhost with its queues, permissions and limits; its connections are closed."""
        vhost = self.vhosts.pop(name, None)
        if vhost is not None:
            # As RabbitMQ: the vhost's connections go first (320), so what they held
            # unacked is back in its queues before those are deleted with them.
            for session in [s for s in self.sessions if s.vhost is vhost and not s.closed]:
                session.force_close(ConnectionForced(f"vhost '{name}' is deleted"))
            for q in list(vhost.queues.values()):
                vhost.delete_queue(q)
            self.vhost_metadata.pop(name, None)
            self.parameters[:] = [p for p in self.parameters if p.get("vhost") != name]
            self.policies.forget_vhost(name)
            self.access.forget_vhost(name)
            self.access.changed()

    def _policies_changed(self) -> None:
        save = self.access.on_change
        if save is not None:
            save()

    # --------------------------------------------------------- access control

    def login(self, user: str, password: str, mechanism: str, peer: str) -> User | None:
        """The user, if the password is right and it may connect from `peer`; logs refusals."""
        found = self.access.authenticate(user, password)
        if found is None:
            log.warning(
                "connection %s: login refused for user '%s' (mechanism %s): %s",
                peer or "(in-process)", user, mechanism,
                "user unknown" if user not in self.access.users else "invalid credentials",
            )
            return None
        if user in self.loopback_users and not is_loopback(peer):
            log.warning(
                "connection %s: login refused for user '%s' (mechanism %s): user '%s' can only "
                "connect via localhost (see --loopback-users)", peer, user, mechanism, user,
            )
            return None
        return found

    def open_vhost(self, user: str, vhost: str) -> None:
        """Raise RabbitMQ's 530 unless `user` may open `vhost` now (permissions, limits)."""
        access = self.access
        if vhost not in self.vhosts:
            raise NotAllowed(f"vhost {vhost} not found")
        if not access.can_access_vhost(user, vhost):
            raise NotAllowed(f"access to vhost '{vhost}' refused for user '{user}'")
        if access.vhost_limits:
            limit = access.vhost_limit(vhost, "max-connections")
            if limit is not None and self.connection_count(vhost=vhost) >= limit:
                raise NotAllowed(
                    f"access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached"
                )
        if access.user_limits:
            limit = access.user_limit(user, "max-connections")
            if limit is not None and self.connection_count(user=user) >= limit:
                raise NotAllowed(f"connection refused for user '{user}': user connection limit ({limit}) is reached")

    def _access_changed(self) -> None:
        """Permissions changed: sessions forget what they were allowed (new operations are
        checked again at once)."""
        for session in self.sessions:
            session.acl_cache.clear()
            session.write_ok.clear()
            session.topic_ok.clear()

    def _user_deleted(self, name: str) -> None:
        """RabbitMQ closes a deleted user's connections: 320 "user 'x' is deleted"."""
        for session in [s for s in self.sessions if s.user == name and not s.closed]:
            session.force_close(ConnectionForced(f"user '{name}' is deleted"))

    def channel_opening(self, session: Session) -> None:
        """Raise RabbitMQ's 530 if the session's user is at its max-channels limit."""
        access = self.access
        if not access.user_limits:
            return
        user = session.user
        limit = access.user_limit(user, "max-channels")
        if limit is None:
            return
        count = sum(len(s.channels) for s in self.sessions if s.user == user and not s.closed)
        if count >= limit:
            raise NotAllowed(
                f"number of channels opened for user '{user}' has reached the maximum allowed user limit of ({limit})"
            )

    def connection_count(self, *, vhost: str | None = None, user: str | None = None) -> int:
        return sum(
            1 for s in self.sessions
            if not s.closed and (vhost is None or s.vhost.name == vhost) and (user is None or s.user == user)
        )

    def new_session(self, peer: str = "") -> Session:
        """A session for a freshly accepted connection (before the protocol header)."""
        session: Session

        def check_credentials(user: str, password: str, mechanism: str = "PLAIN") -> bool:
            found = self.login(user, password, mechanism, peer)
            if found is None:
                return False
            session.user = user
            return True

        def vhost_allowed(user: str, vhost: str) -> bool:
            self.open_vhost(user, vhost)
            return True

        conn = ServerConnection(
            check_credentials=check_credentials,
            vhost_allowed=vhost_allowed,
            server_properties=self.server_properties,
            frame_max=self.frame_max,
            channel_max=self.channel_max,
            heartbeat=self.heartbeat,
            max_message_size=self.max_message_size,
        )
        session = Session(self, conn, peer)
        return session


def is_loopback(peer: str) -> bool:
    """Whether a "host:port" peer is a loopback address.

    A peer that is no IP address at all (in-process brokers, tests naming their peers) did not
    come over the network, so it counts as local, as RabbitMQ's direct connections do.
    """
    if not peer:
        return True
    # Peers are "host:port" (the transport's format; IPv6 hosts unbracketed).
    try:
        addr = ipaddress.ip_address(peer.rsplit(":", 1)[0].strip("[]"))
    except ValueError:
        try:
            addr = ipaddress.ip_address(peer.strip("[]"))
        except ValueError:
            return True
    mapped = getattr(addr, "ipv4_mapped", None)
    if mapped is not None:
        addr = mapped
    return addr.is_loopback


def _cancel_consumers(queue: Queue) -> None:
    if queue.exclusive and queue.owner is not None and queue.owner.closed:
        # Its owner's teardown is deleting it: only the owner can consume from it, and its
        # consumers are being cancelled by that teardown (in slices, there may be 400k).
        return
    # RabbitMQ cancels a deleted queue's consumers in consumer-tag order.
    for consumer in sorted(queue.consumers, key=lambda c: c.tag):
        queue.remove_consumer(consumer)
        consumer.channel.server_cancel(consumer)

