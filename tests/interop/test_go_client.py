"""The official Go client (github.com/rabbitmq/amqp091-go 1.5.0, Debian's
golang-github-rabbitmq-amqp091-go-dev, built offline with golang-go 1.19).

programs/go/main.go is a web-tier publisher and a worker: PLAIN login with a 1 s heartbeat,
durable exchange/queue/binding, a persistent publish with every property and a header of each
field type Go writes (nested tables and arrays, timestamp, decimal, bytes, void), publisher
confirms, basic.get, a consumer with prefetch 2 and manual acks (nack + requeue comes back
redelivered), a 1 MiB message across many frames, a 404 channel error and what the client sees
after it, seconds of idle kept alive by heartbeats, clean close; and, in `blocked` mode,
connection.blocked/unblocked around a publish during a memory alarm. Its transcript must be
exactly what it prints against RabbitMQ 3.10.8 (MINIMQ_TEST_URL).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .foreign import (BLOCKED_TRANSCRIPT, LARGE_SIZE, PROGRAMS, alarm,  # noqa: F401 (alarm: a fixture)
                      assert_transcript, require, run_blocked, run_program, scenario_start, typed,
                      worker_deliveries)

GOPATH = Path("/usr/share/gocode")
INSTALL = "apt-get install golang-go golang-github-rabbitmq-amqp091-go-dev"


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> str:
    require(shutil.which("go") is not None, "go (golang-go)", INSTALL)
    require((GOPATH / "src/github.com/rabbitmq/amqp091-go/connection.go").exists(),
            "amqp091-go (golang-github-rabbitmq-amqp091-go-dev)", INSTALL)
    out = tmp_path_factory.mktemp("go") / "interop-go"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOFLAGS": "",
           "GOCACHE": os.environ.get("GOCACHE") or str(tmp_path_factory.getbasetemp() / "gocache")}
    done = subprocess.run(["go", "build", "-o", str(out), "main.go"], cwd=PROGRAMS / "go", env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return str(out)


t = typed


HEADERS = t("table", {
    "string": t("string", "h\u00e9llo"),
    "int32": t("int32", -42),
    "int64": t("int64", 1 << 40),
    "int16": t("int16", 7),
    "int8": t("int8", -8),
    "bool": t("bool", True),
    "float64": t("float64", 1.5),
    "float32": t("float32", 0.25),
    "timestamp": t("time.Time", 1700000000),
    "decimal": t("Decimal", [2, 12345]),
    "bytes": t("[]byte", "0001fe"),
    "void": t("nil", None),
    "array": t("array", [t("string", "a"), t("int32", 1), t("bool", True),
                         t("table", {"in": t("string", "array")}), t("array", [t("int64", 2)])]),
    "nested": t("table", {"level": t("int32", 1), "deeper": t("table", {
        "level": t("int32", 2), "list": t("array", [t("int64", 3), t("string", "x")])})}),
})


def expected_scenario(prefix: str) -> list[dict]:
    return [
        *scenario_start(prefix, HEADERS, {"event": "confirm", "tag": 1, "ack": True}),
        *({"event": "confirm", "tag": n, "ack": True} for n in (2, 3, 4)),
        *worker_deliveries(prefix, {"event": "cancelled"}),
        {"event": "confirm", "tag": 5, "ack": True},
        {"event": "large", "size": LARGE_SIZE, "intact": True},
        {"event": "channel-error", "code": 404, "server": True,
         "text": f"NOT_FOUND - no queue '{prefix}-missing' in vhost '/'"},
        {"event": "channel-closed", "code": 404},
        {"event": "after-error", "closed": True,
         "error": 'Exception (504) Reason: "channel/connection is not open"'},
        {"event": "connection-alive", "messages": 0},
        {"event": "after-idle", "ok": True, "closed": False},
        {"event": "queue.delete-ok", "messages": 0},
        {"event": "closed", "error": False},
    ]


def test_go_publisher_and_worker(program, amqp_url, unique):
    assert_transcript(run_program([program, amqp_url, unique, "scenario"]), expected_scenario(unique))


def test_go_sees_connection_blocked_and_unblocked(program, alarm, unique):
    events = run_blocked([program, alarm.url, unique, "blocked"], alarm)
    assert events == BLOCKED_TRANSCRIPT


def dead_lettered(prefix: str, body: str, reason: str, extra: dict) -> dict:
    """x-death as RabbitMQ 3.10 writes it, field types included (its time zeroed by the program;
    minimq's documented x-last-death-* additions dropped by it)."""
    wq = t("string", prefix + "-wq")
    death = {"count": t("int64", 1), "exchange": t("string", ""), "queue": wq, "reason": t("string", reason),
             "routing-keys": t("array", [wq]), "time": t("time.Time", 0), **extra}
    return {"event": "dead-lettered", "body": body, "expiration": "", "routing_key": True,
            "headers": t("table", {"x-death": t("array", [t("table", death)]),
                                   "x-first-death-exchange": t("string", ""), "x-first-death-queue": wq,
                                   "x-first-death-reason": t("string", reason)})}


def expected_edges(prefix: str, user: str) -> list[dict]:
    def err(event: str, code: int, text: str) -> dict:
        return {"event": event, "code": code, "server": True, "text": text}

    def hard(event: str, code: int, text: str) -> dict:
        return {"event": event, "closed": True, "code": code, "server": True, "text": text,
                "op_error": f'Exception ({code}) Reason: "{text}"'}

    q, ex = prefix + "-e", prefix + "-ex"
    return [
        {"event": "small-frames", "frame_max": 4096, "ok": True, "intact": True, "header": 3000},
        {"event": "return", "code": 312, "text": "NO_ROUTE", "exchange": "amq.direct",
         "routing_key": True, "body": "lost", "correlation_id": "c-9",
         "headers": t("table", {"k": t("int32", 1)})},
        {"event": "confirm", "tag": 1, "ack": True},
        {"event": "tx", "body": "committed", "message_count": 0, "ok": True},
        {"event": "requeued", "order": [["r2", True], ["r3", True], ["r4", True]]},
        {"event": "direct-reply-to", "rewritten": True, "reply": "pong", "routing_key": True},
        {"event": "consumer-cancelled", "tag": "doomed", "deliveries_open": False},
        dead_lettered(prefix, "pushed out", "maxlen", {"original-expiration": t("string", "60000")}),
        dead_lettered(prefix, "rejected", "rejected", {}),
        {"event": "quorum-delivery-count", "counts": [t("int64", n) for n in (0, 1, 2)]},
        {"event": "typed-bindings", "after_one_unbind": "still bound", "after_both": False},
        err("publish-missing-exchange", 404, f"NOT_FOUND - no exchange '{prefix}-nox' in vhost '/'"),
        err("passive-missing-exchange", 404, f"NOT_FOUND - no exchange '{prefix}-nox' in vhost '/'"),
        err("user-id-mismatch", 406, f"PRECONDITION_FAILED - user_id property set to '{user}-other' but "
                                     f"authenticated user was '{user}'"),
        err("bad-expiration", 406, "PRECONDITION_FAILED - invalid expiration 'soon': no_integer"),
        err("exchange-inequivalent-type", 406, f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange "
                                               f"'{ex}' in vhost '/': received 'fanout' but current is 'direct'"),
        err("queue-inequivalent-arg", 406, f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue "
                                           f"'{q}' in vhost '/': received the value '5' of type 'signedint' "
                                           "but current is none"),
        err("queue-bad-arg-type", 406, f"PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '{q}-ttl' "
                                       "in vhost '/': \"expected integer, got longstr\""),
        err("quorum-non-durable", 406, f"PRECONDITION_FAILED - invalid property 'non-durable' for queue '{q}-qnd' "
                                       "in vhost '/'"),
        err("quorum-server-named", 406, "PRECONDITION_FAILED - Cannot declare a server-named queue for type "
                                        "rabbit_quorum_queue"),
        err("unknown-delivery-tag", 406, "PRECONDITION_FAILED - unknown delivery tag 99"),
        err("bind-missing-queue", 404, f"NOT_FOUND - no queue '{prefix}-noq' in vhost '/'"),
        err("exclusive-consumer-conflict", 403, f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"),
        err("exclusive-queue-other-connection", 405, (
            f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{prefix}-excl' in vhost '/'. "
            "It could be originally declared on another connection or the exclusive property value does "
            "not match that of the original declaration.")),
        err("delete-in-use", 406, f"PRECONDITION_FAILED - queue '{q}' in vhost '/' in use"),
        hard("unknown-exchange-type", 503, "COMMAND_INVALID - unknown exchange type 'x-no-such-type'"),
        hard("prefetch-size", 540, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)"),
        hard("channel-flow-off", 540, "NOT_IMPLEMENTED - active=false"),
        {**hard("publish-immediate", 540, "NOT_IMPLEMENTED - immediate=true"), "op_error": "<nil>"},
        {"event": "update-secret", "error": "<nil>", "closed": False},
        {"event": "closed"},
    ]


def test_go_edges_returns_tx_requeue_reply_to_and_errors(program, amqp_url, unique):
    """A client-chosen frame_max of 4096, basic.return, tx, reject/nack multiple/recover,
    direct reply-to, a server-sent basic.cancel, x-death (maxlen, rejected), a quorum queue's x-delivery-count (a long), bindings told apart by
    their arguments' field types, each soft and hard error a web tier meets
    with RabbitMQ's code and text, and connection.update-secret (accepted with PLAIN)."""
    user = urlsplit(amqp_url).username
    assert_transcript(run_program([program, amqp_url, unique, "edges"]), expected_edges(unique, user))
