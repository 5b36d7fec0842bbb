"""Running client programs written in other languages (Go, Java, Node, the C tools).

Each program in programs/<lang>/ prints a transcript, one JSON object per line, of what its
client saw; the tests compare it with what the same program prints against RabbitMQ 3.10
(checked with MINIMQ_TEST_URL). The tools come from Debian packages (and amqplib from npm)
that `.ci/run` installs: where one is missing, a test skips with the reason on a developer's
machine and fails in CI (CI is set), so the tier cannot silently not run there.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

PROGRAMS = Path(__file__).parent / "programs"
INSTALL_HINT = ".ci/run installs it"


#: What every scenario program sees in connection.start (RabbitMQ 3.10's capabilities, sorted).
CAPABILITIES = ["authentication_failure_close", "basic.nack", "connection.blocked",
                "consumer_cancel_notify", "consumer_priorities", "direct_reply_to",
                "exchange_exchange_bindings", "per_consumer_qos", "publisher_confirms"]

#: The properties of the scenario's first message as every program prints them back.
PROPERTIES = {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2,
              "priority": 5, "correlation_id": "corr-1", "reply_to": "replies",
              "expiration": "600000", "message_id": "msg-1", "timestamp": 1700000001,
              "type": "photo.uploaded", "user_id": True, "app_id": "web"}

LARGE_SIZE = (1 << 20) + 17


def typed(type_: str, value: Any) -> dict:
    """A decoded field value as the programs print it: the client's type and the value."""
    return {"type": type_, "value": value}


def scenario_start(prefix: str, headers: dict, confirmed: dict) -> list[dict]:
    """The scenario's common opening: connect, declare, publish with confirm, get it back."""
    x, q = prefix + "-x", prefix + "-q"
    return [
        {"event": "connected", "heartbeat": 1, "frame_max": 131072, "channel_max": 2047,
         "capabilities": CAPABILITIES},
        {"event": "queue.declare-ok", "queue": q, "messages": 0, "consumers": 0},
        confirmed,
        {"event": "get", "exchange": x, "routing_key": "task", "redelivered": False,
         "body": '{"photo": 1}', "message_count": 0, "delivery_tag": 1,
         "properties": PROPERTIES, "headers": headers},
        {"event": "get-empty", "empty": True},
    ]


def worker_deliveries(prefix: str, cancelled: dict) -> list[dict]:
    """m1, m2 under prefetch 2, m3 held back, m1 nacked back redelivered, then m3."""
    def deliver(body: str, redelivered: bool) -> dict:
        return {"event": "deliver", "exchange": prefix + "-x", "routing_key": "task", "body": body,
                "redelivered": redelivered}

    return [deliver("m1", False), deliver("m2", False),
            {"event": "held-back", "messages": 1, "consumers": 1},
            deliver("m1", True), deliver("m3", False), cancelled]


def require(ok: bool, what: str, install: str) -> None:
    """Skip (fail in CI) unless `ok`: `what` is missing, `install` says how to get it."""
    if ok:
        return
    message = f"{what} is not installed ({install}; {INSTALL_HINT})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_tools(*names: str, install: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    require(not missing, " ".join(missing), install)


def parse_transcript(text: str) -> list[dict]:
    events = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            events.append(json.loads(line))
    return events


def run_program(cmd: list[str], timeout: float = 120, env: dict | None = None) -> list[dict]:
    """Run a program to completion; its transcript (a failing exit fails the test)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, (
        f"{cmd[0]} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return parse_transcript(proc.stdout)


def assert_transcript(got: list[dict], expected: list[dict]) -> None:
    """Event by event, so a failure names the first step that differs."""
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"step {i} ({e.get('event')}) differs:\n got {g}\nwant {e}\nall: {got}"
    assert len(got) == len(expected), f"{len(got)} events, want {len(expected)}: {got}"


class Interactive:
    """A program whose transcript is read line by line while it runs, to act on its steps."""

    def __init__(self, cmd: list[str], env: dict | None = None) -> None:
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.events: list[dict] = []
        self._lines: queue.Queue = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self._lines), daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()

    @staticmethod
    def _read(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def expect(self, event: str, timeout: float = 60) -> dict:
        """Wait for the next event; it must be `event`."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {event!r} within {timeout}s; so far {self.events}") from None
        if line is None:
            self.proc.wait(10)
            raise AssertionError(f"program ended before {event!r}: {self.events}\n{''.join(self._stderr)}")
        got = json.loads(line)
        self.events.append(got)
        assert got["event"] == event, f"want {event!r}, got {got}; stderr: {''.join(self._stderr)}"
        return got

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> None:
        rc = self.proc.wait(timeout)
        assert rc == 0, f"exit {rc}: {self.events}\n{''.join(self._stderr)}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Alarm:
    """A broker whose memory alarm a test can raise and clear.

    minimq: an in-process `minimq.testing.Broker` (block()/unblock() raise the server's own
    alarm). With MINIMQ_TEST_URL: only a private RabbitMQ node the tests may reconfigure (the
    one .ci/run starts: MINIMQ_DIFF_NODE, when MINIMQ_DIFF_URL is MINIMQ_TEST_URL), through
    `rabbitmqctl set_vm_memory_high_watermark`; never a shared node.
    """

    def __init__(self) -> None:
        self.url = ""
        self._broker: Any = None
        self._ctl: list[str] = []
        self._env: dict = {}

    def raise_(self) -> None:
        if self._broker is not None:
            self._broker.block("low on memory")
        else:
            self._rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
            self._wait_rabbit_alarm(True)

    def clear(self) -> None:
        if self._broker is not None:
            self._broker.unblock()
        else:
            self._rabbitmqctl("set_vm_memory_high_watermark", "0.4")
            self._wait_rabbit_alarm(False)

    def _rabbitmqctl(self, *args: str) -> str:
        done = subprocess.run(self._ctl + list(args), capture_output=True, text=True,
                              timeout=120, env=self._env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def _wait_rabbit_alarm(self, on: bool, timeout: float = 60) -> None:
        # Each check is a round trip to the node, not a sleep.
        deadline = time.monotonic() + timeout
        while True:
            alarms = self._rabbitmqctl("eval", "rabbit_alarm:get_alarms().")
            if ("memory" in alarms) == on:
                return
            assert time.monotonic() < deadline, f"memory alarm not {'on' if on else 'off'}: {alarms}"


@pytest.fixture
def alarm() -> Iterator[Alarm]:
    a = Alarm()
    external = os.environ.get("MINIMQ_TEST_URL")
    if not external:
        from minimq.testing import Broker

        with Broker() as mq:
            a._broker = mq
            a.url = mq.url
            yield a
        return
    node, private = os.environ.get("MINIMQ_DIFF_NODE"), os.environ.get("MINIMQ_DIFF_URL")
    if not node or private is None or urlsplit(private).port != urlsplit(external).port:
        pytest.skip("raising a memory alarm needs a private RabbitMQ node: MINIMQ_TEST_URL = "
                    "MINIMQ_DIFF_URL with MINIMQ_DIFF_NODE (tests/differential/private_rabbitmq.sh)")
    a.url = external
    a._ctl = ["rabbitmqctl", "-q", "-n", node]
    a._env = dict(os.environ)
    if os.environ.get("MINIMQ_DIFF_DIR"):
        a._env["RABBITMQ_CONF_ENV_FILE"] = os.path.join(os.environ["MINIMQ_DIFF_DIR"], "rabbitmq-env.conf")
    try:
        yield a
    finally:
        a.clear()


#: What every program's `blocked` mode prints from its connection.blocked notification on.
BLOCKED_TRANSCRIPT = [
    {"event": "blocked", "reason": "low on memory"},
    {"event": "unblocked"},
    {"event": "confirm", "tag": 1, "ack": True},
    {"event": "get", "ok": True, "body": "during the alarm"},
    {"event": "closed"},
]


def run_blocked(cmd: list[str], alarm: Alarm, env: dict | None = None) -> list[dict]:
    """Drive a program's `blocked` mode: it publishes during an alarm, sees
    connection.blocked, then connection.unblocked once the alarm clears, then its confirm."""
    prog = Interactive(cmd, env)
    try:
        prog.expect("ready")
        alarm.raise_()
        prog.send("publish")
        blocked = prog.expect("blocked")
        alarm.clear()
        rest = [prog.expect("unblocked"), prog.expect("confirm"), prog.expect("get"), prog.expect("closed")]
        prog.finish()
        return [blocked, *rest]
    finally:
        prog.kill()
