"""Listening sockets for a broker: plain AMQP and, optionally, AMQPS (TLS)."""
from __future__ import annotations

import asyncio
import logging
import ssl
import time

from minimq.broker import Broker
from minimq.server.transport import AMQPServerProtocol

log = logging.getLogger("minimq.server")


class Server:
    """A Broker served on TCP (and TLS when given a context), in the running event loop."""

    def __init__(
        self,
        broker: Broker | None = None,
        host: str = "127.0.0.1",
        port: int = 5672,
        *,
        ssl_context: ssl.SSLContext | None = None,
        tls_port: int = 5671,
    ) -> None:
        self.broker = broker if broker is not None else Broker(clock=time.time)
        self.host = host
        self.requested_port = port
        self.ssl_context = ssl_context
        self.requested_tls_port = tls_port
        self.connections: set[AMQPServerProtocol] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self.port: int | None = None
        self.tls_port: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None

    def _factory(self) -> AMQPServerProtocol:
        return AMQPServerProtocol(self.broker, self.connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.broker.timers.on_earlier = self._arm
        self._arm_next()
        server = await loop.create_server(self._factory, self.host, self.requested_port, backlog=1024)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        if self.ssl_context is not None:
            tls = await loop.create_server(
                self._factory, self.host, self.requested_tls_port, ssl=self.ssl_context, backlog=1024
            )
            self._servers.append(tls)
            self.tls_port = tls.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    def banner(self) -> str:
        text = f"minimq listening on amqp://{self.host}:{self.port}"
        if self.tls_port is not None:
            text += f" and amqps://{self.host}:{self.tls_port}"
        return text

    # The core's deadlines (TTL, expiry, ...) are in the broker clock's time; one loop timer
    # always waits for the earliest of them.

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            if self._timer_when is not None and self._timer_when <= when:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, when - self.broker.clock())
        self._timer_when = when
        self._timer = loop.call_later(delay, self._fire)

    def _arm_next(self) -> None:
        when = self.broker.timers.next_deadline()
        self._timer = None
        self._timer_when = None
        if when is not None:
            self._arm(when)

    def _fire(self) -> None:
        try:
            self.broker.tick()
        except Exception:  # a bug in a timer must not stop the others
            log.exception("error in a broker timer")
        self._arm_next()

    async def stop(self) -> None:
        """Stop accepting, close every connection with 320 CONNECTION_FORCED."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.shutdown()
        if self.connections:
            # Give peers a moment to read the close; then drop whoever is left.
            await asyncio.sleep(0)
        for conn in list(self.connections):
            conn.abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()


def make_ssl_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx
