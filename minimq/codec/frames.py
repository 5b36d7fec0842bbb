"""Frame layer: protocol header, frame encoding and an incremental parser.

Sans-I/O: the connection hands received bytes to ``FrameParser.feed`` and
writes whatever the ``encode_*`` helpers return; nothing here touches sockets.
"""

from __future__ import annotations

import struct
from typing import Protocol

from .constants import FRAME_BODY as _FRAME_BODY
from .constants import FRAME_END as _FRAME_END
from .constants import FRAME_HEADER as _FRAME_HEADER
from .constants import FRAME_HEARTBEAT as _FRAME_HEARTBEAT
from .constants import FRAME_METHOD as _FRAME_METHOD
from .constants import PROTOCOL_VERSION
from .errors import CodecError

__all__ = [
    "PROTOCOL_HEADER",
    "FRAME_HEADER",
    "FRAME_END_BYTE",
    "HEARTBEAT_FRAME",
    "encode_frame",
    "encode_method_frame",
    "encode_content_frames",
    "FrameParser",
]

# The framing every module shares: b"AMQP\x00\x00\x09\x01", the 7-byte frame header
# (type, channel, payload size) and the frame-end octet 0xCE.
PROTOCOL_HEADER = b"AMQP\x00" + bytes(PROTOCOL_VERSION)
FRAME_HEADER = struct.Struct(">BHI")
FRAME_END_BYTE = bytes((_FRAME_END,))

_KNOWN_TYPES = frozenset((_FRAME_METHOD, _FRAME_HEADER, _FRAME_BODY, _FRAME_HEARTBEAT))
_OVERHEAD = 8  # 7-byte header + frame-end octet

HEARTBEAT_FRAME = FRAME_HEADER.pack(_FRAME_HEARTBEAT, 0, 0) + FRAME_END_BYTE


class _Encodable(Protocol):
    def encode(self) -> bytes: ...


def encode_frame(frame_type: int, channel: int, payload: bytes | memoryview) -> bytes:
    """One complete frame (header, payload, frame-end)."""
    try:
        header = FRAME_HEADER.pack(frame_type, channel, len(payload))
    except struct.error as exc:
        raise CodecError(f"cannot encode frame header: {exc}") from None
    return b"".join((header, payload, FRAME_END_BYTE))


def encode_method_frame(channel: int, method: _Encodable) -> bytes:
    """A method frame for any generated spec method instance."""
    return encode_frame(_FRAME_METHOD, channel, method.encode())


def encode_content_frames(
    channel: int, header_payload: bytes, body: bytes | memoryview, frame_max: int
) -> list[bytes]:
    """Header frame plus body frames, each within ``frame_max`` (0 = unlimited).

    Body slices are taken through a memoryview so a large body is copied once,
    into its frame, rather than once per slice and again per frame.
    """
    frames = [encode_frame(_FRAME_HEADER, channel, header_payload)]
    size = len(body)
    if not size:
        return frames
    if not frame_max:
        frames.append(encode_frame(_FRAME_BODY, channel, body))
        return frames
    chunk = frame_max - _OVERHEAD
    if chunk <= 0:
        raise CodecError(f"frame_max {frame_max} leaves no room for a body")
    if size <= chunk:
        frames.append(encode_frame(_FRAME_BODY, channel, body))
        return frames
    pack = FRAME_HEADER.pack
    view = memoryview(body)
    for start in range(0, size, chunk):
        piece = view[start : start + chunk]
        frames.append(b"".join((pack(_FRAME_BODY, channel, len(piece)), piece, FRAME_END_BYTE)))
    return frames


class FrameParser:
    """Incremental frame splitter over a single growing buffer.

    ``frame_max`` is the negotiated maximum total frame size (framing
    included); it is enforced from the 7-byte header alone so a hostile peer
    cannot make us buffer an oversized frame. 0 disables the check.
    """

    __slots__ = ("frame_max", "_buf")

    def __init__(self, frame_max: int = 131072) -> None:
        self.frame_max: int = frame_max
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, int, bytes]]:
        """Append ``data``; return every frame now complete as (type, channel, payload).

        Frame types are not judged here (the protocol layer answers an unknown type with
        a connection error but can keep reading, e.g. the peer's close-ok). A frame that
        breaks the framing itself (bad end octet, oversized) raises CodecError; the frames
        complete before it are on the exception as ``frames`` so none is lost.
        """
        buf = self._buf
        buf += data
        total = len(buf)
        frames: list[tuple[int, int, bytes]] = []
        pos = 0
        # Like RabbitMQ, tolerate payloads up to frame_max itself: many clients count the
        # 8 bytes of framing inconsistently.
        limit = self.frame_max if self.frame_max else -1
        unpack = FRAME_HEADER.unpack_from
        error: CodecError | None = None
        with memoryview(buf) as view:
            while total - pos >= 7:
                frame_type, channel, size = unpack(buf, pos)
                if limit >= 0 and size > limit:
                    # RabbitMQ's wording for the same condition.
                    error = CodecError(
                        f"type {frame_type}, all octets = <<>>: "
                        f"{{frame_too_large,{size},{self.frame_max - _OVERHEAD}}}"
                    )
                    break
                end = pos + 7 + size
                if end >= total:
                    break
                if buf[end] != _FRAME_END:
                    error = CodecError(f"bad frame end octet 0x{buf[end]:02x}")
                    break
                frames.append((frame_type, channel, bytes(view[pos + 7 : end])))
                pos = end + 1
        if error is not None:
            # The stream is out of step: nothing after this point can be trusted.
            buf.clear()
            error.frames = frames
            raise error
        if pos:
            del buf[:pos]
        return frames
