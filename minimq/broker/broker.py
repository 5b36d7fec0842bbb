"""The broker core: users, virtual hosts and the sessions attached to them.

Pure and synchronous: the transport creates a Session per accepted socket and feeds it bytes;
nothing here touches sockets, asyncio or the clock. Time, where a feature needs it, comes from
the `clock` callable the broker is given.
"""
from __future__ import annotations

import platform
from typing import Callable

import minimq
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
        for name in vhosts:
            self.add_vhost(name)

    def now(self) -> float:
        return self.clock()

    def tick(self, now: float | None = None) -> int:
        """Run the core's due timers; the driver calls this at each deadline."""
        return self.timers.run_due(self.clock() if now is None else now)

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
