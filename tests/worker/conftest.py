"""Helpers for the worker-runner tests.

Every test runs the real runner, ``python -m minimq.worker tasks:app``, as a subprocess
against the session broker (minimq, or MINIMQ_TEST_URL's broker such as RabbitMQ). The
handler module is written into the test's tmp dir and found through PYTHONPATH. Handlers
append one line per event to a file; tests wait for lines (or for log lines of the runner)
with bounded polls, never fixed sleeps.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

import minimq.client.sync
from minimq.client import Message

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

#: Upper bound of any single wait.
TIMEOUT = 20.0


def wait_until(predicate: Callable[[], T], timeout: float = TIMEOUT, interval: float = 0.02,
               what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Runner:
    """One ``python -m minimq.worker`` subprocess with its log captured line by line."""

    def __init__(self, cwd: Path, app: str, url: str, *args: str,
                 env: dict[str, str] | None = None) -> None:
        environment = dict(os.environ)
        environment.pop("MINIMQ_URL", None)
        environment["PYTHONPATH"] = os.pathsep.join([str(cwd), str(ROOT)])
        environment["MINIMQ_WORKER_STATUS_DIR"] = str(cwd / "status")
        environment.update(env or {})
        self.cmd = [sys.executable, "-m", "minimq.worker", app, "--url", url,
                    "--status-interval", "0.5", *args]
        self.proc = subprocess.Popen(self.cmd, cwd=cwd, env=environment,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_log(self, pattern: str, timeout: float = TIMEOUT, count: int = 1) -> list[re.Match[str]]:
        """Wait until ``count`` log lines match ``pattern``; return the matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matches = [m for m in map(regex.search, self.lines) if m]
                if len(matches) >= count:
                    return matches
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {count} log line(s) matching {pattern!r} within "
                                         f"{timeout}s; log:\n" + "\n".join(self.lines))
                self._cond.wait(min(remaining, 0.2))

    def wait_ready(self, consumers: int, timeout: float = TIMEOUT) -> None:
        self.wait_log(r"minimq\.worker: consuming ", timeout, count=consumers)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"runner did not exit within {timeout}s; log:\n{self.log}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.send_signal(signal.SIGINT)  # second signal: kill the workers now
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Workspace:
    """A tmp dir holding the handler module, the event file and the runners started in it."""

    def __init__(self, path: Path, url: str, unique: str) -> None:
        self.path = path
        self.url = url
        self.unique = unique
        self.events = path / "events.txt"
        self.runners: list[Runner] = []

    def module(self, source: str, name: str = "tasks") -> str:
        """Write ``<name>.py``; ``{q}``/``{events}``/``{url}`` in the source are filled in."""
        header = textwrap.dedent(f"""\
            import asyncio, os, sys, time
            from datetime import timedelta
            import minimq.worker
            from minimq.worker import Reject, Requeue, Retry
            Q = {self.unique!r}
            EVENTS = {str(self.events)!r}

            def record(*fields):
                line = " ".join(str(f) for f in fields) + "\\n"
                fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
            """)
        (self.path / f"{name}.py").write_text(header + textwrap.dedent(source))
        return f"{name}:app"

    def run(self, app: str = "tasks:app", *args: str, env: dict[str, str] | None = None) -> Runner:
        runner = Runner(self.path, app, self.url, *args, env=env)
        self.runners.append(runner)
        return runner

    def read_events(self) -> list[list[str]]:
        if not self.events.exists():
            return []
        return [line.split() for line in self.events.read_text().splitlines() if line]

    def events_of(self, kind: str) -> list[list[str]]:
        return [e for e in self.read_events() if e[0] == kind]

    def wait_events(self, kind: str, count: int, timeout: float = TIMEOUT) -> list[list[str]]:
        return wait_until(lambda: len(self.events_of(kind)) >= count and self.events_of(kind),
                          timeout, what=f"{count} {kind!r} events (have "
                                        f"{len(self.events_of(kind))})")

    def publish(self, bodies: list[str], routing_key: str, exchange: str = "",
                headers: dict | None = None) -> None:
        with minimq.client.sync.connect(self.url) as connection:
            channel = connection.channel(publisher_confirms=True)
            for body in bodies:
                channel.publish(Message(body, persistent=True, message_id=body, headers=headers),
                                routing_key, exchange)

    def queue_depth(self, queue: str) -> int:
        with minimq.client.sync.connect(self.url) as connection:
            return connection.channel().declare_queue(queue, passive=True).message_count

    def get_all(self, queue: str) -> list:
        """Take every ready message off ``queue`` (acked); none if it does not exist (yet:
        the runner declares retry and dead queues when it first needs them)."""
        out = []
        with minimq.client.sync.connect(self.url) as connection:
            channel = connection.channel()
            while True:
                try:
                    message = channel.get(queue)
                except minimq.client.NotFound:
                    return out
                if message is None:
                    return out
                message.ack()
                out.append(message)

    def cleanup(self) -> None:
        for runner in self.runners:
            runner.kill()
        try:
            with minimq.client.sync.connect(self.url) as connection:
                channel = connection.channel()
                for name in _queues_of(self.unique):
                    try:
                        channel.delete_queue(name)
                    except minimq.client.ClientError:
                        channel = connection.channel()
                for name in (f"{self.unique}.x", f"{self.unique}.t", f"{self.unique}.retry"):
                    try:
                        channel.delete_exchange(name)
                    except minimq.client.ClientError:
                        channel = connection.channel()
        except (minimq.client.ClientError, OSError):
            pass


def _queues_of(unique: str) -> list[str]:
    names = [unique, f"{unique}.dead", f"{unique}.out", f"{unique}.out.dead",
             f"{unique}.audit", f"{unique}.topic"]
    names += [f"{unique}.retry.{ms}" for ms in (100, 200, 300, 400, 600, 800, 1000, 1200, 1600)]
    return names


@pytest.fixture
def ws(tmp_path: Path, amqp_url: str, unique: str) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path, amqp_url, unique)
    yield workspace
    workspace.cleanup()
