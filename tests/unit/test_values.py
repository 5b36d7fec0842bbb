"""Field-table codec: byte-exact round trips for every RabbitMQ type letter."""

import struct
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from minimq.codec import CodecError
from minimq.codec.values import (
    MAX_DEPTH,
    Float32,
    Int8,
    Int16,
    Int64,
    Timestamp,
    UInt8,
    UInt16,
    UInt32,
    decode_array,
    decode_longstr,
    decode_shortstr,
    decode_table,
    decode_value,
    encode_array,
    encode_longstr,
    encode_shortstr,
    encode_table,
    encode_value,
)


def table_bytes(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack(">I", len(body)) + body


def entry(key: bytes, value: bytes) -> bytes:
    return bytes((len(key),)) + key + value


def longstr_value(text: str) -> bytes:
    raw = text.encode()
    return b"S" + struct.pack(">I", len(raw)) + raw


UTC = timezone.utc

# (wire bytes of one tagged value, expected decoded value, expected exact type)
CASES = [
    (b"t\x01", True, bool),
    (b"t\x00", False, bool),
    (b"b\xff", -1, Int8),
    (b"B\xff", 255, UInt8),
    (b"s\x80\x00", -32768, Int16),
    (b"u\xff\xff", 65535, UInt16),
    (b"I\xff\xff\xff\xfe", -2, int),
    (b"i\xff\xff\xff\xff", 4294967295, UInt32),
    (b"l\x00\x00\x00\x00\x00\x00\x00\x05", 5, Int64),
    (b"l\x80\x00\x00\x00\x00\x00\x00\x00", -(2**63), Int64),
    (b"f" + struct.pack(">f", 1.5), 1.5, Float32),
    (b"d" + struct.pack(">d", -2.25), -2.25, float),
    (b"D\x02\x00\x00\x01\x3b", Decimal("3.15"), Decimal),
    (b"D\x03\xff\xff\xff\xfe", Decimal("-0.002"), Decimal),
    (b"D\x00\x00\x00\x00\x00", Decimal("0"), Decimal),
    (b"S\x00\x00\x00\x06h\xc3\xa9llo", "h\u00e9llo", str),
    (b"S\x00\x00\x00\x02\xff\xfe", b"\xff\xfe", bytes),
    (b"S\x00\x00\x00\x00", "", str),
    (b"x\x00\x00\x00\x03\x00\x01\x02", bytearray(b"\x00\x01\x02"), bytearray),
    (b"T\x00\x00\x00\x00\x5f\x5e\x10\x00", datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC), datetime),
    (b"T\xff\xff\xff\xff\xff\xff\xff\xff", 2**64 - 1, Timestamp),
    (b"V", None, type(None)),
    (b"A\x00\x00\x00\x00", [], list),
    (b"F\x00\x00\x00\x00", {}, dict),
    (b"A\x00\x00\x00\x06I\x00\x00\x00\x01V", [1, None], list),
]


@pytest.mark.parametrize("wire,expected,typ", CASES, ids=[c[0][:1].decode() + str(i) for i, c in enumerate(CASES)])
def test_every_type_round_trips_byte_exactly(wire, expected, typ):
    value, end = decode_value(wire, 0)
    assert end == len(wire)
    assert type(value) is typ
    assert value == expected
    assert encode_value(value) == wire
    # Same value inside a table and an array.
    table = table_bytes(entry(b"k", wire))
    decoded, end = decode_table(table, 0)
    assert end == len(table) and decoded == {"k": expected}
    assert encode_table(decoded) == table
    array = table_bytes(wire, wire)
    items, end = decode_array(array, 0)
    assert items == [expected, expected]
    assert encode_array(items) == array


def test_decimal_scale_preserved():
    for text in ["1.50", "1.5", "-7", "0.000", "2147483647", "-2147483648", "1E+3"]:
        d = Decimal(text)
        wire = encode_value(d)
        back, _ = decode_value(wire)
        assert back == d
        assert encode_value(back) == wire
    assert encode_value(Decimal("1.50")) == b"D\x02\x00\x00\x00\x96"
    assert encode_value(Decimal("1E+3")) == b"D\x00\x00\x00\x03\xe8"


@pytest.mark.parametrize("bad", ["2147483648", "1E+20", "NaN", "Infinity", "1E-300", "12345678901"])
def test_decimal_out_of_range(bad):
    with pytest.raises(CodecError):
        encode_value(Decimal(bad))


def test_python_type_default_encodings():
    assert encode_value(True) == b"t\x01"
    assert encode_value(7) == b"I\x00\x00\x00\x07"
    assert encode_value(-(2**31)) == b"I\x80\x00\x00\x00"
    assert encode_value(2**31) == b"l\x00\x00\x00\x00\x80\x00\x00\x00"
    assert encode_value(1.0) == b"d" + struct.pack(">d", 1.0)
    assert encode_value(Float32(1.0)) == b"f" + struct.pack(">f", 1.0)
    assert encode_value("ab") == b"S\x00\x00\x00\x02ab"
    assert encode_value(b"ab") == b"S\x00\x00\x00\x02ab"
    assert encode_value(bytearray(b"ab")) == b"x\x00\x00\x00\x02ab"
    assert encode_value(memoryview(b"ab")) == b"x\x00\x00\x00\x02ab"
    assert encode_value(None) == b"V"
    assert encode_value((1,)) == b"A\x00\x00\x00\x05I\x00\x00\x00\x01"
    assert encode_value(Timestamp(5)) == b"T\x00\x00\x00\x00\x00\x00\x00\x05"
    assert encode_value(datetime(1970, 1, 1, 0, 0, 10)) == b"T" + struct.pack(">Q", 10)
    aware = datetime(1970, 1, 1, 1, 0, 10, tzinfo=timezone(timedelta(hours=1)))
    assert encode_value(aware) == b"T" + struct.pack(">Q", 10)


def test_int_subclass_falls_back():
    import enum

    class Color(enum.IntEnum):
        RED = 3

    assert encode_value(Color.RED) == b"I\x00\x00\x00\x03"


@pytest.mark.parametrize(
    "bad", [2**63, -(2**63) - 1, Int8(200), UInt8(-1), UInt16(70000), UInt32(-1), object(), {1, 2},
            datetime(1960, 1, 1, tzinfo=UTC), "\ud800"]
)
def test_unencodable_values(bad):
    with pytest.raises(CodecError):
        encode_value(bad)


def test_table_keys():
    assert encode_table({"k\u00e9": 1}) == table_bytes(entry("k\u00e9".encode(), b"I\x00\x00\x00\x01"))
    with pytest.raises(CodecError):
        encode_table({"x" * 256: 1})
    with pytest.raises(CodecError):
        encode_table({1: 1})
    assert encode_table(None) == b"\x00\x00\x00\x00"
    assert encode_table({}) == b"\x00\x00\x00\x00"
    with pytest.raises(CodecError):
        encode_table([1])  # type: ignore[arg-type]


def test_pika_style_client_properties():
    # What pika sends in connection.start-ok client_properties (abridged),
    # assembled by hand from the wire grammar.
    caps = table_bytes(
        entry(b"authentication_failure_close", b"t\x01"),
        entry(b"basic.nack", b"t\x01"),
        entry(b"connection.blocked", b"t\x01"),
        entry(b"consumer_cancel_notify", b"t\x01"),
        entry(b"publisher_confirms", b"t\x01"),
    )
    wire = table_bytes(
        entry(b"product", longstr_value("Pika Python Client Library")),
        entry(b"platform", longstr_value("Python 3.11.7")),
        entry(b"capabilities", b"F" + caps),
        entry(b"information", b"S\x00\x00\x00\x18See http://pika.rtfd.org"),
        entry(b"version", b"S\x00\x00\x00\x051.3.2"),
    )
    decoded, end = decode_table(wire, 0)
    assert end == len(wire)
    assert decoded["capabilities"]["basic.nack"] is True
    assert decoded["version"] == "1.3.2"
    assert decoded["product"] == "Pika Python Client Library"
    assert list(decoded) == ["product", "platform", "capabilities", "information", "version"]
    assert encode_table(decoded) == wire


def test_nested_arrays_and_tables_like_rabbitmq_headers():
    # x-death style header: array of tables with arrays inside.
    death = table_bytes(
        entry(b"count", b"l\x00\x00\x00\x00\x00\x00\x00\x01"),
        entry(b"reason", b"S\x00\x00\x00\x08rejected"),
        entry(b"queue", b"S\x00\x00\x00\x01q"),
        entry(b"time", b"T\x00\x00\x00\x00\x65\x00\x00\x00"),
        entry(b"routing-keys", b"A" + table_bytes(b"S\x00\x00\x00\x02rk", b"S\x00\x00\x00\x03rk2")),
    )
    wire = table_bytes(entry(b"x-death", b"A" + table_bytes(b"F" + death, b"F" + death)))
    decoded, _ = decode_table(wire, 0)
    first = decoded["x-death"][0]
    assert first["routing-keys"] == ["rk", "rk2"]
    assert type(first["count"]) is Int64
    assert first["time"].tzinfo is not None
    assert encode_table(decoded) == wire


def test_decode_at_offset_and_memoryview():
    wire = b"junk" + encode_table({"a": "b", "n": [1, 2]}) + b"tail"
    for buf in (wire, memoryview(wire)):
        value, end = decode_table(buf, 4)
        assert value == {"a": "b", "n": [1, 2]}
        assert wire[end:] == b"tail"


def test_depth_limit():
    nested: dict = {}
    cur = nested
    for _ in range(MAX_DEPTH + 5):
        cur["n"] = {}
        cur = cur["n"]
    with pytest.raises(CodecError):
        encode_table(nested)
    cyclic: dict = {}
    cyclic["self"] = cyclic
    with pytest.raises(CodecError):
        encode_table(cyclic)
    # Hand-built deep wire data.
    wire = b"V"
    for _ in range(MAX_DEPTH + 5):
        wire = b"A" + table_bytes(wire)
    with pytest.raises(CodecError):
        decode_value(wire)
    ok: dict = {}
    cur = ok
    for _ in range(MAX_DEPTH - 2):
        cur["n"] = {}
        cur = cur["n"]
    assert decode_table(encode_table(ok), 0)[0] == ok


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x00\x00",
        b"\x00\x00\x00\x05\x01a",  # claims more than present
        b"\x00\x00\x00\x03\x01aZ",  # unknown type tag
        b"\x00\x00\x00\x02\x01a",  # key without value
        b"\x00\x00\x00\x04\x01aI\x00",  # value overruns table
        b"\x00\x00\x00\x08\x01aS\x00\x00\x00\x09",  # string overruns
        b"\x00\x00\x00\x05\x01aI\x00\x00\x00\x00\x00\x00",  # length mismatch
    ],
)
def test_malformed_tables(wire):
    with pytest.raises(CodecError):
        decode_table(wire, 0)


def test_value_cannot_overrun_enclosing_table():
    inner = b"\x01aI\x00\x00\x00\x01"
    wire = struct.pack(">I", len(inner) - 2) + inner
    with pytest.raises(CodecError):
        decode_table(wire, 0)


def test_strings_helpers():
    assert encode_shortstr("abc") == b"\x03abc"
    assert encode_shortstr(b"abc") == b"\x03abc"
    assert decode_shortstr(b"x\x03abcz", 1) == ("abc", 5)
    raw = b"\x02\xff\xfe"
    s, _ = decode_shortstr(raw, 0)
    assert encode_shortstr(s) == raw
    with pytest.raises(CodecError):
        encode_shortstr("a" * 256)
    encode_shortstr("a" * 255)
    with pytest.raises(CodecError):
        decode_shortstr(b"\x05ab", 0)
    with pytest.raises(CodecError):
        decode_shortstr(b"", 0)
    with pytest.raises(CodecError):
        encode_shortstr(None)  # type: ignore[arg-type]
    assert encode_longstr(b"ab") == b"\x00\x00\x00\x02ab"
    assert encode_longstr("\u00e9") == b"\x00\x00\x00\x02\xc3\xa9"
    assert decode_longstr(memoryview(b"\x00\x00\x00\x02ab"), 0) == (b"ab", 6)
    with pytest.raises(CodecError):
        decode_longstr(b"\x00\x00\x00\x09ab", 0)
    with pytest.raises(CodecError):
        decode_longstr(b"\x00\x00", 0)
