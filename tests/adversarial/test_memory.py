"""The broker knows what it holds: the memory alarm fires on its own count of ready and
unacked messages, content being received, output and caches, whatever kind grows, blocks
publishers with connection.blocked, and clears when the count falls. 64 MB watermark."""
from __future__ import annotations

import os
import threading
import time

import pytest

from minimq.codec import spec
from minimq.codec.frames import encode_frame, encode_method_frame
from minimq.codec.properties import encode_content_header

from integration.rawamqp import content_frames
from .support import MB, Bystander, PeakRSS, RawAMQP, broker_with, connect_blockable, sender_thread

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MINIMQ_TEST_URL")) or not os.path.exists("/proc/self/statm"),
    reason="drives minimq's own watermark and measures its process",
)

WATERMARK = str(64 * MB)


def wait_blocked(c: RawAMQP, timeout: float = 30.0) -> spec.ConnectionBlocked:
    return c.expect(spec.ConnectionBlocked, timeout=timeout, channel=0)


def test_unfinished_messages_on_many_channels_raise_the_alarm_and_stop_reading():
    """Scaled from 24 channels x 120 MB: 8 channels each announce 100 MB and send bodies."""
    with broker_with("--memory-high-watermark", WATERMARK) as b:
        peak = PeakRSS(b.proc.pid)
        bystander = Bystander(b).start()
        c = connect_blockable(b.host, b.port)
        for ch in range(1, 9):
            c.channel_open(ch)

        def chunks():
            frame = 131072 - 8
            for ch in range(1, 9):
                yield encode_method_frame(ch, spec.BasicPublish(0, "", "nowhere", False, False))
                yield encode_frame(2, ch, encode_content_header(100 * MB, None))
            body = b"b" * frame
            for _ in range(100 * MB // frame):  # 800 MB offered in all, round-robin
                for ch in range(1, 9):
                    yield encode_frame(3, ch, body)

        sender = sender_thread(c.sock, chunks())
        blocked = wait_blocked(c)
        assert blocked.reason == "low on memory"
        sender.join(60)
        assert sender.done
        assert sender.sent < 300 * MB, f"the broker read {sender.sent / MB:.0f} MB of unfinished content"
        times = bystander.stop()
        grown = peak.stop() - peak.start
        assert grown < 150 * MB, f"broker grew {grown / MB:.0f} MB"
        assert max(times) < 1.0, f"bystander waited {max(times):.2f}s"
        c.sock.close()


def test_consumer_that_never_acks_blocks_the_publisher_and_nothing_is_lost():
    count, size = 1000, 100 * 1024  # 100 MB offered, 64 MB watermark
    with broker_with("--memory-high-watermark", WATERMARK) as b:
        setup = RawAMQP.connect(b.host, b.port)
        setup.channel_open(1)
        setup.queue_declare(1, "held")
        # A consumer that reads everything and acks nothing.
        hoarder = RawAMQP.connect(b.host, b.port)
        hoarder.channel_open(1)
        hoarder.send_method(1, spec.BasicConsume(0, "held", "hoard"))
        hoarder.expect(spec.BasicConsumeOk)
        hoarded: list[int] = []
        stop = threading.Event()

        def hoard() -> None:
            while not stop.is_set():
                try:
                    hoarded.append(int.from_bytes(hoarder.read_message(timeout=0.5).body[:4], "big"))
                except (TimeoutError, OSError, AssertionError):
                    continue

        reader = threading.Thread(target=hoard, daemon=True)
        reader.start()
        publisher = connect_blockable(b.host, b.port)
        publisher.channel_open(1)
        frames = [
            encode_method_frame(1, spec.BasicPublish(0, "", "held", False, False))
            + content_frames(1, i.to_bytes(4, "big") + b"p" * (size - 4), None, publisher.frame_max)
            for i in range(count)
        ]
        sender = sender_thread(publisher.sock, frames)
        wait_blocked(publisher)
        sender.join(60)
        assert sender.done and sender.sent < count * size, "the publisher was never stopped"
        stop.set()
        reader.join(5)
        assert len(hoarded) * size < 100 * MB
        # The hoarder goes away: its messages come back. A consumer that acks drains the
        # queue, the alarm clears, the publisher is unblocked and the rest arrives.
        hoarder.sock.close()
        drain = RawAMQP.connect(b.host, b.port)
        drain.channel_open(1)
        drain.send_method(1, spec.BasicQos(0, 50, False))
        drain.expect(spec.BasicQosOk)
        drain.send_method(1, spec.BasicConsume(0, "held", "drain"))
        drain.expect(spec.BasicConsumeOk)
        sender = sender_thread(publisher.sock, frames_left(frames, sender.sent), stall=60)
        got: set[int] = set()
        while len(got) < count:
            msg = drain.read_message(timeout=30)
            got.add(int.from_bytes(msg.body[:4], "big"))
            drain.send_method(1, spec.BasicAck(msg.method.delivery_tag, False))
        assert got == set(range(count))
        publisher.expect(spec.ConnectionUnblocked, timeout=30, channel=0)
        drain.close()
        setup.close()


def frames_left(frames: list[bytes], sent: int) -> list[bytes]:
    """What of `frames` was not sent yet, given `sent` bytes went out in order."""
    data = b"".join(frames)
    return [data[sent:]] if sent < len(data) else []


def test_distinct_routing_keys_on_many_connections_pin_a_bounded_cache():
    """Scaled from 65k keys: 4 connections each publish 40k distinct 200-byte keys."""
    with broker_with() as b:
        peak = PeakRSS(b.proc.pid)
        conns = []
        for n in range(4):
            c = RawAMQP.connect(b.host, b.port)
            c.channel_open(1)
            batch = b"".join(
                encode_method_frame(1, spec.BasicPublish(0, "", f"{n}.{i}." + "k" * 200, False, False))
                + content_frames(1, b"m", None, c.frame_max)
                for i in range(40000)
            )
            c.send_raw(batch)
            conns.append(c)
        for c in conns:
            c.queue_declare(1, "", exclusive=True)  # a round trip: everything before it is done
        grown = peak.stop() - peak.start
        assert grown < 40 * MB, f"broker grew {grown / MB:.0f} MB"
        for c in conns:
            c.close()
