"""Fixtures for the durability tests: a broker process on a fresh data dir."""
from __future__ import annotations

import threading
from typing import Callable, Iterator

import pytest

from .durable_support import DurableBroker


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def _made_brokers() -> list:
    return []


@pytest.fixture
def make_broker(data_dir, _made_brokers) -> Iterator[Callable[..., DurableBroker]]:
    """make_broker(**options) -> a started DurableBroker on `data_dir`; all killed at the end."""
    made: list[DurableBroker] = _made_brokers

    def make(directory=None, **kw) -> DurableBroker:
        b = DurableBroker(directory or data_dir, **kw)
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.kill()


@pytest.fixture(autouse=True)
def _no_hang(request, _made_brokers):
    """Kill every broker this test made if it runs past its limit (the test then fails)."""
    limit = 600.0 if request.node.get_closest_marker("stress") else 60.0
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        for b in list(_made_brokers):
            if b.proc is not None and b.proc.poll() is None:
                b.proc.kill()

    timer = threading.Timer(limit, fire)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()
    assert not fired.is_set(), f"test ran past {limit}s: its brokers were killed"


@pytest.fixture
def broker(make_broker) -> DurableBroker:
    return make_broker()
