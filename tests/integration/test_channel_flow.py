"""channel.flow from the client, as RabbitMQ 3.10 answers it.

flow(active=true) is acknowledged; flow(active=false) closes the whole connection with
540 NOT_IMPLEMENTED (consumers are throttled with basic.qos instead). Clients' own test suites
(the Go client's, for one) assert exactly this, so minimq answers the same.
Runs against RabbitMQ too with MINIMQ_TEST_URL.
"""
from __future__ import annotations

import pika
import pika.exceptions
import pytest


def test_flow_true_is_acknowledged(amqp_url):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        assert ch.flow(True) is True
        assert ch.is_open and conn.is_open
    finally:
        conn.close()


def test_flow_false_closes_the_connection_with_540(amqp_url, unique):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.queue_declare(unique, auto_delete=True)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            ch.flow(False)
        assert info.value.reply_code == 540
        assert info.value.reply_text == "NOT_IMPLEMENTED - active=false"
        assert not conn.is_open
    finally:
        if conn.is_open:
            conn.close()
