"""The disk alarm: below --disk-free-limit publishers are blocked, as in RabbitMQ.

A real full disk is in tests/durability/test_full_disk.py (a small tmpfs); here the limit
is set above the free space of the disk the test runs on (a fraction just under 1), or the
store's file layer reports the free space the test chooses.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pika
import pytest

from conftest import ROOT, start_broker
from minimq.broker import Broker
from minimq.client import sync as mqclient
from minimq.server import Server
from minimq.store import DurableStore
from minimq.store.files import Files

pytestmark = pytest.mark.skipif(bool(os.environ.get("MINIMQ_TEST_URL")), reason="drives minimq's own disk alarm")

ALWAYS_LOW = "0.999999"  # of the disk: more than is ever free on a disk that holds anything


def pump(conn: pika.BlockingConnection, until, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            return False
        conn.process_data_events(time_limit=0.05)
    return True


def watched(url: str, events: list) -> pika.BlockingConnection:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    conn.add_on_connection_blocked_callback(lambda c, m: events.append(("blocked", m.method.reason)))
    conn.add_on_connection_unblocked_callback(lambda c, m: events.append(("unblocked",)))
    return conn


def wait_blocked(conn: mqclient.Connection, timeout: float = 15.0) -> str | None:
    deadline = time.monotonic() + timeout
    while conn.blocked_reason is None and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    return conn.blocked_reason


def test_low_disk_blocks_publishers_and_consumers_go_on(tmp_path):
    broker = start_broker("--data-dir", str(tmp_path / "data"), "--disk-free-limit", ALWAYS_LOW)
    try:
        # The alarm is on from the start; as RabbitMQ 3.10, a connection hears of it only
        # when it publishes (minimq.client keeps the reason).
        publisher = mqclient.connect(broker.url)
        ch = publisher.channel()
        ch.declare_queue("disk-q", durable=True)
        assert wait_blocked(publisher, timeout=0.5) is None
        ch.publish(b"told", "nowhere")  # unroutable: dropped, but a publish
        assert wait_blocked(publisher) == "low on disk"
        # A publisher is no longer read from once it publishes: as RabbitMQ's reader, the
        # broker stops at that publish, which waits with everything after it.
        pika_events: list = []
        pika_pub = watched(broker.url, pika_events)
        pch = pika_pub.channel()
        pch.basic_publish("", "disk-q", b"held", pika.BasicProperties(delivery_mode=2))
        assert pump(pika_pub, lambda: pika_events == [("blocked", "low on disk")])
        # A consumer-only connection is not blocked: it reads the queue, where the held
        # publish is not.
        consumer = pika.BlockingConnection(pika.URLParameters(broker.url))
        cch = consumer.channel()
        assert cch.basic_get("disk-q", auto_ack=True) == (None, None, None)
        assert cch.queue_declare("disk-q", passive=True).method.message_count == 0
        consumer.close()
        publisher.close()
        # pika_pub is not read from: its close would wait for ever; the broker's exit drops it.
    finally:
        broker.stop()


def test_no_disk_alarm_without_a_data_dir():
    broker = start_broker("--in-memory", "--disk-free-limit", ALWAYS_LOW)
    try:
        events: list = []
        publisher = watched(broker.url, events)
        ch = publisher.channel()
        ch.queue_declare("mem-q")
        ch.confirm_delivery()
        ch.basic_publish("", "mem-q", b"fine")  # confirmed: it was read and routed
        publisher.process_data_events(time_limit=1.2)  # past one disk check
        assert events == []
        assert ch.queue_declare("mem-q", passive=True).method.message_count == 1
        publisher.close()
    finally:
        broker.stop()


def test_a_bad_limit_is_refused_at_start():
    out = subprocess.run(
        [sys.executable, "-m", "minimq", "--port", "0", "--in-memory", "--disk-free-limit", "lots"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 2
    assert "--disk-free-limit" in out.stderr and "not an amount of bytes" in out.stderr


class _Disk(Files):
    """Real files; free space as the test says."""

    def __init__(self) -> None:
        self.free = 10**12

    def statvfs(self, path):
        real = os.statvfs(path)
        return os.statvfs_result((
            real.f_bsize, 1, 10**13, self.free, self.free, real.f_files, real.f_ffree,
            real.f_favail, real.f_flag, real.f_namemax,
        ))


class _ServerThread:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(server.start())

    def call(self, coro_or_fn):
        if asyncio.iscoroutine(coro_or_fn):
            return asyncio.run_coroutine_threadsafe(coro_or_fn, self.loop).result(30)

        async def run():
            return coro_or_fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def stop(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_memory_and_disk_alarms_together_block_once_and_unblock_when_both_clear(tmp_path):
    disk = _Disk()
    store = DurableStore(str(tmp_path / "data"), files=disk)
    store.recover()
    server = Server(Broker(clock=time.time, store=store), "127.0.0.1", 0,
                    disk_free_limit=50_000_000, disk_check_interval=0.05)
    running = _ServerThread(server)
    try:
        url = f"amqp://guest:guest@127.0.0.1:{server.port}/"
        events: list = []
        publisher = watched(url, events)
        ch = publisher.channel()
        ch.queue_declare("both-q")
        running.call(lambda: server.set_alarm("memory", True))
        publisher.process_data_events(time_limit=0.2)
        assert events == []  # not told before it publishes
        ch.basic_publish("", "nowhere", b"probe")
        assert pump(publisher, lambda: events)
        disk.free = 10**6  # below 50MB: the disk alarm goes on too
        assert pump(publisher, lambda: "disk" in server.alarms)
        assert server.alarm == "low on disk & memory"
        running.call(lambda: server.set_alarm("memory", False))
        publisher.process_data_events(time_limit=0.3)
        assert events == [("blocked", "low on memory")]  # one blocked, no unblocked yet
        # A connection opened now is told about what is on when it publishes.
        late = mqclient.connect(url)
        lch = late.channel()
        assert wait_blocked(late, timeout=0.3) is None
        lch.publish(b"probe", "nowhere")
        assert wait_blocked(late) == "low on disk"
        disk.free = 10**9
        assert pump(publisher, lambda: len(events) == 2)
        assert events[1] == ("unblocked",)
        deadline = time.monotonic() + 15
        while late.is_blocked and time.monotonic() < deadline:
            late.process_data_events(time_limit=0.05)
        assert not late.is_blocked
        ch.basic_publish("", "both-q", b"after")
        assert pump(publisher, lambda: ch.queue_declare("both-q", passive=True).method.message_count == 1)
        late.close()
        publisher.close()
    finally:
        running.stop()
        store.close()
