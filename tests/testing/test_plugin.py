"""The pytest plugin, exercised the way users use it: pytest runs on a test file (pytester)."""
from __future__ import annotations

import json
import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def plugin_args() -> list[str]:
    """Installed, the plugin loads through its pytest11 entry point; in a bare checkout, by name."""
    # Where hypothesis is installed, its plugin re-imports it (with assertion rewriting, ~3 s)
    # in every pytester run; these runs do not need it.
    args = ["-p", "no:hypothesispytest"]
    if any(ep.name == "minimq" for ep in entry_points(group="pytest11")):
        return args
    return args + ["-p", "minimq.testing.pytest_plugin"]


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    # subprocess runs (xdist) import minimq even from a checkout that is not installed
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + (os.pathsep + path if path else ""))


def test_entry_point_is_declared() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points.pytest11]\nminimq = "minimq.testing.pytest_plugin"' in text


def test_fixtures_with_a_fresh_vhost_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pika, pytest

        SEEN = {}

        def test_first(minimq_broker, minimq_url):
            assert minimq_url == minimq_broker.url
            assert minimq_broker.vhost != "/" and minimq_url.endswith("/" + minimq_broker.vhost)
            c = pika.BlockingConnection(pika.URLParameters(minimq_url))
            ch = c.channel()
            ch.queue_declare("orders")
            ch.basic_publish("", "orders", b"x")
            minimq_broker.wait_for(lambda: minimq_broker.queue("orders").messages_ready == 1, timeout=5)
            SEEN.update(port=minimq_broker.port, vhost=minimq_broker.vhost, conn=c)

        def test_second(minimq_broker, minimq_url):
            assert minimq_broker.port == SEEN["port"]  # one broker for the session
            assert minimq_broker.vhost != SEEN["vhost"]
            assert SEEN["vhost"] not in minimq_broker.vhosts()  # the first test's vhost is gone
            assert minimq_broker.queues() == []
            c = pika.BlockingConnection(pika.URLParameters(minimq_url))
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
                c.channel().queue_declare("orders", passive=True)
            assert info.value.reply_code == 404
            c.close()
            # the first test's connection was closed with its vhost
            with pytest.raises(pika.exceptions.AMQPConnectionError):
                SEEN["conn"].process_data_events(time_limit=1)
                SEEN["conn"].channel()
        """
    )
    result = pytester.runpytest_inprocess(*plugin_args())
    result.assert_outcomes(passed=2)


def test_reset_isolation(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pika

        KEEP = {}

        def test_first(minimq_broker, minimq_url):
            assert minimq_broker.vhost == "/" and minimq_url.endswith(":%d/" % minimq_broker.port)
            c = pika.BlockingConnection(pika.URLParameters(minimq_url))
            ch = c.channel()
            ch.exchange_declare("mine", "fanout")
            ch.queue_declare("q")
            ch.queue_bind("q", "amq.topic", "#")
            KEEP["conn"] = c

        def test_second(minimq_broker):
            assert minimq_broker.queues() == []
            assert "mine" not in [e.name for e in minimq_broker.exchanges()]
            assert minimq_broker.bindings() == []
            assert len(minimq_broker.connections()) == 1  # reset leaves connections alone
            KEEP["conn"].close()
        """
    )
    result = pytester.runpytest_inprocess(*plugin_args(), "--minimq-isolation=reset")
    result.assert_outcomes(passed=2)


def test_ini_option_and_marker_override(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nminimq_isolation = reset\n")
    pytester.makepyfile(
        """
        import pytest

        def test_ini(minimq_broker):
            assert minimq_broker.vhost == "/"

        @pytest.mark.minimq(isolation="vhost")
        def test_marker(minimq_broker):
            assert minimq_broker.vhost != "/"
        """
    )
    pytester.runpytest_inprocess(*plugin_args()).assert_outcomes(passed=2)


def test_markers_give_fresh_brokers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        PORTS = []

        def test_session(minimq_broker):
            PORTS.append(minimq_broker.port)

        @pytest.mark.minimq(fresh=True)
        def test_fresh(minimq_broker):
            assert minimq_broker.port != PORTS[0] and minimq_broker.vhost == "/"
            assert not minimq_broker.virtual

        @pytest.mark.minimq(clock="virtual", heartbeat=5)
        def test_virtual_clock(minimq_broker):
            assert minimq_broker.port != PORTS[0] and minimq_broker.virtual
            t = minimq_broker.now()
            assert minimq_broker.advance(3600) == t + 3600

        def test_session_again(minimq_broker):
            assert minimq_broker.port == PORTS[0]
        """
    )
    pytester.runpytest_inprocess(*plugin_args()).assert_outcomes(passed=4)


def test_fresh_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        PORTS = []

        def test_a(minimq_broker):
            PORTS.append(minimq_broker.port)

        def test_b(minimq_broker):
            assert minimq_broker.port != PORTS[0]
        """
    )
    pytester.runpytest_inprocess(*plugin_args(), "--minimq-fresh").assert_outcomes(passed=2)


def test_a_test_that_stops_or_blocks_the_broker_does_not_break_the_next(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pika

        def test_stops(minimq_broker):
            minimq_broker.block()
            minimq_broker.stop()

        def test_next(minimq_broker, minimq_url):
            assert minimq_broker.running and not minimq_broker.blocked
            pika.BlockingConnection(pika.URLParameters(minimq_url)).close()
        """
    )
    pytester.runpytest_inprocess(*plugin_args()).assert_outcomes(passed=2)


def test_xdist_gives_each_worker_its_own_broker(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    out = tmp_path / "seen"
    out.mkdir()
    pytester.makepyfile(
        f"""
        import json, os, uuid, pika, pytest

        @pytest.mark.parametrize("i", range(6))
        def test_uses_broker(minimq_broker, minimq_url, i):
            c = pika.BlockingConnection(pika.URLParameters(minimq_url))
            c.channel().queue_declare("same-name")  # isolated per test anyway
            c.close()
            row = {{"worker": os.environ["PYTEST_XDIST_WORKER"], "port": minimq_broker.port}}
            with open(os.path.join({str(out)!r}, uuid.uuid4().hex), "w") as f:
                json.dump(row, f)
        """
    )
    result = pytester.runpytest_subprocess(*plugin_args(), "-n", "2", "-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=6)
    rows = [json.loads(p.read_text()) for p in out.iterdir()]
    ports_by_worker: dict[str, set] = {}
    for row in rows:
        ports_by_worker.setdefault(row["worker"], set()).add(row["port"])
    assert len(rows) == 6
    assert len(ports_by_worker) == 2, ports_by_worker
    assert all(len(ports) == 1 for ports in ports_by_worker.values())  # one broker per worker
    a, b = ports_by_worker.values()
    assert a != b


def readme_examples() -> list[str]:
    """The runnable test examples of the README's "Testing with minimq" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Testing with minimq\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("\n```", 1)[0] for b in section.split("```python\n")[1:]]
    return [b for b in blocks if "def test_" in b]


def test_readme_examples_pass_as_written(pytester: pytest.Pytester) -> None:
    examples = readme_examples()
    assert len(examples) == 3  # pytest, unittest, Celery
    for i, code in enumerate(examples):
        if "celery" in code:
            pytest.importorskip("celery")
        pytester.makepyfile(**{f"test_readme_{i}": code})
    result = pytester.runpytest_inprocess(*plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_marker_gives_a_test_users_and_exact_permissions(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pika, pytest

        @pytest.mark.minimq(users={"alice": "pw", "guest": "guest"},
                            permissions={"alice": {"/": ("^alice-", ".*", ".*")}})
        def test_alice(minimq_broker):
            assert minimq_broker.url.startswith("amqp://alice:pw@")
            c = pika.BlockingConnection(pika.URLParameters(minimq_broker.url))
            c.channel().queue_declare("alice-jobs")
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
                c.channel().queue_declare("bob-jobs")
            assert info.value.reply_code == 403
            with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
                pika.BlockingConnection(pika.URLParameters(minimq_broker.url.replace("alice:pw", "guest:guest")))
        """
    )
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=1)


def test_session_broker_loads_definitions_and_isolation_vhosts_keep_permissions(pytester: pytest.Pytester) -> None:
    defs = {
        "users": [{"name": "guest", "password": "guest", "tags": ["administrator"]},
                  {"name": "app", "password": "app-pw", "tags": []}],
        "vhosts": [{"name": "/"}, {"name": "prod"}],
        "permissions": [
            {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": "app", "vhost": "prod", "configure": "^app-", "write": ".*", "read": ".*"},
        ],
        "queues": [{"name": "app-orders", "vhost": "prod", "durable": True, "auto_delete": False, "arguments": {}}],
    }
    pytester.makefile(".json", defs=json.dumps(defs))
    pytester.makeini("[pytest]\nminimq_definitions = defs.json\n")
    pytester.makepyfile(
        """
        import pika, pytest

        def test_production_topology(minimq_broker):
            url = minimq_broker.url_for("prod").replace("guest:guest", "app:app-pw")
            c = pika.BlockingConnection(pika.URLParameters(url))
            c.channel().queue_declare("app-orders", passive=True)
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
                c.channel().queue_declare("other")
            assert info.value.reply_text == "ACCESS_REFUSED - access to queue 'other' in vhost 'prod' refused for user 'app'"

        def test_isolated_vhost_still_open_to_guest(minimq_url):
            pika.BlockingConnection(pika.URLParameters(minimq_url)).channel().queue_declare("q")
        """
    )
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=2)
