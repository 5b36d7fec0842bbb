"""Credit, not flooding: a client that does not read its socket gets at most a bounded amount
of output, whatever it asks for (no-ack deliveries, get-oks, returns), and the broker stops
reading from it until it drains. Scaled down from the issue's table (50 MB instead of 1 GB)."""
from __future__ import annotations

import os
import socket
import threading

import pytest

from minimq.codec import spec
from minimq.codec.frames import encode_method_frame

from integration.rawamqp import content_frames
from .support import MB, Bystander, PeakRSS, RawAMQP, broker_with, sender_thread

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MINIMQ_TEST_URL")) or not os.path.exists("/proc/self/statm"),
    reason="measures minimq's own process (Linux /proc)",
)

BODY = 100 * 1024
COUNT = 500  # 50 MB backlog


def fill(c: RawAMQP, queue: str, count: int, size: int) -> None:
    """Publish `count` numbered bodies of `size` bytes and wait until the queue holds them."""
    c.queue_declare(1, queue)
    for i in range(count):
        c.publish(1, "", queue, i.to_bytes(4, "big") + b"x" * (size - 4))
    wait_count(c, queue, count)


def wait_count(c: RawAMQP, queue: str, at_least: int, timeout: float = 60.0) -> int:
    import time

    deadline = time.monotonic() + timeout
    while True:
        n = c.queue_declare(1, queue, passive=True).message_count
        if n >= at_least or time.monotonic() > deadline:
            return n


def idle_while(bystander: Bystander, round_trips: int = 80) -> None:
    """Let the attack run while the bystander completes `round_trips` more round trips."""
    import time

    target = len(bystander.times) + round_trips
    deadline = time.monotonic() + 60
    while len(bystander.times) < target and not bystander.errors and time.monotonic() < deadline:
        time.sleep(0.01)  # polling another thread's progress, not waiting on the broker


def flood_from_thread(sock: socket.socket, chunk: bytes, limit: int) -> threading.Thread:
    """Send `chunk` repeatedly (up to `limit` bytes) until the broker stops reading."""
    return sender_thread(sock, (chunk for _ in range(max(1, limit // len(chunk)))))


def test_no_ack_consumer_that_does_not_read_moves_only_what_its_socket_takes():
    with broker_with() as b:
        loader = RawAMQP.connect(b.host, b.port)
        loader.channel_open(1)
        fill(loader, "deep", COUNT, BODY)
        peak = PeakRSS(b.proc.pid)
        bystander = Bystander(b).start()
        slow = RawAMQP.connect(b.host, b.port)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        slow.channel_open(1)
        slow.send_method(1, spec.BasicConsume(0, "deep", "slow", no_ack=True))
        slow.expect(spec.BasicConsumeOk)
        idle_while(bystander)
        left = loader.queue_declare(1, "deep", passive=True).message_count
        grown = peak.growth
        # The messages the broker let go are in flight: its credit plus the kernel's buffers.
        assert left >= COUNT - 150, f"{COUNT - left} messages left the queue for a client that reads nothing"
        assert grown < 30 * MB, f"broker grew {grown / MB:.0f} MB"
        # Reading, the consumer gets everything, in order: nothing was lost.
        seen = []
        while len(seen) < COUNT:
            msg = slow.read_message(timeout=30)
            seen.append(int.from_bytes(msg.body[:4], "big"))
        assert seen == list(range(COUNT))
        times = bystander.stop()
        peak.stop()
        assert max(times) < 1.0, f"bystander waited {max(times):.2f}s"
        slow.sock.close()
        loader.close()


def test_pipelined_get_and_requeue_of_a_big_message_without_reading_costs_nothing():
    with broker_with() as b:
        c = RawAMQP.connect(b.host, b.port)
        c.channel_open(1)
        fill(c, "one", 1, MB)
        peak = PeakRSS(b.proc.pid)
        bystander = Bystander(b).start()
        attacker = RawAMQP.connect(b.host, b.port)
        attacker.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        attacker.channel_open(1)
        pipeline = b"".join(
            encode_method_frame(1, spec.BasicGet(0, "one", False))
            + encode_method_frame(1, spec.BasicReject(tag, True))
            for tag in range(1, 4001)
        )  # ~170 KB of input asking for 4 GB of output
        sender = flood_from_thread(attacker.sock, pipeline, len(pipeline))
        idle_while(bystander)
        grown = peak.growth
        assert grown < 40 * MB, f"broker grew {grown / MB:.0f} MB"
        times = bystander.stop()
        peak.stop()
        assert max(times) < 1.0, f"bystander waited {max(times):.2f}s"
        attacker.sock.close()
        sender.join(10)
        # The message is still there (requeued when the attacker went away).
        assert wait_count(c, "one", 1) == 1
        assert c.get(1, "one").body[4:] == b"x" * (MB - 4)
        c.close()


def test_mandatory_unroutable_publishes_without_reading_stop_being_read():
    with broker_with() as b:
        peak = PeakRSS(b.proc.pid)
        bystander = Bystander(b).start()
        attacker = RawAMQP.connect(b.host, b.port)
        attacker.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        attacker.channel_open(1)
        body = b"r" * (64 * 1024)
        one = encode_method_frame(1, spec.BasicPublish(0, "", "no-such-queue", True, False))
        one += content_frames(1, body, None, attacker.frame_max)
        sender = flood_from_thread(attacker.sock, one * 16, 400 * MB)
        idle_while(bystander)
        sender.join(30)
        assert not sender.is_alive(), "the broker kept reading a client that does not read"
        grown = peak.growth
        assert grown < 40 * MB, f"broker grew {grown / MB:.0f} MB"
        times = bystander.stop()
        peak.stop()
        assert max(times) < 1.0, f"bystander waited {max(times):.2f}s"
        # The attacker is served again once it reads: its returns come back.
        ret = attacker.read_message(timeout=10)
        assert isinstance(ret.method, spec.BasicReturn) and ret.method.reply_code == 312
        attacker.sock.close()
