"""Users, permissions, RabbitMQ's tag rules and definitions over the management API."""
from __future__ import annotations

import pika
import pytest


def make_user(node, name: str, tags: str, vhost: str | None = "/") -> None:
    assert node.request("PUT", f"/api/users/{name}", {"password": "pw", "tags": tags})[0] == 201
    if vhost is not None:
        perms = {"configure": ".*", "write": ".*", "read": ".*"}
        assert node.request("PUT", f"/api/permissions/{vhost.replace('/', '%2F')}/{name}", perms)[0] == 201


def test_users_and_permissions_crud(node, unique):
    make_user(node, unique, "monitoring,management")
    user = node.get(f"/api/users/{unique}")
    assert user["tags"] == ["monitoring", "management"]
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256" and user["password_hash"]
    assert any(u["name"] == unique for u in node.get("/api/users"))
    perm = node.get(f"/api/permissions/%2F/{unique}")
    assert perm == {"user": unique, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    assert perm in node.get(f"/api/users/{unique}/permissions")
    assert perm in node.get("/api/vhosts/%2F/permissions")
    # the new user logs in over AMQP with its password
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.amqp_port, credentials=pika.PlainCredentials(unique, "pw")))
    conn.close()
    topic = {"exchange": "amq.topic", "write": "^a", "read": "^b"}
    assert node.request("PUT", f"/api/topic-permissions/%2F/{unique}", topic)[0] == 201
    assert node.get(f"/api/topic-permissions/%2F/{unique}") == [{"user": unique, "vhost": "/", **topic}]
    assert node.request("DELETE", f"/api/topic-permissions/%2F/{unique}")[0] == 204
    assert node.request("DELETE", f"/api/permissions/%2F/{unique}")[0] == 204
    assert node.request("GET", f"/api/permissions/%2F/{unique}")[0] == 404
    assert node.request("PUT", f"/api/users/{unique}", {"tags": "administrator"})[0] == 204
    assert node.get(f"/api/users/{unique}")["tags"] == ["administrator"]
    assert node.request("DELETE", f"/api/users/{unique}")[0] == 204
    assert node.request("GET", f"/api/users/{unique}")[0] == 404
    status, body, _ = node.request("PUT", f"/api/users/{unique}", {"tags": ""})
    assert status == 400


def test_tag_rules(node, unique):
    # a user without a management tag may not use the API at all
    assert node.request("PUT", f"/api/users/{unique}-none", {"password": "pw", "tags": ""})[0] == 201
    status, body, _ = node.request("GET", "/api/overview", user=f"{unique}-none", password="pw")
    assert (status, body) == (401, {"error": "not_authorised", "reason": "Not management user"})
    # management: sees only the vhosts it has permissions in, changes nothing global
    vh = unique + "-vh"
    assert node.request("PUT", f"/api/vhosts/{vh}")[0] == 201
    make_user(node, unique + "-m", "management", vhost=vh)
    as_m = {"user": unique + "-m", "password": "pw"}
    assert [v["name"] for v in node.get("/api/vhosts", **as_m)] == [vh]
    assert node.request("GET", "/api/queues/%2F", **as_m)[0] == 401
    assert node.request("PUT", f"/api/queues/{vh}/mine", {}, **as_m)[0] == 201
    assert [q["name"] for q in node.get("/api/queues", **as_m)] == ["mine"]
    assert node.request("GET", "/api/users", **as_m)[:2] == (401, {"error": "not_authorised", "reason": "Not administrator user"})
    assert node.request("PUT", f"/api/vhosts/{unique}-x", **as_m)[0] == 401
    assert node.request("GET", "/api/nodes", **as_m)[0] == 401
    assert node.get("/api/whoami", **as_m) == {"name": unique + "-m", "tags": ["management"]}
    # its permissions apply: a configure regex that does not match refuses the declare
    node.request("PUT", f"/api/permissions/{vh}/{unique}-m", {"configure": "^mine", "write": ".*", "read": ".*"})
    assert node.request("PUT", f"/api/queues/{vh}/other", {}, **as_m)[0] == 401
    assert node.request("PUT", f"/api/queues/{vh}/mine2", {}, **as_m)[0] == 201
    # monitoring: sees every vhost and the nodes, may not administer users
    make_user(node, unique + "-mon", "monitoring", vhost=None)
    as_mon = {"user": unique + "-mon", "password": "pw"}
    names = {v["name"] for v in node.get("/api/vhosts", **as_mon)}
    assert {"/", vh} <= names
    assert node.get("/api/nodes", **as_mon)
    assert node.request("GET", "/api/users", **as_mon)[0] == 401
    node.request("DELETE", f"/api/vhosts/{vh}")


def test_creating_a_vhost_grants_its_creator(node, unique):
    assert node.request("PUT", f"/api/vhosts/{unique}")[0] == 201
    assert node.get(f"/api/vhosts/{unique}/permissions") == [
        {"user": "guest", "vhost": unique, "configure": ".*", "write": ".*", "read": ".*"}]
    node.request("DELETE", f"/api/vhosts/{unique}")


def test_definitions_round_trip(node, unique):
    vh = unique
    assert node.request("PUT", f"/api/vhosts/{vh}")[0] == 201
    node.request("PUT", f"/api/exchanges/{vh}/ex", {"type": "topic", "durable": True})
    node.request("PUT", f"/api/queues/{vh}/q", {"durable": True, "arguments": {"x-message-ttl": 1000}})
    node.request("POST", f"/api/bindings/{vh}/e/ex/q/q", {"routing_key": "a.#"})
    defs = node.get("/api/definitions")
    assert {"rabbit_version", "users", "vhosts", "permissions", "queues", "exchanges", "bindings"} <= set(defs)
    assert {"name": vh} in [{"name": v["name"]} for v in defs["vhosts"]]
    queue = next(q for q in defs["queues"] if q["vhost"] == vh)
    assert queue["name"] == "q" and queue["durable"] is True and queue["arguments"] == {"x-message-ttl": 1000}
    binding = next(b for b in defs["bindings"] if b["vhost"] == vh)
    assert (binding["source"], binding["destination"], binding["routing_key"]) == ("ex", "q", "a.#")
    one = node.get(f"/api/definitions/{vh}")
    assert [q["name"] for q in one["queues"]] == ["q"]
    # delete everything, import it back, see the same topology
    node.request("DELETE", f"/api/vhosts/{vh}")
    assert node.request("POST", "/api/definitions", defs)[0] == 204
    assert node.get(f"/api/queues/{vh}/q")["arguments"] == {"x-message-ttl": 1000}
    assert node.get(f"/api/exchanges/{vh}/ex")["type"] == "topic"
    assert [b["routing_key"] for b in node.get(f"/api/bindings/{vh}/e/ex/q/q")] == ["a.#"]
    status, body, _ = node.request("POST", "/api/definitions", raw=b"[1, 2")
    assert (status, body) == (400, {"error": "bad_request", "reason": "not_json"})
    status, body, _ = node.request("POST", "/api/definitions", {"queues": [{"name": 1}]})
    assert status == 400 and body["error"] == "bad_request"
    node.request("DELETE", f"/api/vhosts/{vh}")
