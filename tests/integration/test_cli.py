"""The command line, as a user runs it: `python server.py`, `python -m minimq`, `minimq`.

Each test starts its own broker process from the repository root and talks to it over real
sockets (plain and TLS). Waits are bounded reads on pipes and sockets, never sleeps.
"""
from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import sys
import sysconfig
from pathlib import Path

import pytest

from minimq.codec import spec

from conftest import ROOT, start_broker

from .rawamqp import Closed, Message, RawAMQP

CERTS = Path(__file__).resolve().parent / "certs"
CERT = str(CERTS / "cert.pem")
KEY = str(CERTS / "key.pem")
BANNER_RE = re.compile(r"^minimq listening on amqp://127\.0\.0\.1:(\d+)$")
BANNER_TLS_RE = re.compile(r"^minimq listening on amqp://127\.0\.0\.1:(\d+) and amqps://127\.0\.0\.1:(\d+)$")
ENTRY_POINTS = {"server.py": ["server.py"], "python -m minimq": ["-m", "minimq"]}


def read_line(proc: subprocess.Popen, timeout: float = 15.0) -> str:
    """The first stdout line of `proc`, read straight from the pipe with a deadline."""
    fd = proc.stdout.fileno()
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            if not sel.select(timeout):
                proc.kill()
                pytest.fail(f"no banner within {timeout} s; stdout so far {data!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                proc.wait(5)
                pytest.fail(f"process exited ({proc.returncode}) before its banner: {data!r}")
            data += chunk
    line, _, rest = data.partition(b"\n")
    assert not rest, f"more than one line at startup: {data!r}"
    return line.decode()


def isolated_env() -> dict[str, str]:
    """The environment with a fresh default data directory (MINIMQ_DATA_DIR), so the
    broker runs exactly as a user starts it, flags and all, without sharing state."""
    return {**os.environ, "MINIMQ_DATA_DIR": tempfile.mkdtemp(prefix="minimq-cli-")}


def launch(entry: list[str], *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, *entry, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=isolated_env(),
    )
    return proc, read_line(proc)


def finish(proc: subprocess.Popen, timeout: float = 5.0) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"process did not exit within {timeout} s; stderr: {err.decode()[-2000:]}")
    return proc.returncode, out.decode(), err.decode()


def round_trip(c: RawAMQP, queue: str) -> None:
    c.channel_open(1)
    c.queue_declare(1, queue, exclusive=True)
    body = os.urandom(1000)
    c.publish(1, "", queue, body)
    msg = c.get(1, queue)
    assert isinstance(msg, Message) and msg.body == body


# ------------------------------------------------------------------ start / stop


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_start_serve_and_stop_on_signal(entry, sig, unique):
    proc, banner = launch(
        ENTRY_POINTS[entry], "--port", "0", "--host", "127.0.0.1", "--log-level", "debug"
    )
    try:
        match = BANNER_RE.match(banner)
        assert match, banner
        port = int(match.group(1))

        c = RawAMQP.connect("127.0.0.1", port)
        round_trip(c, unique)
        c.close()

        # A connection still open at shutdown is told why (320, as RabbitMQ does).
        c = RawAMQP.connect("127.0.0.1", port)
        proc.send_signal(sig)
        try:
            close = c.expect(spec.ConnectionClose, timeout=5, channel=0)
            assert close.reply_code == 320, close
        except Closed:
            pytest.fail("broker dropped the connection without connection.close 320")
        finally:
            c.sock.close()
        code, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, err
    assert out == "", f"unexpected extra stdout: {out!r}"
    assert "Traceback" not in err, err
    assert "DEBUG" in err  # --log-level debug took effect


def test_help():
    result = subprocess.run(
        [sys.executable, "-m", "minimq", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: minimq")
    for option in ("--port", "--host", "--log-level", "--tls-cert", "--tls-key", "--tls-port", "--heartbeat"):
        assert option in result.stdout, option


def test_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "minimq", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            env=isolated_env(),
        )
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.startswith("minimq: "), result.stderr
    assert "in use" in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# ------------------------------------------------------------------------ TLS


def tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=CERT)


def test_tls_banner_and_plain_port(unique):
    proc, banner = launch(
        ["-m", "minimq"], "--port", "0", "--tls-cert", CERT, "--tls-key", KEY, "--tls-port", "0"
    )
    try:
        match = BANNER_TLS_RE.match(banner)
        assert match, banner
        port, tls_port = int(match.group(1)), int(match.group(2))
        assert port != tls_port
        c = RawAMQP.connect("127.0.0.1", port)
        round_trip(c, unique)
        c.close()
        proc.send_signal(signal.SIGTERM)
        code, _out, err = finish(proc)
        assert code == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tls_round_trip(unique):
    b = start_broker("--tls-cert", CERT, "--tls-key", KEY, "--tls-port", "0")
    try:
        assert b.tls_port is not None and b.tls_port != b.port
        c = RawAMQP.connect(b.host, b.tls_port, ssl_context=tls_context())
        assert isinstance(c.sock, ssl.SSLSocket)
        assert c.sock.version() is not None
        assert c.start.version_minor == 9
        round_trip(c, unique)
        c.close()
    finally:
        b.stop()


# -------------------------------------------------------------- console script


def test_console_script():
    script = shutil.which("minimq") or shutil.which("minimq", path=sysconfig.get_path("scripts"))
    assert script, "the `minimq` console script is not installed (pip install -e .)"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: minimq")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip().startswith("minimq ")


# ---------------------------------------------------------- default data directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_data_dir_is_per_port_and_survives_a_restart(tmp_path):
    """No flags: state goes to $XDG_DATA_HOME/minimq/PORT and a restart on that port finds it."""
    env = {k: v for k, v in os.environ.items() if k != "MINIMQ_DATA_DIR"}
    env["XDG_DATA_HOME"] = str(tmp_path)
    port = _free_port()

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "server.py", "--port", str(port)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        assert BANNER_RE.match(read_line(proc))
        return proc

    proc = start()
    c = RawAMQP.connect("127.0.0.1", port)
    c.channel_open(1)
    c.queue_declare(1, "kept", durable=True)
    c.close()
    proc.send_signal(signal.SIGTERM)
    assert finish(proc)[0] == 0
    assert (tmp_path / "minimq" / str(port) / "meta.log").exists()
    proc = start()
    try:
        c = RawAMQP.connect("127.0.0.1", port)
        c.channel_open(1)
        ok = c.queue_declare(1, "kept", passive=True)
        assert ok.queue == "kept"
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert finish(proc)[0] == 0


def test_random_port_brokers_keep_nothing_and_run_side_by_side(tmp_path):
    """--port 0 without a data dir: a throwaway broker; two of them do not share a lock."""
    env = {k: v for k, v in os.environ.items() if k != "MINIMQ_DATA_DIR"}
    env["XDG_DATA_HOME"] = str(tmp_path)
    procs = []
    try:
        for _ in range(2):
            proc = subprocess.Popen(
                [sys.executable, "server.py", "--port", "0"],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            )
            procs.append(proc)
            assert BANNER_RE.match(read_line(proc))
        assert not (tmp_path / "minimq").exists()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            assert finish(proc)[0] == 0


def test_users_and_vhosts_from_the_command_line():
    b = start_broker("--user", "alice:s3cret", "--vhost", "orders")
    try:
        c = RawAMQP.connect("127.0.0.1", b.port, user="alice", password="s3cret", vhost="orders")
        round_trip(c, "in-orders")
        c.close()
        c = RawAMQP.connect("127.0.0.1", b.port)  # guest on / still works
        c.close()
    finally:
        b.stop()
