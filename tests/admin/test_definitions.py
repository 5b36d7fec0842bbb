"""Definitions files: --definitions at start, `minimq definitions export/import` against a
running broker, and a file minimq exported recreating the same topology in a real RabbitMQ."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from .conftest import ROOT, rabbit_env, rabbitmqctl_base, start_node

TOPOLOGY = {
    "vhosts": [{"name": "defs-vh"}],
    "users": [{"name": "defs-user", "password": "s3cret", "tags": "management"}],
    "permissions": [{"user": "defs-user", "vhost": "defs-vh", "configure": ".*", "write": ".*", "read": ".*"},
                    {"user": "guest", "vhost": "defs-vh", "configure": ".*", "write": ".*", "read": ".*"}],
    "exchanges": [{"name": "orders", "vhost": "defs-vh", "type": "topic", "durable": True, "auto_delete": False,
                   "internal": False, "arguments": {}}],
    "queues": [{"name": "orders.eu", "vhost": "defs-vh", "durable": True, "auto_delete": False,
                "arguments": {"x-max-length": 10}}],
    "bindings": [{"source": "orders", "vhost": "defs-vh", "destination": "orders.eu", "destination_type": "queue",
                  "routing_key": "eu.#", "arguments": {}}],
}


def definitions_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minimq", "definitions", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def topology(node, vhost: str) -> tuple:
    queues = sorted((q["name"], q["durable"], json.dumps(q["arguments"])) for q in node.get(f"/api/queues/{vhost}"))
    exchanges = sorted((x["name"], x["type"]) for x in node.get(f"/api/exchanges/{vhost}") if not x["name"].startswith("amq.") and x["name"])
    bindings = sorted((b["source"], b["destination"], b["routing_key"]) for b in node.get(f"/api/bindings/{vhost}") if b["source"])
    return queues, exchanges, bindings


def test_load_at_start_export_and_import(tmp_path):
    start_file = tmp_path / "start.json"
    start_file.write_text(json.dumps(TOPOLOGY))
    first = start_node("--definitions", str(start_file))
    second = start_node()
    try:
        expected = ([("orders.eu", True, '{"x-max-length": 10}')], [("orders", "topic")], [("orders", "orders.eu", "eu.#")])
        assert topology(first, "defs-vh") == expected
        assert first.get("/api/whoami", user="defs-user", password="s3cret")["tags"] == ["management"]
        out = tmp_path / "exported.json"
        done = definitions_cli("export", str(out), "--url", first.base)
        assert done.returncode == 0, done.stderr
        data = json.loads(out.read_text())
        assert {"users", "vhosts", "permissions", "queues", "exchanges", "bindings"} <= set(data)
        done = definitions_cli("import", str(out), "--url", second.base)
        assert done.returncode == 0, done.stderr
        assert topology(second, "defs-vh") == expected
        assert second.get("/api/whoami", user="defs-user", password="s3cret")["name"] == "defs-user"
        bad = tmp_path / "bad.json"
        bad.write_text("{nope")
        done = definitions_cli("import", str(bad), "--url", second.base)
        assert done.returncode == 1 and "not JSON" in done.stderr
        done = definitions_cli("export", str(out), "--url", second.base, "--password", "wrong")
        assert done.returncode == 1 and "401" in done.stderr
    finally:
        first.stop()
        second.stop()


def test_a_bad_definitions_file_stops_the_start(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"queues": [{"name": 5}]}')
    proc = subprocess.run([sys.executable, "-m", "minimq", "--port", "0", "--in-memory", "--no-management",
                           "--definitions", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and str(bad) in proc.stderr and "Traceback" not in proc.stderr


RABBITMQCTL = rabbitmqctl_base()


def _rabbit_list(what: str, vhost: str, *columns: str) -> list[dict]:
    done = subprocess.run(RABBITMQCTL + [what, "-p", vhost, *columns, "--formatter", "json"],
                          capture_output=True, text=True, timeout=120, env=rabbit_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout or "[]")


@pytest.mark.skipif(RABBITMQCTL is None, reason="no RabbitMQ node answers rabbitmqctl (install rabbitmq-server; "
                    ".ci/run starts a private node)")
def test_minimq_export_imports_into_rabbitmq(node, unique, tmp_path):
    """The path for users who outgrow one machine: export from minimq, import into RabbitMQ.

    Only this test's vhost goes over (the RabbitMQ node's other users are left alone), in the
    file minimq exported, unchanged otherwise."""
    vh = "mgmt-" + unique
    for step in (("PUT", f"/api/vhosts/{vh}", None),
                 ("PUT", f"/api/exchanges/{vh}/orders", {"type": "topic", "durable": True}),
                 ("PUT", f"/api/queues/{vh}/orders.eu", {"durable": True, "arguments": {"x-max-length": 10}}),
                 ("POST", f"/api/bindings/{vh}/e/orders/q/orders.eu", {"routing_key": "eu.#"})):
        assert node.request(*step)[0] in (201, 204)
    exported = tmp_path / "minimq.json"
    assert definitions_cli("export", str(exported), "--url", node.base).returncode == 0
    data = json.loads(exported.read_text())
    mine = {
        key: [item for item in data.get(key, []) if item.get("vhost") == vh or item.get("name") == vh]
        for key in ("vhosts", "permissions", "queues", "exchanges", "bindings")
    }
    mine.update({k: data[k] for k in ("rabbit_version", "rabbitmq_version") if k in data})
    # rabbitmqctl runs as the rabbitmq user, who cannot read pytest's tmp dir
    shared = tempfile.mkdtemp(prefix="minimq-defs-")
    os.chmod(shared, 0o755)
    subset = os.path.join(shared, "definitions.json")
    with open(subset, "w") as f:
        json.dump(mine, f)
    os.chmod(subset, 0o644)
    try:
        done = subprocess.run(RABBITMQCTL + ["import_definitions", subset], capture_output=True, text=True,
                              timeout=120, env=rabbit_env())
        assert done.returncode == 0, done.stdout + done.stderr
        queues = _rabbit_list("list_queues", vh, "name", "durable", "arguments")
        assert [(q["name"], q["durable"]) for q in queues] == [("orders.eu", True)]
        args = queues[0]["arguments"]  # rabbitmqctl's JSON: [[name, type, value], ...]
        assert (args if isinstance(args, dict) else {a[0]: a[-1] for a in args}) == {"x-max-length": 10}
        exchanges = {x["name"]: x["type"] for x in _rabbit_list("list_exchanges", vh, "name", "type")}
        assert exchanges["orders"] == "topic"
        bindings = [(b["source_name"], b["destination_name"], b["routing_key"])
                    for b in _rabbit_list("list_bindings", vh, "source_name", "destination_name", "routing_key")
                    if b["source_name"]]
        assert bindings == [("orders", "orders.eu", "eu.#")]
    finally:
        subprocess.run(RABBITMQCTL + ["delete_vhost", vh], capture_output=True, timeout=120, env=rabbit_env())
        shutil.rmtree(shared, ignore_errors=True)
        node.request("DELETE", f"/api/vhosts/{vh}")
