"""connection.blocked and heartbeats, against a scripted fake server (tests/client/conftest.py).

A real broker only blocks publishers under memory or disk pressure and always heartbeats,
so the fake server is what lets these paths be driven on demand.
"""
from __future__ import annotations

import asyncio
import threading

import pytest

import minimq.client as mc
from minimq.codec import spec

from .conftest import TIMEOUT, FakeServer, run


def is_publish(item: tuple) -> bool:
    return isinstance(item[1], spec.BasicPublish)


def test_blocked_connection_pauses_async_publishers(fake_server: FakeServer) -> None:
    async def body() -> None:
        async with mc.connect(fake_server.url) as conn:
            states: list[str | None] = []
            changed = asyncio.Event()

            def on_blocked(connection: mc.Connection, reason: str | None) -> None:
                states.append(reason)
                changed.set()

            conn.add_blocked_callback(on_blocked)
            ch = await conn.channel()
            await ch.publish(b"before", "q")
            await asyncio.to_thread(fake_server.wait_for, is_publish)

            fake_server.send(0, spec.ConnectionBlocked("low on memory"))
            await asyncio.wait_for(changed.wait(), TIMEOUT)
            changed.clear()
            assert conn.is_blocked and conn.blocked_reason == "low on memory"
            pending = asyncio.ensure_future(ch.publish(b"while blocked", "q"))
            done, _ = await asyncio.wait([pending], timeout=0.3)
            assert not done  # held back while blocked
            with pytest.raises(asyncio.TimeoutError):
                await ch.publish(b"gives up", "q", timeout=0.1)

            fake_server.send(0, spec.ConnectionUnblocked())
            await asyncio.wait_for(pending, TIMEOUT)
            assert not conn.is_blocked
            await asyncio.to_thread(fake_server.wait_for, is_publish)
            assert states == ["low on memory", None]

    run(body())


def test_blocked_connection_pauses_sync_publishers(fake_server: FakeServer) -> None:
    with mc.sync.connect(fake_server.url) as conn:
        ch = conn.channel()
        published = threading.Event()
        failure: list[BaseException] = []

        def publish() -> None:
            try:
                ch.publish(b"x", "q", timeout=TIMEOUT)
                published.set()
            except BaseException as exc:  # pragma: no cover - reported below
                failure.append(exc)

        fake_server.send(0, spec.ConnectionBlocked("disk"))
        # Read until the client has seen connection.blocked.
        for _ in range(100):
            if conn.is_blocked:
                break
            conn.process_data_events(0.05)
        assert conn.is_blocked
        with pytest.raises(TimeoutError):
            ch.publish(b"gives up", "q", timeout=0.1)
        thread = threading.Thread(target=publish)
        thread.start()
        assert not published.wait(0.3)
        fake_server.send(0, spec.ConnectionUnblocked())
        thread.join(TIMEOUT)
        assert published.is_set() and not failure
        fake_server.wait_for(is_publish)


def test_client_sends_heartbeats_and_detects_silent_server() -> None:
    server = FakeServer(heartbeat=1)
    try:
        async def body() -> None:
            conn = await mc.connect(server.url)
            assert conn.heartbeat == 1
            lost = asyncio.get_running_loop().create_future()
            conn.add_close_callback(lambda c, reason: lost.done() or lost.set_result(reason))
            # The client heartbeats while idle...
            frame = await asyncio.to_thread(server.wait_for, lambda item: item[2] == 8, 5)
            assert frame[0] == 0
            # ...and, hearing nothing back for two intervals, declares the connection dead.
            reason = await asyncio.wait_for(lost, 6)
            assert isinstance(reason, mc.ConnectionLost) and "heartbeat" in str(reason)
            assert conn.is_closed
            with pytest.raises(mc.ConnectionLost):
                await conn.channel()

        run(body())
    finally:
        server.close()


def test_sync_client_heartbeats_while_waiting() -> None:
    server = FakeServer(heartbeat=1)
    try:
        conn = mc.sync.connect(server.url)
        assert conn.heartbeat == 1
        with pytest.raises(mc.ConnectionLost):
            conn.process_data_events(6)  # heartbeats go out; silence from the server kills it
        server.wait_for(lambda item: item[2] == 8, 1)
        assert conn.is_closed
    finally:
        server.close()


def test_heartbeat_disabled_by_url(amqp_url: str) -> None:
    async def body() -> None:
        url = amqp_url + ("&" if "?" in amqp_url else "?") + "heartbeat=0"
        async with mc.connect(url) as conn:
            assert conn.heartbeat == 0

    run(body())

