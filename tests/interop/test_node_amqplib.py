"""Node's amqplib (2.3.1 from npm, its promise API), run with the machine's node.

programs/node/interop.js is a web-tier publisher and a worker: PLAIN login with a 1 s
heartbeat, durable exchange/queue/binding, a persistent publish with every property and a
header of each type amqplib writes (nested objects and arrays, {'!': 'timestamp'},
{'!': 'decimal'}, {'!': 'float'}, Buffer, null), a confirm channel, basic.get, a consumer with
prefetch 2 and manual acks (nack + requeue comes back redelivered), a 1 MiB message across
many frames, a 404 channel error (the rejected promise, the channel's error and close events,
the IllegalOperationError after), seconds of idle kept alive by heartbeats, clean close; and,
in `blocked` mode, the connection's blocked/unblocked events around a publish during a memory
alarm. Its transcript must be exactly what it prints against RabbitMQ 3.10.8 (MINIMQ_TEST_URL).

amqplib comes from `npm install --prefix .ci/npm amqplib@2.3.1`, which `.ci/run` runs
(MINIMQ_NODE_MODULES names another node_modules directory holding it).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .conftest import url_with
from .foreign import (BLOCKED_TRANSCRIPT, LARGE_SIZE, PROGRAMS, alarm,  # noqa: F401 (alarm: a fixture)
                      assert_transcript, parse_transcript, require, run_blocked, run_program,
                      scenario_start, typed, worker_deliveries)

ROOT = Path(__file__).resolve().parents[2]
AMQPLIB_VERSION = "2.3.1"
INSTALL = f"apt-get install nodejs; npm install --prefix .ci/npm amqplib@{AMQPLIB_VERSION}"


@pytest.fixture(scope="module")
def node_env() -> dict:
    require(shutil.which("node") is not None, "node (nodejs)", INSTALL)
    modules = Path(os.environ.get("MINIMQ_NODE_MODULES") or ROOT / ".ci" / "npm" / "node_modules")
    require((modules / "amqplib" / "channel_api.js").exists(), f"amqplib in {modules}", INSTALL)
    return {"NODE_PATH": str(modules)}


def node_url(amqp_url: str) -> str:
    # In an AMQP URI the path is the vhost: "/%2F" is "/".
    return url_with(amqp_url, vhost="/")


def command(url: str, prefix: str, mode: str) -> list[str]:
    return ["node", str(PROGRAMS / "node" / "interop.js"), node_url(url), prefix, mode]


t = typed


def n(value) -> dict:
    return t("number", value)


HEADERS = t("object", {
    "string": t("string", "h\u00e9llo"),
    "byte": n(-8), "short": n(300), "int": n(-70000), "long": n(1 << 40), "double": n(1.5),
    "bool": t("boolean", True),
    "float": n(0.25),
    "unsignedint": n(4000000000),
    "timestamp": t("timestamp", 1700000000),
    "decimal": t("decimal", {"places": 2, "digits": 12345}),
    "bytes": t("Buffer", "0001fe"),
    "void": t("null", None),
    "array": t("array", [t("string", "a"), n(1), t("boolean", True),
                         t("object", {"in": t("string", "array")}), t("array", [n(2)])]),
    "nested": t("object", {"level": n(1), "deeper": t("object", {
        "level": n(2), "list": t("array", [n(3), t("string", "x")])})}),
})


def expected_scenario(prefix: str) -> list[dict]:
    missing = f"NOT_FOUND - no queue '{prefix}-missing' in vhost '/'"
    return [
        *scenario_start(prefix, HEADERS, {"event": "confirm", "ack": True}),
        {"event": "confirmed", "count": 3},
        *worker_deliveries(prefix, {"event": "cancelled", "tag": "worker"}),
        {"event": "confirm", "ack": True},
        {"event": "large", "size": LARGE_SIZE, "intact": True},
        {"event": "channel-error", "code": 404, "class_id": 50, "method_id": 10,
         "message": f'Operation failed: QueueDeclare; 404 (NOT-FOUND) with message "{missing}"'},
        {"event": "channel-error-event", "code": 404,
         "message": f'Channel closed by server: 404 (NOT-FOUND) with message "{missing}"'},
        {"event": "channel-closed", "closed": True},
        {"event": "after-error", "name": "IllegalOperationError", "message": "Channel closed"},
        {"event": "connection-alive", "messages": 0},
        {"event": "after-idle", "ok": True},
        {"event": "queue.delete-ok", "messages": 0},
        {"event": "closed", "error": False},
    ]


def test_node_publisher_and_worker(node_env, amqp_url, unique):
    assert_transcript(run_program(command(amqp_url, unique, "scenario"), env=node_env),
                      expected_scenario(unique))


def test_node_blocked_and_unblocked_events(node_env, alarm, unique):
    events = run_blocked(command(alarm.url, unique, "blocked"), alarm, env=node_env)
    assert events == BLOCKED_TRANSCRIPT


def test_node_edges_dead_letters_alternate_exchange_burst_and_errors(node_env, amqp_url, unique):
    """frameMax 4096, a server-named queue, an alternate exchange and basic.return, x-death
    of a rejected and an expired message (as amqplib decodes it), 3000 publishes honouring
    'drain' into a prefetch-50 consumer, a server-sent cancel (the callback's null),
    purge, update-secret, and argument/precondition errors with their class and method ids.
    The expected transcript (programs/node/edges.expected.jsonl, prefix as {prefix}) is
    what the program printed against RabbitMQ 3.10.8."""
    recorded = (PROGRAMS / "node" / "edges.expected.jsonl").read_text().replace("{prefix}", unique)
    expected = parse_transcript(recorded)
    if not os.environ.get("MINIMQ_TEST_URL"):
        expected = with_last_death_headers(expected)
    assert_transcript(run_program(command(amqp_url, unique, "edges"), env=node_env), expected)


def with_last_death_headers(events: list[dict]) -> list[dict]:
    """minimq's one documented addition (README, RabbitMQ extensions): x-last-death-* headers
    beside x-first-death-*, which RabbitMQ 3.10 does not send (3.13 does)."""
    out = []
    for event in events:
        if event["event"] == "dead-lettered":
            headers = dict(event["headers"]["value"])
            for what in ("exchange", "queue", "reason"):  # one death each: last = first
                headers[f"x-last-death-{what}"] = headers[f"x-first-death-{what}"]
            event = {**event, "headers": {"type": "object", "value": headers}}
        out.append(event)
    return out
