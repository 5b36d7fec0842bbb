"""Management API actions over real HTTP: declare, delete, purge, publish, get, bind, close."""
from __future__ import annotations

import base64
from urllib.parse import quote

import pika
import pytest

V = "%2F"


def seg(name: str) -> str:
    return quote(name, safe="")


@pytest.fixture
def client(node):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
    try:
        yield conn
    finally:
        if conn.is_open:
            conn.close()


def test_declare_and_delete_queue(node, client, unique):
    status, _, _ = node.request("PUT", f"/api/queues/{V}/{unique}", {"durable": False, "arguments": {"x-max-length": 5}})
    assert status == 201
    status, _, _ = node.request("PUT", f"/api/queues/{V}/{unique}", {"durable": False, "arguments": {"x-max-length": 5}})
    assert status == 204  # already there, equivalent
    status, body, _ = node.request("PUT", f"/api/queues/{V}/{unique}", {"durable": True})
    assert status == 400 and body["error"] == "bad_request"
    assert body["reason"].startswith(f"inequivalent arg 'durable' for queue '{unique}' in vhost '/'")
    # the queue is real: an AMQP client sees it (passive declare) with its arguments
    ok = client.channel().queue_declare(unique, passive=True)
    assert ok.method.message_count == 0
    q = node.get(f"/api/queues/{V}/{unique}")
    assert q["arguments"] == {"x-max-length": 5} and q["durable"] is False
    status, body, _ = node.request("PUT", f"/api/queues/{V}/amq.{unique}", {})
    assert status == 401 or status == 400  # reserved prefix refused
    assert node.request("DELETE", f"/api/queues/{V}/{unique}")[0] == 204
    assert node.request("DELETE", f"/api/queues/{V}/{unique}")[:2] == (404, {"error": "Object Not Found", "reason": "Not Found"})
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        client.channel().queue_declare(unique, passive=True)
    assert exc.value.reply_code == 404


def test_delete_queue_if_empty(node, client, unique):
    ch = client.channel()
    ch.queue_declare(unique)
    ch.basic_publish("", unique, b"x")
    ch.queue_declare(unique, passive=True)
    status, body, _ = node.request("DELETE", f"/api/queues/{V}/{unique}?if-empty=true")
    assert status == 400 and "not empty" in body["reason"]
    assert node.request("DELETE", f"/api/queues/{V}/{unique}?if-unused=true")[0] == 204


def test_purge(node, client, unique):
    ch = client.channel()
    ch.queue_declare(unique)
    for _ in range(4):
        ch.basic_publish("", unique, b"x")
    ch.queue_declare(unique, passive=True)  # a round trip: the publishes are in
    assert node.get(f"/api/queues/{V}/{unique}")["messages_ready"] == 4
    assert node.request("DELETE", f"/api/queues/{V}/{unique}/contents")[0] == 204
    assert node.get(f"/api/queues/{V}/{unique}")["messages_ready"] == 0
    assert ch.queue_declare(unique, passive=True).method.message_count == 0


def test_exchange_declare_publish_and_delete(node, client, unique):
    x = unique + "-x"
    assert node.request("PUT", f"/api/exchanges/{V}/{x}", {"type": "fanout", "durable": False})[0] == 201
    assert node.request("PUT", f"/api/exchanges/{V}/{x}", {"type": "fanout", "durable": False})[0] == 204
    status, body, _ = node.request("PUT", f"/api/exchanges/{V}/{x}-bad", {"type": "bogus"})
    assert (status, body) == (400, {"error": "bad_request", "reason": "unknown exchange type 'bogus'"})
    ch = client.channel()
    ch.queue_declare(unique)
    ch.queue_bind(unique, x)
    status, body, _ = node.request("POST", f"/api/exchanges/{V}/{x}/publish", {
        "properties": {"content_type": "text/plain", "headers": {"h": 1}, "delivery_mode": 2},
        "routing_key": "any", "payload": "hello", "payload_encoding": "string"})
    assert (status, body) == (200, {"routed": True})
    method, props, body = ch.basic_get(unique, auto_ack=True)
    assert body == b"hello" and props.content_type == "text/plain" and props.headers == {"h": 1}
    assert method.exchange == x and method.routing_key == "any"
    payload = base64.b64encode(b"\x00\xffbin").decode()
    status, body, _ = node.request("POST", f"/api/exchanges/{V}/amq.default/publish", {
        "properties": {}, "routing_key": unique, "payload": payload, "payload_encoding": "base64"})
    assert body == {"routed": True}
    assert ch.basic_get(unique, auto_ack=True)[2] == b"\x00\xffbin"
    status, body, _ = node.request("POST", f"/api/exchanges/{V}/amq.default/publish", {
        "properties": {}, "routing_key": "nowhere-" + unique, "payload": "", "payload_encoding": "string"})
    assert body == {"routed": False}
    status, body, _ = node.request("POST", f"/api/exchanges/{V}/amq.default/publish", {"payload": "x"})
    assert status == 400 and body["reason"].startswith("key_missing")
    assert node.get(f"/api/exchanges/{V}/{x}")["message_stats"]["publish_in"] == 1
    assert node.request("DELETE", f"/api/exchanges/{V}/{x}")[0] == 204
    assert node.request("GET", f"/api/exchanges/{V}/{x}")[0] == 404


def test_get_messages_with_ack_modes(node, client, unique):
    ch = client.channel()
    ch.queue_declare(unique)
    for i in range(3):
        ch.basic_publish("", unique, f"m{i}".encode(), pika.BasicProperties(message_id=f"id{i}"))
    ch.queue_declare(unique, passive=True)
    path = f"/api/queues/{V}/{unique}/get"
    status, got, _ = node.request("POST", path, {"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert status == 200 and [m["payload"] for m in got] == ["m0", "m1"]
    assert got[0]["properties"]["message_id"] == "id0" and got[0]["routing_key"] == unique
    assert got[0]["message_count"] == 2 and got[1]["message_count"] == 1
    assert got[0]["redelivered"] is False and got[0]["payload_encoding"] == "string"
    # requeued in place, now redelivered
    status, got, _ = node.request("POST", path, {"count": 5, "ackmode": "ack_requeue_false", "encoding": "base64",
                                                 "truncate": 1})
    assert [m["payload"] for m in got] == [base64.b64encode(b"m").decode()] * 3
    assert [m["redelivered"] for m in got] == [True, True, False]
    assert got[0]["payload_bytes"] == 2
    assert node.get(f"/api/queues/{V}/{unique}")["messages"] == 0
    status, body, _ = node.request("POST", path, {"count": 1, "ackmode": "bogus", "encoding": "auto"})
    assert status == 400


def test_reject_requeue_false_dead_letters(node, client, unique):
    ch = client.channel()
    ch.queue_declare(unique + "-dead")
    ch.queue_declare(unique, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": unique + "-dead"})
    ch.basic_publish("", unique, b"doomed")
    ch.queue_declare(unique, passive=True)
    node.request("POST", f"/api/queues/{V}/{unique}/get", {"count": 1, "ackmode": "reject_requeue_false", "encoding": "auto"})
    method, props, body = ch.basic_get(unique + "-dead", auto_ack=True)
    assert body == b"doomed" and props.headers["x-death"][0]["reason"] == "rejected"


def test_bindings_create_and_delete(node, client, unique):
    ch = client.channel()
    ch.queue_declare(unique)
    x = unique + "-x"
    ch.exchange_declare(x, "headers")
    path = f"/api/bindings/{V}/e/{x}/q/{unique}"
    status, _, headers = node.request("POST", path, {"routing_key": "", "arguments": {"x-match": "any", "a": "1"}})
    assert status == 201 and headers["location"].startswith(unique + "/")
    bindings = node.get(path)
    assert len(bindings) == 1 and bindings[0]["arguments"] == {"x-match": "any", "a": "1"}
    props_key = bindings[0]["properties_key"]
    assert headers["location"] == f"{unique}/{props_key}"
    ch.basic_publish(x, "", b"routed", pika.BasicProperties(headers={"a": "1"}))
    assert ch.basic_get(unique, auto_ack=True)[2] == b"routed"
    assert node.request("DELETE", f"{path}/{seg(props_key)}")[0] == 204
    assert node.get(path) == []
    ch.basic_publish(x, "", b"unrouted", pika.BasicProperties(headers={"a": "1"}))
    assert ch.queue_declare(unique, passive=True).method.message_count == 0
    # exchange to exchange
    y = unique + "-y"
    ch.exchange_declare(y, "fanout")
    assert node.request("POST", f"/api/bindings/{V}/e/{y}/e/{x}", {"routing_key": "k"})[0] == 201
    assert [b["destination"] for b in node.get(f"/api/exchanges/{V}/{x}/bindings/destination")] == [y] or \
        [b["source"] for b in node.get(f"/api/exchanges/{V}/{x}/bindings/destination")] == [y]
    assert node.request("POST", f"/api/bindings/{V}/e/{y}/q/nope-{unique}", {"routing_key": "k"})[0] == 404


def test_close_connection_with_reason(node, unique):
    conn = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", node.amqp_port, client_properties={"connection_name": unique}))
    ch = conn.channel()
    ch.queue_declare(unique, exclusive=True)
    name = next(c["name"] for c in node.get("/api/connections") if c.get("user_provided_name") == unique)
    status, _, _ = node.request("DELETE", f"/api/connections/{seg(name)}", headers={"X-Reason": "go away"})
    assert status == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as exc:
        conn.process_data_events(10)
        conn.process_data_events(10)
    assert exc.value.reply_code == 320 and exc.value.reply_text == "CONNECTION_FORCED - go away"
    assert node.request("GET", f"/api/connections/{seg(name)}")[0] == 404
    assert node.request("GET", f"/api/queues/{V}/{unique}")[0] == 404  # its exclusive queue went with it


def test_vhost_create_and_delete(node, unique):
    assert node.request("PUT", f"/api/vhosts/{unique}")[0] == 201
    assert node.request("PUT", f"/api/vhosts/{unique}")[0] == 204
    assert node.request("PUT", f"/api/queues/{unique}/q", {})[0] == 201
    assert [q["name"] for q in node.get(f"/api/queues/{unique}")] == ["q"]
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port, virtual_host=unique))
    assert conn.channel().queue_declare("q", passive=True).method.message_count == 0
    conn.close()
    assert node.request("DELETE", f"/api/vhosts/{unique}")[0] == 204
    assert node.request("GET", f"/api/vhosts/{unique}")[0] == 404


def test_deleting_a_vhost_closes_its_connections_as_rabbitmq_does(node, unique):
    """RabbitMQ closes a deleted vhost's connections with 320; they must not live on in a
    vhost that no longer exists (where a declare would make an orphan queue)."""
    assert node.request("PUT", f"/api/vhosts/{unique}")[0] == 201
    inside = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port, virtual_host=unique))
    outside = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
    ch = inside.channel()
    ch.queue_declare("work")
    ch.basic_publish("", "work", b"m")
    assert ch.basic_get("work")[0] is not None  # held unacked when the vhost goes
    assert node.request("DELETE", f"/api/vhosts/{unique}")[0] == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        inside.process_data_events(time_limit=10)
        inside.channel()
    assert (ei.value.reply_code, ei.value.reply_text) == (320, f"CONNECTION_FORCED - vhost '{unique}' is deleted")
    assert node.request("GET", f"/api/queues/{unique}")[0] == 404
    outside.channel().queue_declare("", exclusive=True)  # other vhosts' connections stay
    outside.close()


def test_vhost_and_user_limits_over_the_api_as_rabbitmq(node, unique):
    """RabbitMQ 3.10.8's bodies and texts; the limits are the ones AMQP enforces."""
    assert node.request("PUT", f"/api/vhosts/{unique}")[0] == 201
    assert node.request("PUT", f"/api/vhost-limits/{unique}/max-queues", {"value": 1})[0] == 204
    assert node.request("PUT", f"/api/vhost-limits/{unique}/max-connections", {"value": 10})[0] == 204
    assert node.get(f"/api/vhost-limits/{unique}") == [
        {"vhost": unique, "value": {"max-queues": 1, "max-connections": 10}}]
    assert {"vhost": unique, "value": {"max-queues": 1, "max-connections": 10}} in node.get("/api/vhost-limits")
    assert node.request("PUT", f"/api/vhost-limits/{unique}/max-foo", {"value": 5})[:2] == (400, {
        "error": "bad_request",
        "reason": 'Validation failed\n\nUnrecognised terms [{<<"max-foo">>,5}] in limits\n'})
    assert node.request("PUT", f"/api/vhost-limits/{unique}/max-queues", {"value": "a"})[:2] == (400, {
        "error": "bad_request",
        "reason": 'Validation failed\n\nmax-queues should be a number, actually was <<"a">>\n'})
    assert node.request("PUT", f"/api/vhost-limits/{unique}/max-queues", {})[:2] == (
        400, {"error": "bad_request", "reason": "[{key_missing,value}]"})
    assert node.request("PUT", f"/api/vhost-limits/{unique}-none/max-queues", {"value": 1})[:2] == (
        404, {"error": "not_found", "reason": "vhost_not_found"})
    assert node.request("GET", f"/api/vhost-limits/{unique}-none")[0] == 404

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port, virtual_host=unique))
    try:
        ch = conn.channel()
        ch.queue_declare("one")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            ch.queue_declare("two")
        assert ei.value.reply_code == 406  # the limit set over HTTP is the one enforced
        assert node.request("DELETE", f"/api/vhost-limits/{unique}/max-queues")[0] == 204
        assert node.request("DELETE", f"/api/vhost-limits/{unique}/max-queues")[0] == 204  # as RabbitMQ
        conn.channel().queue_declare("two")
    finally:
        conn.close()
    assert node.get(f"/api/vhost-limits/{unique}") == [{"vhost": unique, "value": {"max-connections": 10}}]

    user = f"{unique}-u"
    assert node.request("PUT", f"/api/users/{user}", {"password": "x", "tags": ""})[0] == 201
    assert node.request("PUT", f"/api/user-limits/{user}/max-channels", {"value": 3})[0] == 204
    assert node.get(f"/api/user-limits/{user}") == [{"user": user, "value": {"max-channels": 3}}]
    assert node.request("PUT", f"/api/user-limits/{user}/max-x", {"value": 3})[:2] == (
        400, {"error": "bad_request", "reason": 'Unrecognised terms [{<<"max-x">>,3}] in user-limits'})
    assert node.request("PUT", f"/api/user-limits/{user}-none/max-channels", {"value": 3})[:2] == (
        400, {"error": "bad_request", "reason": ["no_such_user", f"{user}-none"]})
    assert node.request("DELETE", f"/api/user-limits/{user}/max-channels")[0] == 204
    assert node.get(f"/api/user-limits/{user}") == []
    assert node.request("DELETE", f"/api/users/{user}")[0] == 204
    assert node.request("DELETE", f"/api/vhosts/{unique}")[0] == 204
