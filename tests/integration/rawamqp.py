"""A tiny blocking AMQP 0-9-1 client over a raw socket, built on minimq.codec.

It does exactly what a test tells it and nothing more: no automatic replies, no hidden
heartbeats, no retries. That lets a test send malformed or out-of-order frames and see
precisely what the broker answers. Every read takes a timeout; nothing sleeps.

    c = RawAMQP.connect(host, port)          # header, start-ok, tune-ok, open
    c.channel_open(1)
    c.publish(1, "", "q", b"body")
    msg = c.get(1, "q")
    c.close()
"""
from __future__ import annotations

import socket
import ssl
import struct
import time
from dataclasses import dataclass, field

from minimq.codec import (
    HEARTBEAT_FRAME,
    PROTOCOL_HEADER,
    BasicProperties,
    FrameParser,
    encode_content_header,
    encode_frame,
    encode_method_frame,
    encode_table,
    parse_content_header,
    spec,
)
from minimq.codec.constants import FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD

TIMEOUT = 5.0

CLIENT_PROPERTIES = {
    "product": "rawamqp",
    "capabilities": {
        "authentication_failure_close": True,
        "consumer_cancel_notify": True,
        "publisher_confirms": True,
        "basic.nack": True,
    },
}


class Closed(Exception):
    """The server closed the socket (recv returned b'' or the connection was reset)."""


@dataclass
class Frame:
    type: int
    channel: int
    payload: bytes

    @property
    def size(self) -> int:
        """Bytes on the wire: 7-byte header + payload + frame-end octet."""
        return len(self.payload) + 8

    @property
    def method(self) -> spec.Method:
        assert self.type == FRAME_METHOD, f"not a method frame: {self}"
        return spec.decode_method(self.payload)


@dataclass
class Message:
    method: spec.Method  # basic.deliver / basic.get-ok / basic.return
    channel: int
    properties: BasicProperties
    body: bytes
    frames: list[Frame] = field(default_factory=list)  # header + body frames as received


def amqplain(user: str, password: str) -> bytes:
    """AMQPLAIN response: a field table without its 4-byte length prefix."""
    return encode_table({"LOGIN": user, "PASSWORD": password})[4:]


class RawAMQP:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = FrameParser(0)  # the client accepts any size; tests check sizes
        self.pending: list[Frame] = []
        self.frame_max = 0
        self.start: spec.ConnectionStart | None = None
        self.tune: spec.ConnectionTune | None = None

    # ------------------------------------------------------------ connecting

    @classmethod
    def open_socket(
        cls, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None, timeout: float = TIMEOUT
    ) -> "RawAMQP":
        sock = socket.create_connection((host, port), timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        return cls(sock)

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        *,
        user: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        mechanism: str = "PLAIN",
        channel_max: int | None = None,
        frame_max: int | None = None,
        heartbeat: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> "RawAMQP":
        """Full handshake; None for channel_max/frame_max means 'accept the server's offer'."""
        c = cls.open_socket(host, port, ssl_context=ssl_context)
        try:
            c.handshake(
                user=user, password=password, vhost=vhost, mechanism=mechanism,
                channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat,
            )
        except BaseException:
            c.sock.close()
            raise
        return c

    def handshake(
        self,
        *,
        user: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        mechanism: str = "PLAIN",
        channel_max: int | None = None,
        frame_max: int | None = None,
        heartbeat: int = 0,
    ) -> spec.ConnectionOpenOk:
        self.send_header()
        self.start_ok(user, password, mechanism)
        tune = self.expect(spec.ConnectionTune)
        self.tune_ok(
            tune.channel_max if channel_max is None else channel_max,
            tune.frame_max if frame_max is None else frame_max,
            heartbeat,
        )
        self.send_method(0, spec.ConnectionOpen(vhost))
        return self.expect(spec.ConnectionOpenOk)

    def send_header(self, header: bytes = PROTOCOL_HEADER) -> spec.ConnectionStart:
        self.send_raw(header)
        self.start = self.expect(spec.ConnectionStart)
        return self.start

    def start_ok(self, user: str = "guest", password: str = "guest", mechanism: str = "PLAIN") -> None:
        if mechanism == "AMQPLAIN":
            response = amqplain(user, password)
        else:
            response = b"\x00" + user.encode() + b"\x00" + password.encode()
        self.send_method(0, spec.ConnectionStartOk(CLIENT_PROPERTIES, mechanism, response, "en_US"))

    def tune_ok(self, channel_max: int, frame_max: int, heartbeat: int) -> None:
        self.frame_max = frame_max
        self.send_method(0, spec.ConnectionTuneOk(channel_max, frame_max, heartbeat))

    # --------------------------------------------------------------- sending

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_method(self, channel: int, method: spec.Method) -> None:
        self.send_raw(encode_method_frame(channel, method))

    def send_heartbeat(self) -> None:
        self.send_raw(HEARTBEAT_FRAME)

    def publish(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        body: bytes,
        props: BasicProperties | None = None,
        mandatory: bool = False,
    ) -> None:
        method = encode_method_frame(channel, spec.BasicPublish(0, exchange, routing_key, mandatory, False))
        self.send_raw(method + content_frames(channel, body, props, self.frame_max))

    # --------------------------------------------------------------- reading

    def _fill(self, deadline: float) -> None:
        """Block until at least one more frame is parsed; TimeoutError / Closed otherwise."""
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame from the server before the deadline")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError) as exc:
                raise Closed(f"connection reset: {exc}") from None
            except socket.timeout:
                raise TimeoutError("no frame from the server before the deadline") from None
            if not data:
                raise Closed("server closed the socket")
            self.pending.extend(Frame(t, ch, p) for t, ch, p in self.parser.feed(data))

    def read_frame(self, timeout: float = TIMEOUT, heartbeats: bool = False) -> Frame:
        """The next frame; heartbeat frames are skipped unless `heartbeats` is true."""
        deadline = time.monotonic() + timeout
        while True:
            self._fill(deadline)
            frame = self.pending.pop(0)
            if frame.type != FRAME_HEARTBEAT or heartbeats:
                return frame

    def read_method(self, timeout: float = TIMEOUT) -> tuple[int, spec.Method]:
        """(channel, method) of the next frame, which must be a method frame."""
        frame = self.read_frame(timeout)
        assert frame.type == FRAME_METHOD, f"expected a method frame, got {frame}"
        return frame.channel, frame.method

    def expect(self, method_class: type, timeout: float = TIMEOUT, channel: int | None = None):
        """The next method, asserting its class (and channel, if given)."""
        ch, method = self.read_method(timeout)
        assert isinstance(method, method_class), f"expected {method_class.__name__}, got {method!r} on channel {ch}"
        if channel is not None:
            assert ch == channel, f"{method!r} arrived on channel {ch}, expected {channel}"
        return method

    def read_message(self, timeout: float = TIMEOUT) -> Message | spec.BasicGetEmpty:
        """A deliver / get-ok / return with its header and body reassembled (or get-empty)."""
        deadline = time.monotonic() + timeout
        ch, method = self.read_method(timeout)
        if isinstance(method, spec.BasicGetEmpty):
            return method
        assert isinstance(method, (spec.BasicDeliver, spec.BasicGetOk, spec.BasicReturn)), method
        header = self.read_frame(max(deadline - time.monotonic(), 0.01))
        assert (header.type, header.channel) == (FRAME_HEADER, ch), f"expected a content header, got {header}"
        class_id, size, raw_props = parse_content_header(header.payload)
        assert class_id == 60
        frames, parts, received = [header], [], 0
        while received < size:
            body = self.read_frame(max(deadline - time.monotonic(), 0.01))
            assert (body.type, body.channel) == (FRAME_BODY, ch), f"expected a body frame, got {body}"
            frames.append(body)
            parts.append(body.payload)
            received += len(body.payload)
        assert received == size, f"body is {received} bytes, header announced {size}"
        return Message(method, ch, BasicProperties.decode(raw_props), b"".join(parts), frames)

    def hang_up(self, timeout: float = TIMEOUT) -> bool:
        """After close-ok: end our side of the stream (as a client closing its socket does)
        and report whether the server then closes its side too."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return self.closed(timeout)

    def closed(self, timeout: float = TIMEOUT) -> bool:
        """True once the server closes the socket; frames read meanwhile are dropped."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.read_frame(max(deadline - time.monotonic(), 0), heartbeats=True)
        except Closed:
            return True
        except TimeoutError:
            return False

    # ------------------------------------------------------------ shortcuts

    def channel_open(self, channel: int) -> None:
        self.send_method(channel, spec.ChannelOpen())
        self.expect(spec.ChannelOpenOk, channel=channel)

    def queue_declare(self, channel: int, queue: str = "", **kwargs) -> spec.QueueDeclareOk:
        self.send_method(channel, spec.QueueDeclare(0, queue, **kwargs))
        return self.expect(spec.QueueDeclareOk, channel=channel)

    def get(self, channel: int, queue: str, timeout: float = TIMEOUT) -> Message | spec.BasicGetEmpty:
        self.send_method(channel, spec.BasicGet(0, queue, True))
        return self.read_message(timeout)

    def expect_connection_close(self, timeout: float = TIMEOUT) -> spec.ConnectionClose:
        """The server's connection.close; answers close-ok, hangs up, checks the server does too."""
        close = self.expect(spec.ConnectionClose, timeout, channel=0)
        self.send_method(0, spec.ConnectionCloseOk())
        assert self.hang_up(timeout), "socket still open after connection.close-ok and our hang-up"
        return close

    def close(self, timeout: float = TIMEOUT) -> None:
        """Polite client close: connection.close, close-ok, we hang up, then so does the server."""
        try:
            self.send_method(0, spec.ConnectionClose(200, "bye", 0, 0))
            self.expect(spec.ConnectionCloseOk, timeout, channel=0)
            assert self.hang_up(timeout), "socket still open after connection.close-ok and our hang-up"
        finally:
            self.sock.close()

    def __enter__(self) -> "RawAMQP":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()


def content_frames(
    channel: int, body: bytes, props: BasicProperties | None = None, frame_max: int = 131072
) -> bytes:
    """Header + body frames for `body`, each frame at most frame_max bytes on the wire."""
    header = encode_frame(FRAME_HEADER, channel, encode_content_header(len(body), props))
    chunk = (frame_max or 131072) - 8
    bodies = [encode_frame(FRAME_BODY, channel, body[i : i + chunk]) for i in range(0, len(body), chunk)]
    return header + b"".join(bodies)


def method_payload(class_id: int, method_id: int, args: bytes = b"") -> bytes:
    """A method frame payload with any class/method id, known or not."""
    return struct.pack(">HH", class_id, method_id) + args
