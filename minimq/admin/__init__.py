"""Management: RabbitMQ's HTTP API, Prometheus metrics and a web UI, beside the transport.

Reads the broker core on its own event loop, never from another thread, and never for long
at a time (see api.py); the core keeps only plain counters for it (see stats.py).
"""
from minimq.admin.app import ManagementServer

__all__ = ["ManagementServer"]
