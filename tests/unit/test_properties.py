"""Basic properties and content-header payloads."""

import struct

import pytest

from minimq.codec import CodecError
from minimq.codec.properties import (
    PROPERTY_NAMES,
    BasicProperties,
    decode_headers_only,
    delivery_mode_of,
    encode_content_header,
    parse_content_header,
)
from minimq.codec.values import Int64, encode_table

FULL = BasicProperties(
    content_type="application/json",
    content_encoding="gzip",
    headers={"x-match": "all", "n": 1, "l": [1, "a"], "big": Int64(3)},
    delivery_mode=2,
    priority=9,
    correlation_id="corr",
    reply_to="amq.rabbitmq.reply-to",
    expiration="60000",
    message_id="mid",
    timestamp=1700000000,
    type="kind",
    user_id="guest",
    app_id="app",
    cluster_id="cl",
)


def test_field_order():
    assert BasicProperties.__slots__ == PROPERTY_NAMES
    assert PROPERTY_NAMES[0] == "content_type" and PROPERTY_NAMES[-1] == "cluster_id"


def test_full_round_trip():
    raw = FULL.encode()
    assert raw[:2] == b"\xff\xfc"  # all 14 flags, no continuation
    back = BasicProperties.decode(raw)
    assert back == FULL
    assert back.encode() == raw
    assert BasicProperties.decode(memoryview(b"xx" + raw), 2) == FULL


def test_empty_and_single():
    assert BasicProperties().encode() == b"\x00\x00"
    assert BasicProperties.decode(b"\x00\x00") == BasicProperties()
    assert BasicProperties(content_type="text/plain").encode() == b"\x80\x00\x0atext/plain"
    assert BasicProperties(delivery_mode=2).encode() == b"\x10\x00\x02"
    assert BasicProperties(timestamp=1).encode() == b"\x00\x40" + struct.pack(">Q", 1)
    assert BasicProperties(cluster_id="c").encode() == b"\x00\x04\x01c"
    # An empty-but-present headers table is distinct from absent headers.
    raw = BasicProperties(headers={}).encode()
    assert raw == b"\x20\x00\x00\x00\x00\x00"
    assert BasicProperties.decode(raw).headers == {}


@pytest.mark.parametrize("name", PROPERTY_NAMES)
def test_each_property_alone(name):
    props = BasicProperties(**{name: getattr(FULL, name)})
    back = BasicProperties.decode(props.encode())
    assert back == props
    assert all(getattr(back, n) is None for n in PROPERTY_NAMES if n != name)


def test_continuation_flag_words():
    # First word with continuation bit, then an all-clear second word.
    raw = b"\x80\x01\x00\x00\x01a"
    assert BasicProperties.decode(raw) == BasicProperties(content_type="a")
    with pytest.raises(CodecError):
        BasicProperties.decode(b"\x00\x01\x80\x00")  # unknown 15th+ property
    with pytest.raises(CodecError):
        BasicProperties.decode(b"\x00\x02")  # unknown flag bit 1
    with pytest.raises(CodecError):
        BasicProperties.decode(b"\x00\x01")  # continuation with no next word


def test_truncated_properties():
    raw = FULL.encode()
    for cut in range(len(raw)):
        with pytest.raises(CodecError):
            BasicProperties.decode(raw[:cut])


def test_encode_errors():
    for bad in (BasicProperties(delivery_mode=256), BasicProperties(priority=-1),
                BasicProperties(content_type="x" * 256), BasicProperties(timestamp=-1),
                BasicProperties(headers={"a": object()})):
        with pytest.raises(CodecError):
            bad.encode()


def test_repr():
    assert repr(BasicProperties(delivery_mode=2)) == "BasicProperties(delivery_mode=2)"


def test_content_header_helpers():
    payload = encode_content_header(5, FULL)
    assert payload[:12] == b"\x00\x3c\x00\x00" + struct.pack(">Q", 5)
    class_id, size, raw = parse_content_header(payload)
    assert (class_id, size) == (60, 5)
    assert type(raw) is bytes
    assert BasicProperties.decode(raw) == FULL
    # Pre-encoded bytes pass straight through.
    assert encode_content_header(5, raw) == payload
    assert encode_content_header(0, None) == b"\x00\x3c\x00\x00" + b"\x00" * 8 + b"\x00\x00"
    assert encode_content_header(1, BasicProperties(), class_id=70)[:2] == b"\x00\x46"
    mv = parse_content_header(memoryview(payload))[2]
    assert bytes(mv) == raw
    with pytest.raises(CodecError):
        parse_content_header(payload[:13])
    with pytest.raises(CodecError):
        encode_content_header(-1, b"\x00\x00")


def test_headers_only_and_delivery_mode_fast_paths():
    cases = [
        FULL,
        BasicProperties(),
        BasicProperties(headers={"a": 1}),
        BasicProperties(delivery_mode=1),
        BasicProperties(content_type="t", delivery_mode=2),
        BasicProperties(content_encoding="e", headers={"h": [1, {"x": None}]}, delivery_mode=2, priority=1),
        BasicProperties(content_type="t", content_encoding="e", headers={}, priority=3),
    ]
    for props in cases:
        raw = props.encode()
        assert decode_headers_only(raw) == props.headers
        assert delivery_mode_of(raw) == props.delivery_mode
        assert delivery_mode_of(memoryview(raw)) == props.delivery_mode


def test_fast_paths_reject_garbage():
    headers_missing = b"\x20\x00\x00\x00\x00\x09"
    with pytest.raises(CodecError):
        decode_headers_only(headers_missing)
    with pytest.raises(CodecError):
        delivery_mode_of(b"\x30\x00" + encode_table({"a": 1}))  # mode flag, no octet
    with pytest.raises(CodecError):
        delivery_mode_of(b"\x90\x00\x05ab")
    with pytest.raises(CodecError):
        decode_headers_only(b"\x00")
