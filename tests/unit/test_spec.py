"""Generated method classes: names, metadata, wire format, round trips."""

import inspect
import struct

import pytest

from minimq.codec import CodecError, UnknownMethod, spec
from minimq.codec.spec import METHODS, decode_method

REQUIRED = """
ConnectionStart ConnectionStartOk ConnectionSecure ConnectionSecureOk ConnectionTune
ConnectionTuneOk ConnectionOpen ConnectionOpenOk ConnectionClose ConnectionCloseOk
ConnectionBlocked ConnectionUnblocked ChannelOpen ChannelOpenOk ChannelFlow ChannelFlowOk
ChannelClose ChannelCloseOk ExchangeDeclare ExchangeDeclareOk ExchangeDelete ExchangeDeleteOk
ExchangeBind ExchangeBindOk ExchangeUnbind ExchangeUnbindOk QueueDeclare QueueDeclareOk
QueueBind QueueBindOk QueueUnbind QueueUnbindOk QueuePurge QueuePurgeOk QueueDelete
QueueDeleteOk BasicQos BasicQosOk BasicConsume BasicConsumeOk BasicCancel BasicCancelOk
BasicPublish BasicReturn BasicDeliver BasicGet BasicGetOk BasicGetEmpty BasicAck BasicReject
BasicRecoverAsync BasicRecover BasicRecoverOk BasicNack TxSelect TxSelectOk TxCommit
TxCommitOk TxRollback TxRollbackOk ConfirmSelect ConfirmSelectOk
""".split()


def sample_args(cls, seed: int = 1) -> dict:
    """Non-default values for every field, derived from the __init__ hints."""
    args = {}
    for i, (name, param) in enumerate(inspect.signature(cls.__init__).parameters.items()):
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        hint = param.annotation
        n = seed + i
        if hint == "int":
            args[name] = n % 250 + 1
        elif hint == "bool":
            args[name] = (n % 2) == 1
        elif hint == "str":
            args[name] = f"{name}-\u00e9-{n}"
        elif hint == "bytes":
            args[name] = b"\x00\xff" + name.encode()
        elif hint == "dict | None":
            args[name] = {"k": n, "nested": {"s": name, "l": [1, "two"]}}
        else:  # pragma: no cover
            raise AssertionError(f"unexpected hint {hint!r}")
    return args


def test_required_names_exist():
    for name in REQUIRED:
        cls = getattr(spec, name)
        assert METHODS[cls.INDEX] is cls
        assert cls.INDEX == (cls.CLASS_ID << 16) | cls.METHOD_ID
    assert not any(c.NAME.startswith("access.") for c in METHODS.values())


def test_metadata():
    assert spec.BasicPublish.NAME == "basic.publish"
    assert spec.BasicPublish.HAS_CONTENT and not spec.BasicPublish.SYNCHRONOUS
    content = {c.NAME for c in METHODS.values() if c.HAS_CONTENT}
    assert content == {"basic.publish", "basic.return", "basic.deliver", "basic.get-ok"}
    assert spec.QueueDeclare.SYNCHRONOUS
    assert spec.QueueDeclare.RESPONSES == (spec.QueueDeclareOk,)
    assert spec.BasicGet.RESPONSES == (spec.BasicGetOk, spec.BasicGetEmpty)
    assert spec.BasicAck.RESPONSES == ()
    assert spec.ConnectionBlocked.INDEX == (10 << 16) | 60
    assert spec.ConnectionUnblocked.INDEX == (10 << 16) | 61
    assert spec.ExchangeUnbindOk.METHOD_ID == 51
    assert spec.ConfirmSelect.CLASS_ID == 85


def test_attribute_names_and_order():
    assert spec.BasicQos.__slots__ == ("prefetch_size", "prefetch_count", "global_")
    assert spec.ConnectionClose.__slots__ == ("reply_code", "reply_text", "class_id", "method_id")
    assert spec.BasicConsume.__slots__ == (
        "reserved_1", "queue", "consumer_tag", "no_local", "no_ack", "exclusive", "no_wait", "arguments",
    )
    m = spec.QueueDelete(0, "q", True, False, True)
    assert (m.queue, m.if_unused, m.if_empty, m.no_wait) == ("q", True, False, True)


def test_defaults():
    m = spec.ExchangeDeclare()
    assert (m.reserved_1, m.exchange, m.type, m.durable, m.arguments) == (0, "", "", False, None)
    assert spec.ConnectionStart().mechanisms == b""
    assert spec.ConnectionTune().frame_max == 0
    assert spec.ChannelOpenOk().reserved_1 == b""


def test_constants():
    assert (spec.FRAME_METHOD, spec.FRAME_HEADER, spec.FRAME_BODY, spec.FRAME_HEARTBEAT) == (1, 2, 3, 8)
    assert (spec.FRAME_MIN_SIZE, spec.FRAME_END) == (4096, 206)
    assert spec.REPLY_SUCCESS == 200 and spec.NOT_FOUND == 404 and spec.INTERNAL_ERROR == 541
    assert spec.PRECONDITION_FAILED == 406 and spec.NOT_ALLOWED == 530


@pytest.mark.parametrize("cls", list(METHODS.values()), ids=lambda c: c.NAME)
def test_every_method_round_trips(cls):
    for seed in (1, 2):
        method = cls(**sample_args(cls, seed))
        payload = method.encode()
        assert type(payload) is bytes
        assert struct.unpack_from(">HH", payload) == (cls.CLASS_ID, cls.METHOD_ID)
        decoded = decode_method(payload)
        assert type(decoded) is cls
        assert decoded == method, (decoded, method)
        assert decoded.encode() == payload
        assert decode_method(memoryview(payload)) == method
        # Positional construction in spec order gives the same object.
        assert cls(*sample_args(cls, seed).values()) == method
    # Defaults round-trip too (tables come back as {}).
    default = cls()
    assert decode_method(default.encode()) == default


@pytest.mark.parametrize("cls", [c for c in METHODS.values() if c.__slots__], ids=lambda c: c.NAME)
def test_every_truncation_is_a_codec_error(cls):
    payload = cls(**sample_args(cls)).encode()
    for cut in range(len(payload)):
        with pytest.raises(CodecError):
            decode_method(payload[:cut])


def test_basic_publish_wire_bytes():
    m = spec.BasicPublish(exchange="amq.direct", routing_key="key", mandatory=True, immediate=False)
    expected = (
        b"\x00\x3c\x00\x28"  # class 60, method 40
        b"\x00\x00"  # reserved-1
        b"\x0aamq.direct"
        b"\x03key"
        b"\x01"  # mandatory=bit0, immediate=bit1
    )
    assert m.encode() == expected
    assert decode_method(expected) == m
    assert spec.BasicPublish(immediate=True).encode()[-1] == 2


def test_basic_ack_nack_reject_wire_bytes():
    assert spec.BasicAck(delivery_tag=1, multiple=True).encode() == (
        b"\x00\x3c\x00\x50" b"\x00\x00\x00\x00\x00\x00\x00\x01" b"\x01"
    )
    assert spec.BasicNack(delivery_tag=2**64 - 1, multiple=False, requeue=True).encode() == (
        b"\x00\x3c\x00\x78" + b"\xff" * 8 + b"\x02"
    )
    assert spec.BasicReject(delivery_tag=258, requeue=True).encode() == (
        b"\x00\x3c\x00\x5a" b"\x00\x00\x00\x00\x00\x00\x01\x02" b"\x01"
    )
    nack = decode_method(b"\x00\x3c\x00\x78" + b"\x00" * 7 + b"\x05" + b"\x03")
    assert (nack.delivery_tag, nack.multiple, nack.requeue) == (5, True, True)


def test_bit_packing_queue_declare():
    m = spec.QueueDeclare(queue="q", passive=False, durable=True, exclusive=False, auto_delete=True, no_wait=True)
    payload = m.encode()
    # reserved-1, queue, then one octet: passive b0, durable b1, exclusive b2, auto-delete b3, no-wait b4
    assert payload == b"\x00\x32\x00\x0a\x00\x00\x01q" + bytes((0b11010,)) + b"\x00\x00\x00\x00"
    assert decode_method(payload) == m


def test_bit_packing_exchange_declare_and_consume():
    m = spec.ExchangeDeclare(exchange="x", type="topic", passive=True, durable=False,
                             auto_delete=True, internal=True, no_wait=False)
    payload = m.encode()
    assert payload == b"\x00\x28\x00\x0a\x00\x00\x01x\x05topic" + bytes((0b01101,)) + b"\x00\x00\x00\x00"
    c = spec.BasicConsume(queue="q", consumer_tag="c", no_local=False, no_ack=True, exclusive=True, no_wait=True)
    assert c.encode()[-5] == 0b1110


def test_known_connection_bytes():
    tune = spec.ConnectionTune(channel_max=2047, frame_max=131072, heartbeat=60)
    assert tune.encode() == b"\x00\x0a\x00\x1e\x07\xff\x00\x02\x00\x00\x00\x3c"
    close = spec.ChannelClose(404, "NOT_FOUND - no queue 'x'", 50, 10)
    assert decode_method(close.encode()) == close
    assert spec.ConnectionCloseOk().encode() == b"\x00\x0a\x00\x33"
    assert spec.ConnectionOpen(virtual_host="/").encode() == b"\x00\x0a\x00\x28\x01/\x00\x00"


def test_decode_with_offset():
    payload = spec.BasicAck(7, True).encode()
    assert spec.BasicAck.decode(payload) == spec.BasicAck(7, True)
    assert spec.BasicAck.decode(b"xx" + payload[4:], 2) == spec.BasicAck(7, True)


def test_trailing_bytes_are_ignored():
    payload = spec.BasicAck(7, True).encode() + b"extra"
    assert decode_method(payload) == spec.BasicAck(7, True)


def test_shortstr_semantics():
    with pytest.raises(CodecError):
        spec.QueueDeclare(queue="q" * 256).encode()
    spec.QueueDeclare(queue="q" * 255).encode()
    with pytest.raises(CodecError):
        spec.QueueDeclare(queue="\u00e9" * 128).encode()  # 256 bytes of UTF-8
    assert spec.QueueDeclare(queue=b"raw").encode() == spec.QueueDeclare(queue="raw").encode()
    # Non-UTF-8 bytes survive decode/encode via surrogateescape.
    weird = spec.QueueDeclare(queue=b"\xff\xfeq").encode()
    decoded = decode_method(weird)
    assert isinstance(decoded.queue, str)
    assert decoded.encode() == weird


def test_longstr_accepts_str_and_decodes_bytes():
    m = spec.ConnectionStartOk(client_properties={}, mechanism="PLAIN", response="\x00guest\x00guest", locale="en_US")
    decoded = decode_method(m.encode())
    assert decoded.response == b"\x00guest\x00guest"
    assert decoded.client_properties == {}


@pytest.mark.parametrize(
    "method",
    [spec.BasicAck(delivery_tag=-1), spec.BasicAck(delivery_tag=2**64), spec.BasicQos(prefetch_count=70000),
     spec.QueueDeclare(queue=None), spec.QueueDeclare(arguments={"a": object()}),
     spec.QueueDeclare(queue="\ud800")],
)
def test_encode_errors_are_codec_errors(method):
    with pytest.raises(CodecError):
        method.encode()


def test_unknown_method():
    with pytest.raises(UnknownMethod) as info:
        decode_method(b"\x00\x3c\x03\xe7")
    err = info.value
    assert isinstance(err, CodecError)
    assert (err.code, err.NAME, err.class_id, err.method_id) == (503, "COMMAND_INVALID", 60, 999)
    with pytest.raises(CodecError):
        decode_method(b"\x00\x3c\x00")
    with pytest.raises(CodecError):
        decode_method(b"")


def test_codec_error_names_the_method():
    payload = spec.QueueDeclare(queue="q").encode()[:-2]
    with pytest.raises(CodecError) as info:
        decode_method(payload)
    assert (info.value.class_id, info.value.method_id) == (50, 10)


def test_confirm_select_alias():
    m = spec.ConfirmSelect(nowait=True)
    assert m.no_wait is True
    m.no_wait = False
    assert m.nowait is False


def test_repr_and_eq():
    a = spec.BasicAck(1, True)
    assert repr(a) == "BasicAck(delivery_tag=1, multiple=True)"
    assert a == spec.BasicAck(1, True)
    assert a != spec.BasicAck(1, False)
    assert a != spec.BasicReject(1, True)
    assert spec.QueueDeclare(arguments=None) == spec.QueueDeclare(arguments={})
