"""RabbitMQ's access-control table, operation by operation, granted and refused, through pika.

Against minimq, the users and permissions come from a --config file of a broker started for
this module. With MINIMQ_TEST_URL (e.g. amqp://guest:guest@127.0.0.1:5672/) the same tests
run against RabbitMQ, set up with rabbitmqctl, so the codes and texts are RabbitMQ's own.

Names say what they grant: the letters before the first '-' are the permissions a resource
name matches (C configure, W write, R read), e.g. 'CR-x' may be configured and read.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote, urlsplit

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ProbableAccessDeniedError

from conftest import start_broker

SUFFIX = uuid.uuid4().hex[:8]
VHOST = f"acl-matrix-{SUFFIX}"
ALICE, BOB, CAROL = f"acl-alice-{SUFFIX}", f"acl-bob-{SUFFIX}", f"acl-carol-{SUFFIX}"
PASSWORD = "pw-" + SUFFIX
CONFIGURE = r"^[A-Z]*C[A-Z]*-|^amq\.gen-"
WRITE = r"^[A-Z]*W[A-Z]*-|^amq\.default$"
READ = r"^[A-Z]*R[A-Z]*-|^amq\.gen-"
TOPIC_EXCHANGE = "CWR-topic"


class Env:
    def __init__(self, host: str, port: int, admin: tuple[str, str]) -> None:
        self.host, self.port, self.admin = host, port, admin

    def url(self, user: str, password: str = PASSWORD) -> str:
        return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}/{quote(VHOST, safe='')}"

    def connect(self, user: str, password: str = PASSWORD) -> pika.BlockingConnection:
        params = pika.URLParameters(self.url(user, password))
        params.socket_timeout = 30
        params.blocked_connection_timeout = 30
        return pika.BlockingConnection(params)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    external = os.environ.get("MINIMQ_TEST_URL")
    if external:
        if shutil.which("rabbitmqctl") is None:
            pytest.skip("MINIMQ_TEST_URL is set but rabbitmqctl is not here to create the users")
        parts = urlsplit(external)
        _rabbitmqctl("add_vhost", VHOST)
        for user in (ALICE, BOB, CAROL):
            _rabbitmqctl("add_user", user, PASSWORD)
        _rabbitmqctl("set_permissions", "-p", VHOST, ALICE, CONFIGURE, WRITE, READ)
        _rabbitmqctl("set_permissions", "-p", VHOST, BOB, "", "", "")
        _rabbitmqctl("set_permissions", "-p", VHOST, parts.username or "guest", ".*", ".*", ".*")
        _rabbitmqctl("set_topic_permissions", "-p", VHOST, ALICE, TOPIC_EXCHANGE, r"^ok\.", r"^ok\.")
        try:
            yield Env(parts.hostname or "127.0.0.1", parts.port or 5672, (parts.username or "guest", parts.password or "guest"))
        finally:
            _rabbitmqctl("delete_vhost", VHOST)
            for user in (ALICE, BOB, CAROL):
                _rabbitmqctl("delete_user", user)
        return
    tmp = Path(tempfile.mkdtemp(prefix="minimq-acl-"))
    config = tmp / "minimq.toml"
    config.write_text(
        f"""
[vhosts."{VHOST}"]
[users."{ALICE}"]
password = "{PASSWORD}"
[users."{BOB}"]
password = "{PASSWORD}"
[users."{CAROL}"]
password = "{PASSWORD}"

[[permissions]]
user = "{ALICE}"
vhost = "{VHOST}"
configure = '{CONFIGURE}'
write = '{WRITE}'
read = '{READ}'

[[permissions]]
user = "{BOB}"
vhost = "{VHOST}"
configure = ""
write = ""
read = ""

[[permissions]]
user = "guest"
vhost = "{VHOST}"
configure = ".*"
write = ".*"
read = ".*"

[[topic_permissions]]
user = "{ALICE}"
vhost = "{VHOST}"
exchange = "{TOPIC_EXCHANGE}"
write = '^ok\\.'
read = '^ok\\.'
"""
    )
    broker = start_broker("--config", str(config), "--no-management")
    try:
        yield Env(broker.host, broker.port, ("guest", "guest"))
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def topology(env: Env) -> None:
    """What the tests act on, declared by a user with full permissions."""
    conn = env.connect(*env.admin)
    ch = conn.channel()
    for q in ("CWR-q", "W-q", "R-q", "C-q", "NONE-q", "C-del-q", "R-unbind-q"):
        ch.queue_declare(q, auto_delete=False)
    for x in ("CWR-x", "W-x", "R-x", "C-x", "NONE-x", "C-del-x", "W-unbind-x"):
        ch.exchange_declare(x, "direct")
    ch.exchange_declare(TOPIC_EXCHANGE, "topic")
    ch.queue_bind("W-q", "R-x", "unbind-me")
    ch.exchange_bind("W-unbind-x", "R-x", "unbind-me")
    conn.close()


def refused(kind: str, name: str, user: str = ALICE) -> str:
    return f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{VHOST}' refused for user '{user}'"


def run(env: Env, user: str, op: Callable) -> tuple[int, str] | None:
    """Run `op(channel)` as `user` on a fresh connection; the channel error, if any."""
    conn = env.connect(user)
    try:
        ch = conn.channel()
        try:
            op(ch)
        except ChannelClosedByBroker as exc:
            return exc.reply_code, exc.reply_text
        return None
    finally:
        if conn.is_open:
            conn.close()


def publish(exchange: str, key: str = "k") -> Callable:
    def op(ch) -> None:
        ch.confirm_delivery()
        ch.basic_publish(exchange, key, b"m")
        ch.queue_declare("CWR-q", passive=True)  # a round trip: a refusal has arrived by now

    return op


GRANTED: dict[str, Callable] = {
    "queue.declare": lambda ch: ch.queue_declare("CWR-new-q", auto_delete=True),
    "queue.declare server-named": lambda ch: ch.queue_declare("", exclusive=True),
    "queue.declare passive (no permission needed)": lambda ch: ch.queue_declare("NONE-q", passive=True),
    "queue.declare with DLX": lambda ch: ch.queue_declare(
        "CR-dlx-q", auto_delete=True, arguments={"x-dead-letter-exchange": "W-x"}),
    "queue.delete": lambda ch: ch.queue_delete("C-del-q"),
    "queue.purge": lambda ch: ch.queue_purge("R-q"),
    "basic.get": lambda ch: ch.basic_get("R-q"),
    "basic.consume": lambda ch: ch.basic_consume("R-q", lambda *a: None),
    "queue.bind": lambda ch: ch.queue_bind("W-q", "R-x", "k"),
    "queue.unbind": lambda ch: ch.queue_unbind("W-q", "R-x", "unbind-me"),
    "exchange.declare": lambda ch: ch.exchange_declare("C-new-x", "fanout", auto_delete=True),
    "exchange.declare passive (no permission needed)": lambda ch: ch.exchange_declare("NONE-x", passive=True),
    "exchange.declare with AE": lambda ch: ch.exchange_declare(
        "CR-ae-x", "fanout", auto_delete=True, arguments={"alternate-exchange": "W-x"}),
    "exchange.delete": lambda ch: ch.exchange_delete("C-del-x"),
    "exchange.bind": lambda ch: ch.exchange_bind("W-x", "R-x", "k"),
    "exchange.unbind": lambda ch: ch.exchange_unbind("W-unbind-x", "R-x", "unbind-me"),
    "basic.publish": publish("W-x"),
    "basic.publish default exchange (amq.default)": publish("", "CWR-q"),
    "basic.publish topic key allowed": publish(TOPIC_EXCHANGE, "ok.1"),
    "queue.bind topic key allowed": lambda ch: ch.queue_bind("W-q", TOPIC_EXCHANGE, "ok.#"),
}

REFUSED: dict[str, tuple[str, Callable, str]] = {
    "queue.declare": (ALICE, lambda ch: ch.queue_declare("W-new-q"), refused("queue", "W-new-q")),
    "queue.declare of an absent queue, passive": (
        ALICE, lambda ch: ch.queue_declare("W-absent-q", passive=True),
        f"NOT_FOUND - no queue 'W-absent-q' in vhost '{VHOST}'"),
    "queue.declare with DLX, no read on the queue": (
        ALICE, lambda ch: ch.queue_declare("C-dlx-q", arguments={"x-dead-letter-exchange": "W-x"}),
        refused("queue", "C-dlx-q")),
    "queue.declare with DLX, no write on it": (
        ALICE, lambda ch: ch.queue_declare("CR-dlx2-q", arguments={"x-dead-letter-exchange": "R-x"}),
        refused("exchange", "R-x")),
    "queue.delete": (ALICE, lambda ch: ch.queue_delete("NONE-q"), refused("queue", "NONE-q")),
    "queue.delete of an absent queue": (ALICE, lambda ch: ch.queue_delete("W-absent-q"), refused("queue", "W-absent-q")),
    "queue.purge": (ALICE, lambda ch: ch.queue_purge("W-q"), refused("queue", "W-q")),
    "basic.get": (ALICE, lambda ch: ch.basic_get("C-q"), refused("queue", "C-q")),
    "basic.get of an absent queue": (ALICE, lambda ch: ch.basic_get("C-absent-q"), refused("queue", "C-absent-q")),
    "basic.consume": (ALICE, lambda ch: ch.basic_consume("W-q", lambda *a: None), refused("queue", "W-q")),
    "queue.bind, no write on the queue": (ALICE, lambda ch: ch.queue_bind("R-q", "R-x", "k"), refused("queue", "R-q")),
    "queue.bind, no read on the exchange": (ALICE, lambda ch: ch.queue_bind("W-q", "W-x", "k"), refused("exchange", "W-x")),
    "queue.unbind, no read on the exchange": (
        ALICE, lambda ch: ch.queue_unbind("W-q", "C-x", "k"), refused("exchange", "C-x")),
    "exchange.declare": (ALICE, lambda ch: ch.exchange_declare("W-new-x", "direct"), refused("exchange", "W-new-x")),
    "exchange.declare with AE, no read on it": (
        ALICE, lambda ch: ch.exchange_declare("C-ae-x", "fanout", arguments={"alternate-exchange": "W-x"}),
        refused("exchange", "C-ae-x")),
    "exchange.declare with AE, no write on the AE": (
        ALICE, lambda ch: ch.exchange_declare("CR-ae2-x", "fanout", arguments={"alternate-exchange": "R-x"}),
        refused("exchange", "R-x")),
    "exchange.delete": (ALICE, lambda ch: ch.exchange_delete("NONE-x"), refused("exchange", "NONE-x")),
    "exchange.bind, no write on the destination": (
        ALICE, lambda ch: ch.exchange_bind("R-x", "R-x", "k"), refused("exchange", "R-x")),
    "exchange.bind, no read on the source": (
        ALICE, lambda ch: ch.exchange_bind("W-x", "W-x", "k"), refused("exchange", "W-x")),
    "basic.publish": (ALICE, publish("R-x"), refused("exchange", "R-x")),
    "basic.publish to an absent exchange": (ALICE, publish("R-absent-x"), refused("exchange", "R-absent-x")),
    "basic.publish default exchange (amq.default)": (BOB, publish("", "CWR-q"), refused("exchange", "amq.default", BOB)),
    "queue.declare server-named": (BOB, lambda ch: ch.queue_declare("", exclusive=True), "amq.gen"),
    "basic.publish topic key refused": (
        ALICE, publish(TOPIC_EXCHANGE, "bad.1"),
        f"ACCESS_REFUSED - access to topic 'bad.1' in exchange '{TOPIC_EXCHANGE}' in vhost '{VHOST}' refused for user '{ALICE}'"),
    "queue.bind topic key refused": (
        ALICE, lambda ch: ch.queue_bind("W-q", TOPIC_EXCHANGE, "bad.#"),
        f"ACCESS_REFUSED - access to topic 'bad.#' in exchange '{TOPIC_EXCHANGE}' in vhost '{VHOST}' refused for user '{ALICE}'"),
}


@pytest.mark.parametrize("operation", list(GRANTED))
def test_granted(env: Env, topology: None, operation: str) -> None:
    assert run(env, ALICE, GRANTED[operation]) is None


@pytest.mark.parametrize("operation", list(REFUSED))
def test_refused(env: Env, topology: None, operation: str) -> None:
    user, op, text = REFUSED[operation]
    result = run(env, user, op)
    assert result is not None, f"{operation} was allowed"
    code, reply = result
    if text == "amq.gen":  # the server picks the name: match its shape
        assert code == 403
        assert re.fullmatch(
            rf"ACCESS_REFUSED - access to queue 'amq\.gen-[\w-]+' in vhost '{VHOST}' refused for user '{BOB}'", reply
        ), reply
        return
    expected = 404 if text.startswith("NOT_FOUND") else 403
    assert (code, reply) == (expected, text)


def test_vhost_without_permission_is_530(env: Env) -> None:
    with pytest.raises(ProbableAccessDeniedError) as ei:
        env.connect(CAROL)
    assert f"(530) \"NOT_ALLOWED - access to vhost '{VHOST}' refused for user '{CAROL}'\"" in str(ei.value) or (
        f"NOT_ALLOWED - access to vhost '{VHOST}' refused for user '{CAROL}'" in str(ei.value)
    )


def test_wrong_password_is_403(env: Env) -> None:
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as ei:
        env.connect(ALICE, "not-the-password")
    assert "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in str(ei.value)
