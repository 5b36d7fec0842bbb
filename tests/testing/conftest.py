"""Helpers for the minimq.testing tests: real clients against an embedded broker.

Nothing here sleeps to wait: pika is pumped with process_data_events until a condition
holds or a deadline passes, and broker-side conditions use Broker.wait_for.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import pytest

pika = pytest.importorskip("pika")

TIMEOUT = 10.0


def connect(url: str, **params: Any) -> "pika.BlockingConnection":
    p = pika.URLParameters(url)
    for key, value in params.items():
        setattr(p, key, value)
    return pika.BlockingConnection(p)


def pump_until(connection: Any, condition: Callable[[], Any], timeout: float = TIMEOUT,
               what: str = "condition") -> Any:
    """Run a pika BlockingConnection's I/O until condition() is truthy (or fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        connection.process_data_events(time_limit=min(remaining, 0.02))


@pytest.fixture
def mq() -> Iterator[Any]:
    """A fresh embedded broker in a background thread."""
    from minimq.testing import Broker

    with Broker() as b:
        yield b


@pytest.fixture
def vmq() -> Iterator[Any]:
    """A fresh embedded broker on a virtual clock."""
    from minimq.testing import Broker

    with Broker(clock="virtual") as b:
        yield b


@pytest.fixture
def client(mq: Any) -> Iterator[Any]:
    c = connect(mq.url)
    try:
        yield c
    finally:
        if c.is_open:
            c.close()


def closed_by_broker(connection: Any, timeout: float = TIMEOUT) -> Any:
    """Pump a pika connection until the broker closes it; return pika's exception."""
    try:
        pump_until(connection, lambda: not connection.is_open, timeout, "the broker to close the connection")
    except (pika.exceptions.ConnectionClosedByBroker, pika.exceptions.StreamLostError) as exc:
        return exc
    raise AssertionError("the connection closed without an error")
