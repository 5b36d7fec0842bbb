"""The README's "Testing with minimq" examples, run as written (unittest, Celery)."""
from __future__ import annotations

import threading
import unittest

import pika
import pytest

from minimq.testing import Broker


class OrdersTest(unittest.TestCase):
    """The unittest example: one broker for the class, a clean vhost state per test."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.broker = cls.enterClassContext(Broker())

    def setUp(self) -> None:
        self.broker.reset()
        self.connection = pika.BlockingConnection(pika.URLParameters(self.broker.url))
        self.addCleanup(self.connection.close)

    def test_publish_lands_in_the_queue(self) -> None:
        channel = self.connection.channel()
        channel.queue_declare("orders")
        channel.basic_publish("", "orders", b'{"id": 1}')
        self.broker.wait_for(lambda: self.broker.queue("orders").messages_ready == 1, timeout=5)
        self.assertEqual(self.broker.messages("orders")[0].json(), {"id": 1})

    def test_each_test_starts_empty(self) -> None:
        self.assertEqual(self.broker.queues(), [])


def test_celery_task_through_the_fixture_broker(minimq_url: str) -> None:
    """The Celery example: a real worker (in a thread) consuming from the fixture's broker."""
    celery = pytest.importorskip("celery")
    from celery.contrib.testing.worker import start_worker

    app = celery.Celery("example", broker=minimq_url.replace("amqp://", "pyamqp://", 1), backend="rpc://")
    app.conf.update(
        broker_connection_retry_on_startup=False,
        worker_hijack_root_logger=False,
        task_default_queue="example",
        broker_heartbeat=0,
    )
    seen = threading.Event()

    @app.task(name="example.add")
    def add(x: int, y: int) -> int:
        seen.set()
        return x + y

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        result = add.delay(2, 3)
        assert result.get(timeout=10) == 5
    assert seen.is_set()


def test_kombu_against_the_fixture(minimq_broker, minimq_url: str) -> None:
    kombu = pytest.importorskip("kombu")
    with kombu.Connection(minimq_url) as conn:
        queue = kombu.Queue("kq", kombu.Exchange("kx", "direct"), routing_key="k")
        with conn.Producer() as producer:
            producer.publish({"hello": "world"}, exchange=queue.exchange, routing_key="k",
                             declare=[queue], serializer="json")
        minimq_broker.wait_for(lambda: minimq_broker.queue("kq").messages_ready == 1, timeout=5)
        [m] = minimq_broker.messages("kq")
        assert m.content_type == "application/json" and m.json() == {"hello": "world"}
        assert [b.source for b in minimq_broker.bindings(destination="kq")] == ["", "kx"]
