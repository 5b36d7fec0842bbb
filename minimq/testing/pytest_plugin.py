"""pytest plugin: a real AMQP broker for your tests (loaded through the `pytest11` entry point).

Fixtures:
    minimq_broker  the running minimq.testing.Broker; one per test session (per xdist worker),
                   with each test isolated from the others (see below)
    minimq_url     the AMQP URL a client should use in this test (minimq_broker.url)
    minimq_session_broker  the shared session broker itself, without per-test isolation

Isolation between tests that share the session broker (`--minimq-isolation` or the ini
option `minimq_isolation`):
    vhost (default)  each test gets a fresh vhost, which `minimq_url` and the inspection
                     helpers point at; it is deleted after the test, closing the test's
                     connections
    reset            one vhost, "/", emptied before each test: every queue and exchange is
                     deleted except the predeclared '' and amq.* ones; connections stay open
    none             nothing is cleaned up

A fresh broker, started for one test and stopped after it: `@pytest.mark.minimq(fresh=True)`,
or any Broker argument in the marker, e.g. `@pytest.mark.minimq(clock="virtual", heartbeat=10)`;
for every test: `--minimq-fresh` (ini `minimq_fresh = true`).

Access control: a broker is open by default (every user may do anything). To test with the
production users, permissions and topology, load a RabbitMQ definitions export into the
session broker with `--minimq-definitions FILE` (ini `minimq_definitions`), or give one test
its own broker: `@pytest.mark.minimq(users={"alice": "pw"}, permissions={"alice": {"/": ".*"}})`
or `@pytest.mark.minimq(definitions="defs.json")`. A per-test vhost gets the permissions
users have on '/'.
"""
from __future__ import annotations

import os
import re
import uuid
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from minimq.testing import Broker

ISOLATION_MODES = ("vhost", "reset", "none")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("minimq", "minimq in-process AMQP broker")
    group.addoption(
        "--minimq-isolation",
        choices=ISOLATION_MODES,
        default=None,
        help="how tests sharing the session broker are isolated: a fresh vhost per test "
        "(default), a reset of '/' before each test, or none",
    )
    group.addoption(
        "--minimq-fresh",
        action="store_true",
        default=None,
        help="start a fresh minimq broker for every test instead of one per session",
    )
    group.addoption(
        "--minimq-definitions",
        default=None,
        metavar="FILE",
        help="load this RabbitMQ definitions export (users, permissions, topology) into the session broker",
    )
    parser.addini("minimq_definitions", "a RabbitMQ definitions export for the session broker", default="")
    parser.addini("minimq_isolation", "vhost, reset or none (see --minimq-isolation)", default="vhost")
    parser.addini("minimq_fresh", "a fresh minimq broker for every test", type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "minimq(fresh=False, isolation=None, **broker_kwargs): a fresh minimq broker for this "
        "test (fresh=True, or any minimq.testing.Broker argument such as clock='virtual'), "
        "or another isolation mode for it: 'vhost', 'reset' or 'none'",
    )


def _isolation(config: pytest.Config, marker_value: str | None) -> str:
    mode = marker_value or config.getoption("minimq_isolation") or config.getini("minimq_isolation")
    if mode not in ISOLATION_MODES:
        raise pytest.UsageError(f"minimq isolation must be one of {ISOLATION_MODES}, not {mode!r}")
    return mode


def _vhost_name(node_name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", node_name)[:48].strip("_") or "test"
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def minimq_session_broker(request: pytest.FixtureRequest) -> Iterator["Broker"]:
    """One broker for the whole session (one per pytest-xdist worker), on a free port."""
    from minimq.testing import Broker

    config = request.config
    definitions = config.getoption("minimq_definitions") or config.getini("minimq_definitions") or None
    if definitions and not os.path.isabs(definitions):
        definitions = os.path.join(str(config.rootpath), definitions)
    broker = Broker(definitions=definitions)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def minimq_broker(request: pytest.FixtureRequest) -> Iterator["Broker"]:
    """The broker for this test: the session broker, isolated; or a fresh one if asked."""
    from minimq.testing import Broker

    marker = request.node.get_closest_marker("minimq")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    fresh = kwargs.pop("fresh", None)
    isolation = _isolation(request.config, kwargs.pop("isolation", None))
    if fresh is None:
        fresh = bool(request.config.getoption("minimq_fresh") or request.config.getini("minimq_fresh"))
    if fresh or kwargs:
        with Broker(**kwargs) as broker:
            yield broker
        return

    broker: Broker = request.getfixturevalue("minimq_session_broker")
    if not broker.running:  # a previous test stopped it
        broker.start()
    if isolation == "reset":
        broker.vhost = "/"
        broker.reset("/")
    vhost = None
    if isolation == "vhost":
        vhost = _vhost_name(request.node.name)
        broker.add_vhost(vhost)
        broker.copy_permissions("/", vhost)
        broker.vhost = vhost
    try:
        yield broker
    finally:
        broker.vhost = "/"
        if not broker.running:
            broker.start()
        if broker.blocked:
            broker.unblock()
        if vhost is not None:
            broker.delete_vhost(vhost)


@pytest.fixture
def minimq_url(minimq_broker: "Broker") -> str:
    """amqp://guest:guest@127.0.0.1:<port>/<this test's vhost>"""
    return minimq_broker.url
