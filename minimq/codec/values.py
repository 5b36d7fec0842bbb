"""AMQP field tables, arrays and strings (RabbitMQ's type letters).

Decoding must round-trip byte-exactly, because the broker forwards headers and
queue arguments it received; a value whose wire type is not the default
encoding of its Python type therefore decodes to a marker subclass (``Int8``,
``UInt16``, ``Float32``, ...) that remembers the original letter. The marker
types compare and hash like the plain values, so routing code need not care.

All decoders take ``(buf, offset)`` where ``buf`` is ``bytes`` or a
``memoryview`` of bytes and return ``(value, new_offset)``; every failure is a
``CodecError``.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from .errors import CodecError

__all__ = [
    "Int8",
    "UInt8",
    "Int16",
    "UInt16",
    "UInt32",
    "Int64",
    "Int64L",
    "Float32",
    "Timestamp",
    "MAX_DEPTH",
    "encode_table",
    "decode_table",
    "encode_array",
    "decode_array",
    "encode_shortstr",
    "decode_shortstr",
    "encode_longstr",
    "decode_longstr",
    "encode_value",
    "decode_value",
]

MAX_DEPTH = 64


class Int8(int):
    """Field value sent as 'b' (signed 8-bit)."""

    __slots__ = ()


class UInt8(int):
    """Field value sent as 'B' (unsigned 8-bit)."""

    __slots__ = ()


class Int16(int):
    """Field value sent as 's' (signed 16-bit)."""

    __slots__ = ()


class UInt16(int):
    """Field value sent as 'u' (unsigned 16-bit)."""

    __slots__ = ()


class UInt32(int):
    """Field value sent as 'i' (unsigned 32-bit)."""

    __slots__ = ()


class Int64(int):
    """Field value sent as 'l' (signed 64-bit)."""

    __slots__ = ()


class Int64L(int):
    """Field value sent as 'L' (64-bit, as py-amqp writes large ints: signed).

    Not in RabbitMQ's table of types, but py-amqp sends it, so we read it and write it back
    unchanged.
    """

    __slots__ = ()


class Float32(float):
    """Field value sent as 'f' (IEEE single)."""

    __slots__ = ()


class Timestamp(int):
    """Seconds since the epoch sent as 'T'; also what out-of-range 'T' decodes to."""

    __slots__ = ()


_B = struct.Struct(">B")
_b = struct.Struct(">b")
_H = struct.Struct(">H")
_h = struct.Struct(">h")
_I = struct.Struct(">I")
_i = struct.Struct(">i")
_Q = struct.Struct(">Q")
_q = struct.Struct(">q")
_f = struct.Struct(">f")
_d = struct.Struct(">d")
_Bi = struct.Struct(">Bi")

# Tag byte + fixed payload packed in one call on the encode side.
_T_t = struct.Struct(">cB")
_T_b = struct.Struct(">cb")
_T_B = struct.Struct(">cB")
_T_s = struct.Struct(">ch")
_T_u = struct.Struct(">cH")
_T_I = struct.Struct(">ci")
_T_i = struct.Struct(">cI")
_T_l = struct.Struct(">cq")
_T_f = struct.Struct(">cf")
_T_d = struct.Struct(">cd")
_T_T = struct.Struct(">cQ")
_T_D = struct.Struct(">cBi")
_T_len = struct.Struct(">cI")

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_MAX_DATETIME_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_EMPTY_TABLE = b"\x00\x00\x00\x00"
_DECODE_ERRORS = (struct.error, IndexError, ValueError, TypeError, OverflowError, RecursionError)


# ---------------------------------------------------------------- strings


def as_bytes(buf: object) -> bytes:
    """Any buffer as bytes for decoding; anything else is a CodecError, not a TypeError."""
    try:
        return bytes(buf)  # type: ignore[call-overload]
    except TypeError:
        raise CodecError(f"cannot decode from {type(buf).__name__}") from None


def encode_shortstr(value: str | bytes) -> bytes:
    """Length-prefixed (octet) string; str is UTF-8 (surrogateescape round-trips decoded bytes)."""
    if value.__class__ is not bytes:
        try:
            value = value.encode("utf-8", "surrogateescape")
        except (AttributeError, UnicodeEncodeError) as exc:
            if isinstance(value, (bytearray, memoryview)):
                value = bytes(value)
            else:
                raise CodecError(f"cannot encode {type(value).__name__} as shortstr") from exc
    n = len(value)
    if n > 255:
        raise CodecError(f"shortstr too long ({n} bytes)")
    return bytes((n,)) + value


def decode_shortstr(buf: bytes | memoryview, offset: int) -> tuple[str, int]:
    """Decode an octet-prefixed string to str; arbitrary bytes survive via surrogateescape."""
    try:
        n = buf[offset]
    except IndexError:
        raise CodecError("truncated shortstr") from None
    offset += 1
    end = offset + n
    if end > len(buf):
        raise CodecError("truncated shortstr")
    if buf.__class__ is bytes:
        return buf[offset:end].decode("utf-8", "surrogateescape"), end
    return str(buf[offset:end], "utf-8", "surrogateescape"), end


def encode_longstr(value: bytes | str) -> bytes:
    """Length-prefixed (long) string; accepts bytes-like or str."""
    if value.__class__ is not bytes:
        if isinstance(value, str):
            try:
                value = value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError as exc:
                raise CodecError("cannot encode longstr") from exc
        else:
            try:
                value = bytes(value)
            except TypeError as exc:
                raise CodecError(f"cannot encode {type(value).__name__} as longstr") from exc
    return _I.pack(len(value)) + value


def decode_longstr(buf: bytes | memoryview, offset: int) -> tuple[bytes, int]:
    """Decode a long-prefixed string to bytes (longstr content is opaque binary)."""
    try:
        (n,) = _I.unpack_from(buf, offset)
    except struct.error:
        raise CodecError("truncated longstr") from None
    offset += 4
    end = offset + n
    if end > len(buf):
        raise CodecError("truncated longstr")
    return bytes(buf[offset:end]), end


# ---------------------------------------------------------------- encoding


def _key_bytes(key: object) -> bytes:
    if key.__class__ is str:
        try:
            raw = key.encode("utf-8", "surrogateescape")  # type: ignore[union-attr]
        except UnicodeEncodeError as exc:
            raise CodecError("cannot encode table key") from exc
    elif isinstance(key, str):
        raw = str.encode(key, "utf-8", "surrogateescape")
    elif isinstance(key, (bytes, bytearray)):
        raw = bytes(key)
    else:
        raise CodecError(f"table key must be str, not {type(key).__name__}")
    if len(raw) > 255:
        raise CodecError(f"table key too long ({len(raw)} bytes)")
    return raw


def _enc_str(out: bytearray, v: str) -> None:
    try:
        raw = v.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise CodecError("cannot encode string field value") from exc
    out += _T_len.pack(b"S", len(raw))
    out += raw


def _enc_int(out: bytearray, v: int) -> None:
    if _INT32_MIN <= v <= _INT32_MAX:
        out += _T_I.pack(b"I", v)
    elif _INT64_MIN <= v <= _INT64_MAX:
        out += _T_l.pack(b"l", v)
    else:
        raise CodecError(f"integer {v} does not fit a signed 64-bit field")


def _enc_decimal(out: bytearray, v: Decimal) -> None:
    if not v.is_finite():
        raise CodecError("cannot encode non-finite Decimal")
    sign, digits, exponent = v.as_tuple()
    assert isinstance(exponent, int)
    if len(digits) > 10:
        raise CodecError(f"Decimal {v} has too many digits for AMQP decimal")
    value = int("".join(map(str, digits)) or "0")
    if exponent > 0:
        # No negative scale on the wire: fold the exponent into the value
        # (bounded first so a huge exponent cannot cost a huge power).
        if value and exponent > 9:
            raise CodecError(f"Decimal {v} does not fit AMQP decimal")
        value *= 10**exponent
        exponent = 0
    scale = -exponent
    if sign:
        value = -value
    if scale > 255 or not _INT32_MIN <= value <= _INT32_MAX:
        raise CodecError(f"Decimal {v} does not fit AMQP decimal (octet scale, int32 value)")
    out += _T_D.pack(b"D", scale, value)


def _enc_datetime(out: bytearray, v: datetime) -> None:
    if v.tzinfo is None:
        # Naive datetimes are taken as UTC: the wire format has no zone and
        # guessing the host's local zone would make output machine-dependent.
        v = v.replace(tzinfo=_UTC)
    seconds = (v - _EPOCH) // timedelta(seconds=1)
    if seconds < 0:
        raise CodecError("timestamp before the epoch cannot be encoded")
    out += _T_T.pack(b"T", seconds)


def _enc_bytes_x(out: bytearray, v: object) -> None:
    raw = bytes(v)  # type: ignore[call-overload]
    out += _T_len.pack(b"x", len(raw))
    out += raw


def _enc_bytes_S(out: bytearray, v: bytes) -> None:
    out += _T_len.pack(b"S", len(v))
    out += v


def _enc_table(out: bytearray, v: dict, depth: int) -> None:
    out += b"F"
    _write_table(out, v, depth + 1)


def _enc_array(out: bytearray, v: list | tuple, depth: int) -> None:
    out += b"A"
    _write_array(out, v, depth + 1)


# Exact-type dispatch keeps the common case a single dict lookup; entries
# taking ``depth`` are the containers.
_SIMPLE_ENCODERS = {
    str: _enc_str,
    int: _enc_int,
    bytes: _enc_bytes_S,
    bytearray: _enc_bytes_x,
    memoryview: _enc_bytes_x,
    Decimal: _enc_decimal,
    datetime: _enc_datetime,
}


def _write_value(out: bytearray, v: object, depth: int) -> None:
    t = v.__class__
    enc = _SIMPLE_ENCODERS.get(t)
    try:
        if enc is not None:
            enc(out, v)
        elif t is bool:
            out += b"t\x01" if v else b"t\x00"
        elif v is None:
            out += b"V"
        elif t is dict:
            _enc_table(out, v, depth)  # type: ignore[arg-type]
        elif t is list or t is tuple:
            _enc_array(out, v, depth)  # type: ignore[arg-type]
        elif t is float:
            out += _T_d.pack(b"d", v)
        elif t is Int8:
            out += _T_b.pack(b"b", v)
        elif t is UInt8:
            out += _T_B.pack(b"B", v)
        elif t is Int16:
            out += _T_s.pack(b"s", v)
        elif t is UInt16:
            out += _T_u.pack(b"u", v)
        elif t is UInt32:
            out += _T_i.pack(b"i", v)
        elif t is Int64:
            out += _T_l.pack(b"l", v)
        elif t is Int64L:
            out += _T_l.pack(b"L", v)
        elif t is Timestamp:
            out += _T_T.pack(b"T", v)
        elif t is Float32:
            out += _T_f.pack(b"f", v)
        # Foreign subclasses (IntEnum, OrderedDict, str enums, ...): fall back
        # to the nearest builtin behaviour.
        elif isinstance(v, bool):
            out += b"t\x01" if v else b"t\x00"
        elif isinstance(v, int):
            _enc_int(out, int(v))
        elif isinstance(v, float):
            out += _T_d.pack(b"d", v)
        elif isinstance(v, str):
            _enc_str(out, str(v))
        elif isinstance(v, bytes):
            _enc_bytes_S(out, bytes(v))
        elif isinstance(v, dict):
            _enc_table(out, v, depth)
        elif isinstance(v, (list, tuple)):
            _enc_array(out, v, depth)
        elif isinstance(v, Decimal):
            _enc_decimal(out, v)
        elif isinstance(v, datetime):
            _enc_datetime(out, v)
        else:
            raise CodecError(f"cannot encode {t.__name__} as a field value")
    except (struct.error, OverflowError, ValueError) as exc:
        raise CodecError(f"cannot encode field value {v!r}: {exc}") from exc


def _write_table(out: bytearray, table: dict, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CodecError("field table nested too deeply")
    start = len(out)
    out += _EMPTY_TABLE
    for key, value in table.items():
        raw = _key_bytes(key)
        out.append(len(raw))
        out += raw
        _write_value(out, value, depth)
    _I.pack_into(out, start, len(out) - start - 4)


def _write_array(out: bytearray, items: list | tuple, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CodecError("field array nested too deeply")
    start = len(out)
    out += _EMPTY_TABLE
    for value in items:
        _write_value(out, value, depth)
    _I.pack_into(out, start, len(out) - start - 4)


def encode_table(d: dict | None) -> bytes:
    """Encode a field table, including its 4-byte length; ``None`` is the empty table."""
    if not d:
        if d is None or isinstance(d, dict):
            return _EMPTY_TABLE
        raise CodecError(f"field table must be a dict, not {type(d).__name__}")
    if not isinstance(d, dict):
        raise CodecError(f"field table must be a dict, not {type(d).__name__}")
    out = bytearray()
    _write_table(out, d, 1)
    return bytes(out)


def encode_array(items: list | tuple) -> bytes:
    """Encode a field array, including its 4-byte length."""
    if not isinstance(items, (list, tuple)):
        raise CodecError(f"field array must be a list or tuple, not {type(items).__name__}")
    out = bytearray()
    _write_array(out, items, 1)
    return bytes(out)


def encode_value(value: object) -> bytes:
    """Encode one tagged field value (type letter + payload)."""
    out = bytearray()
    _write_value(out, value, 1)
    return bytes(out)


# ---------------------------------------------------------------- decoding

_TAG_t = ord("t")
_TAG_b = ord("b")
_TAG_B = ord("B")
_TAG_s = ord("s")
_TAG_u = ord("u")
_TAG_I = ord("I")
_TAG_i = ord("i")
_TAG_l = ord("l")
_TAG_L = ord("L")
_TAG_f = ord("f")
_TAG_d = ord("d")
_TAG_D = ord("D")
_TAG_S = ord("S")
_TAG_x = ord("x")
_TAG_A = ord("A")
_TAG_T = ord("T")
_TAG_F = ord("F")
_TAG_V = ord("V")


def _read_value(buf: bytes, offset: int, limit: int, depth: int):
    """Decode one tagged value; ``limit`` bounds variable-length payloads.

    ``buf`` must be ``bytes`` here (public entry points convert once), so
    slices are bytes that decode directly and need no further copy.

    Fixed-width reads may run past ``limit`` (never past the buffer, struct
    guards that); callers check the returned offset against their limit.
    """
    tag = buf[offset]
    offset += 1
    if tag == _TAG_S:
        (n,) = _I.unpack_from(buf, offset)
        offset += 4
        end = offset + n
        if end > limit:
            raise CodecError("truncated string field value")
        raw = buf[offset:end]
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError:
            return raw, end
    if tag == _TAG_I:
        return _i.unpack_from(buf, offset)[0], offset + 4
    if tag == _TAG_t:
        return buf[offset] != 0, offset + 1
    if tag == _TAG_F:
        return _read_table(buf, offset, depth + 1)
    if tag == _TAG_l:
        return Int64(_q.unpack_from(buf, offset)[0]), offset + 8
    if tag == _TAG_A:
        return _read_array(buf, offset, depth + 1)
    if tag == _TAG_L:
        return Int64L(_q.unpack_from(buf, offset)[0]), offset + 8
    if tag == _TAG_V:
        return None, offset
    if tag == _TAG_T:
        (v,) = _Q.unpack_from(buf, offset)
        if v <= _MAX_DATETIME_SECONDS:
            return _EPOCH + timedelta(seconds=v), offset + 8
        return Timestamp(v), offset + 8
    if tag == _TAG_d:
        return _d.unpack_from(buf, offset)[0], offset + 8
    if tag == _TAG_x:
        (n,) = _I.unpack_from(buf, offset)
        offset += 4
        end = offset + n
        if end > limit:
            raise CodecError("truncated byte-array field value")
        return bytearray(buf[offset:end]), end
    if tag == _TAG_b:
        return Int8(_b.unpack_from(buf, offset)[0]), offset + 1
    if tag == _TAG_B:
        return UInt8(buf[offset]), offset + 1
    if tag == _TAG_s:
        return Int16(_h.unpack_from(buf, offset)[0]), offset + 2
    if tag == _TAG_u:
        return UInt16(_H.unpack_from(buf, offset)[0]), offset + 2
    if tag == _TAG_i:
        return UInt32(_I.unpack_from(buf, offset)[0]), offset + 4
    if tag == _TAG_f:
        return Float32(_f.unpack_from(buf, offset)[0]), offset + 4
    if tag == _TAG_D:
        scale, value = _Bi.unpack_from(buf, offset)
        sign = 1 if value < 0 else 0
        digits = tuple(map(int, str(-value if sign else value)))
        return Decimal((sign, digits, -scale)), offset + 5
    raise CodecError(f"unknown field value type {chr(tag)!r}")


def _read_table(buf, offset: int, depth: int) -> tuple[dict, int]:
    if depth > MAX_DEPTH:
        raise CodecError("field table nested too deeply")
    (size,) = _I.unpack_from(buf, offset)
    offset += 4
    end = offset + size
    if end > len(buf):
        raise CodecError("truncated field table")
    result: dict = {}
    while offset < end:
        n = buf[offset]
        offset += 1
        key_end = offset + n
        if key_end >= end:
            raise CodecError("truncated field table key")
        key = buf[offset:key_end].decode("utf-8", "surrogateescape")
        result[key], offset = _read_value(buf, key_end, end, depth)
    if offset != end:
        raise CodecError("field table length mismatch")
    return result, offset


def _read_array(buf, offset: int, depth: int) -> tuple[list, int]:
    if depth > MAX_DEPTH:
        raise CodecError("field array nested too deeply")
    (size,) = _I.unpack_from(buf, offset)
    offset += 4
    end = offset + size
    if end > len(buf):
        raise CodecError("truncated field array")
    result: list = []
    append = result.append
    while offset < end:
        value, offset = _read_value(buf, offset, end, depth)
        append(value)
    if offset != end:
        raise CodecError("field array length mismatch")
    return result, offset


def decode_table(buf: bytes | memoryview, offset: int = 0) -> tuple[dict, int]:
    """Decode a length-prefixed field table at ``offset``; returns (dict, new offset)."""
    if buf.__class__ is not bytes:
        buf = as_bytes(buf)
    try:
        return _read_table(buf, offset, 1)
    except CodecError:
        raise
    except _DECODE_ERRORS as exc:
        raise CodecError(f"malformed field table: {exc}") from None


def decode_array(buf: bytes | memoryview, offset: int = 0) -> tuple[list, int]:
    """Decode a length-prefixed field array at ``offset``; returns (list, new offset)."""
    if buf.__class__ is not bytes:
        buf = as_bytes(buf)
    try:
        return _read_array(buf, offset, 1)
    except CodecError:
        raise
    except _DECODE_ERRORS as exc:
        raise CodecError(f"malformed field array: {exc}") from None


def decode_value(buf: bytes | memoryview, offset: int = 0) -> tuple[object, int]:
    """Decode one tagged field value at ``offset``; returns (value, new offset)."""
    if buf.__class__ is not bytes:
        buf = as_bytes(buf)
    try:
        return _read_value(buf, offset, len(buf), 1)
    except CodecError:
        raise
    except _DECODE_ERRORS as exc:
        raise CodecError(f"malformed field value: {exc}") from None
