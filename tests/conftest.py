"""Shared fixtures: one broker per test session, started as a real subprocess.

The broker under test is `python -m minimq --port 0`, exactly as a user starts it, so every
test goes through the real CLI, a real socket and the real transport. Set MINIMQ_TEST_URL
(e.g. amqp://guest:guest@127.0.0.1:5672/) to run the same tests against another broker,
such as RabbitMQ, to check that minimq behaves the same.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _minimq_plugin_installed() -> bool:
    from importlib.metadata import entry_points

    return any(ep.name == "minimq" for ep in entry_points(group="pytest11"))


# pytester drives tests/testing's runs of the minimq pytest plugin; the plugin itself comes
# from its pytest11 entry point once minimq is installed, from here in a bare checkout.
pytest_plugins = ["pytester"] + ([] if _minimq_plugin_installed() else ["minimq.testing.pytest_plugin"])

LISTEN_RE = re.compile(r"listening on amqp://([\w.\-]+):(\d+)")


@dataclass
class BrokerProcess:
    """A broker subprocess and where it listens."""

    proc: subprocess.Popen | None
    host: str
    port: int
    url: str
    tls_port: int | None = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_broker(*extra_args: str, timeout: float = 15.0, stderr=None, log_level: str = "warning") -> BrokerProcess:
    """Start `python -m minimq --port 0` and wait for its one "listening on" line.

    `stderr`: where its log goes (an open file, to read the log back; default: inherited)."""
    if "--data-dir" not in extra_args and "--in-memory" not in extra_args:
        extra_args = ("--in-memory", *extra_args)  # test brokers share no default data dir
    cmd = [sys.executable, "-m", "minimq", "--port", "0", "--log-level", log_level, *extra_args]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    found: dict[str, str] = {}
    ready = threading.Event()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not ready.is_set():
                found["line"] = line
                ready.set()
        ready.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    if not ready.wait(timeout) or "line" not in found:
        proc.kill()
        raise RuntimeError(f"broker did not start: {cmd}")
    line = found["line"]
    match = LISTEN_RE.search(line)
    if not match:
        proc.kill()
        raise RuntimeError(f"unexpected broker banner: {line!r}")
    host, port = match.group(1), int(match.group(2))
    tls = re.search(r"amqps://[\w.\-]+:(\d+)", line)
    return BrokerProcess(
        proc,
        host,
        port,
        f"amqp://guest:guest@{host}:{port}/",
        int(tls.group(1)) if tls else None,
    )


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerProcess]:
    """The broker every test talks to (or MINIMQ_TEST_URL's)."""
    external = os.environ.get("MINIMQ_TEST_URL")
    if external:
        parts = urlsplit(external)
        yield BrokerProcess(None, parts.hostname or "127.0.0.1", parts.port or 5672, external)
        return
    b = start_broker()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def amqp_url(broker: BrokerProcess) -> str:
    return broker.url


@pytest.fixture
def unique() -> str:
    """A name no other test uses, so tests can share one broker."""
    return "t-" + uuid.uuid4().hex[:12]
