"""Tools for attacking a broker and watching it: its memory, an innocent bystander, senders.

Shared by the adversarial tests (tests/adversarial) and benchmarks/adversarial.py, so both
measure the same way. No pytest here: the benchmark runs without it.

While an attack runs, a `Bystander` (an unrelated client on its own connection) keeps doing
round trips, so one can tell that the broker stayed responsive for everyone else, not only
that it survived.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from integration.rawamqp import Closed, RawAMQP
from minimq.codec import spec

MB = 1024 * 1024

def rss(pid: int) -> int:
    """Resident memory of process `pid` in bytes."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples a process's RSS in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.start = rss(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, rss(self.pid))
            except OSError:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak

    @property
    def growth(self) -> int:
        return self.peak - self.start


class Bystander:
    """An unrelated client doing queue.declare(passive) round trips on its own connection."""

    def __init__(self, broker: Any, queue: str = "bystander") -> None:
        """`broker`: anything with `host` and `port`."""
        self.conn = RawAMQP.connect(broker.host, broker.port)
        self.conn.channel_open(1)
        self.conn.queue_declare(1, queue, exclusive=True)  # gone with the connection
        self.queue = queue
        self.times: list[float] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def round_trip(self, timeout: float = 30.0) -> float:
        started = time.monotonic()
        self.conn.send_method(1, spec.QueueDeclare(0, self.queue, passive=True))
        self.conn.expect(spec.QueueDeclareOk, timeout=timeout, channel=1)
        return time.monotonic() - started

    def start(self) -> "Bystander":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.times.append(self.round_trip())
            except BaseException as exc:  # reported by stop()
                self.errors.append(exc)
                return
            self._stop.wait(0.01)

    def stop(self) -> list[float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(35)
        self.conn.sock.close()
        assert not self.errors, f"the bystander failed: {self.errors[0]!r}"
        return self.times

    @property
    def worst(self) -> float:
        return max(self.times) if self.times else 0.0


def is_closed(sock: socket.socket, timeout: float) -> bool:
    """True when the peer closes `sock` (EOF or reset) within `timeout`; data is discarded."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        if not data:
            return True


__all__ = ["MB", "PeakRSS", "Bystander", "is_closed", "rss", "Closed", "RawAMQP"]


def connect_blockable(host: str, port: int) -> RawAMQP:
    """A raw client that announces the connection.blocked capability (so it is told)."""
    from integration.rawamqp import CLIENT_PROPERTIES

    c = RawAMQP.open_socket(host, port)
    c.send_header()
    props = dict(CLIENT_PROPERTIES)
    props["capabilities"] = dict(props["capabilities"], **{"connection.blocked": True})
    c.send_method(0, spec.ConnectionStartOk(props, "PLAIN", b"\x00guest\x00guest", "en_US"))
    tune = c.expect(spec.ConnectionTune)
    c.tune_ok(tune.channel_max, tune.frame_max, 0)
    c.send_method(0, spec.ConnectionOpen("/"))
    c.expect(spec.ConnectionOpenOk)
    return c


def sender_thread(sock: socket.socket, chunks, stall: float = 2.0) -> threading.Thread:
    """Send each of `chunks` in turn from a thread; it stops once a send blocks `stall` s
    (the broker stopped reading) or the socket is closed. `thread.sent` counts bytes sent."""

    # Its own socket object (same connection): the test's reads set their own timeouts.
    out = sock.dup()

    def run() -> None:
        out.settimeout(stall)
        try:
            for chunk in chunks:
                out.sendall(chunk)
                t.sent += len(chunk)
        except OSError:
            pass
        finally:
            out.close()
        t.done = True

    t = threading.Thread(target=run, daemon=True)
    t.sent = 0  # type: ignore[attr-defined]
    t.done = False  # type: ignore[attr-defined]
    t.start()
    return t


def discard_thread(sock: socket.socket) -> threading.Thread:
    """Read and throw away everything the broker sends on `sock` until it closes."""
    inp = sock.dup()

    def run() -> None:
        inp.settimeout(None)
        try:
            while inp.recv(1 << 20):
                pass
        except OSError:
            pass
        finally:
            inp.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t
