"""Wire-level protocol tests over real sockets, with the raw client in rawamqp.py.

Each test sends exact bytes and checks exactly what the broker answers, as RabbitMQ would:
the protocol-header exchange, connection.start contents, SASL, tuning, frame_max splitting,
error codes for malformed input (which must cost only the offending connection), a fuzz run,
heartbeats, and the channel/connection close handshakes. No sleeps: every wait is a socket
read with a deadline.
"""
from __future__ import annotations

import os
import random
import socket
import time

import pytest

from minimq.codec import FRAME_HEADER, BasicProperties, spec
from minimq.codec.properties import encode_content_header

from conftest import start_broker

from .rawamqp import (
    FRAME_BODY,
    FRAME_HEADER as HEADER_FRAME,
    FRAME_HEARTBEAT,
    Closed,
    Message,
    RawAMQP,
    content_frames,
    encode_frame,
    encode_method_frame,
    method_payload,
)

# Quick enough to keep the suite fast; the close-ok timeout of the broker is 3 s, so
# "promptly" (below) really means "because of our close-ok", not "because it gave up".
PROMPT = 1.5
SERVER_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def connect(broker, **kwargs) -> RawAMQP:
    return RawAMQP.connect(broker.host, broker.port, **kwargs)


@pytest.fixture
def conn(broker):
    c = connect(broker)
    yield c
    c.sock.close()


@pytest.fixture(scope="module")
def witness(broker):
    """A connection that must keep working while other connections misbehave."""
    c = connect(broker)
    c.channel_open(1)
    queue = "witness-" + os.urandom(6).hex()
    c.queue_declare(1, queue)
    yield c, queue
    c.send_method(1, spec.QueueDelete(0, queue))
    c.expect(spec.QueueDeleteOk, channel=1)
    c.close()


def assert_alive(witness: tuple[RawAMQP, str]) -> None:
    """A publish / get round trip on the witness connection."""
    c, queue = witness
    body = os.urandom(32)
    c.publish(1, "", queue, body)
    msg = c.get(1, queue)
    assert isinstance(msg, Message) and msg.body == body


def read_until_eof(sock: socket.socket, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"socket not closed by the server; got {data!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


# ---------------------------------------------------------------- protocol header


@pytest.mark.parametrize(
    "header",
    [
        b"AMQP\x00\x00\x09\x00",
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"AMQP\x00\x00\x08\x00",  # 0-8 is served only for the headers its clients send
        b"AMQP\x01\x01\x09\x02",
    ],
    ids=["0-9-0", "http", "0-8-plain", "0-9-2"],
)
def test_protocol_header_mismatch(broker, header):
    with socket.create_connection((broker.host, broker.port), 5) as sock:
        sock.sendall(header)
        assert read_until_eof(sock) == SERVER_PROTOCOL_HEADER


# ---------------------------------------------------------------- connection.start


def test_connection_start(broker):
    with RawAMQP.open_socket(broker.host, broker.port) as c:
        start = c.send_header()
    assert (start.version_major, start.version_minor) == (0, 9)
    mechanisms = bytes(start.mechanisms).split()
    assert b"PLAIN" in mechanisms and b"AMQPLAIN" in mechanisms
    assert b"en_US" in bytes(start.locales).split()
    props = start.server_properties
    for key in ("product", "version", "platform"):
        assert isinstance(props.get(key), (str, bytes)) and props[key], key
    caps = props["capabilities"]
    for cap in (
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ):
        assert caps.get(cap) is True, cap


# ---------------------------------------------------------------------- login


@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
def test_login_succeeds(broker, mechanism):
    c = connect(broker, mechanism=mechanism)
    c.channel_open(1)
    c.close()


@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
def test_wrong_password_is_refused(broker, mechanism):
    with RawAMQP.open_socket(broker.host, broker.port) as c:
        c.send_header()
        c.start_ok("guest", "not-the-password", mechanism)
        close = c.expect_connection_close()
    assert close.reply_code == 403
    assert close.reply_text.startswith("ACCESS_REFUSED")


def test_unknown_vhost_is_not_allowed(broker, unique):
    with RawAMQP.open_socket(broker.host, broker.port) as c:
        c.send_header()
        c.start_ok()
        tune = c.expect(spec.ConnectionTune)
        c.tune_ok(tune.channel_max, tune.frame_max, 0)
        c.send_method(0, spec.ConnectionOpen("/" + unique))
        close = c.expect_connection_close()
    assert close.reply_code == 530
    assert close.reply_text.startswith("NOT_ALLOWED")


# ----------------------------------------------------------------------- tune


def test_tune_offer(broker):
    with RawAMQP.open_socket(broker.host, broker.port) as c:
        c.send_header()
        c.start_ok()
        tune = c.expect(spec.ConnectionTune, channel=0)
    assert (tune.frame_max, tune.channel_max, tune.heartbeat) == (131072, 2047, 60)


@pytest.mark.parametrize("frame_max", [131072 + 1, 4096 - 1, 512], ids=["above-server", "below-min", "tiny"])
def test_tune_ok_with_bad_frame_max(broker, frame_max):
    with RawAMQP.open_socket(broker.host, broker.port) as c:
        c.send_header()
        c.start_ok()
        c.expect(spec.ConnectionTune)
        c.tune_ok(2047, frame_max, 0)
        c.send_method(0, spec.ConnectionOpen("/"))
        close = c.expect_connection_close()
    assert close.reply_code == 530


# ------------------------------------------------------------------ frame_max


def test_small_frame_max_splits_content(broker, unique):
    c = connect(broker, frame_max=4096)
    c.channel_open(1)
    c.queue_declare(1, unique, exclusive=True)
    body = random.Random(1).randbytes(20 * 1024)
    props = BasicProperties(content_type="application/octet-stream", message_id=unique)
    # The client splits too: body frames of exactly 4096 bytes on the wire are accepted.
    c.publish(1, "", unique, body, props)
    c.publish(1, "", unique, body, props)

    got = c.get(1, unique)
    assert isinstance(got, Message) and isinstance(got.method, spec.BasicGetOk)
    c.send_method(1, spec.BasicConsume(0, unique, "ctag", no_ack=True))
    c.expect(spec.BasicConsumeOk, channel=1)
    delivered = c.read_message()
    assert isinstance(delivered.method, spec.BasicDeliver)

    for msg in (got, delivered):
        assert msg.body == body
        assert msg.properties.message_id == unique
        assert max(f.size for f in msg.frames) <= 4096, [f.size for f in msg.frames]
        bodies = [f for f in msg.frames if f.type == FRAME_BODY]
        assert len(bodies) >= 5  # 20480 bytes at most 4088 per frame
    c.close()


# ------------------------------------------------------------- malformed input

QUEUE_DECLARE = encode_method_frame(1, spec.QueueDeclare(0, "malformed"))
_DECLARE_PAYLOAD = spec.QueueDeclare(0, "malformed-queue-name").encode()

# name -> (bytes to send on a connection with channel 1 open, expected close code,
#          whether the byte stream stays parseable so the server can read our close-ok)
MALFORMED = {
    "bad-frame-end": (QUEUE_DECLARE[:-1] + b"\x00", 501, False),
    "frame-above-frame-max": (FRAME_HEADER.pack(1, 1, 200_000) + b"\x00" * 64, 501, False),
    "unknown-frame-type": (encode_frame(7, 1, b"\x00\x32\x00\x0a"), 501, True),
    # We send 501 FRAME_ERROR for a method whose arguments are cut short (RabbitMQ too).
    "truncated-arguments": (encode_frame(1, 1, _DECLARE_PAYLOAD[:9]), 501, True),
    "truncated-method-id": (encode_frame(1, 1, _DECLARE_PAYLOAD[:3]), 501, True),
    "header-without-publish": (encode_frame(HEADER_FRAME, 1, encode_content_header(5, None)), 505, True),
    "body-without-publish": (encode_frame(FRAME_BODY, 1, b"hello"), 505, True),
    "method-inside-content": (
        encode_method_frame(1, spec.BasicPublish(0, "", "malformed")) + QUEUE_DECLARE,
        505,
        True,
    ),
    "channel-never-opened": (encode_method_frame(5, spec.QueueDeclare(0, "malformed")), 504, True),
    "channel-open-twice": (encode_method_frame(1, spec.ChannelOpen()), 504, True),
    # RabbitMQ's reader treats a heartbeat on a channel as an unexpected frame.
    "heartbeat-on-channel-1": (encode_frame(FRAME_HEARTBEAT, 1, b""), 505, True),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_closes_only_that_connection(broker, witness, case):
    data, code, parseable = MALFORMED[case]
    c = connect(broker)
    try:
        c.channel_open(1)
        c.send_raw(data)
        close = c.expect(spec.ConnectionClose, channel=0)
        assert close.reply_code == code, close
        c.send_method(0, spec.ConnectionCloseOk())
        if parseable:
            # The stream is still in step, so the server reads our close-ok and hangs up.
            assert c.hang_up(PROMPT), f"{case}: socket still open {PROMPT} s after our close-ok"
        else:
            # Out of step: the server cannot read close-ok; RabbitMQ also just drops the
            # socket after a short grace period.
            assert c.hang_up(6.0), "server never closed the socket"
    finally:
        c.sock.close()
    assert_alive(witness)


def test_more_channels_than_negotiated_channel_max(broker, witness):
    # RabbitMQ limits how many channels are open at once (530 NOT_ALLOWED), not the
    # channel numbers: with channel_max 2, channel 7 opens, a third channel does not.
    c = connect(broker, channel_max=2)
    try:
        c.channel_open(1)
        c.channel_open(7)
        c.send_method(3, spec.ChannelOpen())
        close = c.expect(spec.ConnectionClose, channel=0)
        assert close.reply_code == 530, close
        assert "channel_max" in close.reply_text
        c.send_method(0, spec.ConnectionCloseOk())
        assert c.hang_up(PROMPT)
    finally:
        c.sock.close()
    assert_alive(witness)


def test_server_waits_for_close_ok_after_connection_error(broker, witness):
    c = connect(broker)
    try:
        c.channel_open(1)
        c.send_method(5, spec.QueueDeclare(0, "never-opened"))
        close = c.expect(spec.ConnectionClose, channel=0)
        assert close.reply_code == 504
        assert (close.class_id, close.method_id) == (50, 10)
        # Anything but close-ok is now ignored: no answer, and the socket stays open.
        c.send_method(7, spec.ChannelOpen())
        c.send_method(1, spec.QueueDeclare(0, "ignored-after-close"))
        with pytest.raises(TimeoutError):
            c.read_frame(0.3, heartbeats=True)
        c.send_method(0, spec.ConnectionCloseOk())
        assert c.hang_up(PROMPT)
    finally:
        c.sock.close()
    assert_alive(witness)


# ----------------------------------------------------------------------- fuzz

FUZZ_CONNECTIONS = 200
FUZZ_CLOSE_CODES = {501, 502, 503, 504, 505, 540}


def _fuzz_payload(rng: random.Random, valid: list[bytes]) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:  # plain random bytes
        return rng.randbytes(rng.randint(8, 200))
    if kind == 1:  # well-formed frame envelope, random type/channel/payload
        ftype = rng.choice([1, 2, 3, 8, rng.randrange(256)])
        return encode_frame(ftype, rng.choice([0, 1, 2, 9]), rng.randbytes(rng.randint(0, 60)))
    if kind == 2:  # a real method id with random arguments
        index = rng.choice(list(spec.METHODS))
        args = rng.randbytes(rng.randint(0, 40))
        return encode_frame(1, rng.choice([0, 1, 2]), method_payload(index >> 16, index & 0xFFFF, args))
    # valid frames with a few bytes mutated, dropped or inserted
    data = bytearray(b"".join(rng.sample(valid, rng.randint(1, len(valid)))))
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(data))
        op = rng.randrange(3)
        if op == 0:
            data[pos] = rng.randrange(256)
        elif op == 1:
            del data[pos]
        else:
            data.insert(pos, rng.randrange(256))
    return bytes(data)


def _fuzz_valid_frames() -> list[bytes]:
    return [
        encode_method_frame(1, spec.QueueDeclare(0, "fuzz-q", arguments={"x-max-length": 5})),
        encode_method_frame(1, spec.BasicPublish(0, "", "fuzz-q"))
        + content_frames(1, b"fuzz body", BasicProperties(headers={"a": 1}, priority=1)),
        encode_method_frame(1, spec.BasicGet(0, "fuzz-q", True)),
        encode_method_frame(2, spec.ChannelOpen()),
        encode_method_frame(1, spec.ExchangeDeclare(0, "fuzz-x", "topic")),
        encode_method_frame(1, spec.QueueBind(0, "fuzz-q", "fuzz-x", "a.#")),
        encode_method_frame(1, spec.BasicQos(0, 10, False)),
        encode_method_frame(1, spec.ConfirmSelect()),
        encode_frame(FRAME_HEARTBEAT, 0, b""),
    ]


def test_fuzz_never_kills_the_broker():
    seed = int(os.environ.get("MINIMQ_FUZZ_SEED", "20240611"))
    rng = random.Random(seed)
    valid = _fuzz_valid_frames()
    b = start_broker()
    outcomes: dict[str, int] = {}
    started = time.monotonic()
    try:
        for i in range(FUZZ_CONNECTIONS):
            assert time.monotonic() - started < 30, f"fuzz too slow (seed {seed}, at {i})"
            c = RawAMQP.open_socket(b.host, b.port)
            try:
                if i % 4 == 0:
                    c.send_header()
                else:
                    c.handshake()
                    c.channel_open(1)
                garbage = _fuzz_payload(rng, valid)
                # End with a well-formed connection.close so an accepting server answers
                # close-ok at once instead of leaving us to wait out a timeout.
                c.send_raw(garbage + encode_method_frame(0, spec.ConnectionClose(200, "", 0, 0)))
                outcome = "kept-open"
                try:
                    while True:
                        frame = c.read_frame(0.3)
                        if frame.type != 1:
                            continue
                        method = frame.method
                        context = f"seed {seed}, connection {i}, sent {garbage!r}"
                        if isinstance(method, spec.ConnectionClose):
                            assert method.reply_code in FUZZ_CLOSE_CODES, f"{method!r}; {context}"
                            outcome = f"close-{method.reply_code}"
                            c.send_method(0, spec.ConnectionCloseOk())
                            break
                        if isinstance(method, spec.ConnectionCloseOk):
                            outcome = "close-ok"
                            break
                        if isinstance(method, spec.ChannelClose):
                            assert method.reply_code < 500 or method.reply_code == 506, f"{method!r}; {context}"
                except (TimeoutError, Closed):
                    pass
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            finally:
                c.sock.close()
            assert b.proc.poll() is None, f"broker died (seed {seed}, connection {i})"

        assert b.proc.poll() is None
        c = RawAMQP.connect(b.host, b.port)
        c.channel_open(1)
        c.queue_declare(1, "after-fuzz", exclusive=True)
        c.publish(1, "", "after-fuzz", b"still alive")
        msg = c.get(1, "after-fuzz")
        assert isinstance(msg, Message) and msg.body == b"still alive"
        c.close()
        # The run must actually have exercised the error paths.
        print("fuzz outcomes:", outcomes)
        assert sum(n for k, n in outcomes.items() if k.startswith("close-5")) > FUZZ_CONNECTIONS // 2, outcomes
    finally:
        b.stop()


# ------------------------------------------------------------------ heartbeats


@pytest.fixture(scope="module")
def hb_broker():
    b = start_broker("--heartbeat", "1")
    yield b
    b.stop()


def test_server_offers_and_sends_heartbeats(hb_broker):
    with RawAMQP.open_socket(hb_broker.host, hb_broker.port) as c:
        c.send_header()
        c.start_ok()
        tune = c.expect(spec.ConnectionTune)
        assert tune.heartbeat == 1
        c.tune_ok(tune.channel_max, tune.frame_max, 1)
        c.send_method(0, spec.ConnectionOpen("/"))
        c.expect(spec.ConnectionOpenOk)
        frame = c.read_frame(2.0, heartbeats=True)
        assert (frame.type, frame.channel, frame.payload) == (FRAME_HEARTBEAT, 0, b"")


def test_silent_client_is_dropped(hb_broker):
    c = RawAMQP.connect(hb_broker.host, hb_broker.port, heartbeat=1)
    opened = time.monotonic()
    try:
        assert c.closed(4.5), "server kept a silent heartbeat-1 client for 4.5 s"
        elapsed = time.monotonic() - opened
        assert elapsed >= 1.0, f"dropped after only {elapsed:.2f} s"
    finally:
        c.sock.close()


def test_client_sending_heartbeats_stays_connected(hb_broker):
    c = RawAMQP.connect(hb_broker.host, hb_broker.port, heartbeat=1)
    try:
        until = time.monotonic() + 4.5
        received = 0
        while time.monotonic() < until:
            c.send_heartbeat()
            try:
                frame = c.read_frame(min(0.4, max(until - time.monotonic(), 0.01)), heartbeats=True)
                received += frame.type == FRAME_HEARTBEAT
            except TimeoutError:
                pass
        assert received >= 2
        c.channel_open(1)
        c.close()
    finally:
        c.sock.close()


def test_heartbeat_zero_is_never_dropped(hb_broker):
    c = RawAMQP.connect(hb_broker.host, hb_broker.port, heartbeat=0)
    try:
        with pytest.raises(TimeoutError):  # neither heartbeats nor a close in 3 s
            c.read_frame(3.0, heartbeats=True)
        c.channel_open(1)
        c.close()
    finally:
        c.sock.close()


# --------------------------------------------------------------- closing


def test_client_channel_close(conn):
    conn.channel_open(1)
    conn.send_method(1, spec.ChannelClose(200, "bye", 0, 0))
    conn.expect(spec.ChannelCloseOk, channel=1)
    conn.channel_open(1)
    conn.close()


def test_server_channel_close_handshake(conn, unique):
    conn.channel_open(1)
    conn.channel_open(2)
    conn.send_method(1, spec.QueueDeclare(0, unique + "-missing", passive=True))
    close = conn.expect(spec.ChannelClose, channel=1)
    assert close.reply_code == 404
    assert close.reply_text.startswith("NOT_FOUND")
    assert (close.class_id, close.method_id) == (50, 10)

    # Until our close-ok, channel 1 frames are ignored: none of these take effect or answer.
    conn.queue_declare(2, unique, exclusive=True)
    conn.send_method(1, spec.QueueDeclare(0, unique + "-ignored"))
    conn.publish(1, "", unique, b"dropped")
    conn.send_method(1, spec.BasicGet(0, unique, True))
    conn.send_method(1, spec.ChannelOpen())
    assert isinstance(conn.get(2, unique), spec.BasicGetEmpty)  # nothing on ch 1 came first
    conn.send_method(2, spec.QueueDeclare(0, unique + "-ignored", passive=True))
    missing = conn.expect(spec.ChannelClose, channel=2)
    assert missing.reply_code == 404
    conn.send_method(2, spec.ChannelCloseOk())

    conn.send_method(1, spec.ChannelCloseOk())
    conn.channel_open(1)
    conn.publish(1, "", unique, b"after reopen")
    msg = conn.get(1, unique)
    assert isinstance(msg, Message) and msg.body == b"after reopen"
    conn.close()


def test_client_connection_close(conn):
    conn.channel_open(1)
    conn.send_method(0, spec.ConnectionClose(200, "bye", 0, 0))
    conn.expect(spec.ConnectionCloseOk, channel=0)
    assert conn.hang_up(PROMPT)
