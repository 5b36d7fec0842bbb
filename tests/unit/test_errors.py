"""Reply-code exception hierarchy."""

import pytest

from minimq.codec import errors
from minimq.codec.errors import (
    ERRORS_BY_CODE,
    AMQPError,
    CodecError,
    FrameError,
    NotFound,
    PreconditionFailed,
    UnknownMethod,
    error_for_code,
)

EXPECTED = {
    311: ("ContentTooLarge", "CONTENT_TOO_LARGE", False),
    312: ("NoRoute", "NO_ROUTE", False),
    313: ("NoConsumers", "NO_CONSUMERS", False),
    320: ("ConnectionForced", "CONNECTION_FORCED", True),
    402: ("InvalidPath", "INVALID_PATH", True),
    403: ("AccessRefused", "ACCESS_REFUSED", False),
    404: ("NotFound", "NOT_FOUND", False),
    405: ("ResourceLocked", "RESOURCE_LOCKED", False),
    406: ("PreconditionFailed", "PRECONDITION_FAILED", False),
    501: ("FrameError", "FRAME_ERROR", True),
    502: ("AMQPSyntaxError", "SYNTAX_ERROR", True),
    503: ("CommandInvalid", "COMMAND_INVALID", True),
    504: ("ChannelError", "CHANNEL_ERROR", True),
    505: ("UnexpectedFrame", "UNEXPECTED_FRAME", True),
    506: ("ResourceError", "RESOURCE_ERROR", False),
    530: ("NotAllowed", "NOT_ALLOWED", True),
    540: ("AMQPNotImplemented", "NOT_IMPLEMENTED", True),
    541: ("InternalError", "INTERNAL_ERROR", True),
}


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_error_classes(code):
    name, wire_name, hard = EXPECTED[code]
    cls = getattr(errors, name)
    assert ERRORS_BY_CODE[code] is cls
    assert (cls.code, cls.NAME, cls.HARD) == (code, wire_name, hard)
    err = error_for_code(code, "why", 50, 10)
    assert type(err) is cls
    assert (err.code, err.text, err.class_id, err.method_id) == (code, "why", 50, 10)


def test_str_and_reply_text():
    err = NotFound("no queue 'x' in vhost '/'", 50, 10)
    assert str(err) == "NOT_FOUND - no queue 'x' in vhost '/'"
    assert err.reply_text == str(err)
    assert PreconditionFailed().reply_text == "PRECONDITION_FAILED"
    long = NotFound("\u00e9" * 300)
    assert len(long.reply_text.encode()) <= 255


def test_codec_errors():
    assert issubclass(CodecError, FrameError)
    assert CodecError.code == 501 and CodecError.HARD
    assert issubclass(UnknownMethod, CodecError)
    assert UnknownMethod.code == 503 and UnknownMethod.NAME == "COMMAND_INVALID"


def test_unknown_code():
    err = error_for_code(999, "odd")
    assert isinstance(err, AMQPError)
    assert err.code == 999
    assert AMQPError.code == 541  # class attribute untouched
