"""Limits with RabbitMQ's defaults and errors: message size, pre-login frames, connection
counts, handshake timeouts. Each attack must cost bounded memory and leave others served."""
from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from pathlib import Path

import pytest

from minimq.codec import PROTOCOL_HEADER, spec
from minimq.codec.frames import encode_frame, encode_method_frame
from minimq.codec.properties import encode_content_header

from .support import MB, Bystander, PeakRSS, RawAMQP, broker_with, is_closed

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MINIMQ_TEST_URL")) or not os.path.exists("/proc/self/statm"),
    reason="drives minimq's own limits and measures its process",
)

CERTS = Path(__file__).resolve().parent.parent / "integration" / "certs"


def announce(c: RawAMQP, channel: int, size: int) -> None:
    """basic.publish and a content header announcing `size` body bytes (no body)."""
    c.send_raw(encode_method_frame(channel, spec.BasicPublish(0, "", "nowhere", False, False)))
    c.send_raw(encode_frame(2, channel, encode_content_header(size, None)))


def test_oversized_body_size_is_406_with_rabbitmq_text_before_any_body_arrives():
    with broker_with() as b:
        c = RawAMQP.connect(b.host, b.port)
        c.channel_open(1)
        announce(c, 1, 128 * MB + 1)
        close = c.expect(spec.ChannelClose, channel=1)
        assert close.reply_code == 406
        assert close.reply_text == (
            "PRECONDITION_FAILED - message size 134217729 is larger than configured max size 134217728"
        )
        assert (close.class_id, close.method_id) == (60, 40)
        c.send_method(1, spec.ChannelCloseOk())
        # Exactly the limit is accepted; the connection goes on serving.
        c.channel_open(2)
        c.queue_declare(2, "exact")
        c.publish(2, "", "exact", b"x" * 1000)
        assert c.get(2, "exact").body == b"x" * 1000
        c.close()


def test_max_message_size_flag():
    with broker_with("--max-message-size", "1000") as b:
        c = RawAMQP.connect(b.host, b.port)
        c.channel_open(1)
        c.queue_declare(1, "small")
        c.publish(1, "", "small", b"y" * 1000)
        assert c.get(1, "small").body == b"y" * 1000
        c.publish(1, "", "small", b"y" * 1001)
        close = c.expect(spec.ChannelClose, channel=1)
        assert close.reply_text == (
            "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000"
        )
        c.sock.close()


def _park_partial_frame(host: str, port: int, payload: int, sent: int) -> socket.socket:
    s = socket.create_connection((host, port), 10)
    s.sendall(PROTOCOL_HEADER)
    s.sendall(struct.pack(">BHI", 1, 0, payload) + b"x" * sent)
    return s


def test_frames_above_4096_bytes_before_login_close_the_connection():
    with broker_with() as b:
        at_limit = _park_partial_frame(b.host, b.port, 4096, 100)
        over = _park_partial_frame(b.host, b.port, 4097, 100)
        assert is_closed(over, 10), "a 4097-byte frame before login was kept"
        assert not is_closed(at_limit, 0.5), "a 4096-byte frame (FRAME_MIN_SIZE) is allowed"
        at_limit.close()
        over.close()


def test_many_unauthenticated_connections_parking_partial_frames_cost_little():
    """Scaled from 5000 x 131 KB: 1500 connections each try to park 120 KB of a 131 KB frame
    (about 180 MB if it were kept)."""
    with broker_with() as b:
        peak = PeakRSS(b.proc.pid)
        bystander = Bystander(b).start()
        socks = []
        try:
            for _ in range(1500):
                s = socket.create_connection((b.host, b.port), 10)
                try:
                    s.sendall(PROTOCOL_HEADER + struct.pack(">BHI", 1, 0, 131072) + b"x" * 120000)
                except OSError:
                    pass  # already refused: that is the point
                socks.append(s)
            closed = sum(is_closed(s, 10) for s in socks)
        finally:
            for s in socks:
                s.close()
            times = bystander.stop()
            peak.stop()
        assert closed == len(socks)
        # Kept, the partial frames would be 180 MB; what remains is allocator churn of the
        # reads (40 MB on a quiet machine, up to 60 MB when a loaded one batches more reads).
        assert peak.growth < 90 * MB, f"broker grew {peak.growth / MB:.0f} MB"
        assert max(times) < 2.0, f"bystander waited {max(times):.2f}s"


def test_connections_in_the_handshake_are_bounded_oldest_dropped_first():
    with broker_with("--max-unauthenticated", "20") as b:
        idle = []
        for _ in range(30):
            s = socket.create_connection((b.host, b.port), 10)
            s.sendall(PROTOCOL_HEADER)
            s.recv(65536)  # connection.start: the broker has accepted it
            idle.append(s)
        try:
            oldest, newest = idle[:10], idle[10:]
            assert all(is_closed(s, 5) for s in oldest)
            assert not any(is_closed(s, 0.2) for s in newest[-3:])
            # A real client still gets in (and does not count once logged in).
            c = RawAMQP.connect(b.host, b.port)
            c.channel_open(1)
            c.queue_declare(1, "still-served")
            c.close()
        finally:
            for s in idle:
                s.close()


def test_max_connections():
    with broker_with("--max-connections", "2") as b:
        first = RawAMQP.connect(b.host, b.port)
        second = RawAMQP.connect(b.host, b.port)
        third = socket.create_connection((b.host, b.port), 10)
        assert is_closed(third, 5), "a third connection was kept"
        third.close()
        first.close()
        # The slot came free: a new client gets in.
        deadline = time.monotonic() + 10
        while True:
            try:
                again = RawAMQP.connect(b.host, b.port)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        again.close()
        second.close()


def test_handshake_timeout_flag():
    with broker_with("--handshake-timeout", "1") as b:
        s = socket.create_connection((b.host, b.port), 10)
        s.sendall(PROTOCOL_HEADER)
        started = time.monotonic()
        assert is_closed(s, 8)
        assert time.monotonic() - started < 6
        s.close()


def test_tls_connection_that_never_says_hello_is_dropped_after_5s():
    with broker_with(
        "--tls-cert", str(CERTS / "cert.pem"), "--tls-key", str(CERTS / "key.pem"), "--tls-port", "0"
    ) as b:
        s = socket.create_connection((b.host, b.tls_port), 10)
        started = time.monotonic()
        assert is_closed(s, 15), "an idle TLS socket was kept"
        took = time.monotonic() - started
        assert 3.0 < took < 10.0, f"closed after {took:.1f}s, expected about 5"
        s.close()
        # A real TLS client still works.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = RawAMQP.connect(b.host, b.tls_port, ssl_context=ctx)
        c.close()
