"""Helpers for the minimq.client tests.

Every test talks to the session broker from tests/conftest.py (minimq on port 0, or the broker
named by MINIMQ_TEST_URL, e.g. RabbitMQ). Tests that must control the broker's life (robust
reconnect, TLS, forced close) start their own minimq with `start_broker`. Protocol corners a
real broker cannot be made to produce on demand (connection.blocked, a silent peer) use
`FakeServer`, a scripted AMQP server on a thread. Nothing sleeps to wait for a condition:
waits are on events, futures or `asyncio.wait_for`, each bounded.
"""
from __future__ import annotations

import asyncio
import queue
import socket
import threading
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from minimq.codec import spec
from minimq.codec.frames import FrameParser, encode_method_frame

T = TypeVar("T")

#: Upper bound for any single wait in these tests.
TIMEOUT = 10.0


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run an asyncio test body, failing it if it takes longer than ``timeout``."""

    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


def url_with(url: str, *, user: str | None = None, password: str | None = None,
             vhost: str | None = None, query: str | None = None) -> str:
    """``url`` with its user, password, vhost (percent-encoded) or query replaced."""
    parts = urlsplit(url)
    user = parts.username if user is None else user
    password = parts.password if password is None else password
    netloc = f"{quote(user or '', safe='')}:{quote(password or '', safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    path = parts.path if vhost is None else "/" + quote(vhost, safe="")
    return urlunsplit((parts.scheme, netloc, path, parts.query if query is None else query, ""))


class FakeServer:
    """A scripted AMQP server for one client connection, on a background thread.

    It completes the handshake (offering ``heartbeat``; with ``blocked_on_open``, blocking the
    connection in the same write as open-ok), answers channel.open, confirm.select,
    channel.close and connection.close, and records every other frame in ``received`` as
    ``(channel, method_or_None, frame_type)``. Tests push frames with `send`.
    """

    def __init__(self, heartbeat: int = 0, blocked_on_open: str | None = None) -> None:
        self.heartbeat = heartbeat
        #: Send connection.blocked with this reason right behind open-ok (same write).
        self.blocked_on_open = blocked_on_open
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.received: queue.Queue[tuple[int, Any, int]] = queue.Queue()
        self.connected = threading.Event()
        self.closed = threading.Event()
        self.conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def send(self, channel: int, method: spec.Method) -> None:
        with self._lock:
            assert self.conn is not None
            self.conn.sendall(encode_method_frame(channel, method))

    def wait_for(self, match: Callable[[tuple[int, Any, int]], bool],
                 timeout: float = TIMEOUT) -> tuple[int, Any, int]:
        """The next received frame for which ``match`` holds (others are dropped)."""
        while True:
            item = self.received.get(timeout=timeout)
            if match(item):
                return item

    def close(self) -> None:
        try:
            if self.conn is not None:
                self.conn.close()
        except OSError:
            pass
        self.listener.close()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.conn = conn
        parser = FrameParser(0)
        try:
            header = b""
            while len(header) < 8:
                chunk = conn.recv(8 - len(header))
                if not chunk:
                    return
                header += chunk
            caps = {"publisher_confirms": True, "connection.blocked": True,
                    "basic.nack": True, "consumer_cancel_notify": True}
            self.send(0, spec.ConnectionStart(0, 9, {"product": "fake", "capabilities": caps},
                                              b"PLAIN AMQPLAIN", b"en_US"))
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                for frame_type, channel, payload in parser.feed(data):
                    method = spec.decode_method(payload) if frame_type == 1 else None
                    self._handle(frame_type, channel, method)
        except OSError:
            pass
        finally:
            self.closed.set()

    def _handle(self, frame_type: int, channel: int, method: Any) -> None:
        cls = method.__class__
        if cls is spec.ConnectionStartOk:
            self.send(0, spec.ConnectionTune(2047, 131072, self.heartbeat))
        elif cls is spec.ConnectionOpen:
            with self._lock:
                assert self.conn is not None
                data = encode_method_frame(0, spec.ConnectionOpenOk(""))
                if self.blocked_on_open is not None:
                    data += encode_method_frame(0, spec.ConnectionBlocked(self.blocked_on_open))
                self.conn.sendall(data)
            self.connected.set()
        elif cls is spec.ChannelOpen:
            self.send(channel, spec.ChannelOpenOk(b""))
        elif cls is spec.ConfirmSelect:
            self.send(channel, spec.ConfirmSelectOk())
        elif cls is spec.ChannelClose:
            self.send(channel, spec.ChannelCloseOk())
        elif cls is spec.ConnectionClose:
            self.send(0, spec.ConnectionCloseOk())
        self.received.put((channel, method, frame_type))


@pytest.fixture
def fake_server() -> Any:
    server = FakeServer()
    yield server
    server.close()
