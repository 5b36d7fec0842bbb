"""RPC over RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``).

These tests need a broker that implements direct reply-to. The module fixture below checks
that the broker advertises the ``direct_reply_to`` capability AND that a passive declare of
``amq.rabbitmq.reply-to`` succeeds; if not, every test here errors loudly at setup, saying so
(they are deliberately not skipped: the broker is expected to support it).
"""
from __future__ import annotations

import threading

import pytest

import minimq.client as mc

from .conftest import TIMEOUT, run
from .test_rpc import rpc_roundtrip


@pytest.fixture(scope="module", autouse=True)
def require_direct_reply_to(broker) -> None:
    async def check() -> str | None:
        async with mc.connect(broker.url) as conn:
            if conn.capabilities.get("direct_reply_to") is not True:
                return "the broker does not advertise capability direct_reply_to"
            channel = await conn.channel()
            try:
                await channel.declare_queue("amq.rabbitmq.reply-to", passive=True)
            except mc.ChannelClosed as exc:
                return f"passive declare of amq.rabbitmq.reply-to failed: {exc}"
        return None

    problem = run(check())
    if problem:
        pytest.fail(f"broker at {broker.url} lacks direct reply-to: {problem}", pytrace=False)


def test_rpc_over_direct_reply_to(amqp_url: str, unique: str) -> None:
    run(rpc_roundtrip(amqp_url, unique, direct_reply_to=True))


def test_direct_reply_to_reply_arrives_on_publishing_channel(amqp_url: str, unique: str) -> None:
    async def body() -> None:
        async with mc.connect(amqp_url) as conn:
            server_ch = await conn.channel()
            queue = await server_ch.declare_queue(unique, exclusive=True)
            client_ch = await conn.channel()
            rpc = await mc.RPC.create(client_ch)

            async def handle(request: mc.IncomingMessage) -> None:
                assert request.reply_to and request.reply_to.startswith("amq.rabbitmq.reply-to.")
                await server_ch.publish(mc.Message(b"pong",
                                                   correlation_id=request.correlation_id),
                                        request.reply_to)
                await request.ack()

            await queue.consume(handle)
            reply = await rpc.call(unique, b"ping", timeout=TIMEOUT)
            assert reply.body == b"pong" and reply.routing_key.startswith("amq.rabbitmq.reply-to")

    run(body())


def test_sync_rpc_over_direct_reply_to(amqp_url: str, unique: str) -> None:
    ready = threading.Event()
    stop = threading.Event()

    def serve() -> None:
        with mc.sync.connect(amqp_url) as conn:
            ch = conn.channel()
            ch.declare_queue(unique, auto_delete=True)
            ready.set()
            while not stop.is_set():
                for request in ch.consume(unique, inactivity_timeout=0.1):
                    ch.publish(mc.Message(request.body * 2,
                                          correlation_id=request.correlation_id),
                               request.reply_to or "")
                    request.ack()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    assert ready.wait(TIMEOUT)
    try:
        with mc.sync.connect(amqp_url) as conn:
            rpc = conn.channel().rpc()
            assert rpc.reply_to == "amq.rabbitmq.reply-to"
            assert rpc.call(unique, b"ab", timeout=TIMEOUT).body == b"abab"
    finally:
        stop.set()
        server.join(TIMEOUT)
