"""The management listener: RabbitMQ's HTTP API, /metrics and the web UI on one port."""
from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

from minimq.admin.api import API
from minimq.admin.http import HTTPProtocol, Request, Response
from minimq.admin.stats import RateSampler
from minimq.codec.errors import ConnectionForced
from minimq.protocol.states import ConnState

log = logging.getLogger("minimq.admin")

STATIC = {
    "": ("index.html", "text/html; charset=utf-8"),
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "ui/app.js": ("app.js", "application/javascript; charset=utf-8"),
    "ui/style.css": ("style.css", "text/css; charset=utf-8"),
}


class ManagementServer:
    """Serves the management API of the broker behind `server` (a minimq.server.Server)."""

    def __init__(self, server: Any, host: str | None = None, port: int = 15672, *,
                 sample_interval: float = 5.0) -> None:
        self.server = server
        self.broker = server.broker
        self.host = host if host is not None else server.host
        self.requested_port = port
        self.port: int | None = None
        self.sampler = RateSampler(self.broker, sample_interval)
        self.api = API(self)
        self.connections: set[HTTPProtocol] = set()
        self._listener: asyncio.base_events.Server | None = None
        self._static: dict[str, bytes] = {}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: HTTPProtocol(self.handle, self.connections, self._admit), self.host, self.requested_port, backlog=128
        )
        self.port = self._listener.sockets[0].getsockname()[1]
        self.sampler.start()
        log.info("management API and web UI on http://%s:%s/", self.host, self.port)

    async def stop(self) -> None:
        await self.sampler.stop()
        if self._listener is not None:
            self._listener.close()
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()
            await self._listener.wait_closed()
            self._listener = None

    # ----------------------------------------------------------- requests

    async def handle(self, request: Request) -> Response:
        seg = request.segments()
        if seg and seg[0] == "api":
            return await self.api.handle(request, seg[1:])
        if seg == ["metrics"] or seg[:2] == ["metrics", "per-object"]:
            from minimq.admin.metrics import render

            return Response(200, render(self), "text/plain; version=0.0.4; charset=utf-8")
        key = "/".join(seg)
        if key in STATIC and request.method in ("GET", "HEAD"):
            name, ctype = STATIC[key]
            try:
                return Response(200, self._file(name), ctype)
            except FileNotFoundError:
                pass
        return Response(404, b'{"error":"Object Not Found","reason":"Not Found"}')

    def _admit(self, request: Request) -> Response | None:
        """Large bodies are only accepted on the API, from a logged-in management user."""
        seg = request.segments()
        if not seg or seg[0] != "api":
            return Response(413, b'{"error":"bad_request","reason":"request body too large"}')
        return self.api.admit(request)

    def _file(self, name: str) -> bytes:
        data = self._static.get(name)
        if data is None:
            data = resources.files("minimq.admin").joinpath("ui", name).read_bytes()
            self._static[name] = data
        return data

    # ------------------------------------------------------------- actions

    def close_connection(self, session: Any, reason: str) -> None:
        """Close a client connection with 320 CONNECTION_FORCED and the given reason."""
        proto = next((p for p in list(self.server.connections) if p.session is session), None)
        if session.conn.state is ConnState.OPEN:
            session.conn.close(ConnectionForced(reason))
        session.release()
        if proto is not None:
            proto.flush()
        log.info("connection %s closed via the management API: %s", session.peer, reason)
