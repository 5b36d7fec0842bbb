"""Shared helpers for the extension tests (pika, real sockets).

Waits are event-driven and bounded: a BlockingConnection is pumped with
`process_data_events(time_limit=...)` until a condition holds or a deadline passes.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import pika
import pika.exceptions as pe

TIMEOUT = 3.0  # every wait here is for something local and quick


def connect(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


def product(conn: pika.BlockingConnection) -> str:
    props = conn._impl.server_properties  # noqa: SLF001
    value = (props or {}).get("product", "")
    return value.decode() if isinstance(value, bytes) else str(value)


def is_minimq(conn: pika.BlockingConnection) -> bool:
    return product(conn) == "minimq"


def pump_until(conn: pika.BlockingConnection, condition: Callable[[], Any],
               timeout: float = TIMEOUT, what: str = "condition") -> None:
    """Process I/O until condition() is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        conn.process_data_events(time_limit=min(remaining, 0.02))


def pump_for(conn: pika.BlockingConnection, seconds: float) -> None:
    """Keep processing I/O for `seconds` (to observe that nothing arrives in a window)."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        conn.process_data_events(time_limit=min(remaining, 0.02))


def closed_by_broker(fn: Callable[[], Any]) -> tuple[int, str]:
    """Run fn, expecting the broker to close the channel; returns (code, text)."""
    try:
        fn()
    except pe.ChannelClosedByBroker as exc:
        return exc.reply_code, exc.reply_text
    raise AssertionError("expected the broker to close the channel")


class Collector:
    """Collects deliveries of a pika consumer: (method, properties, body)."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, Any, bytes]] = []
        self.times: list[float] = []

    def __call__(self, ch, method, properties, body) -> None:
        self.items.append((method, properties, body))
        self.times.append(time.monotonic())

    @property
    def bodies(self) -> list[bytes]:
        return [b for _m, _p, b in self.items]

    def __len__(self) -> int:
        return len(self.items)


def text(value: Any) -> Any:
    """Header values may arrive as bytes (pika decodes longstr as str or bytes)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [text(v) for v in value]
    return value
