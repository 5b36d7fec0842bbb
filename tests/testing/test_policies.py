"""minimq.testing's policy calls: set, clear, operator caps, and restarts keeping them."""
from __future__ import annotations

import pytest

from .conftest import connect


def test_set_policy_applies_before_it_returns_and_survives_a_restart(mq):
    conn = connect(mq.url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("jobs", durable=True)
        for i in range(5):
            ch.basic_publish("", "jobs", b"%d" % i)
        mq.set_policy("cap", "^jobs$", {"max-length": 2}, apply_to="queues")
        assert mq.queue("jobs").messages_ready == 2
        mq.set_operator_policy("op", "^jobs$", {"max-length": 1})
        assert mq.queue("jobs").messages_ready == 1
        assert [p["name"] for p in mq.policies()] == ["cap"]
        assert [p["name"] for p in mq.policies(operator=True)] == ["op"]
    finally:
        conn.close()
    mq.restart()
    assert [p["definition"] for p in mq.policies()] == [{"max-length": 2}]
    mq.clear_operator_policy("op")
    mq.clear_policy("cap")
    mq.clear_policy("cap")  # clearing a missing one is no error
    assert mq.policies() == [] and mq.policies(operator=True) == []


def test_a_refused_policy_raises_rabbitmqs_text(mq):
    with pytest.raises(ValueError, match='<<"x">> is not a valid message TTL'):
        mq.set_policy("bad", ".*", {"message-ttl": "x"})
    with pytest.raises(ValueError, match="no vhost"):
        mq.set_policy("p", ".*", {"max-length": 1}, vhost="nope")


def test_policy_ttl_and_expires_on_the_virtual_clock(vmq):
    conn = connect(vmq.url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("short")
        vmq.set_policy("ttl", "^short$", {"message-ttl": 5000, "expires": 60000})
        ch.basic_publish("", "short", b"soon gone")
        assert vmq.queue("short").messages_ready == 1
        vmq.advance(5)
        assert vmq.queue("short").messages_ready == 0
    finally:
        conn.close()
    vmq.advance(61)
    assert "short" not in [q.name for q in vmq.queues()]
