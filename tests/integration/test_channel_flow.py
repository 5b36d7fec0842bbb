"""channel.flow from the client: minimq pauses deliveries as the AMQP spec says.

RabbitMQ answers flow(active=false) with 540 NOT_IMPLEMENTED; minimq implements it (README,
"Where minimq knowingly differs"), so this test runs against minimq only.
"""
from __future__ import annotations

import os
import time

import pika
import pytest

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MINIMQ_TEST_URL")), reason="minimq's documented difference from RabbitMQ"
)


def pump(conn: pika.BlockingConnection, until, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            return False
        conn.process_data_events(time_limit=0.02)
    return True


def test_flow_false_pauses_and_true_resumes_deliveries(amqp_url, unique):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.queue_declare(unique, exclusive=True)
        got: list[bytes] = []
        ch.basic_consume(unique, lambda c, m, p, body: got.append(body), auto_ack=True)
        assert ch.flow(False) is False
        pub = conn.channel()
        pub.confirm_delivery()
        pub.basic_publish("", unique, b"held")
        # Absence can only be observed over a window: nothing may arrive in it.
        assert not pump(conn, lambda: bool(got), timeout=0.3)
        assert pub.queue_declare(unique, passive=True).method.message_count == 1
        assert ch.flow(True) is True
        assert pump(conn, lambda: got == [b"held"])
    finally:
        conn.close()
