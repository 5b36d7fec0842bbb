"""The RabbitMQ Java client (Debian's librabbitmq-client-java 5.0.0), compiled with the JDK's
javac (default-jdk-headless) against Debian's jar, logging through slf4j-simple.

programs/java/Interop.java is a web-tier publisher and a worker: PLAIN login with a 1 s
heartbeat, durable exchange/queue/binding, a persistent publish with every property and a
header of each type the client writes (nested maps and lists, Date, BigDecimal, byte[], null),
publisher confirms (waitForConfirmsOrDie), basic.get, a consumer with prefetch 2 and manual
acks (nack + requeue comes back redelivered), a 1 MiB message across many frames, a 404
channel error (the ShutdownSignalException's channel.close and the AlreadyClosedException
after it), seconds of idle kept alive by heartbeats, clean close; and, in `blocked` mode, its
BlockedListener around a publish during a memory alarm. Its transcript must be exactly what
it prints against RabbitMQ 3.10.8 (MINIMQ_TEST_URL).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import url_with
from .foreign import (BLOCKED_TRANSCRIPT, LARGE_SIZE, PROGRAMS, alarm,  # noqa: F401 (alarm: a fixture)
                      assert_transcript, require, run_blocked, run_program, scenario_start, typed,
                      worker_deliveries)

JARS = Path("/usr/share/java")
CLASSPATH = ["amqp-client.jar", "slf4j-api.jar", "slf4j-simple.jar"]
INSTALL = "apt-get install default-jdk-headless librabbitmq-client-java"


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> list[str]:
    require(shutil.which("javac") is not None and shutil.which("java") is not None,
            "javac (default-jdk-headless)", INSTALL)
    missing = [j for j in CLASSPATH if not (JARS / j).exists()]
    require(not missing, " ".join(missing) + " (librabbitmq-client-java)", INSTALL)
    out = tmp_path_factory.mktemp("java")
    done = subprocess.run(["javac", "-nowarn", "-cp", str(JARS / "amqp-client.jar"), "-d", str(out),
                           str(PROGRAMS / "java" / "Interop.java")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    classpath = os.pathsep.join([str(out), *(str(JARS / j) for j in CLASSPATH)])
    return ["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp", classpath, "Interop"]


def java_url(amqp_url: str) -> str:
    # In an AMQP URI the path is the vhost: "/%2F" is "/", a bare "/" would be "".
    return url_with(amqp_url, vhost="/")


t = typed


HEADERS = t("Map", {
    "string": t("LongString", "h\u00e9llo"),
    "int": t("Integer", -42),
    "long": t("Long", 1 << 40),
    "short": t("Short", 7),
    "byte": t("Byte", -8),
    "bool": t("Boolean", True),
    "double": t("Double", 1.5),
    "float": t("Float", 0.25),
    "timestamp": t("Date", 1700000000),
    "decimal": t("BigDecimal", [2, 12345]),
    "bytes": t("byte[]", "0001fe"),
    "void": t("null", None),
    "array": t("List", [t("LongString", "a"), t("Integer", 1), t("Boolean", True),
                        t("Map", {"in": t("LongString", "array")}), t("List", [t("Long", 2)])]),
    "nested": t("Map", {"level": t("Integer", 1), "deeper": t("Map", {
        "level": t("Integer", 2), "list": t("List", [t("Long", 3), t("LongString", "x")])})}),
})


def expected_scenario(prefix: str) -> list[dict]:
    missing = f"NOT_FOUND - no queue '{prefix}-missing' in vhost '/'"
    return [
        *scenario_start(prefix, HEADERS, {"event": "confirmed", "next_seq": 2}),
        {"event": "confirmed", "next_seq": 5},
        *worker_deliveries(prefix, {"event": "cancelled", "tag": "worker"}),
        {"event": "confirmed", "next_seq": 6},
        {"event": "large", "size": LARGE_SIZE, "intact": True},
        {"event": "channel-error", "code": 404, "text": missing, "class_id": 50, "method_id": 10,
         "hard": False, "initiated_by_application": False},
        {"event": "channel-state", "open": False},
        {"event": "after-error", "error": (
            "channel is already closed due to channel error; protocol method: #method<channel.close>"
            f"(reply-code=404, reply-text={missing}, class-id=50, method-id=10)")},
        {"event": "connection-alive", "messages": 0, "open": True},
        {"event": "after-idle", "open": True},
        {"event": "queue.delete-ok", "messages": 0},
        {"event": "closed", "open": False, "initiated_by_application": True},
    ]


def test_java_publisher_and_worker(program, amqp_url, unique):
    assert_transcript(run_program([*program, java_url(amqp_url), unique, "scenario"]),
                      expected_scenario(unique))


def test_java_blocked_listener(program, alarm, unique):
    events = run_blocked([*program, java_url(alarm.url), unique, "blocked"], alarm)
    assert events == BLOCKED_TRANSCRIPT


def expected_edges(p: str) -> list[dict]:
    def chan(event: str, code: int, text: str, class_id: int, method_id: int) -> dict:
        return {"event": event, "channel_close": [code, text, class_id, method_id]}

    def conn(event: str, code: int, text: str, class_id: int, method_id: int) -> dict:
        return {"event": event, "connection_close": [code, text, class_id, method_id], "hard": True}

    noq, nox = f"NOT_FOUND - no queue '{p}-noq' in vhost '/'", f"NOT_FOUND - no exchange '{p}-nox' in vhost '/'"
    return [
        {"event": "tuned", "heartbeat": 60, "frame_max": 4096, "channel_max": 16},
        {"event": "small-frames", "intact": True},
        # Erlang == on top-level values: numbers by value (a Date is its seconds), a byte
        # array equals the longstr; not "1", not true, not a decimal, not 2.
        {"event": "headers-routed", "bodies": ["int", "long", "short", "byte", "double", "float",
                                               "timestamp", "bytes-abc", "string-abc",
                                               "void-present", "int-present"]},
        {"event": "priority-order", "bodies": ["p9@.photo.p1", "p5@.photo.p3", "p3@.photo.p2",
                                               "p1@.photo.p4", "p0@.photo.p0"]},
        {"event": "returned", "return": "312 NO_ROUTE  key unroutable"},
        {"event": "consumer-cancelled", "tag": "doomed", "open": True},
        {"event": "recovered", "first": False, "second": True, "body": "again"},
        chan("publish-missing-exchange", 404, nox, 60, 40),
        chan("ack-unknown-tag", 406, "PRECONDITION_FAILED - unknown delivery tag 42", 60, 80),
        chan("double-ack", 406, "PRECONDITION_FAILED - unknown delivery tag 1", 60, 80),
        chan("reject-unknown-tag", 406, "PRECONDITION_FAILED - unknown delivery tag 7", 60, 90),
        chan("get-missing-queue", 404, noq, 60, 70),
        chan("consume-missing-queue", 404, noq, 60, 20),
        chan("purge-missing-queue", 404, noq, 50, 30),
        chan("delete-exchange-missing", 404, nox, 40, 10),
        chan("bind-missing-exchange", 404, nox, 50, 20),
        chan("exchange-bind-missing", 404, nox, 40, 30),
        chan("redeclare-amq-exchange", 406, "PRECONDITION_FAILED - inequivalent arg 'type' for exchange "
             "'amq.direct' in vhost '/': received 'fanout' but current is 'direct'", 40, 10),
        chan("declare-amq-prefix", 403, f"ACCESS_REFUSED - exchange name 'amq.custom-{p}' contains reserved "
             "prefix 'amq.*'", 40, 10),
        chan("queue-amq-prefix", 403, f"ACCESS_REFUSED - queue name 'amq.q-{p}' contains reserved prefix "
             "'amq.*'", 50, 10),
        chan("delete-default-exchange", 403, "ACCESS_REFUSED - operation not permitted on the default exchange",
             40, 20),
        chan("nowait-missing-queue", 404, noq, 50, 20),
        conn("consume-tag-in-use", 530, "NOT_ALLOWED - attempt to reuse consumer tag 'same'", 60, 20),
        conn("prefetch-size", 540, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)", 60, 10),
        conn("unknown-exchange-type", 503, "COMMAND_INVALID - unknown exchange type 'x-weird'", 40, 10),
        conn("immediate", 540, "NOT_IMPLEMENTED - immediate=true", 60, 40),
        {"event": "closed", "open": False},
    ]


def test_java_edges_headers_matching_priorities_returns_and_close_reasons(program, amqp_url, unique):
    """frame_max 4096 and channel_max 16 asked by the client; a headers exchange matched
    against each Java header type; exchange-to-exchange topic routing into a priority queue;
    ReturnListener, handleCancel, basicRecover; and the class and method ids of each
    channel.close and connection.close, as RabbitMQ sends them."""
    assert_transcript(run_program([*program, java_url(amqp_url), unique, "edges"]), expected_edges(unique))
