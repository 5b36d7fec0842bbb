"""Basic content properties and content-header payloads.

The broker routes and stores messages without interpreting most properties,
so the content header is split cheaply (``parse_content_header``) and the raw
property bytes are kept; full decoding happens only when something needs it,
and ``decode_headers_only`` / ``delivery_mode_of`` answer the two questions
routing and persistence ask without building a ``BasicProperties``.
"""

from __future__ import annotations

import struct

from .errors import CodecError
from .values import as_bytes, decode_shortstr, decode_table, encode_shortstr, encode_table

__all__ = [
    "BasicProperties",
    "PROPERTY_NAMES",
    "CONTENT_HEADER",
    "CONTENT_HEADER_SIZE",
    "PROPERTIES_OFFSET",
    "CONTENT_TYPE_FLAG",
    "CONTENT_ENCODING_FLAG",
    "HEADERS_FLAG",
    "DELIVERY_MODE_FLAG",
    "PRIORITY_FLAG",
    "CORRELATION_ID_FLAG",
    "REPLY_TO_FLAG",
    "EXPIRATION_FLAG",
    "MESSAGE_ID_FLAG",
    "TIMESTAMP_FLAG",
    "TYPE_FLAG",
    "USER_ID_FLAG",
    "APP_ID_FLAG",
    "CLUSTER_ID_FLAG",
    "header_octet",
    "encode_content_header",
    "parse_content_header",
    "decode_headers_only",
    "delivery_mode_of",
]

_H = struct.Struct(">H")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")
# A content-header payload: class id, weight, body size, then the property flags and
# properties; the broker keeps it whole and reads the properties from PROPERTIES_OFFSET.
CONTENT_HEADER = struct.Struct(">HHQ")
PROPERTIES_OFFSET = CONTENT_HEADER.size  # 12
CONTENT_HEADER_SIZE = PROPERTIES_OFFSET + 2  # the shortest payload: no property flag set

PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)

# Flag bit per property, most significant first (spec: bit 15 = first property). The one
# definition: the broker tests presence on the raw header bytes with these.
CONTENT_TYPE_FLAG = 1 << 15
CONTENT_ENCODING_FLAG = 1 << 14
HEADERS_FLAG = 1 << 13
DELIVERY_MODE_FLAG = 1 << 12
PRIORITY_FLAG = 1 << 11
CORRELATION_ID_FLAG = 1 << 10
REPLY_TO_FLAG = 1 << 9
EXPIRATION_FLAG = 1 << 8
MESSAGE_ID_FLAG = 1 << 7
TIMESTAMP_FLAG = 1 << 6
TYPE_FLAG = 1 << 5
USER_ID_FLAG = 1 << 4
APP_ID_FLAG = 1 << 3
CLUSTER_ID_FLAG = 1 << 2
# The same flags in the first octet of the flag word, for reading a header in place.
_CONTENT_TYPE_BIT = CONTENT_TYPE_FLAG >> 8
_CONTENT_ENCODING_BIT = CONTENT_ENCODING_FLAG >> 8
_HEADERS_BIT = HEADERS_FLAG >> 8
_DELIVERY_MODE_BIT = DELIVERY_MODE_FLAG >> 8
_PRIORITY_BIT = PRIORITY_FLAG >> 8
_UNKNOWN_FLAG = 1 << 1  # a 15th property we could not know the type of
_CONTINUATION_FLAG = 1

_EMPTY_PROPERTIES = b"\x00\x00"
_DECODE_ERRORS = (struct.error, IndexError)


def _read_flags(buf, offset: int) -> tuple[int, int]:
    """Read the flag word(s); later words may only repeat 'no more properties'."""
    (flags,) = _H.unpack_from(buf, offset)
    offset += 2
    if flags & _UNKNOWN_FLAG:
        raise CodecError("content header sets an unknown property flag")
    more = flags & _CONTINUATION_FLAG
    while more:
        (extra,) = _H.unpack_from(buf, offset)
        offset += 2
        if extra & ~_CONTINUATION_FLAG:
            raise CodecError("content header sets an unknown property flag")
        more = extra & _CONTINUATION_FLAG
    return flags, offset


class BasicProperties:
    """The basic class content properties; ``None`` means "absent on the wire"."""

    __slots__ = PROPERTY_NAMES

    def __init__(
        self,
        content_type: str | None = None,
        content_encoding: str | None = None,
        headers: dict | None = None,
        delivery_mode: int | None = None,
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: str | None = None,
        message_id: str | None = None,
        timestamp: int | None = None,
        type: str | None = None,
        user_id: str | None = None,
        app_id: str | None = None,
        cluster_id: str | None = None,
    ) -> None:
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.headers = headers
        self.delivery_mode = delivery_mode
        self.priority = priority
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.expiration = expiration
        self.message_id = message_id
        self.timestamp = timestamp
        self.type = type
        self.user_id = user_id
        self.app_id = app_id
        self.cluster_id = cluster_id

    def encode(self) -> bytes:
        """Property flags followed by the present properties, in spec order."""
        flags = 0
        parts = [_EMPTY_PROPERTIES]
        append = parts.append
        try:
            if self.content_type is not None:
                flags |= CONTENT_TYPE_FLAG
                append(encode_shortstr(self.content_type))
            if self.content_encoding is not None:
                flags |= CONTENT_ENCODING_FLAG
                append(encode_shortstr(self.content_encoding))
            if self.headers is not None:
                flags |= HEADERS_FLAG
                append(encode_table(self.headers))
            if self.delivery_mode is not None:
                flags |= DELIVERY_MODE_FLAG
                append(bytes((self.delivery_mode,)))
            if self.priority is not None:
                flags |= PRIORITY_FLAG
                append(bytes((self.priority,)))
            if self.correlation_id is not None:
                flags |= CORRELATION_ID_FLAG
                append(encode_shortstr(self.correlation_id))
            if self.reply_to is not None:
                flags |= REPLY_TO_FLAG
                append(encode_shortstr(self.reply_to))
            if self.expiration is not None:
                flags |= EXPIRATION_FLAG
                append(encode_shortstr(self.expiration))
            if self.message_id is not None:
                flags |= MESSAGE_ID_FLAG
                append(encode_shortstr(self.message_id))
            if self.timestamp is not None:
                flags |= TIMESTAMP_FLAG
                append(_Q.pack(self.timestamp))
            if self.type is not None:
                flags |= TYPE_FLAG
                append(encode_shortstr(self.type))
            if self.user_id is not None:
                flags |= USER_ID_FLAG
                append(encode_shortstr(self.user_id))
            if self.app_id is not None:
                flags |= APP_ID_FLAG
                append(encode_shortstr(self.app_id))
            if self.cluster_id is not None:
                flags |= CLUSTER_ID_FLAG
                append(encode_shortstr(self.cluster_id))
        except (struct.error, TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"cannot encode basic properties: {exc}") from None
        if not flags:
            return _EMPTY_PROPERTIES
        parts[0] = _H.pack(flags)
        return b"".join(parts)

    @classmethod
    def decode(cls, buf: bytes | memoryview, offset: int = 0) -> BasicProperties:
        """Decode flags + properties starting at ``offset`` (trailing bytes are ignored)."""
        if buf.__class__ is not bytes:
            buf = as_bytes(buf)
        self = cls.__new__(cls)
        try:
            flags, offset = _read_flags(buf, offset)
            if flags & CONTENT_TYPE_FLAG:
                self.content_type, offset = decode_shortstr(buf, offset)
            else:
                self.content_type = None
            if flags & CONTENT_ENCODING_FLAG:
                self.content_encoding, offset = decode_shortstr(buf, offset)
            else:
                self.content_encoding = None
            if flags & HEADERS_FLAG:
                self.headers, offset = decode_table(buf, offset)
            else:
                self.headers = None
            if flags & DELIVERY_MODE_FLAG:
                self.delivery_mode = buf[offset]
                offset += 1
            else:
                self.delivery_mode = None
            if flags & PRIORITY_FLAG:
                self.priority = buf[offset]
                offset += 1
            else:
                self.priority = None
            if flags & CORRELATION_ID_FLAG:
                self.correlation_id, offset = decode_shortstr(buf, offset)
            else:
                self.correlation_id = None
            if flags & REPLY_TO_FLAG:
                self.reply_to, offset = decode_shortstr(buf, offset)
            else:
                self.reply_to = None
            if flags & EXPIRATION_FLAG:
                self.expiration, offset = decode_shortstr(buf, offset)
            else:
                self.expiration = None
            if flags & MESSAGE_ID_FLAG:
                self.message_id, offset = decode_shortstr(buf, offset)
            else:
                self.message_id = None
            if flags & TIMESTAMP_FLAG:
                self.timestamp = _Q.unpack_from(buf, offset)[0]
                offset += 8
            else:
                self.timestamp = None
            if flags & TYPE_FLAG:
                self.type, offset = decode_shortstr(buf, offset)
            else:
                self.type = None
            if flags & USER_ID_FLAG:
                self.user_id, offset = decode_shortstr(buf, offset)
            else:
                self.user_id = None
            if flags & APP_ID_FLAG:
                self.app_id, offset = decode_shortstr(buf, offset)
            else:
                self.app_id = None
            if flags & CLUSTER_ID_FLAG:
                self.cluster_id, offset = decode_shortstr(buf, offset)
            else:
                self.cluster_id = None
        except _DECODE_ERRORS as exc:
            raise CodecError(f"malformed basic properties: {exc}") from None
        return self

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in PROPERTY_NAMES)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        present = ", ".join(
            f"{n}={getattr(self, n)!r}" for n in PROPERTY_NAMES if getattr(self, n) is not None
        )
        return f"BasicProperties({present})"


def encode_content_header(
    body_size: int, props: BasicProperties | bytes | None, class_id: int = 60
) -> bytes:
    """Full header-frame payload; pre-encoded property bytes are passed through untouched.

    Passing the raw bytes received from the publisher is the normal broker
    path: it forwards properties byte-exactly and skips re-encoding.
    """
    if props is None:
        raw = _EMPTY_PROPERTIES
    elif isinstance(props, BasicProperties):
        raw = props.encode()
    else:
        raw = props
    try:
        return b"".join((CONTENT_HEADER.pack(class_id, 0, body_size), raw))
    except (struct.error, TypeError) as exc:
        raise CodecError(f"cannot encode content header: {exc}") from None


def parse_content_header(payload: bytes | memoryview) -> tuple[int, int, bytes | memoryview]:
    """Split a header-frame payload into (class_id, body_size, raw property bytes).

    The property bytes are a slice of the same type as ``payload`` (bytes in,
    bytes out), so storing them does not pin a larger receive buffer.
    """
    if len(payload) < CONTENT_HEADER_SIZE:
        raise CodecError("truncated content header")
    class_id, _weight, body_size = CONTENT_HEADER.unpack_from(payload, 0)
    return class_id, body_size, payload[PROPERTIES_OFFSET:]


def _skip_to_headers(buf, flags: int, offset: int) -> int:
    if flags & CONTENT_TYPE_FLAG:
        offset += 1 + buf[offset]
    if flags & CONTENT_ENCODING_FLAG:
        offset += 1 + buf[offset]
    return offset


def decode_headers_only(prop_bytes: bytes | memoryview) -> dict | None:
    """The ``headers`` table alone (or None if absent), for the headers exchange."""
    if prop_bytes.__class__ is not bytes:
        prop_bytes = as_bytes(prop_bytes)
    try:
        flags, offset = _read_flags(prop_bytes, 0)
        if not flags & HEADERS_FLAG:
            return None
        offset = _skip_to_headers(prop_bytes, flags, offset)
        return decode_table(prop_bytes, offset)[0]
    except _DECODE_ERRORS as exc:
        raise CodecError(f"malformed basic properties: {exc}") from None


def header_octet(header: bytes, flag: int) -> int | None:
    """delivery-mode (``DELIVERY_MODE_FLAG``) or priority (``PRIORITY_FLAG``) straight from a
    whole content-header payload (class id, weight, body size, flags, properties).

    Both are single octets behind content-type, content-encoding and headers (and priority
    behind delivery-mode), so skipping those three is all a full decode would buy; this runs
    for every publish, so it reads the bytes in place and is lenient (None, never an error):
    the property bytes were already checked when the message arrived.
    """
    bit = flag >> 8
    if len(header) < 15 or not header[12] & bit:
        return None
    flags = header[12]
    off = 14
    try:
        if flags & _CONTENT_TYPE_BIT:
            off += 1 + header[off]
        if flags & _CONTENT_ENCODING_BIT:
            off += 1 + header[off]
        if flags & _HEADERS_BIT:
            off += 4 + int.from_bytes(header[off : off + 4], "big")
        if bit == _PRIORITY_BIT and flags & _DELIVERY_MODE_BIT:  # priority comes after delivery-mode
            off += 1
        return header[off]
    except IndexError:
        return None


def delivery_mode_of(prop_bytes: bytes | memoryview) -> int | None:
    """The ``delivery_mode`` octet alone (or None), for persistence decisions."""
    try:
        flags, offset = _read_flags(prop_bytes, 0)
        if not flags & DELIVERY_MODE_FLAG:
            return None
        offset = _skip_to_headers(prop_bytes, flags, offset)
        if flags & HEADERS_FLAG:
            offset += 4 + _I.unpack_from(prop_bytes, offset)[0]
        return prop_bytes[offset]
    except _DECODE_ERRORS as exc:
        raise CodecError(f"malformed basic properties: {exc}") from None
