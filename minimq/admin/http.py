"""A small asyncio HTTP/1.1 server for the management API (stdlib only).

Why not `http.server`: it is thread-per-request and blocking, and the management API must
read the broker's state on the broker's own event loop. This is an `asyncio.Protocol` with
hard limits on what a client may send (request line, headers, body), keep-alive, and one
request handled at a time per connection (pipelined requests wait their turn).

The handler is a coroutine taking a `Request` and returning a `Response`; a body may be an
async iterator of byte chunks, sent with chunked transfer encoding so a large listing never
sits in memory twice and the loop can serve AMQP between chunks.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("minimq.admin.http")

MAX_REQUEST_LINE = 8000  # as cowboy's max_request_line_length (RabbitMQ): longer is 414
MAX_HEADERS = 100  # as cowboy's max_headers: more is 431
MAX_HEAD = 64 * 1024  # request line + headers: more is 431
MAX_BODY = 64 * 1024 * 1024  # definitions imports can be large; anything bigger is 413
MAX_UNAUTHENTICATED_BODY = 64 * 1024  # a larger body is only read once its sender logged in
HEAD_TIMEOUT = 10.0  # seconds from a request's first byte to the end of its head (slowloris)
BODY_TIMEOUT = 60.0  # seconds from the end of the head to the end of the body
IDLE_TIMEOUT = 120.0  # seconds a keep-alive connection may sit idle
MAX_CONNECTIONS = 1000  # open management connections; more are answered 503 and closed

REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict",
    411: "Length Required", 413: "Payload Too Large", 414: "URI Too Long", 415: "Unsupported Media Type", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    target: str  # raw request target, e.g. /api/queues/%2F/q1?columns=name
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    peer: str = ""
    path: str = field(init=False)  # the raw (still percent-encoded) path
    query: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = parts.path or "/"
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))

    def segments(self) -> list[str]:
        """Path segments, each percent-decoded on its own (so %2F stays inside one)."""
        return [unquote(s) for s in self.path.split("/")[1:]]


@dataclass
class Response:
    status: int = 200
    body: bytes | AsyncIterator[bytes] = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]
# Called with a request whose head is complete but whose large body is not read yet: a
# Response refuses it (e.g. 401) before the body costs memory, None lets the body in.
Admit = Callable[[Request], "Response | None"]


class HTTPProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, connections: set, admit: Admit | None = None,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.handler = handler
        self.admit = admit
        self.max_connections = max_connections
        self._admitted = False  # the request being received passed `admit`
        self._deadline: asyncio.TimerHandle | None = None
        self.connections = connections
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.closing = False
        self.peer = ""
        self._idle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()

    # ------------------------------------------------------------ asyncio API

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self.connections) >= self.max_connections:
            log.warning("management connection from %s refused: %d connections open",
                        self.peer, len(self.connections))
            self._fail(503, "too many management connections")
            return
        self.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.closing = True
        self._can_write.set()
        if self._idle is not None:
            self._idle.cancel()
        self._disarm_deadline()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buffer += data
        if len(self.buffer) > MAX_HEAD + MAX_BODY + 1024:
            self._fail(413, "request too large")
            return
        self._arm_idle()
        if self.busy:
            # Pipelined requests wait their turn; past one head's worth, stop reading so a
            # client cannot queue unbounded work (or responses) behind a slow one.
            if len(self.buffer) > MAX_HEAD and self.transport is not None:
                self.transport.pause_reading()
            return
        if self._deadline is None:
            self._arm_deadline(HEAD_TIMEOUT, "request head not received in time")
        self._next()

    # -------------------------------------------------------------- parsing

    def _next(self) -> None:
        """Start handling the next complete request in the buffer, if there is one."""
        if self.closing or self.transport is None:
            return
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            eol = buf.find(b"\r\n")
            if eol > MAX_REQUEST_LINE or (eol < 0 and len(buf) > MAX_REQUEST_LINE):
                self._fail(414, "request line too long")
            elif len(buf) > MAX_HEAD:
                self._fail(431, "request head too large")
            return
        eol = buf.find(b"\r\n")
        if eol > MAX_REQUEST_LINE:
            self._fail(414, "request line too long")
            return
        if end > MAX_HEAD:
            self._fail(431, "request head too large")
            return
        head = bytes(buf[:end]).decode("latin-1")
        lines = head.split("\r\n")
        if len(lines) - 1 > MAX_HEADERS:
            self._fail(431, "too many headers")
            return
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._fail(400, "bad request line")
            return
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                self._fail(400, "bad header line")
                return
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._fail(501, "chunked request bodies are not supported")
            return
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._fail(400, "bad content-length")
            return
        if "content-length" in headers and not headers["content-length"].strip().isdigit():
            self._fail(400, "bad content-length")
            return
        if length < 0 or length > MAX_BODY:
            self._fail(413, "request body too large")
            return
        start = end + 4
        if length > MAX_UNAUTHENTICATED_BODY and not self._admitted and self.admit is not None:
            refusal = self.admit(Request(method.upper(), target, headers, b"", self.peer))
            if refusal is not None:
                self._refuse(refusal)
                return
            self._admitted = True
        if len(buf) < start + length:
            if self._deadline_kind != "body":
                # First read of this request's body: arm its deadline and, once, answer
                # `Expect: 100-continue` (the head is parsed again on every read).
                self._arm_deadline(BODY_TIMEOUT, "request body not received in time", "body")
                if headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        body = bytes(buf[start : start + length])
        del buf[: start + length]
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if version == "HTTP/1.0" and headers.get("connection", "").lower() == "keep-alive":
            keep_alive = True
        request = Request(method.upper(), target, headers, body, self.peer)
        self._disarm_deadline()
        self._admitted = False
        self.busy = True
        self._task = self.loop.create_task(self._serve(request, keep_alive, version))

    async def _serve(self, request: Request, keep_alive: bool, version: str) -> None:
        try:
            try:
                response = await self.handler(request)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("management request %s %s failed", request.method, request.target)
                response = Response(
                    500, b'{"error":"internal_server_error","reason":"internal error, see the broker log"}'
                )
            await self._write_response(request, response, keep_alive)
        except asyncio.CancelledError:
            return
        except ConnectionError:
            self.closing = True
        if not keep_alive:
            self.busy = False
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        # The next pipelined request is only read once this response has left: a client that
        # never reads its responses holds one response in memory, not one per request.
        await self._can_write.wait()
        self.busy = False
        if self.closing or self.transport is None:
            return
        if len(self.buffer) <= MAX_HEAD:
            self.transport.resume_reading()
        if self.buffer:
            self._arm_deadline(HEAD_TIMEOUT, "request head not received in time")
            self._next()

    async def _write_response(self, request: Request, response: Response, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        status = response.status
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
        hdrs = {
            "server": "minimq",
            "content-type": response.content_type,
            "cache-control": "no-cache",
            "vary": "accept, accept-encoding, origin",
        }
        hdrs.update({k.lower(): v for k, v in response.headers.items()})
        hdrs["connection"] = "keep-alive" if keep_alive else "close"
        body = response.body
        streamed = not isinstance(body, (bytes, bytearray))
        if status == 204 or status == 304:
            body, streamed = b"", False
            hdrs.pop("content-type", None)
        elif streamed:
            hdrs["transfer-encoding"] = "chunked"
        else:
            hdrs["content-length"] = str(len(body))
        head.extend(f"{k}: {v}" for k, v in hdrs.items())
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if request.method == "HEAD":
            transport.write(data)
            return
        if not streamed:
            transport.write(data + bytes(body))
            return
        transport.write(data)
        async for chunk in body:  # type: ignore[union-attr]
            if not chunk:
                continue
            if self.closing:
                return
            transport.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            await self._can_write.wait()
        transport.write(b"0\r\n\r\n")

    # ----------------------------------------------------------------- misc

    def _fail(self, status: int, reason: str) -> None:
        """A request we will not parse further: answer and close."""
        error = "timeout" if status == 408 else "bad_request"
        self._refuse(Response(status, ('{"error":"%s","reason":"%s"}' % (error, reason)).encode()))

    def _refuse(self, response: Response) -> None:
        """Answer with `response` (a bytes body) and close, reading nothing more."""
        self.closing = True
        self.buffer.clear()
        self._disarm_deadline()
        if self.transport is not None and not self.transport.is_closing():
            body = bytes(response.body) if isinstance(response.body, (bytes, bytearray)) else b""
            status = response.status
            extra = "".join(f"{k.lower()}: {v}\r\n" for k, v in response.headers.items())
            self.transport.write(
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                f"content-type: {response.content_type}\r\n{extra}"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode("latin-1") + body
            )
            self.transport.close()

    _deadline_kind = ""

    def _arm_deadline(self, seconds: float, reason: str, kind: str = "head") -> None:
        """The request being received must be complete within `seconds`, however it trickles."""
        self._disarm_deadline()
        self._deadline_kind = kind
        self._deadline = self.loop.call_later(seconds, self._fail, 408, reason)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._deadline_kind = ""

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self.loop.call_later(IDLE_TIMEOUT, self._idle_timeout)

    def _idle_timeout(self) -> None:
        if self.busy:
            self._arm_idle()
        elif self.transport is not None:
            self.transport.close()
