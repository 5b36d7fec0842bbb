"""Fixtures of the extension tests: a pika connection and a channel on the session broker."""
from __future__ import annotations

from typing import Iterator

import pika
import pytest

from .helpers import connect


@pytest.fixture
def conn(amqp_url: str) -> Iterator[pika.BlockingConnection]:
    c = connect(amqp_url)
    try:
        yield c
    finally:
        if c.is_open:
            c.close()


@pytest.fixture
def ch(conn: pika.BlockingConnection):
    return conn.channel()
