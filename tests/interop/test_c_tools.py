"""The C tools (Debian's amqp-tools 0.11: amqp-publish, amqp-consume, amqp-get,
amqp-declare-queue, amqp-delete-queue, built on librabbitmq-c), as shell scripts use them.

Each tool runs unchanged in a subprocess; what it prints and its exit status must be what it
prints against RabbitMQ 3.10.8 (MINIMQ_TEST_URL). A pika connection plays the other side:
it checks what amqp-publish sent (persistent, content type/encoding, string headers) and the
redelivered flag of a message amqp-consume did not ack.
"""
from __future__ import annotations

import hashlib
import subprocess
import time

import pika
import pytest

from .conftest import eventually
from .foreign import require_tools

TOOLS = ("amqp-publish", "amqp-consume", "amqp-get", "amqp-declare-queue", "amqp-delete-queue")


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    require_tools(*TOOLS, install="apt-get install amqp-tools")


@pytest.fixture
def tool(url_parts):
    host, port, user, password, vhost = url_parts
    # Options rather than a URL: in an AMQP URI "amqp://host/" names the vhost "", not "/".
    common = ["--server", host, "--port", str(port), "--vhost", vhost,
              "--username", user, "--password", password]

    def run(name: str, *args: str, stdin: bytes = b"", timeout: float = 60) -> tuple[int, bytes, str]:
        done = subprocess.run([name, *common, *args], input=stdin, capture_output=True, timeout=timeout)
        return done.returncode, done.stdout, done.stderr.decode()

    return run


@pytest.fixture
def peer(amqp_url):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


def test_declare_queues_and_server_errors(tool, unique):
    q = unique
    assert tool("amqp-declare-queue", "-d", "-q", q) == (0, f"{q}\n".encode(), "")
    rc, out, err = tool("amqp-declare-queue", "-q", "")
    assert rc == 0 and out.startswith(b"amq.gen-") and err == ""
    assert tool("amqp-declare-queue", "-q", q) == (1, b"", (
        "queue.declare: server channel error 406, message: PRECONDITION_FAILED - inequivalent arg "
        f"'durable' for queue '{q}' in vhost '/': received 'false' but current is 'true'\n"))
    assert tool("amqp-get", "-q", q) == (2, b"", "")  # basic.get-empty
    assert tool("amqp-get", "-q", q + "-missing") == (1, b"", (
        f"basic.get: server channel error 404, message: NOT_FOUND - no queue '{q}-missing' in vhost '/'\n"))
    assert tool("amqp-delete-queue", "-q", q) == (0, b"0\n", "")


def test_publish_persistent_with_properties_and_get(tool, peer, unique):
    q = unique
    assert tool("amqp-declare-queue", "-d", "-q", q)[0] == 0
    assert tool("amqp-publish", "-r", q, "-p", "-C", "text/plain", "-E", "utf-8",
                "-H", "x-photo: 17", "-H", "trace: a b:c", "-t", "replies", "-b", "hello") == (0, b"", "")
    method, props, body = peer.basic_get(q, auto_ack=False)
    assert (method.exchange, method.routing_key, method.redelivered, body) == ("", q, False, b"hello")
    assert (props.delivery_mode, props.content_type, props.content_encoding, props.reply_to) == (
        2, "text/plain", "utf-8", "replies")
    assert props.headers == {"x-photo": "17", "trace": "a b:c"}
    peer.basic_nack(method.delivery_tag, requeue=True)
    assert tool("amqp-get", "-q", q) == (0, b"hello", "")

    assert tool("amqp-publish", "-r", q, "-b", "left") == (0, b"", "")
    assert tool("amqp-delete-queue", "-q", q, "--if-empty") == (1, b"", (
        f"queue.delete: server channel error 406, message: PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty\n"))
    assert tool("amqp-delete-queue", "-q", q) == (0, b"1\n", "")
    assert tool("amqp-get", "-q", q)[0] == 1


def test_consume_with_prefetch_acks_only_what_the_command_handled(tool, peer, unique):
    q = unique
    assert tool("amqp-declare-queue", "-d", "-q", q)[0] == 0
    try:
        assert tool("amqp-publish", "-r", q, "-p", "-l", stdin=b"m1\nm2\nm3\n") == (0, b"", "")
        # Each message is piped to the command; acked once it exits 0.
        assert tool("amqp-consume", "-q", q, "-p", "2", "-c", "3", "--", "sh", "-c", "cat; echo") == (
            0, b"m1\n\nm2\n\nm3\n\n", "")
        assert tool("amqp-get", "-q", q) == (2, b"", "")
        # A command that fails leaves its message unacked: it comes back, redelivered.
        assert tool("amqp-publish", "-r", q, "-b", "fails") == (0, b"", "")
        assert tool("amqp-consume", "-q", q, "-c", "1", "--", "sh", "-c", "cat >/dev/null; exit 1") == (0, b"", "")
        method, _props, body = peer.basic_get(q, auto_ack=True)
        assert (body, method.redelivered) == (b"fails", True)
    finally:
        tool("amqp-delete-queue", "-q", q)


def test_consumer_binds_and_heartbeats_keep_it_waiting(tool, peer, unique, url_parts):
    q = unique
    host, port, user, password, vhost = url_parts
    consumer = subprocess.Popen(
        ["amqp-consume", "--server", host, "--port", str(port), "--vhost", vhost, "--username", user,
         "--password", password, "--heartbeat", "1", "-q", q, "-e", "amq.direct", "-r", q,
         "-c", "1", "cat"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        probe = [peer]

        def consuming() -> bool:
            try:
                return probe[0].queue_declare(q, passive=True).method.consumer_count == 1
            except pika.exceptions.ChannelClosedByBroker:  # not declared yet: 404 closed it
                probe[0] = probe[0].connection.channel()
                return False

        eventually(consuming, timeout=30, what="amqp-consume to start consuming")
        time.sleep(3.5)  # idle for several heartbeat intervals, deliberately
        assert consumer.poll() is None, consumer.communicate()
        assert tool("amqp-publish", "-e", "amq.direct", "-r", q, "-b", "after idle") == (0, b"", "")
        out, err = consumer.communicate(timeout=30)
        assert (consumer.returncode, out, err) == (0, b"after idle", b"")
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait(10)
        tool("amqp-delete-queue", "-q", q)


def test_large_binary_message_across_many_frames(tool, unique):
    q = unique
    body = bytes((i * 7 + i // 251) % 256 for i in range((1 << 20) + 17))
    assert tool("amqp-declare-queue", "-q", q)[0] == 0
    try:
        assert tool("amqp-publish", "-r", q, "-p", stdin=body) == (0, b"", "")
        rc, out, err = tool("amqp-get", "-q", q)
        assert (rc, len(out), hashlib.sha256(out).hexdigest(), err) == (
            0, len(body), hashlib.sha256(body).hexdigest(), "")
    finally:
        tool("amqp-delete-queue", "-q", q)


def test_login_failures_are_reported_as_rabbitmq_words_them(url_parts, unique):
    host, port, user, password, vhost = url_parts

    def get(*login: str) -> tuple[int, str]:
        done = subprocess.run(["amqp-get", "--server", host, "--port", str(port), *login, "-q", unique],
                              capture_output=True, text=True, timeout=60)
        return done.returncode, done.stderr

    refused = ("logging in to AMQP server: server connection error 403, message: ACCESS_REFUSED - Login was "
               "refused using authentication mechanism PLAIN. For details see the broker logfile.\n")
    assert get("--vhost", vhost, "--username", user, "--password", password + "-wrong") == (1, refused)
    assert get("--vhost", vhost, "--username", unique, "--password", password) == (1, refused)
    assert get("--vhost", unique, "--username", user, "--password", password) == (1, (
        f"logging in to AMQP server: server connection error 530, message: NOT_ALLOWED - vhost {unique} not found\n"))
