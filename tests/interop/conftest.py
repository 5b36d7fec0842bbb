"""Helpers for the interop tier: real, unmodified AMQP clients against the broker.

Every test here talks to the session broker from tests/conftest.py (minimq, or the broker
named by MINIMQ_TEST_URL, e.g. a real RabbitMQ). Waits are event-driven and bounded: a
pika blocking connection is pumped with `process_data_events(time_limit=...)` until a
condition holds or a deadline passes; asyncio clients use `asyncio.wait_for`. Nothing
sleeps to wait for a condition.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

T = TypeVar("T")

#: Default upper bound for any single wait in this tier.
TIMEOUT = 10.0

#: The capabilities a RabbitMQ-compatible broker advertises in connection.start.
REQUIRED_CAPABILITIES = (
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
)


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run an asyncio test body to completion, failing it if it takes longer than timeout."""

    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


def url_with(url: str, *, user: str | None = None, password: str | None = None,
             vhost: str | None = None, query: str | None = None) -> str:
    """`url` with its user, password, vhost or query string replaced."""
    parts = urlsplit(url)
    user = parts.username if user is None else user
    password = parts.password if password is None else password
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user or '', safe='')}:{quote(password or '', safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    path = parts.path if vhost is None else "/" + quote(vhost, safe="")
    return urlunsplit((parts.scheme, netloc, path, parts.query if query is None else query, ""))


def pump_until(connection: Any, condition: Callable[[], Any], timeout: float = TIMEOUT,
               what: str = "condition") -> None:
    """Process a pika BlockingConnection's I/O until condition() is true (or fail)."""
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        # Returns early once a BlockingChannel-level event is dispatched; callbacks
        # registered on the underlying impl don't end it early, hence the short slice.
        connection.process_data_events(time_limit=min(remaining, 0.02))


def eventually(probe: Callable[[], T], timeout: float = TIMEOUT, what: str = "condition") -> T:
    """Retry a probe that does a network round trip until it returns something truthy.

    Only for state the broker changes asynchronously after replying (e.g. deleting an
    exclusive queue after its owner connection closed); each try is a real round trip,
    never a sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def aeventually(probe: Callable[[], Awaitable[T]], timeout: float = TIMEOUT,
                      what: str = "condition") -> T:
    """Async twin of `eventually`: retry an awaitable round-trip probe until truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def url_parts(amqp_url: str):
    """The broker URL split into (host, port, user, password, vhost)."""
    parts = urlsplit(amqp_url)
    vhost = parts.path[1:] if parts.path and parts.path != "/" else "/"
    return (parts.hostname or "127.0.0.1", parts.port or 5672, parts.username or "guest",
            parts.password or "guest", vhost)
