"""Hostile or broken clients of the management HTTP port: every one costs bounded memory and
time, and gets a clean status code (RabbitMQ's where it has one), never a 500.

Real sockets against a real `python -m minimq --management-port 0`."""
from __future__ import annotations

import base64
import socket
import time
from typing import Iterator

import pytest

from tests.admin.conftest import Node, start_node

AUTH = "Authorization: Basic " + base64.b64encode(b"guest:guest").decode()


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    n = start_node()
    try:
        yield n
    finally:
        n.stop()


def connect(node: Node) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", node.http_port), timeout=30)
    return s


def read_response(s: socket.socket, deadline: float = 30.0) -> tuple[int, bytes]:
    """Status and everything up to the close (the broker closes after these errors)."""
    s.settimeout(deadline)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data[9:12]), data


def test_request_line_too_long_is_414(node: Node) -> None:
    s = connect(node)
    s.sendall(b"GET /api/queues/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _ = read_response(s)
    assert status == 414


def test_request_line_without_end_is_414_not_buffered(node: Node) -> None:
    s = connect(node)
    s.sendall(b"GET /" + b"a" * 10000)  # never a CRLF
    status, _ = read_response(s)
    assert status == 414


def test_too_many_headers_is_431(node: Node) -> None:
    s = connect(node)
    s.sendall(b"GET /api/overview HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n")
    status, _ = read_response(s)
    assert status == 431


def test_huge_header_is_431(node: Node) -> None:
    s = connect(node)
    s.sendall(b"GET /api/overview HTTP/1.1\r\nX-Big: " + b"y" * 70000 + b"\r\n\r\n")
    status, _ = read_response(s)
    assert status == 431


def test_non_http_bytes_get_400_or_414_and_a_close(node: Node) -> None:
    s = connect(node)
    s.sendall(b"AMQP\x00\x00\x09\x01\r\n\r\n")
    status, _ = read_response(s)
    assert status == 400
    s = connect(node)
    s.sendall(bytes(range(256)) * 64)  # 16 KiB of binary, CRLFs included
    status, _ = read_response(s)
    assert status in (400, 414)


@pytest.mark.parametrize("value", [b"abc", b"-1", b"+5", b"1e3"])
def test_bad_content_length_is_400(node: Node, value: bytes) -> None:
    s = connect(node)
    s.sendall(b"PUT /api/vhosts/x HTTP/1.1\r\n" + AUTH.encode() + b"\r\nContent-Length: " + value + b"\r\n\r\n")
    status, _ = read_response(s)
    assert status == 400


def test_chunked_body_is_refused_cleanly(node: Node) -> None:
    s = connect(node)
    s.sendall(b"PUT /api/vhosts/x HTTP/1.1\r\n" + AUTH.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"2\r\n{}\r\n0\r\n\r\n")
    status, _ = read_response(s)
    assert status == 501


def test_body_over_the_limit_is_413_before_it_is_sent(node: Node) -> None:
    s = connect(node)
    s.sendall(b"POST /api/definitions HTTP/1.1\r\n" + AUTH.encode() + b"\r\nContent-Length: %d\r\n\r\n"
              % (65 * 1024 * 1024))
    status, _ = read_response(s)
    assert status == 413


def test_anonymous_large_body_is_refused_before_it_is_read(node: Node) -> None:
    """An unauthenticated client announcing 60 MB gets 401 at once: nothing is buffered."""
    s = connect(node)
    s.sendall(b"POST /api/definitions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (60 * 1024 * 1024))
    s.sendall(b"{" * 1000)
    status, data = read_response(s)
    assert status == 401
    assert b'"not_authorized"' in data and b"Login failed" in data
    s = connect(node)
    s.sendall(b"POST /api/definitions HTTP/1.1\r\nAuthorization: Basic Z3Vlc3Q6d3Jvbmc=\r\n"
              b"Content-Length: %d\r\n\r\n" % (60 * 1024 * 1024))
    status, _ = read_response(s)
    assert status == 401


def test_slowloris_head_hits_a_timeout(node: Node) -> None:
    """A head trickled a byte at a time is cut off after the head timeout (10 s), however
    regularly the bytes come."""
    s = connect(node)
    s.settimeout(0.5)
    request = b"GET /api/overview HTTP/1.1\r\nX-Slow: " + b"z" * 1000
    started = time.monotonic()
    closed = b""
    for i in range(len(request)):  # bounded: ~500 s of trickle at most, the broker must stop it first
        try:
            s.sendall(request[i : i + 1])
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            got = s.recv(65536)  # doubles as the pacing: waits up to 0.5 s for the broker's answer
        except socket.timeout:
            continue
        closed += got
        if not got or b"\r\n\r\n" in closed:
            break
    elapsed = time.monotonic() - started
    assert closed.startswith(b"HTTP/1.1 408"), closed[:100]
    assert 9 < elapsed < 60


def test_slowloris_body_hits_a_timeout(node: Node) -> None:
    s = connect(node)
    s.sendall(b"PUT /api/vhosts/slow HTTP/1.1\r\n" + AUTH.encode() + b"\r\nContent-Length: 100\r\n\r\n{")
    status, _ = read_response(s, deadline=120)  # the broker gives up after its 60 s body timeout
    assert status == 408


def test_pipelined_requests_are_answered_in_order(node: Node) -> None:
    s = connect(node)
    req = b"GET /api/vhosts HTTP/1.1\r\nHost: x\r\n" + AUTH.encode() + b"\r\n\r\n"
    bad = b"GET /api/nope HTTP/1.1\r\nHost: x\r\n" + AUTH.encode() + b"\r\n\r\n"
    s.sendall((req + bad) * 20 + b"GET /api/vhosts HTTP/1.1\r\n" + AUTH.encode() + b"\r\nConnection: close\r\n\r\n")
    _, data = read_response(s)
    statuses = [int(part[:3]) for part in data.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [200, 404] * 20 + [200]


def test_http_10_client_gets_one_answer_and_a_close(node: Node) -> None:
    s = connect(node)
    s.sendall(b"GET /api/overview HTTP/1.0\r\n" + AUTH.encode() + b"\r\n\r\n")
    status, data = read_response(s)
    assert status == 200 and b"connection: close" in data.lower()


def test_client_that_never_reads_stops_being_read(node: Node) -> None:
    """Thousands of pipelined listing requests from a client that reads nothing: the broker
    stops reading it once a response is stuck, so its memory stays flat, and it still answers
    everyone else."""
    from tests.adversarial.tools import rss

    s = connect(node)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    req = b"GET /api/overview HTTP/1.1\r\nHost: x\r\n" + AUTH.encode() + b"\r\n\r\n"
    before = rss(node.proc.pid)
    s.setblocking(False)
    sent = 0
    stalled_at = None
    for _ in range(200000):  # bounded; the broker must stop reading long before
        try:
            sent += s.send(req * 50)
            stalled_at = None
        except BlockingIOError:
            if stalled_at is None:
                stalled_at = time.monotonic()
            elif time.monotonic() - stalled_at > 2.0:
                break
            node.get("/api/overview")  # meanwhile, another client is served
    assert stalled_at is not None, "the broker kept reading a client that reads nothing"
    assert rss(node.proc.pid) - before < 50 * 1024 * 1024
    assert node.get("/api/overview")["management_version"]
    s.close()
