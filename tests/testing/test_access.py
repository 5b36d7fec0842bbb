"""minimq.testing.Broker with users, permissions and definitions; changes apply at once."""
from __future__ import annotations

import json
from pathlib import Path

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ProbableAccessDeniedError

from minimq.testing import Broker

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rabbitmq-3.10-definitions.json"


def connect(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


def test_permission_changes_apply_to_the_next_operation_on_open_connections() -> None:
    with Broker(users={"alice": "pw"}, permissions={"alice": {"/": ".*"}}) as broker:
        conn = connect(broker.url)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("jobs")
        ch.basic_publish("", "jobs", b"1")  # allowed, and now remembered by the connection
        broker.set_permissions("alice", "/", configure=".*", write="^$", read=".*")
        with pytest.raises(ChannelClosedByBroker) as ei:
            ch.basic_publish("", "jobs", b"2")
        assert ei.value.reply_text == "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'alice'"
        ch = conn.channel()
        ch.basic_get("jobs", auto_ack=True)
        broker.clear_permissions("alice", "/")
        with pytest.raises(ChannelClosedByBroker) as ei:
            ch.basic_get("jobs")
        assert ei.value.reply_code == 403
        conn.close()
        with pytest.raises(ProbableAccessDeniedError):
            connect(broker.url)  # no permissions left in '/': 530


def test_topic_permissions_through_the_harness() -> None:
    with Broker(users={"alice": "pw"}, permissions={"alice": {"/": ".*"}}) as broker:
        broker.set_topic_permissions("alice", "amq.topic", write=r"^{username}\.")
        ch = connect(broker.url).channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "alice.x", b"ok")
        with pytest.raises(ChannelClosedByBroker) as ei:
            ch.basic_publish("amq.topic", "bob.x", b"no")
        assert "access to topic 'bob.x' in exchange 'amq.topic'" in ei.value.reply_text
        ch = connect(broker.url).channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "alice.y", b"ok")  # allowed, and remembered
        broker.set_topic_permissions("alice", "amq.topic", write="^nobody$")
        with pytest.raises(ChannelClosedByBroker) as ei:
            ch.basic_publish("amq.topic", "alice.y", b"no longer")
        assert "access to topic 'alice.y'" in ei.value.reply_text


def test_definitions_from_rabbitmq_load_into_the_test_broker() -> None:
    with Broker(definitions=FIXTURE) as broker:
        assert "acl-fixture" in broker.vhosts()
        assert broker.queue("bob-orders", vhost="acl-fixture").durable
        url = broker.url_for("acl-fixture").replace("guest:guest", "acl-alice:alice-secret")
        connect(url).close()
        data = broker.export_definitions()
        assert {u["name"] for u in data["users"]} == {"guest", "acl-alice", "acl-bob"}
        json.dumps(data)


def test_open_by_default_users_reach_every_vhost_also_added_later() -> None:
    with Broker(users={"u": "p"}) as broker:
        broker.add_vhost("later")
        connect(broker.url_for("later")).close()
        connect(broker.url).close()


def test_access_survives_restart() -> None:
    with Broker(users={"alice": "pw"}, permissions={"alice": {"/": ".*"}}) as broker:
        broker.add_user("bob", "bob-pw")
        broker.set_permissions("bob", "/")
        broker.restart()
        connect(broker.url.replace("alice:pw", "bob:bob-pw")).close()


def test_deleting_a_user_closes_its_connections() -> None:
    with Broker(users={"alice": "pw", "guest": "guest"}, permissions={"alice": {"/": ".*"}, "guest": {"/": ".*"}}) as broker:
        alice = connect(broker.url)
        guest = connect(broker.url.replace("alice:pw", "guest:guest"))
        broker.delete_user("alice")
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
            alice.process_data_events(time_limit=10)
            alice.channel()
        assert (ei.value.reply_code, ei.value.reply_text) == (320, "CONNECTION_FORCED - user 'alice' is deleted")
        guest.channel().queue_declare("still-fine")  # other users' connections stay
