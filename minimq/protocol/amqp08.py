"""AMQP 0-8, as RabbitMQ 3.10 still serves it to old clients (py-amqplib's `client_0_8`).

RabbitMQ answers the protocol headers `AMQP\\x01\\x01\\x09\\x01` and `AMQP\\x01\\x01\\x08\\x00` with a
0-8 `connection.start` (version 8.0, no capabilities); `AMQP\\x01\\x01\\x00\\x09` (0-9) gets plain
0-9-1. 0-8 is 0-9-1's wire format with a handful of differences, all handled here so the rest
of minimq only ever sees 0-9-1 methods:

- connection.close / close-ok are (10, 60) / (10, 61) (0-9-1 moved them to 50 / 51);
- channel.open-ok has no arguments (0-9-1 added a reserved long string);
- basic.consume has no arguments table;
- access.request (30, 10) exists and is answered with access.request-ok, ticket 1;
- methods 0-9-1 added (exchange.bind/unbind, basic.nack, confirm.*, connection.blocked and
  update-secret) are unknown, which RabbitMQ answers by dropping the connection.
"""
from __future__ import annotations

import struct

from minimq.codec import spec
from minimq.codec.errors import CodecError, UnknownMethod
from minimq.codec.frames import encode_frame

HEADERS_0_8 = (b"AMQP\x01\x01\x09\x01", b"AMQP\x01\x01\x08\x00")
HEADER_0_9 = b"AMQP\x01\x01\x00\x09"

_IDS = struct.Struct(">HH")
_CLOSE_0_8 = (10 << 16) | 60
_CLOSE_OK_0_8 = (10 << 16) | 61
_ACCESS_REQUEST = (30 << 16) | 10
_EMPTY_TABLE = b"\x00\x00\x00\x00"

# Methods a 0-8 client may send that 0-9-1 names the same way, with the same arguments.
_SAME_AS_0_9_1 = frozenset(
    cls.INDEX
    for cls in (
        spec.ConnectionStartOk, spec.ConnectionSecureOk, spec.ConnectionTuneOk, spec.ConnectionOpen,
        spec.ChannelOpen, spec.ChannelFlow, spec.ChannelFlowOk, spec.ChannelClose, spec.ChannelCloseOk,
        spec.ExchangeDeclare, spec.ExchangeDelete,
        spec.QueueDeclare, spec.QueueBind, spec.QueuePurge, spec.QueueDelete, spec.QueueUnbind,
        spec.BasicQos, spec.BasicCancel, spec.BasicPublish, spec.BasicGet, spec.BasicAck,
        spec.BasicReject, spec.BasicRecoverAsync, spec.BasicRecover,
        spec.TxSelect, spec.TxCommit, spec.TxRollback,
    )
)

CHANNEL_OPEN_OK = spec.ChannelOpenOk.INDEX.to_bytes(4, "big")  # 0-8's has no arguments
ACCESS_REQUEST_OK = b"\x00\x1e\x00\x0b\x00\x01"  # ticket 1, as RabbitMQ hands out


class AccessRequest:
    """0-8's access.request: realms and tickets are gone; RabbitMQ grants ticket 1."""

    __slots__ = ()
    CLASS_ID = 30
    METHOD_ID = 10
    INDEX = _ACCESS_REQUEST
    NAME = "access.request"
    HAS_CONTENT = False


ACCESS_REQUEST = AccessRequest()


def decode_0_8(payload: bytes) -> object:
    """A 0-8 method frame payload as the equivalent 0-9-1 method (or ACCESS_REQUEST)."""
    try:
        index = (payload[0] << 24) | (payload[1] << 16) | (payload[2] << 8) | payload[3]
    except IndexError:
        raise CodecError("truncated method frame") from None
    if index in _SAME_AS_0_9_1:
        return spec.decode_method(payload)
    if index == _CLOSE_0_8:
        return spec.ConnectionClose.decode(payload, 4)
    if index == _CLOSE_OK_0_8:
        return spec.ConnectionCloseOk()
    if index == spec.BasicConsume.INDEX:
        return spec.decode_method(bytes(payload) + _EMPTY_TABLE)
    if index == _ACCESS_REQUEST:
        _check_access_request(payload)
        return ACCESS_REQUEST
    raise UnknownMethod(f"unknown method {index >> 16}.{index & 0xFFFF}", index >> 16, index & 0xFFFF)


def _check_access_request(payload: bytes) -> None:
    """realm (short string) then one octet of flags."""
    if len(payload) < 5 or len(payload) < 5 + payload[4] + 1:
        raise CodecError("access.request: truncated", 30, 10)


def encode_method_frame_0_8(channel: int, method) -> bytes:
    """A server method frame in 0-8's numbering."""
    index = method.INDEX
    if index == spec.ConnectionClose.INDEX:
        payload = _IDS.pack(10, 60) + method.encode()[4:]
    elif index == spec.ConnectionCloseOk.INDEX:
        payload = _IDS.pack(10, 61)
    elif index == spec.ChannelOpenOk.INDEX:
        payload = CHANNEL_OPEN_OK
    else:
        payload = method.encode()
    return encode_frame(1, channel, payload)
