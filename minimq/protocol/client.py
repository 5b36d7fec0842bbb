"""The client side of one AMQP 0-9-1 connection, without I/O.

`ClientConnection` owns what does not depend on how bytes move: the handshake (protocol
header, start/start-ok, tune/tune-ok, open/open-ok), tune negotiation, frame parsing, content
assembly (the `ContentAssembler` the server side uses too), the channel table, publish frame
encoding and heartbeat bookkeeping. What methods mean on a channel is `ClientChannel`'s
(minimq.protocol.client_channel). Both `minimq.client` (asyncio) and `minimq.client.sync` (a
plain blocking socket) drive it:

    conn = ClientConnection(username="guest", password="guest", virtual_host="/")
    conn.start()                           # queues the protocol header
    transport.write(conn.data_to_send())
    for event in conn.receive_data(data):  # every complete frame becomes at most one event
        ...
    channel = conn.channel(1)              # once ConnectionReady came
    channel.open()

Nothing here touches sockets, the clock, threads or the event loop: the I/O layer calls
`heartbeat_tick` every ``heartbeat / 2`` seconds, which queues a heartbeat when nothing else
went out and says when the broker has been silent too long.
"""
from __future__ import annotations

import platform
from typing import Any

from minimq.codec import spec
from minimq.codec.errors import (
    ChannelError,
    CommandInvalid,
    FrameError,
    UnexpectedFrame,
)
from minimq.codec.frames import (
    HEARTBEAT_FRAME,
    PROTOCOL_HEADER,
    FrameParser,
    encode_content_frames,
    encode_frame,
    encode_method_frame,
)
from minimq.codec.properties import BasicProperties, encode_content_header
from minimq.codec.spec import FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_MIN_SIZE

from .assembler import ContentAssembler
from .client_channel import ChannelEvent, ClientChannel

__all__ = [
    "ClientConnection",
    "ClientEvent",
    "ConnectionReady",
    "ConnectionClosedByServer",
    "ConnectionCloseCompleted",
    "ConnectionBlocked",
    "ConnectionUnblocked",
    "DEFAULT_CLIENT_PROPERTIES",
]

#: Heartbeat ticks (each half an interval) without a frame from the broker before it counts
#: as gone: two intervals, as RabbitMQ and the spec suggest.
_SILENT_TICKS = 4

DEFAULT_CLIENT_PROPERTIES: dict[str, Any] = {
    "product": "minimq.client",
    "version": "0.1.0",
    "platform": f"Python {platform.python_version()}",
    "information": "https://github.com/ (minimq)",
    "capabilities": {
        "publisher_confirms": True,
        "exchange_exchange_bindings": True,
        "basic.nack": True,
        "consumer_cancel_notify": True,
        "connection.blocked": True,
        "authentication_failure_close": True,
        "per_consumer_qos": True,
    },
}

class ClientEvent:
    """Base of the events `ClientConnection.receive_data` returns."""

    __slots__ = ()


class ConnectionReady(ClientEvent):
    """connection.open-ok arrived: the connection is usable."""

    __slots__ = ("known_hosts",)

    def __init__(self, known_hosts: str) -> None:
        self.known_hosts = known_hosts


class ConnectionClosedByServer(ClientEvent):
    """The server sent connection.close; close-ok is already queued in `out`."""

    __slots__ = ("reply_code", "reply_text", "class_id", "method_id")

    def __init__(self, reply_code: int, reply_text: str, class_id: int, method_id: int) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id


class ConnectionCloseCompleted(ClientEvent):
    """connection.close-ok arrived for a close we started."""

    __slots__ = ()


class ConnectionBlocked(ClientEvent):
    """connection.blocked: the server asks publishers to pause (e.g. low memory)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class ConnectionUnblocked(ClientEvent):
    """connection.unblocked: publishing may resume."""

    __slots__ = ()


def _negotiate(client: int | None, server: int) -> int:
    """Tune rule for channel_max/frame_max: the lower non-zero value (0 means 'no limit')."""
    if not client:
        return server
    if not server:
        return client
    return min(client, server)


class ClientConnection:
    """One client connection's protocol state; see the module docstring for how to drive it.

    ``heartbeat``, ``frame_max`` and ``channel_max`` given here are the client's wishes; after
    the handshake the attributes of the same names hold the negotiated values. A wished
    ``heartbeat`` of ``None`` accepts the server's proposal, ``0`` disables heartbeats.
    """

    def __init__(
        self,
        *,
        username: str = "guest",
        password: str = "guest",
        virtual_host: str = "/",
        heartbeat: int | None = None,
        frame_max: int | None = None,
        channel_max: int | None = None,
        client_properties: dict[str, Any] | None = None,
        locale: str = "en_US",
    ) -> None:
        self.username = username
        self.password = password
        self.virtual_host = virtual_host
        self._want_heartbeat = heartbeat
        self._want_frame_max = frame_max
        self._want_channel_max = channel_max
        props = dict(DEFAULT_CLIENT_PROPERTIES)
        if client_properties:
            props.update(client_properties)
        self.client_properties = props
        self.locale = locale
        #: "new", "handshake", "open", "closing" or "closed".
        self.state = "new"
        self.server_properties: dict[str, Any] = {}
        self.heartbeat = 0
        self.frame_max = FRAME_MIN_SIZE
        self.channel_max = 0
        #: Frames queued for the peer; `data_to_send` joins and clears it.
        self.out: list[bytes] = []
        #: Incremented for every frame received (heartbeats included).
        self.frames_received = 0
        self._parser = FrameParser(0)
        self._assembler = ContentAssembler(self._content_complete)
        #: Channels by number, from `channel` until they are closed.
        self.channels: dict[int, ClientChannel] = {}
        self._sent_since_tick = False
        self._received_at_tick = 0
        self._silent_ticks = 0

    # -- outgoing ---------------------------------------------------------------------------

    def start(self) -> None:
        """Queue the protocol header; the server answers with connection.start."""
        if self.state != "new":
            raise RuntimeError("connection already started")
        self.state = "handshake"
        self.out.append(PROTOCOL_HEADER)

    def data_to_send(self) -> bytes:
        """Everything queued for the peer, as one bytes object (empty if nothing)."""
        out = self.out
        if not out:
            return b""
        data = b"".join(out) if len(out) > 1 else out[0]
        out.clear()
        self._sent_since_tick = True
        return data

    def channel(self, number: int) -> ClientChannel:
        """A new channel on ``number`` (replacing a closed one); call its `open`."""
        if not 0 < number <= (self.channel_max or 65535):
            raise ValueError(f"channel number {number} is outside 1..{self.channel_max}")
        old = self.channels.get(number)
        if old is not None and old.state not in ("new", "closed"):
            raise RuntimeError(f"channel {number} is {old.state}")
        channel = self.channels[number] = ClientChannel(self, number)
        return channel

    def channel_finished(self, channel: ClientChannel) -> None:
        """Called by a channel that reached ``closed``: its number is free again."""
        if self.channels.get(channel.number) is channel:
            del self.channels[channel.number]
        self._assembler.discard(channel.number)

    def send_method(self, channel: int, method: spec.Method) -> None:
        """Queue one method frame."""
        self.out.append(encode_method_frame(channel, method))

    def encode_publish(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: BasicProperties | bytes | None = None,
        mandatory: bool = False,
    ) -> list[bytes]:
        """The frames of one basic.publish (method, header, bodies), not queued."""
        frames = encode_content_frames(
            channel,
            encode_content_header(len(body), properties),
            body,
            self.frame_max,
        )
        frames.insert(
            0,
            encode_frame(
                FRAME_METHOD,
                channel,
                spec.BasicPublish(0, exchange, routing_key, mandatory, False).encode(),
            ),
        )
        return frames

    def send_publish(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: BasicProperties | bytes | None = None,
        mandatory: bool = False,
    ) -> None:
        """Queue one basic.publish with its content."""
        self.out.extend(
            self.encode_publish(channel, exchange, routing_key, body, properties, mandatory)
        )

    def send_heartbeat(self) -> None:
        """Queue a heartbeat frame."""
        self.out.append(HEARTBEAT_FRAME)

    def heartbeat_tick(self) -> bool:
        """Call every ``heartbeat / 2`` seconds: queues a heartbeat if nothing went out since
        the last tick; returns False once the broker has sent nothing for two intervals."""
        if self.frames_received != self._received_at_tick:
            self._received_at_tick = self.frames_received
            self._silent_ticks = 0
        else:
            self._silent_ticks += 1
            if self._silent_ticks >= _SILENT_TICKS:
                return False
        if not self._sent_since_tick and not self.out:
            self.send_heartbeat()
        self._sent_since_tick = False
        return True

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown",
              class_id: int = 0, method_id: int = 0) -> None:
        """Queue connection.close (if the connection is not already closing)."""
        if self.state in ("closing", "closed"):
            return
        if self.state == "new":
            self.state = "closed"
            return
        self.state = "closing"
        self.send_method(0, spec.ConnectionClose(reply_code, reply_text, class_id, method_id))

    # -- incoming ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Feed received bytes; return the events (connection events and the channels'
        `ChannelEvent`s) for every frame now complete.

        Raises an `AMQPError` (e.g. `UnexpectedFrame`, `FrameError`, `CommandInvalid` for a
        reply no call asked for) for a protocol violation by the server; the caller should
        then `close()` with that error's code and drop the connection.
        """
        if self.state == "handshake" and not self.frames_received and data[:4] == b"AMQP":
            # The server refused our protocol header and sent its own.
            raise CommandInvalid(f"server refused protocol header, supports {bytes(data[:8])!r}")
        frames = self._parser.feed(data)
        events: list[Any] = []
        if not frames:
            return events
        self.frames_received += len(frames)
        assembler = self._assembler
        channels = self.channels
        decode = spec.decode_method
        for frame_type, number, payload in frames:
            if frame_type == FRAME_BODY:
                event = assembler.body(number, payload)
            elif frame_type == FRAME_METHOD:
                if number in assembler:
                    raise UnexpectedFrame(f"method frame on channel {number} during content")
                method = decode(payload)
                if number == 0:
                    event = self._on_connection_method(method)
                elif method.HAS_CONTENT:
                    assembler.start(number, method)
                    continue
                else:
                    if self.state == "closed":
                        continue
                    channel = channels.get(number)
                    if channel is None:
                        continue  # a channel already closed and forgotten
                    event = channel.method_received(method)
            elif frame_type == FRAME_HEADER:
                event = assembler.header(number, payload)
            elif frame_type == FRAME_HEARTBEAT:
                if number != 0:
                    raise ChannelError("heartbeat frame on a non-zero channel")
                continue
            else:
                raise FrameError(f"unknown frame type {frame_type}")
            if event is not None:
                events.append(event)
        return events

    def _content_complete(self, number: int, method: spec.Method, header: bytes,
                          body: bytes) -> ChannelEvent | None:
        if self.state == "closed":
            return None
        channel = self.channels.get(number)
        if channel is None:
            return None  # assembled only to keep the frame sequence checked
        return channel.content_received(method, header, body)

    def _on_connection_method(self, method: spec.Method) -> ClientEvent | None:
        cls = method.__class__
        if cls is spec.ConnectionStart:
            if self.state != "handshake":
                raise UnexpectedFrame("connection.start after the handshake")
            self.server_properties = method.server_properties or {}
            mechanisms = bytes(method.mechanisms).split()
            if b"PLAIN" in mechanisms:
                mechanism = "PLAIN"
                response = b"\0" + self.username.encode() + b"\0" + self.password.encode()
            elif b"AMQPLAIN" in mechanisms:
                from minimq.codec.values import encode_table

                mechanism = "AMQPLAIN"
                response = encode_table({"LOGIN": self.username, "PASSWORD": self.password})[4:]
            else:
                raise CommandInvalid(f"no supported SASL mechanism in {mechanisms!r}")
            self.send_method(
                0, spec.ConnectionStartOk(self.client_properties, mechanism, response, self.locale)
            )
            return None
        if cls is spec.ConnectionTune:
            if self.state != "handshake":
                raise UnexpectedFrame("connection.tune after the handshake")
            self.channel_max = _negotiate(self._want_channel_max, method.channel_max) or 65535
            self.frame_max = max(_negotiate(self._want_frame_max, method.frame_max), FRAME_MIN_SIZE)
            if self._want_heartbeat is None:
                self.heartbeat = method.heartbeat
            else:
                self.heartbeat = self._want_heartbeat
            self._parser.frame_max = self.frame_max
            self.send_method(
                0, spec.ConnectionTuneOk(self.channel_max, self.frame_max, self.heartbeat))
            self.send_method(0, spec.ConnectionOpen(self.virtual_host, "", False))
            return None
        if cls is spec.ConnectionOpenOk:
            if self.state != "handshake":
                raise UnexpectedFrame("connection.open-ok after the handshake")
            self.state = "open"
            return ConnectionReady(str(method.reserved_1))
        if cls is spec.ConnectionClose:
            if self.state != "closed":
                self.send_method(0, spec.ConnectionCloseOk())
            self._closed()
            return ConnectionClosedByServer(
                method.reply_code, method.reply_text, method.class_id, method.method_id
            )
        if cls is spec.ConnectionCloseOk:
            self._closed()
            return ConnectionCloseCompleted()
        if cls is spec.ConnectionBlocked:
            return ConnectionBlocked(method.reason)
        if cls is spec.ConnectionUnblocked:
            return ConnectionUnblocked()
        if cls is spec.ConnectionSecure:
            raise CommandInvalid("connection.secure challenges are not supported")
        if cls is spec.ConnectionUpdateSecretOk:
            return None
        raise CommandInvalid(f"unexpected {method.NAME} on channel 0")

    def _closed(self) -> None:
        self.state = "closed"
        self._assembler.clear()
        self.channels.clear()
