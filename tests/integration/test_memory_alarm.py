"""Flow control: above the memory high watermark publishers are blocked, as in RabbitMQ.

A 1 MB watermark, below what the process itself takes: a 600 KB message waiting in a queue
(more than half the watermark, with resident memory above it) raises the alarm; taking it out
clears it.
"""
from __future__ import annotations

import os
import time

import pika
import pytest

from conftest import start_broker

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MINIMQ_TEST_URL")) or not os.path.exists("/proc/self/statm"),
    reason="drives minimq's own watermark (Linux RSS)",
)


def pump(conn: pika.BlockingConnection, until, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            return False
        conn.process_data_events(time_limit=0.05)
    return True


def test_publishers_blocked_above_the_watermark_and_released_when_drained():
    broker = start_broker("--memory-high-watermark", str(1 << 20))
    try:
        events: list[str] = []
        params = pika.URLParameters(broker.url)
        publisher = pika.BlockingConnection(params)
        publisher.add_on_connection_blocked_callback(lambda c, m: events.append("blocked"))
        publisher.add_on_connection_unblocked_callback(lambda c, m: events.append("unblocked"))
        ch = publisher.channel()
        ch.queue_declare("alarm-q")
        idle_events: list[str] = []
        idle = pika.BlockingConnection(params)
        idle.add_on_connection_blocked_callback(lambda c, m: idle_events.append("blocked"))
        ch.basic_publish("", "alarm-q", b"first" * (120 * 1024))
        # As RabbitMQ: connection.blocked comes when the publisher publishes while the alarm
        # is on, not when the alarm goes on, so publish small probes until it does.
        probes = 0
        deadline = time.monotonic() + 20
        while "blocked" not in events:
            assert time.monotonic() < deadline, "no connection.blocked"
            ch.basic_publish("", "alarm-q", b"probe")
            probes += 1
            pump(publisher, lambda: "blocked" in events, timeout=0.3)
        # A consumer-only connection keeps working while publishers are blocked.
        consumer = pika.BlockingConnection(params)
        cch = consumer.channel()
        method, _props, body = cch.basic_get("alarm-q", auto_ack=True)
        assert body == b"first" * (120 * 1024)
        assert pump(publisher, lambda: "unblocked" in events), "no connection.unblocked"
        ch.basic_publish("", "alarm-q", b"second")
        publisher.process_data_events(time_limit=0.1)
        assert cch.queue_declare("alarm-q", passive=True).method.message_count == probes + 1
        # The idle connection was never told: it did not publish.
        idle.process_data_events(time_limit=0.1)
        assert idle_events == []
        idle.close()
        consumer.close()
        publisher.close()
    finally:
        broker.stop()
