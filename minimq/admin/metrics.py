"""GET /metrics: Prometheus' text exposition format (0.0.4), with rabbitmq_prometheus' names.

Node-wide gauges and counters first, then one series per queue (labels vhost and queue, as
rabbitmq_prometheus' per-object metrics), streamed in chunks so a scrape of many queues never
holds the broker's loop for long. Counters are the core's lifetime totals (closed channels
included), so they only ever go up, as Prometheus expects.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator

import minimq
from minimq.admin.stats import unacked_by_queue
from minimq.admin.views import NODE, disk_free, fd_count, fd_limit
from minimq.server.app import rss_bytes

CHUNK = 200  # queues per loop iteration

# (metric, help, core counter(s) summed)
GLOBAL_COUNTERS = (
    ("rabbitmq_global_messages_received_total", "Total number of messages received from publishers", ("publish",)),
    ("rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers", ("confirm",)),
    ("rabbitmq_global_messages_unroutable_dropped_total",
     "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
     ("drop_unroutable",)),
    ("rabbitmq_global_messages_unroutable_returned_total",
     "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
     ("return_unroutable",)),
    ("rabbitmq_global_messages_delivered_total", "Total number of messages delivered to consumers",
     ("deliver", "deliver_no_ack", "get", "get_no_ack")),
    ("rabbitmq_global_messages_delivered_consume_manual_ack_total",
     "Total number of messages delivered to consumers using manual acknowledgement mode", ("deliver",)),
    ("rabbitmq_global_messages_delivered_consume_auto_ack_total",
     "Total number of messages delivered to consumers using automatic acknowledgement mode", ("deliver_no_ack",)),
    ("rabbitmq_global_messages_delivered_get_manual_ack_total",
     "Total number of messages delivered to consumers using basic.get with manual acknowledgement mode", ("get",)),
    ("rabbitmq_global_messages_delivered_get_auto_ack_total",
     "Total number of messages delivered to consumers using basic.get with automatic acknowledgement mode",
     ("get_no_ack",)),
    ("rabbitmq_global_messages_get_empty_total", "Total number of times basic.get operations fetched no message",
     ("get_empty",)),
    ("rabbitmq_global_messages_redelivered_total",
     "Total number of messages redelivered to consumers", ("redeliver",)),
    ("rabbitmq_global_messages_acknowledged_total",
     "Total number of messages acknowledged by consumers", ("ack",)),
)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(lines: list[str], name: str, kind: str, help_text: str, value: Any, labels: str = "") -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    lines.append(f"{name}{labels} {value}")


def node_metrics(mgmt: Any) -> str:
    broker = mgmt.broker
    server = mgmt.server
    lines: list[str] = []
    sessions = [s for s in list(broker.sessions) if not s.closed]
    channels = sum(len(s.channels) for s in sessions)
    queues = [q for v in list(broker.vhosts.values()) for q in list(v.queues.values())]
    consumers = sum(len(q.consumers) for q in queues)
    publishers = sum(1 for s in sessions for ch in list(s.channels.values()) if ch.stat_publish)
    proto = '{protocol="amqp091"}'
    _family(lines, "rabbitmq_build_info", "untyped", "RabbitMQ & Erlang/OTP version info", 1,
            f'{{rabbitmq_version="3.10.0",product="minimq",product_version="{escape(minimq.__version__)}"}}')
    _family(lines, "rabbitmq_identity_info", "untyped", "RabbitMQ node & cluster identity info", 1,
            f'{{rabbitmq_node="{escape(NODE)}",rabbitmq_cluster="{escape(str(broker.server_properties.get("cluster_name", "minimq")))}"}}')
    _family(lines, "rabbitmq_connections", "gauge", "Connections currently open", len(sessions))
    _family(lines, "rabbitmq_channels", "gauge", "Channels currently open", channels)
    _family(lines, "rabbitmq_consumers", "gauge", "Consumers currently connected", consumers)
    _family(lines, "rabbitmq_queues", "gauge", "Queues available", len(queues))
    _family(lines, "rabbitmq_global_publishers", "gauge", "Current number of publishers", publishers, proto)
    _family(lines, "rabbitmq_global_consumers", "gauge", "Current number of consumers", consumers, proto)
    totals = broker.message_totals()
    for name, help_text, fields in GLOBAL_COUNTERS:
        _family(lines, name, "counter", help_text, sum(totals[f] for f in fields), proto)
    rss = rss_bytes() or 0
    alarms = getattr(server, "alarms", ()) or ()
    _family(lines, "rabbitmq_process_resident_memory_bytes", "gauge", "Memory used in bytes", rss)
    _family(lines, "rabbitmq_resident_memory_limit_bytes", "gauge",
            "Memory high watermark in bytes", getattr(server, "memory_limit", None) or 0)
    _family(lines, "rabbitmq_alarms_memory_used_watermark", "gauge",
            "is 1 if VM memory watermark alarm is in effect", int("memory" in alarms))
    _family(lines, "rabbitmq_alarms_free_disk_space_watermark", "gauge",
            "is 1 if free disk space watermark alarm is in effect", int("disk" in alarms))
    _family(lines, "rabbitmq_alarms_file_descriptor_limit", "gauge",
            "is 1 if file descriptor limit alarm is in effect", 0)
    _family(lines, "rabbitmq_process_open_fds", "gauge", "Open file descriptors", fd_count())
    _family(lines, "rabbitmq_process_max_fds", "gauge", "Open file descriptors limit", fd_limit())
    data_dir = getattr(getattr(broker, "store", None), "path", None) or os.getcwd()
    _family(lines, "rabbitmq_disk_space_available_bytes", "gauge", "Disk space available in bytes", disk_free(data_dir))
    return "\n".join(lines) + "\n"


QUEUE_FAMILIES = (
    ("rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers"),
    ("rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged"),
    ("rabbitmq_queue_messages", "Sum of ready and unacknowledged messages - total queue depth"),
    ("rabbitmq_queue_consumers", "Consumers on a queue"),
    ("rabbitmq_queue_messages_published_total", "Total number of messages published to queues"),
)


async def render(mgmt: Any) -> AsyncIterator[bytes]:
    """The whole exposition, in chunks. Each queue family is listed in full (the format wants
    a family's samples together), so the queues are walked once per family."""
    broker = mgmt.broker
    yield node_metrics(mgmt).encode()
    unacked = unacked_by_queue(broker)
    queues = [(v.name, q) for v in list(broker.vhosts.values()) for q in list(v.queues.values())]
    values = (
        lambda q: len(q.ready),
        lambda q: unacked.get(q, 0),
        lambda q: len(q.ready) + unacked.get(q, 0),
        lambda q: len(q.consumers),
        lambda q: q.stat_publish,
    )
    for (name, help_text), value in zip(QUEUE_FAMILIES, values):
        kind = "counter" if name.endswith("_total") else "gauge"
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for start in range(0, len(queues), CHUNK):
            if start:
                yield ("\n".join(out) + "\n").encode()
                out = []
                await asyncio.sleep(0)
            for vhost, q in queues[start : start + CHUNK]:
                if not q.deleted:
                    out.append(f'{name}{{vhost="{escape(vhost)}",queue="{escape(q.name)}"}} {value(q)}')
        yield ("\n".join(out) + "\n").encode()
