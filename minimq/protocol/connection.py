"""The server side of one AMQP 0-9-1 connection, without I/O.

Bytes go in with `receive_data`; `next_event` hands out one event at a time (or NEED_DATA).
Parsing is lazy on purpose: the layer above may close a channel or the connection while
handling an event, and frames that arrived in the same read must then be judged against the new
state (discarded on a closing channel) rather than against the state at read time.

Frames to send accumulate in `out` (a list of bytes, joined once per write by the transport).
The handshake (start/tune/open), channel open/close bookkeeping and content assembly
(method -> header -> body) live here; what the methods mean lives in the broker.
"""
from __future__ import annotations

import struct
from typing import Callable

from minimq.codec import spec
from minimq.codec.errors import (
    AccessRefused,
    AMQPError,
    ChannelError,
    CodecError,
    CommandInvalid,
    FrameError,
    NotAllowed,
    UnexpectedFrame,
    UnknownMethod,
)
from minimq.codec.frames import (
    HEARTBEAT_FRAME,
    PROTOCOL_HEADER,
    FrameParser,
    encode_frame,
    encode_method_frame,
)
from minimq.protocol.amqp08 import (
    ACCESS_REQUEST,
    ACCESS_REQUEST_OK,
    HEADER_0_9,
    HEADERS_0_8,
    decode_0_8,
    encode_method_frame_0_8,
)
from minimq.codec.spec import FRAME_BODY, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_MIN_SIZE
from minimq.codec.spec import FRAME_HEADER as FRAME_HEADER_TYPE
from minimq.codec.values import decode_table
from minimq.codec.properties import CONTENT_HEADER, CONTENT_HEADER_SIZE
from minimq.protocol.assembler import ContentAssembler
from minimq.protocol.events import (
    ChannelClosed,
    ChannelOpened,
    ConnectionClosed,
    ConnectionOpened,
    ContentReceived,
    Event,
    MethodReceived,
)
from minimq.protocol.states import ChanState, ConnState

NEED_DATA = object()
"""Sentinel from next_event: every complete frame has been consumed."""

_PUBLISH_PREFIX = spec.BasicPublish.INDEX.to_bytes(4, "big")  # class 60 (basic), method 40
_BASIC_CLASS_ID = spec.BasicPublish.CLASS_ID.to_bytes(2, "big")  # basic: the only class with content
_PUBLISH_CACHE_MAX = 256
_PUBLISH_ENTRY_COST = 400  # the decoded method object and its dict slot, besides the key

Authenticator = Callable[[str, str, str], bool]  # (user, password, mechanism)
"""check(user, password, mechanism) -> whether the credentials are valid (and may log in)."""
VhostCheck = Callable[[str, str], bool]
"""allowed(user, vhost) -> whether the user may open the vhost; may raise its own AMQPError."""


def parse_sasl(mechanism: str, response: bytes) -> tuple[str, str]:
    """Extract (user, password) from a PLAIN or AMQPLAIN response.

    AMQPLAIN is RabbitMQ's own mechanism: a field table without its length prefix, with LOGIN
    and PASSWORD keys. py-amqp and some older clients use it.
    """
    if mechanism == "PLAIN":
        parts = bytes(response).split(b"\x00")
        if len(parts) != 3:
            raise AccessRefused("malformed PLAIN response")
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    if mechanism == "AMQPLAIN":
        try:
            table, _ = decode_table(struct.pack(">I", len(response)) + bytes(response), 0)
        except CodecError as exc:
            raise AccessRefused(f"malformed AMQPLAIN response: {exc}") from None
        user, password = table.get("LOGIN"), table.get("PASSWORD")
        if isinstance(user, bytes):
            user = user.decode("utf-8", "replace")
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        if not isinstance(user, str) or not isinstance(password, str):
            raise AccessRefused("AMQPLAIN response lacks LOGIN or PASSWORD")
        return user, password
    # RabbitMQ treats an unknown mechanism as a command error, not an auth failure.
    raise CommandInvalid(f"unknown authentication mechanism '{mechanism}'")


class ServerConnection:
    """Sans-I/O server side of one AMQP connection."""

    def __init__(
        self,
        *,
        check_credentials: Authenticator,
        vhost_allowed: VhostCheck,
        server_properties: dict,
        frame_max: int = 131072,
        channel_max: int = 2047,
        heartbeat: int = 60,
        max_message_size: int = 128 * 1024 * 1024,
    ) -> None:
        self.check_credentials = check_credentials
        self.vhost_allowed = vhost_allowed
        self.server_properties = server_properties
        self.server_frame_max = frame_max
        self.server_channel_max = channel_max
        self.server_heartbeat = heartbeat
        self.max_message_size = max_message_size

        self.state = ConnState.AWAIT_HEADER
        self.out: list[bytes] = []
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = 0
        self.user = ""
        self.vhost = ""
        self.client_properties: dict = {}
        self.channels: dict[int, ChanState] = {}
        self.close_error: AMQPError | None = None
        # Called with the channel number before a channel.open is accepted; may raise an
        # AMQPError to refuse it (the broker's per-user channel limit).
        self.before_channel_open: Callable[[int], None] | None = None

        self._header = b""
        # Until tune-ok negotiates frame_max, frames are at most FRAME_MIN_SIZE (as RabbitMQ):
        # a peer that has not logged in cannot make the broker buffer a large frame.
        self._parser = FrameParser(FRAME_MIN_SIZE)
        self._frames: list = []
        self._pos = 0
        self._assembling = ContentAssembler(ContentReceived, max_message_size)
        self._in_progress = self._assembling.channels  # read here without a call per frame
        self._publish_cache: dict[bytes, spec.BasicPublish] = {}
        self.cache_bytes = 0  # what _publish_cache holds, approximately
        self._pending_error: AMQPError | None = None
        # Set when the socket must be dropped at once, without a close handshake (RabbitMQ's
        # answer to an unknown method or a bad protocol header). Otherwise, once CLOSED, the
        # transport keeps reading and discarding until the peer hangs up, so a client whose
        # writes are still in flight is not answered with a TCP reset.
        self.hangup = False
        # (major, minor) announced in connection.start: (0, 9) unless the client asked for 0-8.
        self.version = (0, 9)
        self._decode = _decode

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer; call next_event until NEED_DATA afterwards."""
        if not data:
            return
        state = self.state
        if state is ConnState.CLOSED:
            return
        if state is ConnState.AWAIT_HEADER:
            self._header += data
            if len(self._header) < 8:
                if not any(h.startswith(self._header) for h in _ACCEPTED_HEADERS):
                    self._reject_header()
                return
            header, data = self._header[:8], self._header[8:]
            self._header = b""
            if header not in _ACCEPTED_HEADERS:
                self._reject_header()
                return
            if header in HEADERS_0_8:
                self._speak_0_8()
            self._send_start()
            if not data:
                return
        try:
            frames = self._parser.feed(data)
        except CodecError as exc:
            if self.state is ConnState.AWAIT_START_OK or self.state is ConnState.AWAIT_TUNE_OK:
                # Before tune-ok RabbitMQ does not trust the peer with a reply: it drops the
                # socket without a connection.close. (The traceback would keep the bytes
                # just read alive as long as this connection object.)
                exc.__traceback__ = None
                exc.frames = []
                self.close_error = exc
                self.state = ConnState.CLOSED
                self.hangup = True
                self._frames = []
                self._pos = 0
                return
            # Frames before the bad one are still handled; then the connection closes.
            frames = getattr(exc, "frames", [])
            self._pending_error = exc
        if self._pos:
            del self._frames[: self._pos]
            self._pos = 0
        if self._frames:
            self._frames.extend(frames)
        else:
            self._frames = frames

    def content_in_progress(self) -> int:
        """Body bytes received for messages not complete yet (all channels)."""
        return self._assembling.in_progress()

    def has_pending(self) -> bool:
        """Whether received frames (or a framing error) still wait for next_event."""
        return self._pos < len(self._frames) or self._pending_error is not None

    def next_event(self):
        """The next event, or NEED_DATA when every complete frame has been consumed."""
        frames = self._frames
        while self._pos < len(frames):
            frame = frames[self._pos]
            self._pos += 1
            try:
                event = self._handle_frame(frame[0], frame[1], frame[2])
            except UnknownMethod as exc:
                # RabbitMQ's reader dies on a method it cannot name: the socket just closes.
                self._frames, self._pos = [], 0
                self._assembling.clear()
                self.state = ConnState.CLOSED
                self.hangup = True
                return ConnectionClosed(exc)
            except AMQPError as exc:
                event = self._protocol_error(frame[1], exc)
            if event is not None:
                return event
        if frames:
            self._frames = []
            self._pos = 0
        if self._pending_error is not None:
            exc, self._pending_error = self._pending_error, None
            if self.state is not ConnState.CLOSED and self.state is not ConnState.CLOSING:
                return self.close(exc)
        return NEED_DATA

    # ---------------------------------------------------------------- output

    def _speak_0_8(self) -> None:
        """Switch this connection to AMQP 0-8 numbering (see amqp08.py)."""
        self.version = (8, 0)
        self._decode = _decode_0_8
        self.send_method = self._send_method_0_8  # type: ignore[method-assign]

    def _send_method_0_8(self, channel: int, method) -> None:
        self.out.append(encode_method_frame_0_8(channel, method))

    def send_method(self, channel: int, method) -> None:
        self.out.append(encode_method_frame(channel, method))

    def send_heartbeat(self) -> None:
        self.out.append(HEARTBEAT_FRAME)

    def close(self, error: AMQPError) -> Event:
        """Close the connection from the server side with `error` (a hard error).

        Frames that arrive afterwards are discarded until the peer's close-ok.
        """
        if self.state in (ConnState.CLOSING, ConnState.CLOSED):
            return ConnectionClosed(error)
        self.close_error = error
        self._assembling.clear()
        self.send_method(
            0,
            spec.ConnectionClose(error.code, error.reply_text[:255], error.class_id, error.method_id),
        )
        self.state = ConnState.CLOSING
        return ConnectionClosed(error)

    def close_channel(self, channel: int, error: AMQPError) -> None:
        """Close one channel from the server side (a soft error).

        The caller has already released what the channel held; frames arriving on it are
        discarded until the peer answers with channel.close-ok.
        """
        if self.channels.get(channel) is not ChanState.OPEN:
            return
        self.channels[channel] = ChanState.CLOSING
        self._assembling.discard(channel)
        self.send_method(
            channel,
            spec.ChannelClose(error.code, error.reply_text[:255], error.class_id, error.method_id),
        )

    # --------------------------------------------------------------- internals

    def _reject_header(self) -> None:
        # The spec: answer a bad protocol header with the one we speak, then close.
        self.out.append(PROTOCOL_HEADER)
        self.state = ConnState.CLOSED
        self.hangup = True
        self._pending_error = None

    def _send_start(self) -> None:
        props = self.server_properties
        if self.version == (8, 0):
            props = {**props, "capabilities": {}}  # as RabbitMQ: 0-8 has no extensions
        major, minor = self.version
        self.send_method(0, spec.ConnectionStart(major, minor, props, b"AMQPLAIN PLAIN", b"en_US"))
        self.state = ConnState.AWAIT_START_OK

    def _protocol_error(self, channel: int, exc: AMQPError):
        """Route an error raised while reading a frame: soft ones close the channel."""
        if exc.HARD or channel == 0 or self.state is not ConnState.OPEN:
            if self.state is ConnState.CLOSING or self.state is ConnState.CLOSED:
                return None
            return self.close(exc)
        self.close_channel(channel, exc)
        return ChannelClosed(channel)

    def _handle_frame(self, ftype: int, channel: int, payload: bytes):
        state = self.state
        if state is not ConnState.OPEN:
            return self._handle_non_open(state, ftype, channel, payload)
        if ftype == FRAME_METHOD:
            if channel == 0:
                return self._connection_method(self._decode(payload))
            cstate = self.channels.get(channel)
            if cstate is ChanState.OPEN:
                if channel in self._in_progress:
                    raise UnexpectedFrame(
                        f"expected content header for class 60, got a method frame on channel {channel}"
                    )
                if payload.startswith(_PUBLISH_PREFIX):
                    # Publishers resend byte-identical basic.publish payloads: decode each
                    # distinct one once (the broker never mutates a method).
                    method = self._publish_cache.get(payload)
                    if method is None:
                        method = self._decode(payload)
                        if len(self._publish_cache) >= _PUBLISH_CACHE_MAX:
                            self._publish_cache.clear()
                            self.cache_bytes = 0
                        self._publish_cache[payload] = method
                        self.cache_bytes += len(payload) + _PUBLISH_ENTRY_COST
                    # Fast path: a publish whose header and single body frame (or header
                    # alone, for an empty body) arrived in the same read is complete here,
                    # with no assembler calls. It only takes frames the general path would
                    # accept as they are; anything else (a body split over frames, a
                    # header still to come, a bad or oversized header) falls through to
                    # the ContentAssembler, which stays the one definition of assembly
                    # (raising its errors). No event could come between these frames on
                    # the general path either, so consuming them now changes nothing.
                    frames = self._frames
                    pos = self._pos
                    if pos < len(frames):
                        hframe = frames[pos]
                        header = hframe[2]
                        if (
                            hframe[0] == FRAME_HEADER_TYPE
                            and hframe[1] == channel
                            and len(header) >= CONTENT_HEADER_SIZE
                            and header.startswith(_BASIC_CLASS_ID)
                        ):
                            size = CONTENT_HEADER.unpack_from(header)[2]
                            if not size:
                                self._pos = pos + 1
                                return ContentReceived(channel, method, header, b"")
                            if pos + 1 < len(frames) and size <= self._assembling.max_size:
                                bframe = frames[pos + 1]
                                body = bframe[2]
                                if bframe[0] == FRAME_BODY and bframe[1] == channel and len(body) == size:
                                    self._pos = pos + 2
                                    return ContentReceived(channel, method, header, body)
                    self._assembling.start(channel, method)
                    return None
                method = self._decode(payload)
                if method is ACCESS_REQUEST:
                    self.out.append(encode_frame(FRAME_METHOD, channel, ACCESS_REQUEST_OK))
                    return None
                if method.HAS_CONTENT:
                    if not isinstance(method, spec.BasicPublish):
                        raise CommandInvalid(f"{method.NAME} may not be sent by a client")
                    self._assembling.start(channel, method)
                    return None
                if method.INDEX == _CHANNEL_CLOSE:
                    del self.channels[channel]
                    self.send_method(channel, spec.ChannelCloseOk())
                    return ChannelClosed(channel)
                if method.INDEX == _CHANNEL_OPEN:
                    raise ChannelError("second 'channel.open' seen", method.CLASS_ID, method.METHOD_ID)
                if method.INDEX == _CHANNEL_CLOSE_OK:
                    return None
                return MethodReceived(channel, method)
            if cstate is None:
                method = self._decode(payload)
                if method.INDEX != _CHANNEL_OPEN:
                    raise ChannelError("expected 'channel.open'", method.CLASS_ID, method.METHOD_ID)
                if len(self.channels) >= self.channel_max:
                    # RabbitMQ limits how many channels are open, not their numbers.
                    raise NotAllowed(
                        f"number of channels opened ({len(self.channels)}) has reached the "
                        f"negotiated channel_max ({self.channel_max})"
                    )
                if self.before_channel_open is not None:
                    self.before_channel_open(channel)
                self.channels[channel] = ChanState.OPEN
                self.send_method(channel, spec.ChannelOpenOk())
                return ChannelOpened(channel)
            # CLOSING: wait for close-ok; answer a crossing close; drop everything else.
            method = self._decode(payload)
            if method.INDEX == _CHANNEL_CLOSE_OK:
                del self.channels[channel]
            elif method.INDEX == _CHANNEL_CLOSE:
                self.send_method(channel, spec.ChannelCloseOk())
            return None
        if ftype == FRAME_HEADER_TYPE or ftype == FRAME_BODY:
            try:
                if ftype == FRAME_BODY:
                    return self._assembling.body(channel, payload)
                return self._assembling.header(channel, payload)
            except UnexpectedFrame:
                if self.channels.get(channel) is ChanState.CLOSING:
                    return None  # content of a method sent before our channel.close
                raise
        if ftype == FRAME_HEARTBEAT and not payload:
            if channel != 0:
                # RabbitMQ treats this as an unexpected frame (505).
                raise UnexpectedFrame(f"type {ftype}, {_snippet(payload)}")
            return None
        # A heartbeat with a payload is no heartbeat to RabbitMQ: an unknown frame (501).
        raise FrameError(f"type {ftype}, {_snippet(payload)}: unknown_frame")

    def _connection_method(self, method):
        index = method.INDEX
        if index == _CONNECTION_CLOSE:
            self.send_method(0, spec.ConnectionCloseOk())
            self.state = ConnState.CLOSED
            return ConnectionClosed(None)
        if index == _CONNECTION_CLOSE_OK:
            return None
        if index == _CONNECTION_BLOCKED or index == _CONNECTION_UNBLOCKED:
            return None
        if index == _CONNECTION_UPDATE_SECRET:
            self.send_method(0, spec.ConnectionUpdateSecretOk())
            return None
        raise ChannelError(
            "unexpected method in connection state running", method.CLASS_ID, method.METHOD_ID
        )

    def _handle_non_open(self, state: ConnState, ftype: int, channel: int, payload: bytes):
        if state is ConnState.CLOSING:
            if ftype == FRAME_METHOD and channel == 0:
                try:
                    method = self._decode(payload)
                except CodecError:
                    return None
                if method.INDEX == _CONNECTION_CLOSE_OK:
                    self.state = ConnState.CLOSED
                elif method.INDEX == _CONNECTION_CLOSE:
                    self.send_method(0, spec.ConnectionCloseOk())
                    self.state = ConnState.CLOSED
            return None
        if state is ConnState.CLOSED:
            return None
        if ftype == FRAME_HEARTBEAT and state is not ConnState.AWAIT_START_OK:
            return None
        if ftype != FRAME_METHOD or channel != 0:
            raise CommandInvalid(f"unexpected frame type {ftype} on channel {channel} during the handshake")
        method = self._decode(payload)
        if method.INDEX == _CONNECTION_CLOSE:
            self.send_method(0, spec.ConnectionCloseOk())
            self.state = ConnState.CLOSED
            return ConnectionClosed(None)
        if state is ConnState.AWAIT_START_OK and method.INDEX == _CONNECTION_START_OK:
            return self._on_start_ok(method)
        if state is ConnState.AWAIT_TUNE_OK and method.INDEX == _CONNECTION_TUNE_OK:
            return self._on_tune_ok(method)
        if state is ConnState.AWAIT_OPEN and method.INDEX == _CONNECTION_OPEN:
            return self._on_open(method)
        raise CommandInvalid(f"unexpected '{method.NAME}' in connection state {state.value}")

    def _on_start_ok(self, method):
        self.client_properties = method.client_properties or {}
        user, password = parse_sasl(method.mechanism, method.response)
        if not self.check_credentials(user, password, method.mechanism):
            raise AccessRefused(
                f"Login was refused using authentication mechanism {method.mechanism}. "
                "For details see the broker logfile."
            )
        self.user = user
        self.send_method(
            0, spec.ConnectionTune(self.server_channel_max, self.server_frame_max, self.server_heartbeat)
        )
        self.state = ConnState.AWAIT_TUNE_OK
        return None

    def _on_tune_ok(self, method):
        frame_max = method.frame_max or self.server_frame_max
        if frame_max > self.server_frame_max:
            raise NotAllowed(
                f"negotiated frame_max = {frame_max} is higher than the maximum allowed value "
                f"({self.server_frame_max})"
            )
        if frame_max < FRAME_MIN_SIZE:
            raise NotAllowed(f"frame_max={frame_max} < {FRAME_MIN_SIZE} min size")
        channel_max = method.channel_max or self.server_channel_max
        if channel_max > self.server_channel_max:
            raise NotAllowed(
                f"negotiated channel_max = {channel_max} is higher than the maximum allowed value "
                f"({self.server_channel_max})"
            )
        self.frame_max = frame_max
        self._parser.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = method.heartbeat
        self.state = ConnState.AWAIT_OPEN
        return None

    def _on_open(self, method):
        vhost = method.virtual_host
        # May raise its own error (530 with RabbitMQ's text for permissions and limits).
        if not self.vhost_allowed(self.user, vhost):
            raise NotAllowed(f"vhost {vhost} not found")
        self.vhost = vhost
        self.send_method(0, spec.ConnectionOpenOk())
        self.state = ConnState.OPEN
        return ConnectionOpened(self.user, vhost, self.client_properties)


def _decode(payload: bytes, decoder: Callable = spec.decode_method) -> spec.Method:
    """Decode a method frame; malformed arguments get RabbitMQ's 'cannot decode' text."""
    try:
        return decoder(payload)
    except UnknownMethod:
        raise
    except CodecError as exc:
        if len(payload) < 4:
            raise FrameError(f"cannot decode {erlang_binary(bytes(payload))}") from None
        raise FrameError(
            f"cannot decode {erlang_binary(bytes(payload[4:]))}", exc.class_id, exc.method_id
        ) from None


def _decode_0_8(payload: bytes):
    return _decode(payload, decode_0_8)


def erlang_binary(data: bytes) -> str:
    """Bytes as Erlang's ~w prints a binary (RabbitMQ's error texts quote payloads so)."""
    return "<<" + ",".join(map(str, data)) + ">>"


_ERL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x0b": "\\v", "\x08": "\\b",
                "\x0c": "\\f", "\x1b": "\\e", '"': '\\"', "\\": "\\\\"}


def _snippet(payload: bytes) -> str:
    """RabbitMQ's quote of a bad frame's payload: its first 16 octets as Erlang's ~p shows them."""
    data = bytes(payload[:16])
    prefix = "all octets" if len(payload) <= 16 else "first 16 octets"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text and all(c.isprintable() or c in _ERL_ESCAPES for c in text):
        shown = '<<"' + "".join(_ERL_ESCAPES.get(c, c) for c in text) + '">>'
    else:
        shown = erlang_binary(data)
    return f"{prefix} = {shown}"


# RabbitMQ 3.10 serves 0-9-1, 0-9 (as 0-9-1) and 0-8 (both of its headers).
_ACCEPTED_HEADERS = (PROTOCOL_HEADER, HEADER_0_9, *HEADERS_0_8)

_CHANNEL_OPEN = spec.ChannelOpen.INDEX
_CHANNEL_CLOSE = spec.ChannelClose.INDEX
_CHANNEL_CLOSE_OK = spec.ChannelCloseOk.INDEX
_CONNECTION_START_OK = spec.ConnectionStartOk.INDEX
_CONNECTION_TUNE_OK = spec.ConnectionTuneOk.INDEX
_CONNECTION_OPEN = spec.ConnectionOpen.INDEX
_CONNECTION_CLOSE = spec.ConnectionClose.INDEX
_CONNECTION_CLOSE_OK = spec.ConnectionCloseOk.INDEX
_CONNECTION_BLOCKED = spec.ConnectionBlocked.INDEX
_CONNECTION_UNBLOCKED = spec.ConnectionUnblocked.INDEX
_CONNECTION_UPDATE_SECRET = spec.ConnectionUpdateSecret.INDEX
