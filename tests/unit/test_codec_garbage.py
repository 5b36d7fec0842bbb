"""Garbage-input invariant: every decoder either decodes or raises CodecError.

Anything else (IndexError, struct.error, UnicodeDecodeError, RecursionError,
...) escaping from the codec would crash a connection handler instead of
closing the connection with FRAME_ERROR, so it is a bug.
"""

import random
import struct

import pytest

from minimq.codec import CodecError, spec
from minimq.codec.frames import FrameParser, encode_frame
from minimq.codec.properties import (
    BasicProperties,
    decode_headers_only,
    delivery_mode_of,
    parse_content_header,
)
from minimq.codec.values import decode_array, decode_table, decode_value, encode_table

SEED = 0xA11CE
ROUNDS = 3000


def _valid_tables() -> list[bytes]:
    from datetime import datetime, timezone
    from decimal import Decimal

    from minimq.codec.values import Float32, Int8, Int16, UInt8, UInt16, UInt32

    return [
        encode_table({"a": 1, "b": "s", "c": [1, 2, {"d": None}], "e": True}),
        encode_table({"x-death": [{"count": 2**40, "reason": "expired", "t": datetime(2020, 1, 1, tzinfo=timezone.utc)}]}),
        encode_table({"n": Int8(-1), "m": UInt8(2), "o": Int16(3), "p": UInt16(4), "q": UInt32(5),
                      "f": Float32(0.5), "d": 1.25, "dec": Decimal("1.23"), "x": bytearray(b"\x00\x01"),
                      "raw": b"\xff"}),
        encode_table({}),
    ]


def _valid_methods() -> list[bytes]:
    out = []
    for cls in spec.METHODS.values():
        kwargs = {}
        for name in cls.__slots__:
            default = getattr(cls(), name)
            if isinstance(default, bool):
                kwargs[name] = True
            elif isinstance(default, int):
                kwargs[name] = 7
            elif isinstance(default, str):
                kwargs[name] = name
            elif isinstance(default, bytes):
                kwargs[name] = b"\x00" + name.encode()
            else:
                kwargs[name] = {"k": [1, "v", {"z": None}]}
        out.append(cls(**kwargs).encode())
    return out


def _valid_properties() -> list[bytes]:
    return [
        BasicProperties().encode(),
        BasicProperties(content_type="a", headers={"h": [1, "x"]}, delivery_mode=2, timestamp=5,
                        cluster_id="c").encode(),
        BasicProperties(content_encoding="gz", headers={}, priority=3, app_id="app").encode(),
    ]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 1 and buf:
            del buf[rng.randrange(len(buf)) :]
        elif op == 2:
            pos = rng.randrange(len(buf) + 1)
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and buf:
            pos = rng.randrange(len(buf))
            del buf[pos : pos + rng.randint(1, 8)]
        elif op == 4 and buf:
            buf[rng.randrange(len(buf))] = rng.choice((0x00, 0xFF, 0x7F, 0x80))
        elif op == 5 and len(buf) >= 4:
            # Corrupt something that looks like a length prefix.
            pos = rng.randrange(len(buf) - 3)
            buf[pos : pos + 4] = struct.pack(">I", rng.choice((0, 1, 0xFFFFFFFF, rng.randrange(1 << 32))))
    return bytes(buf)


def _random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))


def _check(fn, data) -> None:
    try:
        fn(data)
    except CodecError:
        pass


@pytest.fixture(scope="module")
def corpora():
    return {"tables": _valid_tables(), "methods": _valid_methods(), "props": _valid_properties()}


def test_decode_method_garbage(corpora):
    rng = random.Random(SEED)
    indexes = list(spec.METHODS)
    for _ in range(ROUNDS):
        _check(spec.decode_method, _random_bytes(rng))
        # Random arguments behind a valid class/method id reach the field decoders.
        _check(spec.decode_method, struct.pack(">I", rng.choice(indexes)) + _random_bytes(rng))
        _check(spec.decode_method, _mutate(rng, rng.choice(corpora["methods"])))
    for payload in corpora["methods"]:
        _check(spec.decode_method, memoryview(_mutate(rng, payload)))


def test_table_garbage(corpora):
    rng = random.Random(SEED + 1)
    for _ in range(ROUNDS):
        data = _random_bytes(rng)
        _check(lambda d: decode_table(d, 0), data)
        _check(lambda d: decode_array(d, 0), data)
        _check(lambda d: decode_value(d, 0), data)
        mutated = _mutate(rng, rng.choice(corpora["tables"]))
        _check(lambda d: decode_table(d, 0), mutated)
        _check(lambda d: decode_table(memoryview(d), 0), mutated)
        # Tag-heavy garbage: a table body made of type letters hits every branch.
        body = bytes(rng.choice(b"tbBsuIilfdDSxATFVZ\x01\x00") for _ in range(rng.randint(0, 40)))
        _check(lambda d: decode_table(d, 0), struct.pack(">I", len(body)) + body)
        _check(lambda d: decode_table(d, 0), struct.pack(">I", len(body)) + b"\x01k" + body)


def test_properties_garbage(corpora):
    rng = random.Random(SEED + 2)
    for _ in range(ROUNDS):
        for data in (_random_bytes(rng), _mutate(rng, rng.choice(corpora["props"]))):
            _check(BasicProperties.decode, data)
            _check(decode_headers_only, data)
            _check(delivery_mode_of, data)
            _check(parse_content_header, data)
            _check(parse_content_header, b"\x00\x3c\x00\x00" + bytes(8) + data)


def test_frame_parser_garbage(corpora):
    rng = random.Random(SEED + 3)
    valid_stream = b"".join(encode_frame(1, i, p) for i, p in enumerate(corpora["methods"]))
    for _ in range(ROUNDS // 3):
        parser = FrameParser(frame_max=rng.choice((0, 4096, 131072)))
        data = _mutate(rng, valid_stream) if rng.random() < 0.7 else _random_bytes(rng)
        pos = 0
        try:
            while pos < len(data):
                step = rng.randint(1, 300)
                for frame_type, channel, payload in parser.feed(data[pos : pos + step]):
                    # Frame types are judged by the protocol layer, not the parser.
                    assert 0 <= frame_type <= 255
                    if frame_type == 1:
                        _check(spec.decode_method, payload)
                pos += step
        except CodecError:
            pass


def test_deep_nesting_garbage():
    # A long run of nested empty-ish arrays must not blow the Python stack.
    for depth in (63, 64, 65, 500, 5000):
        wire = b"V"
        for _ in range(depth):
            wire = b"A" + struct.pack(">I", len(wire)) + wire
        _check(lambda d: decode_value(d, 0), wire)
        table = b"\x01k" + wire
        _check(lambda d: decode_table(d, 0), struct.pack(">I", len(table)) + table)
