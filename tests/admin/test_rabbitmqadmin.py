"""The real `rabbitmqadmin` (RabbitMQ's own CLI for its management API, installed by Debian's
rabbitmq-server package; .ci/run installs it) runs unchanged against minimq."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pika
import pytest

RABBITMQADMIN = shutil.which("rabbitmqadmin") or "/usr/bin/rabbitmqadmin"
pytestmark = pytest.mark.skipif(
    not os.path.exists(RABBITMQADMIN),
    reason="rabbitmqadmin not installed (apt-get install rabbitmq-server; .ci/run does)",
)


@pytest.fixture
def admin(node):
    def run(*args: str, fmt: str = "raw_json") -> str:
        cmd = [RABBITMQADMIN, "-H", "127.0.0.1", "-P", str(node.http_port), "-u", "guest", "-p", "guest",
               "-f", fmt, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
        return proc.stdout

    def listing(*args: str) -> list[dict]:
        return json.loads(run("list", *args))

    run.list = listing
    return run


def test_declare_publish_get_purge_delete(admin, unique):
    x, q = unique + "-x", unique + "-q"
    assert "queue declared" in admin("declare", "queue", f"name={q}", "durable=false")
    assert "exchange declared" in admin("declare", "exchange", f"name={x}", "type=direct")
    assert "binding declared" in admin("declare", "binding", f"source={x}", f"destination={q}", "routing_key=k")
    assert any(b["source"] == x and b["destination"] == q and b["routing_key"] == "k" for b in admin.list("bindings"))
    assert "Message published" in admin("publish", f"exchange={x}", "routing_key=k", "payload=hello")
    assert "Message published" in admin("publish", "exchange=amq.default", f"routing_key={q}", "payload=world")
    rows = {r["name"]: r for r in admin.list("queues", "name", "messages")}
    assert rows[q]["messages"] == 2
    got = json.loads(admin("get", f"queue={q}", "ackmode=ack_requeue_true", "count=2"))
    assert [m["payload"] for m in got] == ["hello", "world"]
    assert [m["exchange"] for m in got] == [x, ""]
    assert "queue purged" in admin("purge", "queue", f"name={q}")
    rows = {r["name"]: r for r in admin.list("queues", "name", "messages")}
    assert rows[q]["messages"] == 0
    assert "binding deleted" in admin("delete", "binding", f"source={x}", "destination_type=queue",
                                      f"destination={q}", "properties_key=k")
    assert not any(b["source"] == x for b in admin.list("bindings"))
    assert "queue deleted" in admin("delete", "queue", f"name={q}")
    assert "exchange deleted" in admin("delete", "exchange", f"name={x}")
    assert q not in {r["name"] for r in admin.list("queues")}
    assert x not in {r["name"] for r in admin.list("exchanges")}


def test_lists_and_overview(admin, node, unique):
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.amqp_port, client_properties={"connection_name": unique}))
    try:
        ch = conn.channel()
        ch.queue_declare(unique)
        tag = ch.basic_consume(unique, lambda *a: None)
        conns = admin.list("connections")
        mine = [c for c in conns if c.get("user_provided_name") == unique]
        assert mine and mine[0]["user"] == "guest" and mine[0]["channels"] == 1
        assert any(c["connection_details"]["name"] == mine[0]["name"] for c in admin.list("channels"))
        assert any(c["consumer_tag"] == tag and c["queue"]["name"] == unique for c in admin.list("consumers"))
        assert "guest" in {u["name"] for u in admin.list("users")}
        assert "/" in {v["name"] for v in admin.list("vhosts")}
        assert any(p["user"] == "guest" and p["vhost"] == "/" and p["configure"] == ".*"
                   for p in admin.list("permissions"))
        assert {"amq.direct", "amq.topic"} <= {e["name"] for e in admin.list("exchanges")}
        overview = json.loads(admin("show", "overview"))[0]
        assert overview["object_totals"]["queues"] >= 1 and overview["queue_totals"]["messages"] >= 0
        table = admin("show", "overview", fmt="table")
        assert "rabbitmq_version" in table and "object_totals.queues" in table
        assert admin.list("nodes")[0]["name"].startswith("minimq@")
        # close connection: the client sees 320 with rabbitmqadmin's reason
        assert "connection closed" in admin("close", "connection", f"name={mine[0]['name']}")
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as exc:
            conn.process_data_events(10)
            conn.process_data_events(10)
        assert exc.value.reply_code == 320
    finally:
        if conn.is_open:
            conn.close()


def test_export_and_import_definitions(admin, node, unique, tmp_path):
    vh = unique
    assert node.request("PUT", f"/api/vhosts/{vh}")[0] == 201
    admin("-V", vh, "declare", "exchange", "name=orders", "type=topic", "durable=true")
    admin("-V", vh, "declare", "queue", "name=orders.eu", "durable=true", 'arguments={"x-max-length": 10}')
    admin("-V", vh, "declare", "binding", "source=orders", "destination=orders.eu", "routing_key=eu.#")
    path = tmp_path / "defs.json"
    assert "Exported definitions" in admin("export", str(path))
    data = json.loads(path.read_text())
    assert any(q["name"] == "orders.eu" and q["vhost"] == vh for q in data["queues"])
    node.request("DELETE", f"/api/vhosts/{vh}")
    assert vh not in {v["name"] for v in admin.list("vhosts")}
    assert "Uploaded definitions" in admin("import", str(path))
    queues = {q["name"]: q for q in admin.list("queues") if q["vhost"] == vh}
    assert queues["orders.eu"]["arguments"] == {"x-max-length": 10}
    bindings = [b for b in admin.list("bindings") if b["vhost"] == vh and b["source"] == "orders"]
    assert [(b["destination"], b["routing_key"]) for b in bindings] == [("orders.eu", "eu.#")]
    node.request("DELETE", f"/api/vhosts/{vh}")


def test_declare_list_and_delete_policies(admin, node, unique):
    """`rabbitmqadmin declare policy` / `list policies` / `delete policy`, and the policy
    acting on a queue a pika client fills."""
    name, q = "policies-" + unique, unique + "-capped"
    out = admin("declare", "policy", f"name={name}", f"pattern=^{unique}-", 'definition={"max-length": 2}',
                "apply-to=queues", "priority=3")
    assert "policy declared" in out
    rows = [p for p in admin.list("policies") if p["name"] == name]
    assert rows == [{"vhost": "/", "name": name, "pattern": f"^{unique}-", "apply-to": "queues",
                     "definition": {"max-length": 2}, "priority": 3}]
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(q)
        for i in range(5):
            ch.basic_publish("", q, b"%d" % i)
        assert ch.queue_declare(q, passive=True).method.message_count == 2
        assert {r["name"]: r["policy"] for r in admin.list("queues", "name", "policy")}[q] == name
        admin("declare", "operator_policy", f"name={name}", f"pattern=^{unique}-", 'definition={"max-length": 1}')
        assert [p["name"] for p in admin.list("operator_policies")] == [name]
        assert ch.queue_declare(q, passive=True).method.message_count == 1
        assert "operator_policy deleted" in admin("delete", "operator_policy", f"name={name}")
        assert "policy deleted" in admin("delete", "policy", f"name={name}")
        assert not [p for p in admin.list("policies") if p["name"] == name]
        for i in range(5):
            ch.basic_publish("", q, b"%d" % i)
        assert ch.queue_declare(q, passive=True).method.message_count == 6
        ch.queue_delete(q)
    finally:
        conn.close()
