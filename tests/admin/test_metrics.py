"""/metrics in Prometheus' text format, parsed by prometheus_client's own parser."""
from __future__ import annotations

import urllib.request

import pika
from prometheus_client.parser import text_string_to_metric_families


def scrape(node) -> dict[str, list]:
    with urllib.request.urlopen(node.base + "/metrics", timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    families = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            families.setdefault(sample.name, []).append(sample)
    return families


def value(families, name, **labels) -> float:
    matches = [s.value for s in families[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, families.get(name))
    return matches[0]


def test_metrics_parse_and_follow_the_broker(node, unique):
    before = scrape(node)
    received_before = value(before, "rabbitmq_global_messages_received_total", protocol="amqp091")
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
    try:
        ch = conn.channel()
        ch.queue_declare(unique)
        ch.queue_declare(unique + '-"odd"\\name')
        for _ in range(5):
            ch.basic_publish("", unique, b"x")
        ch.basic_qos(prefetch_count=2)
        ch.basic_consume(unique, lambda *a: None)
        conn.process_data_events(0.3)
        ch.queue_declare(unique, passive=True)
        m = scrape(node)
        assert value(m, "rabbitmq_queue_messages_ready", vhost="/", queue=unique) == 3
        assert value(m, "rabbitmq_queue_messages_unacked", vhost="/", queue=unique) == 2
        assert value(m, "rabbitmq_queue_messages", vhost="/", queue=unique) == 5
        assert value(m, "rabbitmq_queue_consumers", vhost="/", queue=unique) == 1
        assert value(m, "rabbitmq_queue_messages_published_total", vhost="/", queue=unique) == 5
        assert value(m, "rabbitmq_queue_messages_ready", vhost="/", queue=unique + '-"odd"\\name') == 0
        assert value(m, "rabbitmq_connections") >= 1
        assert value(m, "rabbitmq_channels") >= 1
        assert value(m, "rabbitmq_consumers") >= 1
        assert value(m, "rabbitmq_queues") >= 2
        assert value(m, "rabbitmq_global_messages_received_total", protocol="amqp091") >= received_before + 5
        assert value(m, "rabbitmq_global_messages_delivered_total", protocol="amqp091") >= 2
        assert value(m, "rabbitmq_process_resident_memory_bytes") > 1_000_000
        assert value(m, "rabbitmq_alarms_memory_used_watermark") == 0
        assert value(m, "rabbitmq_identity_info", rabbitmq_cluster="minimq") == 1
    finally:
        conn.close()
    after = scrape(node)
    # counters never go backwards when the channels that counted are gone
    assert value(after, "rabbitmq_global_messages_received_total", protocol="amqp091") >= received_before + 5


def test_alarms_show_in_health_checks_nodes_and_metrics():
    import time

    from .conftest import start_node

    node = start_node("--memory-high-watermark", "1")  # 1 byte: on as soon as a message waits
    try:
        assert node.get("/api/health/checks/alarms") == {"status": "ok"}
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
        ch = conn.channel()
        ch.queue_declare("waiting")
        ch.basic_publish("", "waiting", b"x")
        deadline = time.monotonic() + 30
        while node.request("GET", "/api/health/checks/alarms")[0] != 503:
            assert time.monotonic() < deadline, "the memory alarm never showed"
            conn.process_data_events(0.1)
        status, body, _ = node.request("GET", "/api/health/checks/local-alarms")
        assert status == 503 and body["status"] == "failed"
        assert body["alarms"][0]["resource"] == "memory"
        assert node.get("/api/nodes")[0]["mem_alarm"] is True
        assert value(scrape(node), "rabbitmq_alarms_memory_used_watermark") == 1
        # (no conn.close(): a blocked publisher's close is not read until the alarm clears,
        # as in RabbitMQ; stopping the broker drops it)
    finally:
        node.stop()
