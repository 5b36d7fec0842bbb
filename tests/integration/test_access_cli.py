"""Access control as an operator runs it: flags, --config, --definitions, the data dir, logs,
guest on loopback only, limits. Each test starts its own `python -m minimq` and talks pika.
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pika
import pytest
from pika.exceptions import (
    ChannelClosedByBroker,
    ConnectionClosedByBroker,
    ProbableAccessDeniedError,
    ProbableAuthenticationError,
)

from conftest import ROOT, BrokerProcess, start_broker

FIXTURE = ROOT / "tests" / "fixtures" / "rabbitmq-3.10-definitions.json"


class LogReader:
    """A broker's stderr, read line by line in a thread; waits are on a condition."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for raw in stream:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        regex = re.compile(pattern)
        with self._cond:
            found = self._cond.wait_for(lambda: any(regex.search(line) for line in self.lines), timeout)
            assert found, f"no log line matching {pattern!r} in:\n{''.join(self.lines)}"
            return next(line for line in self.lines if regex.search(line))

    @property
    def text(self) -> str:
        with self._cond:
            return "".join(self.lines)


class Running:
    def __init__(self, broker: BrokerProcess, log: LogReader) -> None:
        self.broker, self.log = broker, log

    def connect(self, user: str = "guest", password: str = "guest", vhost: str = "/", host: str = "127.0.0.1",
                **props) -> pika.BlockingConnection:
        url = f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{self.broker.port}/{quote(vhost, safe='')}"
        params = pika.URLParameters(url)
        params.socket_timeout = 30
        if props:
            params.client_properties = props
        return pika.BlockingConnection(params)


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="minimq-acl-cli-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run_broker() -> Iterator:
    started: list[BrokerProcess] = []

    def run(*args: str, log_level: str = "info", with_management: bool = False) -> Running:
        extra = () if with_management else ("--no-management",)
        broker = start_broker(*extra, *args, stderr=subprocess.PIPE, log_level=log_level)
        started.append(broker)
        return Running(broker, LogReader(broker.proc.stderr))

    yield run
    for broker in started:
        broker.stop()


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (from `ip`, else the hostname)."""
    candidates: list[str] = []
    ip = shutil.which("ip")
    if ip:
        out = subprocess.run([ip, "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
        candidates += re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    try:
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    for addr in candidates:
        if not addr.startswith("127."):
            return addr
    return None


# ------------------------------------------------------------------------ loopback users

def test_guest_is_refused_through_a_non_loopback_address(run_broker) -> None:
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect through")
    b = run_broker("--host", "0.0.0.0", "--user", "alice:secret")
    with pytest.raises(ProbableAuthenticationError) as ei:
        b.connect(host=addr)
    assert "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in str(ei.value)
    line = b.log.wait_for(r"login refused for user 'guest'")
    assert addr in line and "can only connect via localhost" in line
    b.connect(host="127.0.0.1").close()  # guest through loopback: fine
    b.connect("alice", "secret", host=addr).close()  # other users: from anywhere


def test_empty_loopback_users_lets_guest_in_from_anywhere(run_broker) -> None:
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect through")
    b = run_broker("--host", "0.0.0.0", "--loopback-users", "")
    b.connect(host=addr).close()


# --------------------------------------------------------------------- flags and config

def test_user_and_vhost_flags_grant_only_the_flag_vhosts(run_broker) -> None:
    """The issue's example: --user alice:secret --vhost v1 refuses alice on '/' and guest on v1."""
    b = run_broker("--user", "alice:secret", "--vhost", "v1")
    b.connect("alice", "secret", "v1").close()
    b.connect("guest", "guest", "/").close()
    for user, password, vhost in (("alice", "secret", "/"), ("guest", "guest", "v1")):
        with pytest.raises(ProbableAccessDeniedError) as ei:
            b.connect(user, password, vhost)
        assert f"NOT_ALLOWED - access to vhost '{vhost}' refused for user '{user}'" in str(ei.value)


def test_user_flag_without_vhost_gets_slash(run_broker) -> None:
    b = run_broker("--user", "bob:p:w")  # the password may hold ':'
    b.connect("bob", "p:w").close()


def test_config_file_sets_options_users_and_limits_and_flags_win(run_broker, tmp: Path) -> None:
    config = tmp / "minimq.toml"
    config.write_text(
        """
heartbeat = 7
loopback-users = []

[vhosts.shop]
limits = { max-connections = 1 }

[users.alice]
password = "from-file"
tags = ["management"]

[users.carol]
password = "carol-pw"
limits = { max-channels = 1 }

[[permissions]]
user = "alice"
vhost = "shop"
configure = ".*"
write = ".*"
read = ".*"

[[permissions]]
user = "carol"
vhost = "/"
configure = ".*"
write = ".*"
read = ".*"
"""
    )
    b = run_broker("--config", str(config), "--heartbeat", "9")
    conn = b.connect("alice", "from-file", "shop")
    assert conn._impl._heartbeat_checker._timeout == 9  # the flag won over the file's 7
    # vhost max-connections = 1
    with pytest.raises(ProbableAccessDeniedError) as ei:
        b.connect("alice", "from-file", "shop")
    assert "NOT_ALLOWED - access to vhost 'shop' refused for user 'alice': connection limit (1) is reached" in str(ei.value)
    conn.close()
    # user max-channels = 1
    carol = b.connect("carol", "carol-pw")
    carol.channel()
    with pytest.raises(ConnectionClosedByBroker) as ei:
        carol.channel()
    assert ei.value.reply_code == 530
    assert ei.value.reply_text == (
        "NOT_ALLOWED - number of channels opened for user 'carol' has reached the maximum allowed user limit of (1)"
    )


def test_bad_config_file_stops_the_start_with_a_clear_message(tmp: Path) -> None:
    config = tmp / "bad.toml"
    config.write_text('port = "five"\n')
    proc = subprocess.run(
        [__import__("sys").executable, "-m", "minimq", "--config", str(config), "--in-memory"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "'port' must be int" in proc.stderr
    config.write_text('[[permissions]]\nuser = "x"\nvhost = "/"\nconfigure = "("\n')
    proc = subprocess.run(
        [__import__("sys").executable, "-m", "minimq", "--config", str(config), "--in-memory"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "invalid regular expression" in proc.stderr


# ----------------------------------------------------------------------------- limits

def test_vhost_max_queues_and_user_max_connections(run_broker, tmp: Path) -> None:
    config = tmp / "limits.toml"
    config.write_text(
        """
[vhosts."/"]
limits = { max-queues = 1 }
[users.guest]
password = "guest"
limits = { max-connections = 1 }
[[permissions]]
user = "guest"
vhost = "/"
configure = ".*"
write = ".*"
read = ".*"
"""
    )
    b = run_broker("--config", str(config))
    conn = b.connect()
    ch = conn.channel()
    ch.queue_declare("first")
    ch.queue_declare("first")  # redeclaring an existing queue is not a new one
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare("second")
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, "PRECONDITION_FAILED - cannot declare queue 'second': queue limit in vhost '/' (1) is reached")
    with pytest.raises(ProbableAccessDeniedError) as ei:
        b.connect()
    assert "NOT_ALLOWED - connection refused for user 'guest': user connection limit (1) is reached" in str(ei.value)
    conn.close()
    b.connect().close()  # the limit counts open connections


# ------------------------------------------------------------------------ definitions

def test_definitions_exported_by_rabbitmq_load_and_users_log_in(run_broker) -> None:
    b = run_broker("--definitions", str(FIXTURE))
    alice = b.connect("acl-alice", "alice-secret", "acl-fixture")
    ch = alice.channel()
    assert ch.queue_declare("bob-orders", passive=True).method.queue == "bob-orders"
    ch.exchange_declare("orders", passive=True)
    alice.close()
    bob = b.connect("acl-bob", "bob s3cret:ünï", "acl-fixture")
    ch = bob.channel()
    ch.basic_publish("", "bob-orders", b"hello")
    with pytest.raises(ChannelClosedByBroker) as ei:
        bob.channel().queue_declare("alice-stuff")
    assert ei.value.reply_text == (
        "ACCESS_REFUSED - access to queue 'alice-stuff' in vhost 'acl-fixture' refused for user 'acl-bob'")
    bob.close()
    with pytest.raises(ProbableAccessDeniedError):
        b.connect("acl-bob", "bob s3cret:ünï", "/")
    b.log.wait_for(r"loaded definitions from")


# ----------------------------------------------------------------------- persistence

def test_run_time_changes_survive_a_restart_in_the_data_dir(run_broker, tmp: Path) -> None:
    data = tmp / "data"
    b = run_broker("--data-dir", str(data), "--user", "dave:first", "--vhost", "dv")
    b.connect("dave", "first", "dv").close()
    saved = json.loads((data / "definitions.json").read_text())
    assert {u["name"] for u in saved["users"]} == {"guest", "dave"}
    assert all("first" not in json.dumps(u) for u in saved["users"])  # hashes, never passwords
    assert (data / "definitions.json").stat().st_mode & 0o077 == 0
    b.broker.stop()
    # A definitions file standing in for a run-time change (the management API's own
    # change goes through the same save): guest deleted, a new user.
    saved["users"] = [u for u in saved["users"] if u["name"] != "guest"]
    saved["permissions"] = [p for p in saved["permissions"] if p["user"] != "guest"]
    (data / "definitions.json").write_text(json.dumps(saved))
    b2 = run_broker("--data-dir", str(data))
    b2.connect("dave", "first", "dv").close()  # the flag's user and vhost were kept
    with pytest.raises(ProbableAuthenticationError):
        b2.connect()  # guest stays deleted: a fresh node's default is not recreated


def test_a_user_made_through_the_management_api_survives_a_restart(run_broker, tmp: Path) -> None:
    import base64
    import urllib.request

    data = tmp / "data"

    def api(port: int, method: str, path: str, body: dict | None = None) -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"content-type": "application/json",
                     "authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status

    def start() -> tuple[Running, int]:
        b = run_broker("--data-dir", str(data), "--management-port", "0", with_management=True)
        line = b.log.wait_for(r"management API and web UI on http://")
        return b, int(re.search(r":(\d+)/", line).group(1))

    b, port = start()
    assert api(port, "PUT", "/api/vhosts/erins", {}) in (201, 204)
    assert api(port, "PUT", "/api/users/erin", {"password": "erin-pw", "tags": "management"}) in (201, 204)
    assert api(port, "PUT", "/api/permissions/erins/erin", {"configure": ".*", "write": ".*", "read": ".*"}) in (201, 204)
    assert api(port, "DELETE", "/api/users/guest") == 204
    b.connect("erin", "erin-pw", "erins").close()
    b.broker.stop()
    b2 = run_broker("--data-dir", str(data), log_level="warning")
    b2.connect("erin", "erin-pw", "erins").close()
    with pytest.raises(ProbableAuthenticationError):
        b2.connect()  # guest was deleted at run time and stays deleted


# ------------------------------------------------------------------------------- logs

def test_logs_name_peer_user_vhost_connection_name_and_close_reason(run_broker) -> None:
    b = run_broker()
    name = "orders-" + uuid.uuid4().hex[:6]
    conn = b.connect(connection_name=name)
    line = b.log.wait_for(r"accepted AMQP connection .*" + name)
    assert "127.0.0.1:" in line and "user 'guest'" in line and "vhost '/'" in line and " INFO " in line
    conn.close()
    line = b.log.wait_for(r"closing AMQP connection .*" + name)
    assert "client closed the connection" in line
    with pytest.raises(ProbableAuthenticationError):
        b.connect("guest", "sekrit-pw")
    line = b.log.wait_for(r"login refused for user 'guest'")
    assert "PLAIN" in line
    assert "sekrit" not in b.log.text
