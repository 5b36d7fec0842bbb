"""The read-only management API over real HTTP, against state made by a real AMQP client."""
from __future__ import annotations

import time
from urllib.parse import quote

import pika
import pytest

V = "%2F"


def seg(name: str) -> str:
    return quote(name, safe="")


@pytest.fixture
def client(node):
    conn = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", node.amqp_port, client_properties={"connection_name": "mgmt-test"})
    )
    try:
        yield conn
    finally:
        if conn.is_open:
            conn.close()


def wait_until(fn, timeout: float = 15.0, what: str = "condition"):
    """Poll the API until fn() is truthy (the broker's state is remote: there is no event)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; last value {value!r}")
        time.sleep(0.05)


def test_queue_fields_follow_rabbitmq(node, client, unique):
    ch = client.channel()
    ch.queue_declare(unique, durable=False, arguments={"x-max-length": 100})
    for _ in range(3):
        ch.basic_publish("", unique, b"hello")
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(unique, lambda *a: None)
    client.process_data_events(0.2)
    q = wait_until(lambda: (d := node.get(f"/api/queues/{V}/{unique}"))["messages_unacknowledged"] == 1 and d,
                   what="one unacked delivery")
    assert q["name"] == unique and q["vhost"] == "/"
    assert (q["messages"], q["messages_ready"], q["messages_unacknowledged"]) == (3, 2, 1)
    assert q["consumers"] == 1
    assert q["durable"] is False and q["auto_delete"] is False and q["exclusive"] is False
    assert q["arguments"] == {"x-max-length": 100}
    assert q["state"] == "running" and q["type"] == "classic"
    assert q["message_stats"]["publish"] == 3
    assert q["message_stats"]["deliver"] == 1 and q["message_stats"]["deliver_get"] == 1
    assert "rate" in q["message_stats"]["publish_details"]
    assert isinstance(q["memory"], int) and q["memory"] > 0
    assert q["consumer_details"][0]["prefetch_count"] == 1
    assert q["consumer_details"][0]["channel_details"]["user"] == "guest"
    listed = [x for x in node.get("/api/queues") if x["name"] == unique]
    assert listed and listed[0]["messages"] == 3
    assert [x["name"] for x in node.get(f"/api/queues/{V}") if x["name"] == unique] == [unique]


def test_idle_queue_has_idle_since(node, client, unique):
    client.channel().queue_declare(unique)
    q = wait_until(lambda: "idle_since" in (d := node.get(f"/api/queues/{V}/{unique}")) and d, what="idle_since")
    assert q["idle_since"].endswith("+00:00")


def test_publish_rates_are_sampled(node, client, unique):
    ch = client.channel()
    ch.queue_declare(unique)

    def rate():
        for _ in range(50):
            ch.basic_publish("", unique, b"x")
        client.process_data_events(0)
        q = node.get(f"/api/queues/{V}/{unique}")
        ov = node.get("/api/overview")
        return q["message_stats"]["publish_details"]["rate"] > 0 and ov["message_stats"]["publish_details"]["rate"] > 0

    wait_until(rate, what="a publish rate on the queue and the overview")


def test_overview(node, client, unique):
    ch = client.channel()
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"x")
    ov = wait_until(lambda: (d := node.get("/api/overview"))["queue_totals"]["messages"] >= 1 and d,
                    what="queue totals")
    for key in ("management_version", "rabbitmq_version", "product_name", "cluster_name", "node",
                "listeners", "exchange_types", "message_stats", "queue_totals", "object_totals"):
        assert key in ov, key
    totals = ov["object_totals"]
    assert totals["queues"] >= 1 and totals["connections"] >= 1 and totals["channels"] >= 1
    assert totals["exchanges"] >= 6
    assert ov["message_stats"]["publish"] >= 1
    assert {l["protocol"] for l in ov["listeners"]} >= {"amqp", "http"}
    amqp = next(l for l in ov["listeners"] if l["protocol"] == "amqp")
    assert amqp["port"] == node.amqp_port


def test_overview_history_samples(node):
    ov = wait_until(lambda: len((d := node.get("/api/overview?msg_rates_age=60&msg_rates_incr=0.2"))
                                ["message_stats"]["publish_details"]["samples"]) >= 2 and d, what="samples")
    samples = ov["message_stats"]["publish_details"]["samples"]
    assert samples[0]["timestamp"] >= samples[1]["timestamp"]  # newest first, as RabbitMQ


def test_connections_channels_consumers(node, client, unique):
    ch = client.channel()
    ch.queue_declare(unique)
    ch.basic_qos(prefetch_count=7)
    tag = ch.basic_consume(unique, lambda *a: None)
    conns = wait_until(lambda: [c for c in node.get("/api/connections") if c.get("user_provided_name") == "mgmt-test"],
                       what="the client's connection")
    conn = conns[-1]
    assert conn["user"] == "guest" and conn["vhost"] == "/" and conn["state"] == "running"
    assert conn["protocol"] == "AMQP 0-9-1" and conn["port"] == node.amqp_port
    assert conn["client_properties"]["product"] == "Pika Python Client Library"
    assert conn["channels"] >= 1
    name = conn["name"]
    assert name == f"{conn['peer_host']}:{conn['peer_port']} -> 127.0.0.1:{node.amqp_port}"
    assert node.get(f"/api/connections/{seg(name)}")["name"] == name
    chans = node.get(f"/api/connections/{seg(name)}/channels")
    mine = [c for c in chans if c["consumer_count"] == 1]
    assert mine and mine[0]["prefetch_count"] == 7 and mine[0]["connection_details"]["name"] == name
    assert mine[0]["name"] == f"{name} ({mine[0]['number']})"
    assert node.get(f"/api/channels/{seg(mine[0]['name'])}")["number"] == mine[0]["number"]
    consumers = [c for c in node.get("/api/consumers") if c["consumer_tag"] == tag]
    assert consumers and consumers[0]["queue"] == {"name": unique, "vhost": "/"}
    assert consumers[0]["ack_required"] is True and consumers[0]["prefetch_count"] == 7
    assert [c["consumer_tag"] for c in node.get(f"/api/consumers/{V}") if c["consumer_tag"] == tag] == [tag]


def test_exchanges_and_bindings(node, client, unique):
    ch = client.channel()
    ch.exchange_declare(unique + "-x", "topic", durable=True)
    ch.queue_declare(unique)
    ch.queue_bind(unique, unique + "-x", "a.*")
    ch.queue_bind(unique, unique + "-x", "b.#", arguments={"k": "v"})
    ex = node.get(f"/api/exchanges/{V}/{unique}-x")
    assert (ex["name"], ex["type"], ex["durable"], ex["auto_delete"], ex["internal"]) == (unique + "-x", "topic", True, False, False)
    names = {e["name"] for e in node.get(f"/api/exchanges/{V}")}
    assert {"", "amq.direct", "amq.topic", "amq.fanout", "amq.headers", "amq.match", unique + "-x"} <= names
    assert node.get(f"/api/exchanges/{V}/amq.default")["name"] == ""
    bindings = node.get(f"/api/bindings/{V}/e/{unique}-x/q/{unique}")
    keys = sorted(b["routing_key"] for b in bindings)
    assert keys == ["a.*", "b.#"]
    for b in bindings:
        assert b["source"] == unique + "-x" and b["destination_type"] == "queue" and b["vhost"] == "/"
        assert node.get(f"/api/bindings/{V}/e/{unique}-x/q/{unique}/{seg(b['properties_key'])}") == b
    plain = next(b for b in bindings if b["routing_key"] == "a.*")
    assert plain["properties_key"] == "a.%2A" or plain["properties_key"] == "a.*"
    source = node.get(f"/api/exchanges/{V}/{unique}-x/bindings/source")
    assert sorted(b["routing_key"] for b in source) == ["a.*", "b.#"]
    queue_b = node.get(f"/api/queues/{V}/{unique}/bindings")
    assert {b["source"] for b in queue_b} == {"", unique + "-x"}  # the default exchange's too
    everything = node.get("/api/bindings")
    assert any(b["source"] == "" and b["destination"] == unique for b in everything)


def test_vhosts_whoami_nodes(node):
    vhosts = node.get("/api/vhosts")
    assert "/" in [v["name"] for v in vhosts]
    one = node.get(f"/api/vhosts/{V}")
    assert one["name"] == "/" and "messages" in one
    assert node.get("/api/whoami") == {"name": "guest", "tags": ["administrator"]}
    nodes = node.get("/api/nodes")
    assert len(nodes) == 1 and nodes[0]["running"] is True and nodes[0]["mem_used"] > 0
    assert node.get(f"/api/nodes/{seg(nodes[0]['name'])}")["name"] == nodes[0]["name"]


def test_query_parameters(node, client, unique):
    ch = client.channel()
    for i, n in enumerate((3, 1, 2)):
        ch.queue_declare(f"{unique}-{i}")
        for _ in range(n):
            ch.basic_publish("", f"{unique}-{i}", b"x")
    wait_until(lambda: sum(x["messages"] for x in node.get(f"/api/queues?name={unique}")) == 6, what="6 messages")
    rows = node.get(f"/api/queues?name={unique}&columns=name,messages&sort=messages")
    assert rows == [{"name": f"{unique}-1", "messages": 1}, {"name": f"{unique}-2", "messages": 2},
                    {"name": f"{unique}-0", "messages": 3}]
    rows = node.get(f"/api/queues?name={unique}&columns=name&sort=messages&sort_reverse=true")
    assert [r["name"] for r in rows] == [f"{unique}-0", f"{unique}-2", f"{unique}-1"]
    rows = node.get(f"/api/queues?name=^{unique}-[01]$&use_regex=true&columns=name&sort=name")
    assert rows == [{"name": f"{unique}-0"}, {"name": f"{unique}-1"}]
    nested = node.get(f"/api/queues?name={unique}-0&columns=name,message_stats.publish")
    assert nested == [{"name": f"{unique}-0", "message_stats": {"publish": 3}}]
    page = node.get(f"/api/queues?name={unique}&page=2&page_size=2&sort=name&columns=name")
    assert page["items"] == [{"name": f"{unique}-2"}]
    assert (page["page"], page["page_size"], page["page_count"], page["item_count"], page["filtered_count"]) == (2, 2, 2, 1, 3)
    assert page["total_count"] >= 3
    status, body, _ = node.request("GET", f"/api/queues?name={unique}&page=5&page_size=2")
    assert status == 400 and body == {"error": "page_out_of_range",
                                      "reason": "Page out of range, page: 5 page size: 2, len: 3"}
    status, body, _ = node.request("GET", "/api/queues?page=1&page_size=1000")
    assert status == 400 and body["error"] == "invalid_pagination_parameters"
    status, body, _ = node.request("GET", "/api/queues?page=0")
    assert (status, body["reason"]) == (400, "Invalid pagination parameters: page number 0, page size undefined")


def test_errors_and_auth(node):
    status, body, headers = node.request("GET", "/api/overview", user=None)
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    status, body, _ = node.request("GET", "/api/overview", password="wrong")
    assert (status, body) == (401, {"error": "not_authorized", "reason": "Login failed"})
    for path in ("/api/queues/%2F/no-such-queue", "/api/exchanges/%2F/nope", "/api/vhosts/nope",
                 "/api/queues/nope", "/api/nope", "/api/connections/nope"):
        status, body, _ = node.request("GET", path)
        assert (status, body) == (404, {"error": "Object Not Found", "reason": "Not Found"}), path
    status, _, headers = node.request("POST", "/api/queues")
    assert status == 405 and "GET" in headers["allow"]
    status, body, _ = node.request("PUT", "/api/queues/%2F/x", raw=b"{not json")
    assert (status, body) == (400, {"error": "bad_request", "reason": "not_json"})


def test_health_checks(node):
    assert node.get("/api/health/checks/alarms") == {"status": "ok"}
    assert node.get("/api/health/checks/local-alarms") == {"status": "ok"}
    assert node.get(f"/api/aliveness-test/{V}") == {"status": "ok"}
    assert "aliveness-test" in [x["name"] for x in node.get(f"/api/queues/{V}")]
