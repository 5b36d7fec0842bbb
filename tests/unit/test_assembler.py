"""ContentAssembler: the method -> header -> body state machine both sides share."""
from __future__ import annotations

import struct

import pytest

from minimq.codec import spec
from minimq.codec.errors import FrameError, PreconditionFailed, UnexpectedFrame
from minimq.codec.properties import encode_content_header
from minimq.protocol.assembler import ContentAssembler

PUBLISH = spec.BasicPublish(0, "", "q", False, False)


def made(*args):
    return args


def test_one_message_per_channel_in_order() -> None:
    asm = ContentAssembler(made)
    asm.start(1, PUBLISH)
    asm.start(2, PUBLISH)
    header = encode_content_header(6, None)
    assert 1 in asm and asm.header(1, header) is None
    assert asm.header(2, encode_content_header(0, None)) == (2, PUBLISH, encode_content_header(0, None), b"")
    assert asm.body(1, b"abc") is None
    assert asm.body(1, b"def") == (1, PUBLISH, header, b"abcdef")
    assert 1 not in asm and 2 not in asm


def test_out_of_order_and_oversized_frames() -> None:
    asm = ContentAssembler(made, max_size=10)
    with pytest.raises(UnexpectedFrame):
        asm.header(1, encode_content_header(1, None))
    with pytest.raises(UnexpectedFrame):
        asm.body(1, b"x")
    asm.start(1, PUBLISH)
    with pytest.raises(UnexpectedFrame):
        asm.body(1, b"x")  # body before header
    with pytest.raises(FrameError):
        asm.header(1, b"\x00" * 13)
    with pytest.raises(UnexpectedFrame):
        asm.header(1, struct.pack(">HHQH", 10, 0, 1, 0))  # class connection carries no content
    with pytest.raises(PreconditionFailed):
        asm.header(1, encode_content_header(11, None))
    assert 1 not in asm  # nothing of it is kept
    asm.start(1, PUBLISH)
    asm.header(1, encode_content_header(2, None))
    with pytest.raises(UnexpectedFrame):
        asm.header(1, encode_content_header(2, None))  # a second header
    with pytest.raises(FrameError):
        asm.body(1, b"xyz")  # longer than announced


def test_discard_and_clear() -> None:
    asm = ContentAssembler(made)
    asm.start(1, PUBLISH)
    asm.start(2, PUBLISH)
    asm.discard(1)
    assert 1 not in asm and 2 in asm
    asm.clear()
    assert 2 not in asm
