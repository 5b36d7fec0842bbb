"""A real full disk, and a disk that fails at random, under the real server.

The full-disk test mounts a small tmpfs (root only; CI runs as root), fills it to the last
byte while a publisher with confirms is sending persistent messages, then frees the space.
Every confirmed message must survive a restart, in order, and the publisher must have seen
connection.blocked / connection.unblocked for the disk alarm.

The random-fault tests run the broker with the fault-injecting file layer of
tests/faulty_files.py (writes that stop halfway or fail with ENOSPC/EIO, fsyncs that fail),
kill -9 it in the middle, and check that what it confirmed is all there.
"""
from __future__ import annotations

import errno
import os
import subprocess
import threading
import time

import pytest

from minimq.codec import spec

from .durable_support import Publisher, bodies, read_queue

MB = 1000 * 1000
BODY = 20_000


class WatchingPublisher(Publisher):
    """A Publisher that announces connection.blocked and records blocked/unblocked."""

    def __init__(self, port: int) -> None:
        self.blocked = threading.Event()
        self.unblocked = threading.Event()
        self.reasons: list[str] = []
        super().__init__(port, timeout=60.0, capabilities={"connection.blocked": True, "publisher_confirms": True})

    def _read(self, timeout: float) -> bool:
        ok = super()._read(timeout)
        for item in list(self.inbox):
            ch, m = item
            if ch == 0 and isinstance(m, spec.ConnectionBlocked):
                self.inbox.remove(item)
                self.reasons.append(m.reason)
                self.blocked.set()
            elif ch == 0 and isinstance(m, spec.ConnectionUnblocked):
                self.inbox.remove(item)
                self.unblocked.set()
        return ok


def _mount_tmpfs(path: str, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    os.makedirs(path, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip() or out.returncode}")


def _fill(path: str) -> int:
    """Write `path` until the disk is full; returns its size."""
    chunk = b"\0" * 65536
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            try:
                n = os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
            size += n
            if n < len(chunk):
                chunk = chunk[:1]  # the last few bytes one at a time
    finally:
        os.close(fd)
    return size


def test_a_full_disk_loses_no_confirmed_message(tmp_path, make_broker, _made_brokers):
    mnt = str(tmp_path / "small-disk")
    _mount_tmpfs(mnt, "8m")
    try:
        # The data dir is the whole small disk (the broker's log goes beside it, not on it).
        broker = make_broker(mnt, extra=("--disk-free-limit", "1MB"))
        body = lambda seq: b"%08d" % seq + b"x" * (BODY - 8)  # noqa: E731
        pub = WatchingPublisher(broker.port)
        pub.declare("full")
        pub.confirm_select()
        pub.publish_confirmed("", "full", 40, window=16, body=body)  # a healthy start
        assert pub.acked_upto == 40
        filler = os.path.join(mnt, "filler")
        _fill(filler)  # not one byte left
        total = 200
        errors: list[BaseException] = []

        def publish_rest() -> None:
            try:
                pub.publish_confirmed("", "full", total - 40, window=16, body=body)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        worker = threading.Thread(target=publish_rest)
        worker.start()
        # As RabbitMQ 3.10, connection.blocked comes only if the publisher publishes while the
        # alarm is on; one waiting on confirms the full disk holds back is not told.
        deadline = time.monotonic() + 30
        while not pub.blocked.wait(0.1) and "disk alarm:" not in broker.log():
            assert time.monotonic() < deadline, f"no disk alarm\n{broker.log()}"
        if pub.blocked.wait(2):
            assert pub.reasons == ["low on disk"]
        held = pub.acked_upto
        assert held < total
        os.unlink(filler)  # space comes back
        if pub.blocked.is_set():
            assert pub.unblocked.wait(30), f"no connection.unblocked\n{broker.log()}"
        worker.join(120)
        assert not worker.is_alive() and not errors, (errors, broker.log())
        assert pub.acked_upto == total and not pub.nacked
        pub.close()
        log = broker.log()
        assert "No space left on device" in log, log
        assert log.count("No space left on device") <= 2, log  # once per episode, per file
        assert "writes work again" in log and "disk alarm:" in log and "disk alarm cleared" in log
        broker.restart()
        got = read_queue(broker.pika(), "full")
        assert bodies(got) == [body(i) for i in range(1, total + 1)]
        broker.stop()
    finally:
        for b in _made_brokers:
            b.kill()
        if subprocess.run(["umount", mnt], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=30)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_write_faults_under_the_real_server(data_dir, make_broker, seed):
    broker = make_broker(faults=f"{seed}:0.2")
    pub = Publisher(broker.port, timeout=30.0)
    pub.declare("faulty")
    pub.confirm_select()
    pub.publish_confirmed("", "faulty", 300, window=32, body=lambda s: b"%06d" % s + b"y" * 200)
    assert pub.acked_upto == 300 and not pub.nacked
    # More in flight, then kill -9 in the middle.
    stop = threading.Event()

    def more() -> None:
        try:
            pub.publish_confirmed("", "faulty", 2000, window=32, body=lambda s: b"%06d" % s + b"y" * 200,
                                  stop=stop)
        except (TimeoutError, OSError):
            pass

    worker = threading.Thread(target=more)
    worker.start()
    while pub.acked_upto < 300 + 100 * seed and worker.is_alive():
        worker.join(0.05)
    broker.kill()
    stop.set()
    worker.join(30)
    pub.drain()
    confirmed = pub.acked_upto
    assert confirmed >= 300
    log = broker.log()
    assert "failed: [Errno" in log, "no fault was injected"
    broker.faults = None
    broker.start()
    got = bodies(read_queue(broker.pika(), "faulty"))
    seqs = [int(b[:6]) for b in got]
    assert seqs == sorted(set(seqs)), "out of order or duplicated"
    assert set(range(1, confirmed + 1)) <= set(seqs), "a confirmed message was lost"
    pub.close()
