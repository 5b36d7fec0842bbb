"""Tests that need a minimq broker of their own: robust reconnect across a broker restart,
a broker shutting down (320 CONNECTION_FORCED), and AMQPS.

They always start `python -m minimq` (even when MINIMQ_TEST_URL names another broker),
because they kill, restart or reconfigure it.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

import minimq.client as mc
from conftest import start_broker  # tests/conftest.py

from .conftest import TIMEOUT, run


def test_robust_connection_redeclares_and_resumes_consuming(unique: str) -> None:
    broker = start_broker()
    port = broker.port
    brokers = [broker]
    try:
        async def body() -> None:
            conn = await mc.connect(broker.url, robust=True, reconnect_interval=0.05,
                                    max_reconnect_interval=0.5)
            reconnected = asyncio.Event()
            conn.add_reconnect_callback(lambda c: reconnected.set())
            ch = await conn.channel(publisher_confirms=True, prefetch_count=10)
            exchange = await ch.declare_exchange(f"{unique}.ex", mc.ExchangeType.DIRECT)
            named = await ch.declare_queue(f"{unique}.q")
            anonymous = await ch.declare_queue("", exclusive=True)
            await named.bind(exchange, "k")
            await anonymous.bind(exchange, "k")
            messages = named.iterator()
            await messages.start()
            seen: asyncio.Queue[bytes] = asyncio.Queue()
            await anonymous.consume(lambda m: seen.put_nowait(m.body), no_ack=True)

            await exchange.publish(b"before", "k")
            first = await asyncio.wait_for(messages.__anext__(), TIMEOUT)
            await first.ack()
            assert await asyncio.wait_for(seen.get(), TIMEOUT) == b"before"
            await asyncio.wait_for(exchange.publish(b"unacked", "k"), TIMEOUT)
            stale = await asyncio.wait_for(messages.__anext__(), TIMEOUT)
            assert await asyncio.wait_for(seen.get(), TIMEOUT) == b"unacked"
            old_name = anonymous.name

            broker.proc.kill()
            broker.proc.wait(TIMEOUT)
            # The same port again; argparse keeps the last --port.
            brokers.append(await asyncio.to_thread(start_broker, "--port", str(port)))
            await asyncio.wait_for(reconnected.wait(), 15)
            assert not conn.is_closed and not ch.is_closed

            await stale.ack()  # its delivery tag died with the old channel: ignored, no error
            await exchange.publish(b"after", "k")  # the exchange was re-declared
            again = await asyncio.wait_for(messages.__anext__(), TIMEOUT)
            assert again.body == b"after"
            await again.ack()
            assert await asyncio.wait_for(seen.get(), TIMEOUT) == b"after"
            assert anonymous.name != old_name  # a new server-named queue, rebound
            await messages.close()
            await conn.close()
            assert conn.is_closed

        run(body(), timeout=60)
    finally:
        for b in brokers:
            b.stop()


def test_broker_shutdown_raises_connection_forced() -> None:
    broker = start_broker()
    try:
        async def body() -> None:
            conn = await mc.connect(broker.url)
            closed = asyncio.get_running_loop().create_future()
            conn.add_close_callback(lambda c, reason: closed.done() or closed.set_result(reason))
            ch = await conn.channel()
            queue = await ch.declare_queue("", exclusive=True)
            messages = queue.iterator()
            await messages.start()
            broker.proc.terminate()  # SIGTERM: the broker closes connections with 320
            with pytest.raises(mc.ConnectionForced) as info:
                await asyncio.wait_for(messages.__anext__(), TIMEOUT)
            assert info.value.code == 320 and isinstance(info.value, mc.ConnectionClosed)
            reason = await asyncio.wait_for(closed, TIMEOUT)
            assert reason is info.value and conn.close_reason is reason
            assert conn.is_closed and ch.is_closed
            with pytest.raises(mc.ConnectionForced):
                await ch.publish(b"x", queue.name)
            await conn.close()

        run(body())
    finally:
        broker.stop()


def test_sync_broker_shutdown_raises_connection_forced() -> None:
    broker = start_broker()
    try:
        conn = mc.sync.connect(broker.url)
        ch = conn.channel()
        name = ch.declare_queue("", exclusive=True).queue
        broker.proc.terminate()
        with pytest.raises(mc.ConnectionForced):
            for _ in ch.consume(name, inactivity_timeout=TIMEOUT):
                pass
        assert conn.is_closed and isinstance(conn.close_reason, mc.ConnectionForced)
        conn.close()
    finally:
        broker.stop()


def test_sync_robust_consume_loop_survives_a_restart(unique: str) -> None:
    broker = start_broker()
    brokers = [broker]
    try:
        conn = mc.sync.connect(broker.url, robust=True, reconnect_interval=0.05,
                               max_reconnect_interval=0.5)
        consumer = conn.channel()
        queue = consumer.declare_queue(f"{unique}.q")
        publisher = conn.channel(publisher_confirms=True)
        publisher.publish(b"1", queue.name)
        got = []
        for message in consumer.consume(queue.name, inactivity_timeout=TIMEOUT):
            got.append(message.body)
            message.ack()
            if message.body == b"1":
                broker.proc.kill()
                broker.proc.wait(TIMEOUT)
                brokers.append(start_broker("--port", str(broker.port)))
                # The loss is only seen on the next read: a confirmed publish notices it
                # (ConnectionLost), and the retry reconnects, re-declares the queue and
                # restarts the consumer before it publishes.
                try:
                    publisher.publish(b"2", queue.name)
                except mc.ConnectionLost:
                    publisher.publish(b"2", queue.name)
            else:
                break
        assert got == [b"1", b"2"]
        assert not conn.is_closed
        conn.close()
    finally:
        for b in brokers:
            b.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make a test certificate")
    directory: Path = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def test_amqps(tls_files: tuple[str, str]) -> None:
    cert, key = tls_files
    broker = start_broker("--tls-cert", cert, "--tls-key", key, "--tls-port", "0")
    try:
        assert broker.tls_port
        url = f"amqps://guest:guest@localhost:{broker.tls_port}/?cafile={cert}"

        async def body() -> None:
            async with mc.connect(url) as conn:
                ch = await conn.channel(publisher_confirms=True)
                q = await ch.declare_queue("", exclusive=True)
                await ch.publish(b"secret" * 50000, q.name)
                m = await q.get(no_ack=True)
                assert m.body == b"secret" * 50000
            # An unverifiable server is refused.
            with pytest.raises(mc.ConnectionLost):
                await mc.connect(f"amqps://guest:guest@localhost:{broker.tls_port}/")

        run(body())

        with mc.sync.connect(url) as conn:
            ch = conn.channel()
            q = ch.declare_queue("", exclusive=True).queue
            ch.publish(b"sync secret" * 50000, q)
            m = ch.get(q, no_ack=True)
            assert m is not None and m.body == b"sync secret" * 50000
    finally:
        broker.stop()
