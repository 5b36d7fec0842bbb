"""The registry, retry policy, cron schedules and command line, without a broker."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

import minimq.worker
from minimq.client import Message
from minimq.worker import App, CronSchedule, RetryPolicy
from minimq.worker.cli import _processes, describe
from minimq.worker.process import _as_outgoing

from .conftest import ROOT


def test_consumer_registration_and_defaults() -> None:
    app = App("amqp://u:p@h:1/", name="photos")

    @app.consumer(queue="indexing", exchange="photos", exchange_type="topic",
                  routing_key="photo.*", prefetch=10, processes=2)
    def index(message):
        pass

    @app.consumer(queue="mail", retries=2, backoff=timedelta(milliseconds=250), max_backoff=1)
    async def send(message):
        pass

    c = app.consumers["index"]
    assert (c.queue, c.exchange, c.exchange_type, c.routing_keys) == \
        ("indexing", "photos", "topic", ("photo.*",))
    assert (c.prefetch, c.processes, c.concurrency, c.is_async) == (10, 2, 1, False)
    assert c.retry == RetryPolicy()
    m = app.consumers["send"]
    assert m.is_async and m.concurrency == 10  # async: as many at once as the prefetch
    assert m.routing_keys == ()
    assert (m.retry.retries, m.retry.backoff, m.retry.max_backoff) == (2, 0.25, 1.0)
    assert (m.retry_queue(500), m.dead_queue, m.retry_exchange) == \
        ("mail.retry.500", "mail.dead", "mail.retry")
    with pytest.raises(ValueError, match="already registered"):
        app.consumer(queue="other")(index)
    with pytest.raises(ValueError, match="routing_key needs an exchange"):
        app.consumer(queue="x", routing_key="k")
    with pytest.raises(ValueError):
        app.consumer(queue="x", processes=0)


def test_exchange_binding_defaults_to_the_queue_name() -> None:
    app = App()
    app.consumer(queue="q", exchange="ex")(lambda m: None)
    app.consumer(queue="q2", exchange="ex", routing_key=["a", "b"], name="two")(lambda m: None)
    assert app.consumers["<lambda>"].routing_keys == ("q",)
    assert app.consumers["two"].routing_keys == ("a", "b")


def test_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINIMQ_URL", raising=False)
    assert App().resolve_url() == "amqp://guest:guest@127.0.0.1:5672/"
    assert App("amqp://app/").resolve_url() == "amqp://app/"
    monkeypatch.setenv("MINIMQ_URL", "amqp://env/")
    assert App("amqp://app/").resolve_url() == "amqp://env/"
    assert App("amqp://app/").resolve_url("amqp://flag/") == "amqp://flag/"


def test_retry_policy_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(retries=6, backoff=1, max_backoff=10)
    assert [policy.delay_ms(n) for n in range(1, 7)] == [1000, 2000, 4000, 8000, 10000, 10000]
    assert policy.delays_ms() == [1000, 2000, 4000, 8000, 10000]
    assert RetryPolicy(retries=0).delays_ms() == []
    assert RetryPolicy(retries=3, backoff=0.5, factor=3).delays_ms() == [500, 1500, 4500]
    with pytest.raises(ValueError):
        RetryPolicy(mode="carrier-pigeon")
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)


def test_periodic_registration_and_interval_grid() -> None:
    app = App()

    @app.periodic(every=timedelta(minutes=5), routing_key="reports")
    def report():
        return {"ok": True}

    app.periodic_message("pings", b"ping", every=30)

    @app.periodic(cron="0 3 * * *")
    def nightly():
        pass

    job = app.periodics["report"]
    assert job.publishes and job.every == 300
    assert job.next_fire(1000.0) == 1200.0
    assert job.next_fire(1200.0) == 1500.0  # strictly after
    assert app.periodics["default:pings"].body == b"ping"
    assert not app.periodics["nightly"].publishes
    with pytest.raises(ValueError, match="exactly one"):
        app.periodic()
    with pytest.raises(ValueError, match="exactly one"):
        app.periodic(every=1, cron="* * * * *")
    with pytest.raises(ValueError):
        app.periodic(every=0)


def _ts(*args: int) -> float:
    return dt.datetime(*args).timestamp()


def test_cron_next_fire_times() -> None:
    assert CronSchedule("* * * * *").next_after(_ts(2024, 5, 1, 10, 0, 30)) == _ts(2024, 5, 1, 10, 1)
    assert CronSchedule("*/15 * * * *").next_after(_ts(2024, 5, 1, 10, 16)) == _ts(2024, 5, 1, 10, 30)
    assert CronSchedule("0 3 * * *").next_after(_ts(2024, 5, 1, 3, 0)) == _ts(2024, 5, 2, 3, 0)
    # Mondays at 09:30 (2024-05-06 is a Monday); names work too.
    assert CronSchedule("30 9 * * 1").next_after(_ts(2024, 5, 1)) == _ts(2024, 5, 6, 9, 30)
    assert CronSchedule("30 9 * * mon").next_after(_ts(2024, 5, 1)) == _ts(2024, 5, 6, 9, 30)
    assert CronSchedule("0 0 * * 7").next_after(_ts(2024, 5, 1)) == _ts(2024, 5, 5)  # Sunday
    # Both day fields restricted: either matches (the 10th, or a Monday).
    assert CronSchedule("0 0 10 * 1").next_after(_ts(2024, 5, 1)) == _ts(2024, 5, 6)
    assert CronSchedule("0 12 1 jan,jul *").next_after(_ts(2024, 5, 1)) == _ts(2024, 7, 1, 12)
    assert CronSchedule("0 0 29 2 *").next_after(_ts(2024, 3, 1)) == _ts(2028, 2, 29)
    assert CronSchedule("5-10/5 8-9 * * *").next_after(_ts(2024, 5, 1, 8, 6)) == _ts(2024, 5, 1, 8, 10)
    assert CronSchedule("@hourly").next_after(_ts(2024, 5, 1, 8, 6)) == _ts(2024, 5, 1, 9)
    for bad in ("* * * *", "60 * * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"):
        with pytest.raises(ValueError):
            CronSchedule(bad)
    with pytest.raises(ValueError, match="never fires"):
        CronSchedule("0 0 31 2 *").next_after(_ts(2024, 1, 1))


def test_periodic_return_values_become_stamped_messages() -> None:
    app = App()
    app.periodic(every=1, routing_key="q", name="job")(lambda: None)
    job = app.periodics["job"]
    m = _as_outgoing({"a": 1}, job, 1700000000.5)
    assert json.loads(m.body) == {"a": 1} and m.content_type == "application/json"
    assert m.headers == {"x-periodic-job": "job", "x-scheduled-at": 1700000000500}
    assert m.message_id == "job@1700000000500" and m.delivery_mode == 2
    assert _as_outgoing("hi", job, 1.0).body == b"hi"
    own = _as_outgoing(Message(b"x", headers={"k": "v"}), job, 2.0)
    assert own.headers == {"k": "v", "x-periodic-job": "job", "x-scheduled-at": 2000}


def test_processes_option_parsing() -> None:
    app = App()
    app.consumer(queue="a", processes=2, name="a")(lambda m: None)
    app.consumer(queue="b", name="b")(lambda m: None)
    assert _processes(app, ["a", "b"], []) == {"a": 2, "b": 1}
    assert _processes(app, ["a", "b"], ["4"]) == {"a": 4, "b": 4}
    assert _processes(app, ["a", "b"], ["3", "b=0"]) == {"a": 3}
    with pytest.raises(SystemExit, match="no consumer 'c'"):
        _processes(app, ["a", "b"], ["c=1"])
    assert "consumer a: queue a" in describe(app)


def test_load_app_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notapp.py").write_text("app = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match="not a minimq.worker.App"):
        minimq.worker.load_app("notapp:app")
    with pytest.raises(ModuleNotFoundError):
        minimq.worker.load_app("no_such_module_here:app")


def test_cli_entry_points(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(
        "import minimq.worker\n"
        "app = minimq.worker.App()\n"
        "@app.consumer(queue='q', processes=3)\n"
        "def handle(message):\n    pass\n"
        "@app.periodic(cron='*/5 * * * *', routing_key='q')\n"
        "def every_five():\n    return b''\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    for cmd in (["-m", "minimq", "worker"], ["-m", "minimq.worker"]):
        out = subprocess.run([sys.executable, *cmd, "jobs:app", "--list"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "consumer handle: queue q; processes=3" in out.stdout
        assert "periodic every_five: cron '*/5 * * * *' -> (default)/q" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "minimq", "worker", "missing:app"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "cannot load missing:app" in bad.stderr
    unknown = subprocess.run([sys.executable, "-m", "minimq.worker", "jobs:app", "-c", "nope"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 2 and "no consumer nope" in unknown.stderr
    # The broker command line is unchanged.
    broker_help = subprocess.run([sys.executable, "-m", "minimq", "--help"], env=env,
                                 capture_output=True, text=True, timeout=30)
    assert broker_help.returncode == 0 and "--port" in broker_help.stdout
