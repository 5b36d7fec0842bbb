"""The on-disk record format: length, checksum, type, payload.

    record = length:u32  crc32:u32  type:u8  payload[length - 1]

`length` counts the type byte and the payload; the CRC-32 covers them too. A record whose
length runs past the end of the file, or whose checksum does not match at the very end of a
file, is a torn write (the broker died mid-write): recovery cuts it off. A bad record with
valid data after it is corruption: recovery reports it, skips to the next record that checks
out, and carries on.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterator

from minimq.codec.values import decode_table, encode_table

HEADER = struct.Struct(">II")
HEADER_SIZE = HEADER.size
MAX_RECORD = 1 << 30

# Record types
EXCHANGE = ord("X")  # vhost, name, type, durable/auto-delete/internal flags, arguments
EXCHANGE_DELETE = ord("x")  # vhost, name
QUEUE = ord("Q")  # vhost, name, flags, arguments
QUEUE_DELETE = ord("q")  # vhost, name
BIND = ord("B")  # vhost, source, destination, is-exchange, key, arguments
UNBIND = ord("b")
MESSAGE = ord("M")  # id, vhost, queues, exchange, routing key, content header, body
ACK = ord("A")  # id, vhost, queue
DELIVERED = ord("D")  # id, vhost, queue
PURGE = ord("P")  # vhost, queue, id: drops that queue's messages with ids <= id

_Q = struct.Struct(">Q")
_I = struct.Struct(">I")
_B = struct.Struct(">B")


def frame(rtype: int, payload: bytes) -> bytes:
    body = bytes((rtype,)) + payload
    return HEADER.pack(len(body), zlib.crc32(body)) + body


# -- payload helpers -------------------------------------------------------------------


def sstr(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    return _I.pack(len(raw)) + raw


def lbytes(raw: bytes) -> bytes:
    return _I.pack(len(raw)) + raw


def table(value: dict | None) -> bytes:
    return encode_table(value or {})


class Reader:
    """Sequential reads from one record payload."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def u8(self) -> int:
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u64(self) -> int:
        (v,) = _Q.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def raw(self) -> bytes:
        (n,) = _I.unpack_from(self.buf, self.pos)
        start = self.pos + 4
        self.pos = start + n
        if self.pos > len(self.buf):
            raise ValueError("truncated field")
        return self.buf[start : self.pos]

    def text(self) -> str:
        return self.raw().decode("utf-8", "surrogateescape")

    def table(self) -> dict:
        value, self.pos = decode_table(self.buf, self.pos)
        return value


# -- scanning ----------------------------------------------------------------------------


@dataclass
class ScanReport:
    """What recovery found wrong in one file."""

    path: str
    torn_at: int | None = None  # offset where a torn tail was cut off
    skipped: list[tuple[int, int]] = field(default_factory=list)  # (offset, bytes) of corruption

    @property
    def clean(self) -> bool:
        return self.torn_at is None and not self.skipped


def _valid_at(data: bytes, pos: int) -> int:
    """Length of the valid record at pos, or 0."""
    end_hdr = pos + HEADER_SIZE
    if end_hdr > len(data):
        return 0
    length, crc = HEADER.unpack_from(data, pos)
    if length == 0 or length > MAX_RECORD or end_hdr + length > len(data):
        return 0
    if zlib.crc32(data[end_hdr : end_hdr + length]) != crc:
        return 0
    return HEADER_SIZE + length


def scan(data: bytes, report: ScanReport) -> Iterator[tuple[int, int, bytes]]:
    """Yield (offset, type, payload) for every valid record in `data`.

    Fills `report` with a torn tail (where valid data ends) and corrupt stretches skipped.
    """
    pos = 0
    size = len(data)
    while pos < size:
        n = _valid_at(data, pos)
        if n:
            yield pos, data[pos + HEADER_SIZE], data[pos + HEADER_SIZE + 1 : pos + n]
            pos += n
            continue
        # Not a valid record here: corruption in the middle, or a torn tail?
        nxt = pos + 1
        while nxt < size and not _valid_at(data, nxt):
            nxt += 1
        if nxt >= size:
            report.torn_at = pos
            return
        report.skipped.append((pos, nxt - pos))
        pos = nxt
