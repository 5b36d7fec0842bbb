"""RPC helper over an exclusive reply queue (works on any broker).

The same scenarios over direct reply-to are in test_direct_reply_to.py.
"""
from __future__ import annotations

import asyncio
import threading

import pytest

import minimq.client as mc

from .conftest import TIMEOUT, run


async def echo_upper(request: mc.IncomingMessage) -> bytes:
    if request.body == b"fail":
        raise ValueError("cannot do that")
    if request.body == b"slow":
        await asyncio.sleep(TIMEOUT)  # simulates a handler slower than the caller's timeout
    return request.body.upper()


async def rpc_roundtrip(url: str, queue: str, direct_reply_to: bool) -> None:
    async with mc.connect(url) as conn:
        server_channel = await conn.channel()
        server = await mc.RPCServer.create(server_channel, queue, echo_upper, exclusive=True,
                                           concurrency=4)
        client_channel = await conn.channel()
        rpc = await mc.RPC.create(client_channel, direct_reply_to=direct_reply_to)
        assert (rpc.reply_to == "amq.rabbitmq.reply-to") is direct_reply_to

        reply = await rpc.call(queue, b"hello", timeout=TIMEOUT)
        assert reply.body == b"HELLO" and reply.correlation_id
        replies = await asyncio.gather(*(rpc.call(queue, b"m%d" % i, timeout=TIMEOUT)
                                         for i in range(20)))
        assert [r.body for r in replies] == [b"M%d" % i for i in range(20)]

        with pytest.raises(mc.RPCError) as info:
            await rpc.call(queue, b"fail", timeout=TIMEOUT)
        assert info.value.remote == "ValueError: cannot do that"

        with pytest.raises(mc.MessageReturned):
            await rpc.call(queue + ".nobody", b"x", timeout=TIMEOUT)

        with pytest.raises(asyncio.TimeoutError):
            await rpc.call(queue, b"slow", timeout=0.3)

        await rpc.close()
        await server.close()


def test_rpc_with_reply_queue(amqp_url: str, unique: str) -> None:
    run(rpc_roundtrip(amqp_url, unique, direct_reply_to=False))


def test_sync_rpc_call_with_reply_queue(amqp_url: str, unique: str) -> None:
    ready = threading.Event()
    stop = threading.Event()

    def serve() -> None:
        with mc.sync.connect(amqp_url) as conn:
            ch = conn.channel()
            ch.declare_queue(unique, auto_delete=True)
            ready.set()
            while not stop.is_set():
                for request in ch.consume(unique, inactivity_timeout=0.1):
                    ch.publish(mc.Message(request.body[::-1],
                                          correlation_id=request.correlation_id),
                               request.reply_to or "")
                    request.ack()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    assert ready.wait(TIMEOUT)
    try:
        with mc.sync.connect(amqp_url) as conn:
            rpc = conn.channel().rpc(direct_reply_to=False)
            assert rpc.call(unique, b"abc", timeout=TIMEOUT).body == b"cba"
            with pytest.raises(mc.MessageReturned):
                rpc.call(unique + ".nobody", b"x", timeout=TIMEOUT)
    finally:
        stop.set()
        server.join(TIMEOUT)
