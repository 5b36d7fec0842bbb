"""Helpers for the adversarial tier: a broker subprocess, plus the tools in tools.py.

Each attack runs against a real `python -m minimq` over real sockets.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from conftest import BrokerProcess, start_broker
from .tools import (  # noqa: F401  (re-exported for the tests)
    MB,
    Bystander,
    Closed,
    PeakRSS,
    RawAMQP,
    connect_blockable,
    discard_thread,
    is_closed,
    rss,
    sender_thread,
)


@contextmanager
def broker_with(*args: str) -> Iterator[BrokerProcess]:
    b = start_broker(*args)
    try:
        yield b
    finally:
        b.stop()
