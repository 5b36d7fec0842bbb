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


def raw_request(node: Node, method: str, path: bytes, body: bytes = b"") -> tuple[int, bytes]:
    s = connect(node)
    s.sendall(method.encode() + b" " + path + b" HTTP/1.1\r\n" + AUTH.encode()
              + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
              + body)
    status, data = read_response(s)
    return status, data.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("path", [
    b"/ui/../../app.py", b"/ui/%2e%2e/%2e%2e/app.py", b"/%2e%2e/%2e%2e/etc/passwd", b"/ui/..%2F..%2Fapp.py",
    b"/api/queues/%2F/..", b"/api/queues/..%2F..", b"/api/queues/%252F", b"/api/queues/%2F/" + b"q" * 7000,
    b"/api/queues/%FF%FE", b"/api/queues/%2F/%FF", b"/api/queues/%2F/a%00b", b"/api/exchanges/%2F/%00",
    b"/api/vhosts/%", b"/api/queues/%2F/q%ZZ", b"/api/users/%C0%AE%C0%AE",
])
def test_path_tricks_are_clean_404s(node: Node, path: bytes) -> None:
    status, body = raw_request(node, "GET", path)
    assert status in (400, 404), (status, body[:200])
    assert b"Traceback" not in body and b"minimq" not in body.lower().replace(b"minimq@", b"")


@pytest.mark.parametrize("body", [
    b"[" * 100000 + b"]" * 100000,
    b'{"a":' * 50000 + b"1" + b"}" * 50000,
    b'{"arguments":' * 30000 + b"{}" + b"}" * 30000,
])
def test_json_bombs_are_400_not_json(node: Node, body: bytes) -> None:
    for path in (b"/api/queues/%2F/bomb", b"/api/exchanges/%2F/bomb", b"/api/users/mghard-bomb",
                 b"/api/permissions/%2F/guest", b"/api/vhosts/bomb"):
        status, reply = raw_request(node, "PUT", path, body)
        assert status == 400 and b'"not_json"' in reply, (path, status, reply[:200])
    status, reply = raw_request(node, "POST", b"/api/definitions", body)
    assert status == 400 and b'"not_json"' in reply, (status, reply[:200])


@pytest.mark.parametrize("regex", [r"^(a+)+b", r"(a*)*b", r"(a|aa)*b", r"((x+)y)*$", r".*a.*a.*c"])
def test_backtracking_permission_regex_is_refused(node: Node, regex: str) -> None:
    """A regex like (a+)+b would hold the event loop for seconds on every declare of a
    queue named aaaa...; it is refused with a 400, by the API and in a definitions import."""
    import json

    body = json.dumps({"configure": regex, "write": ".*", "read": ".*"}).encode()
    status, reply = raw_request(node, "PUT", b"/api/permissions/%2F/guest", body)
    assert status == 400, (status, reply)
    assert b"exponential" in reply
    defs = json.dumps({"permissions": [{"user": "guest", "vhost": "/", "configure": regex,
                                        "write": ".*", "read": ".*"}]}).encode()
    status, reply = raw_request(node, "POST", b"/api/definitions", defs)
    assert status == 400 and b"exponential" in reply, (status, reply)
    assert node.get("/api/permissions/%2F/guest")["configure"] == ".*"


@pytest.mark.parametrize("regex", [r"^amq\.gen.*$", r"^(foo|bar)\..*", r"^(?:ab)+$", r"[(a+)+]", r"x{2,3}(y)?",
                                   r"(foo|bar)*", r"^(dev|prod|test)+\.", r"^app-.*-.*$"])
def test_usual_permission_regexes_still_accepted(node: Node, regex: str) -> None:
    import json

    node.request("PUT", "/api/users/mghard-rx", {"password": "p", "tags": ""})
    body = json.dumps({"configure": regex, "write": ".*", "read": ".*"}).encode()
    status, reply = raw_request(node, "PUT", b"/api/permissions/%2F/mghard-rx", body)
    assert status in (201, 204), (status, reply)


def test_hostile_definitions_import_does_not_freeze_amqp(node: Node) -> None:
    """30 000 queues with big arguments in one import: it goes in slices, and an unrelated
    AMQP client's round trip stays short meanwhile."""
    import json
    import types

    from tests.adversarial.tools import Bystander

    vhost = "mghard-import"
    node.request("PUT", f"/api/vhosts/{vhost}", {})
    defs = {"queues": [{"name": f"q{i}", "vhost": vhost, "durable": False, "auto_delete": False,
                        "arguments": {"x-pad": "p" * 100}} for i in range(30000)]}
    by = Bystander(types.SimpleNamespace(host="127.0.0.1", port=node.amqp_port)).start()
    try:
        status, _, _ = node.request("POST", "/api/definitions", raw=json.dumps(defs).encode(), timeout=300)
    finally:
        times = by.stop()
    assert status == 204
    assert node.get(f"/api/vhosts/{vhost}")["name"] == vhost
    assert len(node.get(f"/api/queues/{vhost}?page=1&page_size=1")["items"]) == 1
    assert max(times) < 1.5, f"bystander waited {max(times):.2f}s"
    node.request("DELETE", f"/api/vhosts/{vhost}")


# Each row's answer is what RabbitMQ 3.10.8 gives for the same request (checked against the
# reference node with users made by rabbitmqctl).
AUTH_CASES = [
    ("GET", "/api/overview", "guest", "wrong", 401, {"error": "not_authorized", "reason": "Login failed"}),
    ("GET", "/api/overview", "mghard-none", "pw", 401, {"error": "not_authorised", "reason": "Not management user"}),
    ("GET", "/api/queues/mghard-vh", "mghard-mg", "pw", 401,
     {"error": "not_authorised", "reason": "User not authorised to access virtual host"}),
    ("GET", "/api/exchanges/mghard-vh", "mghard-mg", "pw", 401,
     {"error": "not_authorised", "reason": "User not authorised to access virtual host"}),
    ("PUT", "/api/queues/mghard-vh/q", "mghard-mg", "pw", 401,
     {"error": "not_authorised", "reason": "User not authorised to access virtual host"}),
    ("GET", "/api/vhosts/mghard-vh", "mghard-mg", "pw", 401, {"error": "not_authorised", "reason": "Not administrator user"}),
    ("GET", "/api/users", "mghard-mg", "pw", 401, {"error": "not_authorised", "reason": "Not administrator user"}),
    ("PUT", "/api/vhosts/mghard-x", "mghard-mg", "pw", 401, {"error": "not_authorised", "reason": "Not administrator user"}),
    ("PUT", "/api/users/mghard-y", "mghard-mg", "pw", 401, {"error": "not_authorised", "reason": "Not administrator user"}),
    ("DELETE", "/api/vhosts/mghard-vh", "mghard-mg", "pw", 401, {"error": "not_authorised", "reason": "Not administrator user"}),
    ("PUT", "/api/permissions/mghard-vh/mghard-mg", "mghard-mg", "pw", 401,
     {"error": "not_authorised", "reason": "Not administrator user"}),
    ("POST", "/api/definitions", "mghard-mg", "pw", 401, {"error": "not_authorised", "reason": "Not administrator user"}),
    ("GET", "/api/nodes", "mghard-mg", "pw", 401, {"error": "not_authorised", "reason": "Not monitor user"}),
    ("GET", "/api/queues/mghard-nope", "mghard-mg", "pw", 404, {"error": "Object Not Found", "reason": "Not Found"}),
]


@pytest.fixture(scope="module")
def users(node: Node) -> None:
    node.request("PUT", "/api/users/mghard-none", {"password": "pw", "tags": ""})
    node.request("PUT", "/api/users/mghard-mg", {"password": "pw", "tags": "management"})
    node.request("PUT", "/api/vhosts/mghard-vh", {})
    for user in ("mghard-none", "mghard-mg"):
        node.request("PUT", f"/api/permissions/%2F/{user}", {"configure": ".*", "write": ".*", "read": ".*"})


@pytest.mark.parametrize("method,path,user,password,status,body", AUTH_CASES)
def test_auth_failures_answer_as_rabbitmq(node: Node, users: None, method: str, path: str, user: str,
                                          password: str, status: int, body: dict) -> None:
    got = node.request(method, path, {} if method in ("PUT", "POST") else None, user=user, password=password)
    assert got[:2] == (status, body)


def test_management_user_sees_only_its_own_connections(node: Node, users: None) -> None:
    from tests.adversarial.tools import RawAMQP

    guest_conn = RawAMQP.connect("127.0.0.1", node.amqp_port)
    try:
        deadline = time.monotonic() + 30
        while not node.get("/api/connections"):  # bounded: the stats see the connection soon
            assert time.monotonic() < deadline
        assert node.get("/api/connections", user="mghard-mg", password="pw") == []
    finally:
        guest_conn.sock.close()


def test_idle_connections_are_capped() -> None:
    """Thousands of idle connections: past 1000 open ones a new one gets 503 and a close, and
    once some go away new clients are served again."""
    import resource

    from minimq.admin.http import MAX_CONNECTIONS

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = MAX_CONNECTIONS + 200
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want * 2), hard))  # the broker inherits it
    n = start_node()
    socks: list[socket.socket] = []
    try:
        import selectors

        for _ in range(MAX_CONNECTIONS + 5):  # bounded
            socks.append(connect(n))
        # epoll, not select(): inside a full test run these descriptors pass FD_SETSIZE (1024)
        with selectors.DefaultSelector() as sel:
            for s in socks:
                sel.register(s, selectors.EVENT_READ)
            readable = [key.fileobj for key, _ in sel.select(30)]  # the refused ones get an answer
        assert readable, "no connection was refused"
        for s in readable:
            s.settimeout(10)
            assert s.recv(100).startswith(b"HTTP/1.1 503")
        assert len(readable) <= 5
        for s in socks[:10]:
            s.close()
        deadline = time.monotonic() + 30
        while not _served(n):  # bounded: the broker notices the closes promptly
            assert time.monotonic() < deadline
    finally:
        for s in socks:
            s.close()
        n.stop()


def _served(n: Node) -> bool:
    s = connect(n)
    s.settimeout(5)
    try:
        s.sendall(b"GET /api/overview HTTP/1.1\r\n" + AUTH.encode() + b"\r\nConnection: close\r\n\r\n")
        return s.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        s.close()


def test_expect_100_continue_is_answered_once_for_a_body_in_many_reads(node: Node) -> None:
    """`Expect: 100-continue` gets one interim response, however many reads the body takes."""
    body = b'{"durable": false, "auto_delete": false, "arguments": {}}'
    s = connect(node)
    s.sendall(("PUT /api/queues/%2F/expect-continue HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               f"{AUTH}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode())
    s.settimeout(30)
    interim = b""
    while b"\r\n\r\n" not in interim:
        chunk = s.recv(65536)
        assert chunk, interim
        interim += chunk
    assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    for i in range(0, len(body), 8):  # the body in several writes, each read on its own
        s.sendall(body[i:i + 8])
        time.sleep(0.01)  # pacing the writes so they arrive as separate reads (not a wait)
    status, data = read_response(s)
    rest = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):] + data
    assert status in (201, 204) and b"100 Continue" not in rest, rest[:300]
    assert rest.startswith(b"HTTP/1.1 201") or rest.startswith(b"HTTP/1.1 204"), rest[:300]
    assert node.request("DELETE", "/api/queues/%2F/expect-continue")[0] == 204
